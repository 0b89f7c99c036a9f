"""Every client request body is checked before a handler decodes it.

One middleware, so that every route that takes a body, present and future, is covered: a body
nested deeper than `MAX_JSON_DEPTH` is a 400 `invalid_request_error`, never the RecursionError of a
decoder (the hub's or, once relayed, the agent's) turned into a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from potluck.hub.errors import InvalidRequestError
from potluck.protocol.json_depth import MAX_JSON_DEPTH, nested_deeper_than

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def check_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Read here, before authentication: the body is capped by `client_max_size` and cached for the
    # handler's own `read()`.
    if request.body_exists:
        check_nesting(await request.read())
    return await handler(request)


def check_nesting(body: bytes) -> None:
    """Raises InvalidRequestError for a body nested deeper than `MAX_JSON_DEPTH` (what the front server checks too)."""
    if nested_deeper_than(body):
        raise InvalidRequestError(f"The request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep")
