"""``GET /api/dashboard/stream``: one Server-Sent Events stream per dashboard page.

The handler subscribes to `potluck.hub.observe_stream.Dashboards`, which renders every item once (through
`StreamRenderer`) and queues it, bounded, for each page that may see it; the handler only waits for its
subscriber and writes what is ready. A slow page blocks only its own handler, in its own write: the
hub's fan-out never waits for it, and its queue drops and counts what it cannot keep (event ``dropped``).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from potluck.api.context import HUB
from potluck.api.dashboard_views import agent_change, feed_event, now_view, request_row
from potluck.api.schemas.dashboard import Dropped
from potluck.api.users import current_user
from potluck.hub.errors import AuthError
from potluck.hub.observe import UsageRecord
from potluck.hub.observe_fleet import FleetEvent
from potluck.hub.observe_stream import RowView, Scope
from potluck.hub.services import HubServices

RECHECK_S = 60.0
"""How often an open stream checks that its session still holds: a logout or a revoked token ends it."""
_PING = b": ping\n\n"
_encode = msgspec.json.Encoder().encode


def sse(event: str, body: msgspec.Struct) -> bytes:
    """One event: its name and its body as one line of JSON (JSON has no raw newlines)."""
    return b"event: " + event.encode() + b"\ndata: " + _encode(body) + b"\n\n"


class StreamRenderer:
    """The hub's items as Server-Sent Events (see `potluck.hub.observe_stream.Renderer`)."""

    def __init__(self, hub: HubServices) -> None:
        self._hub = hub

    def now(self, scope: Scope) -> tuple[bytes, bytes]:
        view = now_view(self._hub, scope)
        return _encode(msgspec.structs.replace(view, generated_at="")), sse("now", view)

    def request(self, record: UsageRecord, view: RowView) -> bytes:
        return sse("request", request_row(self._hub, record, view))

    def event(self, event: FleetEvent) -> bytes:
        return sse("event", feed_event(event))

    def agent(self, agent_id: str) -> bytes:
        return sse("agent", agent_change(self._hub, agent_id))


async def stream(request: web.Request) -> web.StreamResponse:
    user = await current_user(request)
    hub = request.app[HUB]
    dashboards = hub.dashboards
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    subscriber = dashboards.subscribe(user.id)
    recheck_at = hub.clock.now() + RECHECK_S
    try:
        while True:
            if hub.clock.now() >= recheck_at:
                recheck_at = hub.clock.now() + RECHECK_S
                try:
                    await current_user(request)
                except AuthError:
                    break  # logged out, or the token was revoked: the page gets no more
            await subscriber.wait()
            if hub.lifecycle.closing:
                break  # the hub wakes every page when it starts shutting down
            snapshot, agents, items, dropped = subscriber.take()
            chunks = [*agents, *items]
            if snapshot is not None:
                chunks.insert(0, snapshot)
            if dropped:
                chunks.append(sse("dropped", Dropped(count=dropped)))
            # Nothing new: the hub woke a quiet page (every 15 s) for a keep-alive.
            await response.write(b"".join(chunks) if chunks else _PING)
    except ConnectionError:
        pass  # the page went away
    finally:
        dashboards.unsubscribe(subscriber)
    return response
