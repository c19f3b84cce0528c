"""The operator view: for an Issuing Authority's own staff, by client certificate (Interface.OPERATOR) only.

Subscribers (SubscriberRegister.list), every subscriber's batches with the Registration Authority's approve
and reject (IssuingAuthority.approve_batch / reject_batch, the methods `smki ca batches approve|reject` call,
recorded under the operator's register name), the batch processing's state with Pause / Resume
(IssuingAuthority.pause_processing / resume_processing, as `smki ca batches pause|resume`), and the service
store's recent audit entries with the trail's verification.
"""

from __future__ import annotations

import enum
from http import HTTPStatus

from aiohttp import web

from smki.errors import BadInputError, ConflictError
from smki.register import Interface
from smki.web.context import SERVICES, run_blocking
from smki.web.portal.pages import batch_number, refused
from smki.web.portal.rendering import page
from smki.web.portal.visitors import PREFIX, PageError, Visitor, accounts, audit, context, portal_page, see_other

OPERATOR = f"{PREFIX}/operator"
LISTED_BATCHES = 100
AUDIT_ENTRIES = 50
MAX_REASON = 200


@portal_page("portal-operator", interface=Interface.OPERATOR)
async def overview(request: web.Request, visitor: Visitor, form) -> web.Response:
    services = request.app[SERVICES]
    subscribers = await run_blocking(request, services.register().list)
    batches = await run_blocking(request, lambda: services.issuing_dca().batches(limit=LISTED_BATCHES))
    processing = await run_blocking(request, services.issuing_dca().processing_state)
    entries, report = await run_blocking(request, accounts(request).audit_overview, AUDIT_ENTRIES)
    return page("operator.html", **context(visitor, subscribers=subscribers, batches=batches, processing=processing, entries=entries,
                                           report=report, done=request.query.get("done", "")[:80]))


@portal_page("portal-operator-decide", interface=Interface.OPERATOR)
async def decide(request: web.Request, visitor: Visitor, form) -> web.Response:
    number, decision = batch_number(request), request.match_info["decision"]
    reason = form.get("reason", "")
    if decision == "reject" and (not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON):
        raise PageError(HTTPStatus.BAD_REQUEST, "Give a reason", f"A rejection needs a reason (1-{MAX_REASON} characters): "
                        "the subscriber is told it.")
    dca = request.app[SERVICES].issuing_dca()
    try:
        decided = await run_blocking(request, as_operator, dca, visitor,
                                     lambda: dca.approve_batch(number) if decision == "approve" else dca.reject_batch(number, reason.strip()))
    except ConflictError as exc:  # decided already, by someone else
        raise PageError(HTTPStatus.CONFLICT, "Not decided", str(exc)) from None
    except BadInputError as exc:  # no such batch
        raise PageError(HTTPStatus.NOT_FOUND, "Not decided", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - every refusal is a page
        raise refused(exc) from None
    audit(request, f"portal-operator-{decision}", HTTPStatus.SEE_OTHER, client_id=str(number), interface=Interface.OPERATOR)
    return see_other(f"{OPERATOR}?done=batch+{decided.number}+{decided.status.value}")


def as_operator(dca, visitor: Visitor, act):
    """`act()` recorded under the operator's name (the authority's actor, on this one actor thread)."""
    actor, dca.actor = dca.actor, visitor.subscriber.name
    try:
        return act()
    finally:
        dca.actor = actor


class ProcessingAction(enum.StrEnum):
    PAUSE = "pause"
    RESUME = "resume"


@portal_page("portal-operator-processing", interface=Interface.OPERATOR)
async def processing(request: web.Request, visitor: Visitor, form) -> web.Response:
    """Pause or resume the processing of every queued batch (the same actor methods as `smki ca batches pause|resume`)."""
    action = ProcessingAction(request.match_info["action"])
    reason = form.get("reason", "")
    if action is ProcessingAction.PAUSE and (not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON):
        raise PageError(HTTPStatus.BAD_REQUEST, "Give a reason", f"A pause needs a reason (1-{MAX_REASON} characters): "
                        "other operators are shown it.")
    dca = request.app[SERVICES].issuing_dca()
    act = (lambda: dca.pause_processing(reason.strip())) if action is ProcessingAction.PAUSE else dca.resume_processing
    try:
        await run_blocking(request, as_operator, dca, visitor, act)
    except ConflictError as exc:  # paused (or resumed) already, by someone else
        raise PageError(HTTPStatus.CONFLICT, "Not changed", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - every refusal is a page
        raise refused(exc) from None
    audit(request, f"portal-operator-{action.value}", HTTPStatus.SEE_OTHER, interface=Interface.OPERATOR)
    return see_other(f"{OPERATOR}?done=processing+{'paused' if action is ProcessingAction.PAUSE else 'resumed'}")


def add_routes(app: web.Application) -> None:
    app.router.add_get(OPERATOR, overview)
    app.router.add_post(f"{OPERATOR}/batches/{{number}}/{{decision:approve|reject}}", decide)
    app.router.add_post(f"{OPERATOR}/processing/{{action:pause|resume}}", processing)
