"""Keys under which the adapters find shared state on the aiohttp app and request."""

from __future__ import annotations

from aiohttp import web

from potluck.hub.services import HubServices

HUB = web.AppKey("hub", HubServices)
REQUEST_ID = web.RequestKey("potluck_request_id", str)


def request_id(request: web.Request) -> str:
    return request[REQUEST_ID]
