"""Requests the HTTP parser refuses, answered in the API's error shape with a request id.

aiohttp's parser refuses some requests before any route or middleware sees them: a malformed or overlong
request line or header (over 8190 bytes), more than 128 headers, a body framed two ways (``Content-Length``
and ``Transfer-Encoding`` together: the classic request-smuggling attempt), a bad chunk size, bytes that are
not HTTP at all. aiohttp answers those from `web.RequestHandler.handle_error`, in plain text and without a
request id, and logs each with a traceback. `ApiRequestHandler` overrides that one method: the answer is a
JSON error (``invalid_request_error`` for a 400) with ``x-request-id``, logged in one line. Nothing of the
request can be trusted, its path included, so the shape is OpenAI's whatever the client meant to call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_request import BaseRequest

from potluck._shared.ids import new_request_id
from potluck.api.errors import error_answer
from potluck.protocol.errors import code_for_status

log = logging.getLogger(__name__)


class ApiRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with parser refusals answered as the API's errors (see the module docstring)."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        rid = new_request_id()
        reason = (message or "").split("\n", 1)[0].strip().rstrip(":") or "malformed request"
        if status >= 500:
            log.error("request %s from %s failed outside the application", rid, request.remote, exc_info=exc)
            reason = "Internal error; the request id identifies it in the hub log"
        else:
            log.info("refused a malformed HTTP request %s from %s: %s", rid, request.remote, reason)
            reason = f"Malformed HTTP request: {reason}"
        response = error_answer(status, code_for_status(status), reason, rid).response()
        response.force_close()
        return response


def handler_factory(server: web.Server) -> Callable[[], web.RequestHandler]:
    """What `GuardedSite` serves with: `ApiRequestHandler`s made as ``server`` would make its own."""
    loop, kwargs = server._loop, server._kwargs  # private, but aiohttp offers no other way to build one
    return lambda: ApiRequestHandler(server, loop=loop, **kwargs)
