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

from potluck.api.relay import relay_handler


def add_routes(app: web.Application) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens", "/v1/responses"):
        app.router.add_post(path, relay_handler(path))
