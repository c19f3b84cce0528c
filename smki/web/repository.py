"""The SMKI Repository web service on aiohttp: the routes, the API key, and the answers' framing.

The answers themselves (queries -> XML, files) are the Librarian's RepositoryService
(smki.librarian.repository_service); this module only carries them:

    POST /services/certificatesearch        <CertificateSearchRequest>  -> <CertificateSearchResponse>
    POST /services/retrievecertificate      <CertificateDataRequest>    -> <CertificateDataResponse>
    GET  /certificates/<SERIAL>.cer         the DER certificate
    GET  /certificates/<ISSUER-SKI>/<SERIAL>.cer
    GET  /crl/<NAME>.crl                    a published CRL or ARL (no key needed unless repository.public_crl is false)
    GET  /index.json                        the published directory's index

The API key: the `X-API-Key` header or the `apikey` query parameter (one of them, once). A caller
refused for its key gets 403 and its connection is closed. Statuses as before: 402 nothing found,
401 invalid search parameters, 400 malformed XML, 404 no such resource.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs

from aiohttp import web

from smki.librarian.repository_service import RepositoryService, ServiceError, error_response, to_xml_bytes
from smki.web.app import read_body
from smki.web.context import SERVICES, run_blocking, run_in_actor_thread

API_KEY_HEADER = "X-API-Key"
API_KEY_PARAMETER = "apikey"
MAX_QUERY_FIELDS = 8
XML = "application/xml"
# Each answer's audit reference, 32 hex digits as uuid4().hex gave: this process's random half, then a count.
# Unique across workers and restarts without a system call per request (uuid4 cost 5 % of a worker's event loop).
_REFERENCES = (f"{secrets.token_hex(8)}{count:016x}" for count in itertools.count(1))


@dataclass(frozen=True)
class RepositoryAccess:
    """Which of the repository's answers need no API key."""

    public_crl: bool = True
    public_search: bool = False


ACCESS = web.AppKey("smki.repository.access", RepositoryAccess)


def add_routes(app: web.Application) -> None:
    app.on_startup.append(_open_loop_connection)
    app.router.add_post("/services/certificatesearch", search)
    app.router.add_post("/services/retrievecertificate", retrieve)
    app.router.add_get("/certificates/{serial}", certificate)
    app.router.add_get("/certificates/{issuer}/{serial}", issuer_certificate)
    app.router.add_get("/crl/{name}", crl)
    app.router.add_get("/index.json", index)


async def _open_loop_connection(app: web.Application) -> None:
    """The event loop's own connection to the repository's store, opened before the first request (which would
    otherwise wait for it): searches and retrieves are answered on the loop. The service is opened on the actor thread."""
    service = await run_in_actor_thread(app, app[SERVICES].repository)
    service.connection()


def _service(request: web.Request) -> RepositoryService:
    return request.app[SERVICES].repository()


def _access(request: web.Request) -> RepositoryAccess:
    return request.app.get(ACCESS) or RepositoryAccess()


def api_key_of(request: web.Request) -> str | None:
    """The caller's API key, from the header or the query (never both, never twice): ServiceError 400 otherwise."""
    try:
        query = parse_qs(request.rel_url.raw_query_string, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise ServiceError(HTTPStatus.BAD_REQUEST, f"more than {MAX_QUERY_FIELDS} query fields") from None
    keys = query.get(API_KEY_PARAMETER, []) + request.headers.getall(API_KEY_HEADER, [])
    if len(keys) > 1:
        raise ServiceError(HTTPStatus.BAD_REQUEST, f"the API key given more than once (send one {API_KEY_HEADER} header or one apikey)")
    return keys[0] if keys else None


def _authorise(request: web.Request, *, public: bool = False) -> None:
    key = api_key_of(request)
    if public and key is None:
        return
    if not _service(request).authorised(key):
        raise ServiceError(HTTPStatus.FORBIDDEN, "missing or unknown apikey")


def _refusal_headers(error: ServiceError) -> dict[str, str]:
    # A caller refused for its key is not kept: its next request on this connection would be another guess.
    return {"Connection": "close"} if error.status == HTTPStatus.FORBIDDEN else {}


async def _xml_service(request: web.Request, method: str, answer_tag: str) -> web.Response:
    reference = next(_REFERENCES)
    try:
        _authorise(request, public=_access(request).public_search)
        body = await read_body(request)  # its length checked by the framing middleware before a byte was read
        # On the event loop, not the actor thread: a search or retrieve is an indexed read of ~0.1-0.2 ms on this
        # thread's own connection (RepositoryService keeps one per thread; WAL readers never wait for a writer),
        # cheaper than the hop to the actor thread and back, which also queues behind that thread's HSM work.
        element = getattr(_service(request), method)(body, reference)
        return web.Response(body=to_xml_bytes(element), content_type=XML)
    except ServiceError as error:
        return web.Response(status=error.status, body=to_xml_bytes(error_response(answer_tag, error, reference)),
                            content_type=XML, headers=_refusal_headers(error))


async def search(request: web.Request) -> web.Response:
    return await _xml_service(request, "search", "CertificateSearchResponse")


async def retrieve(request: web.Request) -> web.Response:
    return await _xml_service(request, "retrieve", "CertificateDataResponse")


async def _download(request: web.Request, content_type: str, answer, *args: str, public: bool = False) -> web.Response:
    try:
        _authorise(request, public=public)
        return web.Response(body=await run_blocking(request, answer, *args), content_type=content_type)
    except ServiceError as error:
        return web.Response(status=error.status, text=error.message + "\n", headers=_refusal_headers(error))


def _cer_name(name: str) -> str:
    if not name.endswith(".cer"):
        raise web.HTTPNotFound(text="no such resource\n")
    return name[:-len(".cer")]


async def certificate(request: web.Request) -> web.Response:
    serial = _cer_name(request.match_info["serial"])
    return await _download(request, "application/pkix-cert", _service(request).certificate_der, serial)


async def issuer_certificate(request: web.Request) -> web.Response:
    serial = _cer_name(request.match_info["serial"])
    return await _download(request, "application/pkix-cert", _service(request).issuer_certificate_der,
                           request.match_info["issuer"], serial)


async def crl(request: web.Request) -> web.Response:
    # Relying parties fetch CRLs and ARLs anonymously; a key, if given, must still be right.
    return await _download(request, "application/pkix-crl", _service(request).published_file, request.match_info["name"],
                           public=_access(request).public_crl)


async def index(request: web.Request) -> web.Response:
    return await _download(request, "application/json", _service(request).published_index)
