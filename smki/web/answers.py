"""What the CSR web service handlers share (adhoc, organisation): the one table from a refusal to the answer's
Status and ErrorCode, the requester's role, the bounded body, the TransactionId, the blocking actor call and
the request audit entry.

Three of these stand in for web-core's until it lands, each one small function the lead rewires:
`run_blocking` (context.run_blocking: the worker's single executor thread, since python-pkcs11 is not
thread-safe), `audit_request` (context.AUDIT: the worker's buffered request audit) and `transaction_id`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from smki.errors import BadInputError, ConflictError, HsmError, RefusedError, StoreError
from smki.identifiers import RemotePartyRole
from smki.policy import PolicyRefusal
from smki.register import Interface
from smki.requests.outcomes import Outcome, RequestRejected
from smki.web import context
from smki.web.context import CALLER, Caller
from smki.web.messages import CONTENT_TYPE, AdhocStatus, Code, CsrStatus, ErrorCode, MessageRefused, csr_error, one_line

log = logging.getLogger(__name__)

ROLE_HEADER = "X-SMKI-Role"  # which of its roles a subscriber holding several acts for


class RoleRefused(RefusedError):
    """The caller acts for a role it does not hold, or holds several and names none (WORKFLOW_ERROR)."""


# -- the one table: refusal -> (Status, ErrorCode) --------------------------------------------------
# A PolicyRefusal names its rule ("4.2 per_device_cap"): the rule decides, by its first words.
_POLICY_RULES: tuple[tuple[str, AdhocStatus, Code], ...] = (
    ("4.2 single_request_requires_existing", AdhocStatus.UNKNOWN_DEVICE, Code.UNKNOWN_DEVICE),
    ("4.2 per_device_cap", AdhocStatus.ISSUANCE_ANOMALY, Code.DEVICE_CAP),
    ("4.1 eligibility", AdhocStatus.WORKFLOW_ERROR, Code.INELIGIBLE),
    ("usage_rules.", AdhocStatus.WORKFLOW_ERROR, Code.USAGE_LIMIT),  # the batches helper's usage rules (its own WF: codes)
    ("6.3.2 validity", AdhocStatus.CA_ERROR, Code.CA_FAILURE),  # the CA's own validity cannot cover it: ours to fix
)
_OTHER_POLICY_RULE = (AdhocStatus.WORKFLOW_ERROR, Code.NOT_PERMITTED)  # 7.1 roles, device types, key usages...

# A request check's per-CSR status (smki.web.messages.csr_error) as an ad hoc Status: no INELIGIBLE here,
# eligibility is a WORKFLOW_ERROR in Appendix A.
_CSR_STATUS = {CsrStatus.CSR_ERROR: AdhocStatus.CSR_ERROR, CsrStatus.CA_ERROR: AdhocStatus.CA_ERROR,
               CsrStatus.ISSUANCE_ANOMALY: AdhocStatus.ISSUANCE_ANOMALY, CsrStatus.WORKFLOW_ERROR: AdhocStatus.WORKFLOW_ERROR}


def refusal_answer(exc: BaseException) -> tuple[AdhocStatus, ErrorCode]:
    """The Status and ErrorCode that answer `exc`, whatever raised it: the request XML (FORMAT_ERROR), the CSR
    (CSR_ERROR), the policy (UNKNOWN_DEVICE, ISSUANCE_ANOMALY, WORKFLOW_ERROR), the role, the HSM or the store
    (CA_ERROR). Anything unexpected is a CA_ERROR too, logged here with its type (never its traceback in the answer)."""
    if isinstance(exc, MessageRefused):
        return AdhocStatus.FORMAT_ERROR, exc.error
    if isinstance(exc, RequestRejected):
        if exc.outcome is Outcome.INELIGIBLE:
            return AdhocStatus.WORKFLOW_ERROR, Code.INELIGIBLE.error(exc.reason)
        status, error = csr_error(exc.outcome, exc.reason)
        return _CSR_STATUS[status], error
    if isinstance(exc, PolicyRefusal):
        status, code = next(((status, code) for prefix, status, code in _POLICY_RULES if exc.rule.startswith(prefix)),
                            _OTHER_POLICY_RULE)
        return status, code.error(str(exc))
    if isinstance(exc, RoleRefused):
        return AdhocStatus.WORKFLOW_ERROR, Code.ROLE_NOT_HELD.error(str(exc))
    if isinstance(exc, (HsmError, StoreError, ConflictError)):  # the HSM, the store, a state another writer changed
        log.error("CA error answered: %s", one_line(str(exc)))
        return AdhocStatus.CA_ERROR, Code.CA_FAILURE.error()
    if isinstance(exc, RefusedError):  # lint or verification of the to-be-signed certificate: anomalous issuance
        return AdhocStatus.ISSUANCE_ANOMALY, Code.ANOMALY.error(str(exc))
    if isinstance(exc, BadInputError):
        return AdhocStatus.CSR_ERROR, Code.CSR_NOT_DECODABLE.error(str(exc))
    log.error("unexpected %s answered as CA_ERROR: %s", type(exc).__name__, one_line(str(exc)))
    return AdhocStatus.CA_ERROR, Code.CA_FAILURE.error()


# -- the caller's role -------------------------------------------------------------------------------
def requester_role(request: web.Request) -> RemotePartyRole:
    """The role the caller acts for: its only one, or the one its X-SMKI-Role header names among those it holds."""
    caller: Caller = request[CALLER]
    roles = caller.subscriber.roles
    named = request.headers.get(ROLE_HEADER)
    if named is None:
        if len(roles) == 1:
            return roles[0]
        raise RoleRefused(f"the subscriber holds {len(roles)} roles: name the one it acts for in {ROLE_HEADER}")
    try:
        role = RemotePartyRole.parse(named.strip())
    except (BadInputError, ValueError):
        raise RoleRefused(f"{ROLE_HEADER} names no RemotePartyRole") from None
    if not caller.subscriber.acts_for(role):
        raise RoleRefused(f"the subscriber does not hold the role {role.camel_name} it acts for")
    return role


# -- the body ----------------------------------------------------------------------------------------
async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, refused (FM:AA4) as soon as it is longer than `limit`, whatever Content-Length claimed."""
    if request.content_length is not None and request.content_length > limit:
        raise MessageRefused(Code.BODY_TOO_LARGE.error(f"The request body is over {limit} bytes"))
    already = getattr(request, "_read_bytes", None)  # web-core's framing middleware read it whole (aiohttp caches it)
    if already is not None:
        if len(already) > limit:
            raise MessageRefused(Code.BODY_TOO_LARGE.error(f"The request body is over {limit} bytes"))
        return already
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise MessageRefused(Code.BODY_TOO_LARGE.error(f"The request body is over {limit} bytes"))
        chunks.append(chunk)


