"""The operator view: for an Issuing Authority's own staff, by client certificate (Interface.OPERATOR) only.

Subscribers (SubscriberRegister.list), every subscriber's batches with the Registration Authority's approve
and reject (IssuingAuthority.approve_batch / reject_batch, the methods `smki ca batches approve|reject` call,
recorded under the operator's register name), and the service store's recent audit entries with the
trail's verification.
"""

from __future__ import annotations

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
    entries, report = await run_blocking(request, accounts(request).audit_overview, AUDIT_ENTRIES)
    return page("operator.html", **context(visitor, subscribers=subscribers, batches=batches, entries=entries, report=report,
                                           done=request.query.get("done", "")[:80]))


@portal_page("portal-operator-decide", interface=Interface.OPERATOR)
async def decide(request: web.Request, visitor: Visitor, form) -> web.Response:
    number, decision = batch_number(request), request.match_info["decision"]
    reason = form.get("reason", "")
    if decision == "reject" and (not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON):
        raise PageError(HTTPStatus.BAD_REQUEST, "Give a reason", f"A rejection needs a reason (1-{MAX_REASON} characters): "
                        "the subscriber is told it.")
    dca = request.app[SERVICES].issuing_dca()

    def as_operator():
        """The decision recorded under the operator's name (the authority's actor, on this one actor thread)."""
        actor, dca.actor = dca.actor, visitor.subscriber.name
        try:
            return dca.approve_batch(number) if decision == "approve" else dca.reject_batch(number, reason.strip())
        finally:
            dca.actor = actor
    try:
        decided = await run_blocking(request, as_operator)
    except ConflictError as exc:  # decided already, by someone else
        raise PageError(HTTPStatus.CONFLICT, "Not decided", str(exc)) from None
    except BadInputError as exc:  # no such batch
        raise PageError(HTTPStatus.NOT_FOUND, "Not decided", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - every refusal is a page
        raise refused(exc) from None
    audit(request, f"portal-operator-{decision}", HTTPStatus.SEE_OTHER, client_id=str(number), interface=Interface.OPERATOR)
    return see_other(f"{OPERATOR}?done=batch+{decided.number}+{decided.status.value}")


def add_routes(app: web.Application) -> None:
    app.router.add_get(OPERATOR, overview)
    app.router.add_post(f"{OPERATOR}/batches/{{number}}/{{decision:approve|reject}}", decide)
