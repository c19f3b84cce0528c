"""What the CSR web service handlers share (adhoc, organisation, batches): the one table from a refusal to the
answer's Status and ErrorCode, the requester's role, the submitter the usage rules count, the bounded body, the
TransactionId and the request audit entry. Actor calls go through smki.web.context.run_blocking (the worker's
single actor thread: python-pkcs11 is not thread-safe).
"""

from __future__ import annotations

import logging
import secrets
import time

from aiohttp import web

from smki.errors import BadInputError, ConflictError, HsmError, RefusedError, StoreError
from smki.identifiers import RemotePartyRole
from smki.policy import PolicyRefusal
from smki.register import Interface
from smki.requests.outcomes import Outcome, RequestRejected
from smki.policy.usage import Channel, Submitter, UsageRule
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
        rule = UsageRule.of(exc)
        if rule is not None:  # a usage rule of SEC Appendix N: its own WF: code (smki.policy.usage), as the batch service answers it
            return AdhocStatus.WORKFLOW_ERROR, ErrorCode(rule.code, one_line(str(exc)))
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
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise MessageRefused(Code.BODY_TOO_LARGE.error(f"The request body is over {limit} bytes"))
        chunks.append(chunk)


# -- the request's context -----------------------------------------------------------------------------
def transaction_id() -> int:
    """A TransactionId (xsd:positiveInteger) unique across worker processes and hosts without asking anyone:
    the milliseconds since 1970 above 80 random bits, as a UUIDv7 lays them out. Time-ordered, and two IDs
    collide only when drawn in the same millisecond with the same 80 bits (2**-80). A Java client reads it as
    JAXB's BigInteger, as the schema's positiveInteger maps."""
    return (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80) | 1


def submitter(request: web.Request, channel: Channel) -> Submitter:
    """Who submits, as the actor's usage rules count it: the caller's register entry and the channel."""
    subscriber = request[CALLER].subscriber
    return Submitter(subscriber.name, channel, subscriber.eui64.hex)


def audit_request(request: web.Request, interface: Interface, operation: str, *, client_id: str | None,
                  status: str, code: str | None) -> None:
    """The request's audit entry (the worker's buffered request audit, context.AUDIT): who (subscriber,
    fingerprint, address), what (interface, operation, the client's ID), the outcome (status, code). Never a
    CSR's bytes nor anything secret. An app without the buffer (a handler's unit test) logs it instead."""
    entry = dict(interface=interface, operation=operation, status=status, code=code, client_id=client_id, **context.who_called(request))
    recorder = request.app.get(context.AUDIT)
    if recorder is not None:
        recorder.record(**entry)
    else:
        log.info("request %s %s by %s: %s %s", interface.value, operation, entry["subscriber"], status, code or "")


def xml_answer(body: bytes) -> web.Response:
    """Always HTTP 200 with the XML, as Appendix M answers every CSR web service request."""
    return web.Response(body=body, status=200, headers={"Content-Type": CONTENT_TYPE})