# -- stand-ins for web-core's ------------------------------------------------------------------------
def transaction_id() -> int:
    """A TransactionId (xsd:positiveInteger) unique across worker processes and hosts without asking anyone:
    the milliseconds since 1970 above 80 random bits, as a UUIDv7 lays them out. Time-ordered, and two IDs
    collide only when drawn in the same millisecond with the same 80 bits (2**-80). A Java client reads it as
    JAXB's BigInteger, as the schema's positiveInteger maps."""
    return (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80) | 1


_EXECUTOR: ThreadPoolExecutor | None = None


async def run_blocking(request: web.Request, function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking actor call in the worker's single executor thread (python-pkcs11 is not thread-safe:
    one thread per process touches the HSM). Web-core's context.run_blocking when it exists."""
    shared = getattr(context, "run_blocking", None)
    if shared is not None and context.EXECUTOR in request.app:  # a served worker's app (an app of a test may have none)
        return await shared(request, function, *args)
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smki-actor")
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, function, *args)


def audit_request(request: web.Request, interface: Interface, operation: str, *, client_id: str | None,
                  status: str, code: str | None) -> None:
    """The request's audit entry: who (subscriber, fingerprint, address), what (interface, operation, the
    client's ID), the outcome (status, code). Through web-core's buffered recorder (context.AUDIT) when the app
    has one; logged otherwise. Never a CSR's bytes nor anything secret."""
    caller: Caller | None = request.get(CALLER)
    entry = dict(interface=interface, operation=operation, status=status, code=code, client_id=client_id,
                 subscriber=caller.subscriber.name if caller and caller.subscriber else None,
                 fingerprint=caller.fingerprint if caller else None, address=caller.address if caller else request.remote)
    key = getattr(context, "AUDIT", None)
    recorder = request.app.get(key) if key is not None else None
    if isinstance(recorder, context.AuditBuffer):  # web-core's: it reads the caller from the request itself
        recorder.record(request, operation=operation, status=status, code=code, client_id=client_id, interface=interface)
    elif recorder is not None:
        recorder.record(**entry)
    else:
        log.info("request %s %s by %s: %s %s", interface.value, operation, entry["subscriber"], status, code or "")


def xml_answer(body: bytes) -> web.Response:
    """Always HTTP 200 with the XML, as Appendix M answers every CSR web service request."""
    return web.Response(body=body, status=200, headers={"Content-Type": CONTENT_TYPE})
