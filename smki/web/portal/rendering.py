"""The portal's templates: Jinja2, autoescaped everywhere (a certificate's CN, a file name, an error text
are shown as text, never as markup), loaded from this package."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import jinja2
from aiohttp import web

from smki.store.certificates import RepositoryStatus

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("smki.web.portal", "templates"),
    autoescape=True,  # every template, whatever its name: no markup from a value ever reaches the page
    undefined=jinja2.StrictUndefined,  # a value a template names and the handler did not give is a bug, not a blank
    trim_blocks=True, lstrip_blocks=True,
)

STATUS_NAMES = {RepositoryStatus.PENDING: "Pending", RepositoryStatus.IN_USE: "In Use", RepositoryStatus.NOT_IN_USE: "Not In Use",
                RepositoryStatus.EXPIRED: "Expired", RepositoryStatus.REVOKED: "Revoked"}


def repository_status(code: str) -> str:
    """A repository status code (P, I, N, E, R) as people read it."""
    try:
        return f"{STATUS_NAMES[RepositoryStatus(code)]} ({code})"
    except ValueError:
        return str(code)


TEMPLATES.filters["repository_status"] = repository_status
TEMPLATES.globals["repository_statuses"] = tuple((status.value, name) for status, name in STATUS_NAMES.items())

# Every page: no script, style or form target but the portal's own; never framed; nothing sniffed or cached.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def page(template: str, *, status: HTTPStatus | int = HTTPStatus.OK, **context: Any) -> web.Response:
    body = TEMPLATES.get_template(template).render(**context)
    return web.Response(status=int(status), text=body, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS)


def download(body: bytes, content_type: str, filename: str) -> web.Response:
    """A file for the browser to save; `filename` is the portal's own (hex digits, fixed suffixes), never a client's."""
    return web.Response(body=body, content_type=content_type,
                        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'})
