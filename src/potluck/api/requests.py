"""``GET /api/requests``: your own requests with their ids, newest first, a page at a time.

The ids are what ``GET /api/receipts/{request_id}`` takes. A user token lists its user's requests
only. ``?user=USER_ID`` lists another user's, for the admin token or an admin user's token.
"""

from __future__ import annotations

from aiohttp import web

from potluck.api.admin import require_admin
from potluck.api.context import HUB
from potluck.api.payloads import bearer, iso, json_response, query_as
from potluck.api.schemas.requests import RequestInfo, RequestList, RequestsQuery
from potluck.api.users import current_user
from potluck.hub.errors import AdminAuthError, AuthError, InvalidRequestError, PermissionDeniedError
from potluck.hub.pricing import MICRO
from potluck.hub.reports import RequestEntry


async def list_requests(request: web.Request) -> web.Response:
    """``?limit=N`` (1 to 500, default 50), ``?before=REQUEST_ID`` (the previous page's ``next_before``),
    ``?user=USER_ID`` (admins)."""
    user_id = await _whose(request, request.query.get("user") or None)
    query = query_as(request, RequestsQuery)
    page = await request.app[HUB].reports.requests(user_id, limit=query.limit, before=query.before or None)
    return json_response(RequestList(data=[_view(e) for e in page.entries], next_before=page.next_before))


async def _whose(request: web.Request, asked: str | None) -> str:
    """The user whose requests the caller may list: their own, or with ``user``, an admin's pick."""
    if asked is None:
        try:
            return (await current_user(request)).id
        except AuthError:
            if _is_admin_token(request):
                raise InvalidRequestError(
                    "The admin token has no requests of its own: pass `user`", param="user"
                ) from None
            raise
    try:
        await require_admin(request)
    except AdminAuthError:
        caller = await current_user(request)  # a bad token stays a 401
        if caller.id != asked:
            raise PermissionDeniedError("Only admins may list another user's requests") from None
    return asked


def _is_admin_token(request: web.Request) -> bool:
    try:
        request.app[HUB].admin.check(bearer(request))
    except AdminAuthError:
        return False
    return True


def _view(entry: RequestEntry) -> RequestInfo:
    return RequestInfo(
        request_id=entry.request_id,
        created_at=iso(entry.created_at),
        model=entry.model,
        agent_id=entry.agent_id,
        key_id=entry.key_id,
        group_id=entry.group_id,
        outcome=entry.outcome,
        status=entry.status,
        prompt_tokens=entry.prompt_tokens,
        completion_tokens=entry.completion_tokens,
        tokens_estimated=entry.tokens_estimated,
        charged=entry.charged / MICRO,
        charged_micro=entry.charged,
        ttft_ms=entry.ttft_ms,
        duration_ms=entry.duration_ms,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/requests", list_requests)
