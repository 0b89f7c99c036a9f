"""Anthropic's Messages API and OpenAI's Responses API: ``/v1/messages``, ``/v1/messages/count_tokens``,
``/v1/responses``.

The hub treats them as it treats chat completions: the request owner admits, places, queues, retries,
cancels, meters and bills them; the body goes to the agent as the client sent it, and the agent
passes it to a backend that speaks the dialect or translates it to and from chat completions. Errors
the hub answers itself take the dialect's shape (api/dialects.py). Keys come as ``x-api-key`` or
``Authorization: Bearer``; ``anthropic-version``, ``anthropic-beta`` and ``?beta=true`` are accepted.
"""

from __future__ import annotations

from aiohttp import web

from potluck.api.relay import relay
from potluck.protocol.openai import Dialect


async def messages(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/v1/messages", Dialect.ANTHROPIC, streams=True, hides_usage=False)


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """The backend's token count of a Messages request: admitted and placed like one, never charged."""
    return await relay(
        request, "/v1/messages/count_tokens", Dialect.ANTHROPIC, streams=False, hides_usage=False, metered=False
    )


async def responses(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/v1/responses", Dialect.RESPONSES, streams=True, hides_usage=False)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_post("/v1/responses", responses)
