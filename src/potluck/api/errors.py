"""The single place where exceptions become HTTP responses, in the shape of the route's dialect, with a request id."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from aiohttp import web

from potluck._shared.ids import new_request_id
from potluck.api.context import REQUEST_ID
from potluck.api.dialects import dialect_of, error_body, error_status, id_headers
from potluck.hub.errors import as_hub_error
from potluck.protocol.errors import PotluckError, code_for_status
from potluck.protocol.openai import Dialect

log = logging.getLogger(__name__)


class ErrorAnswer(NamedTuple):
    """An error the hub answers itself: status, headers (the body's type and the request id among them), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers=self.headers)


def error_answer(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    param: str | None = None,
    retry_after: int | None = None,
    dialect: Dialect = Dialect.OPENAI,
) -> ErrorAnswer:
    headers = {"Content-Type": "application/json", **id_headers(dialect, request_id)}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return ErrorAnswer(error_status(dialect, code, status), headers, error_body(dialect, code, message, param=param))


DEFAULT_RETRY_AFTER = 5
"""Seconds suggested on a 503 or 429 that did not compute its own."""


def render_answer(exc: PotluckError, request_id: str, dialect: Dialect = Dialect.OPENAI) -> ErrorAnswer:
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is None and exc.status in (429, 503):
        retry_after = DEFAULT_RETRY_AFTER
    answer = error_answer(
        exc.status,
        exc.code,
        exc.message,
        request_id,
        param=getattr(exc, "param", None),
        retry_after=retry_after,
        dialect=dialect,
    )
    extra: dict[str, str] | None = getattr(exc, "headers", None)
    if extra:
        answer.headers.update(extra)
    return answer


def failure_answer(exc: Exception, request_id: str, dialect: Dialect) -> ErrorAnswer:
    """What a handler's exception (not aiohttp's own HTTP exceptions) answers: a known error in its shape, anything
    else a logged 500."""
    if isinstance(exc, PotluckError):
        return render_answer(exc, request_id, dialect)
    if (known := as_hub_error(exc)) is not None:
        log.warning("request %s: %s (%s)", request_id, known.message, exc)
        return render_answer(known, request_id, dialect)
    log.exception("unhandled error (request %s)", request_id, exc_info=exc)
    message = "Internal error; the request id identifies it in the hub log"
    return error_answer(500, "internal_error", message, request_id, dialect=dialect)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = new_request_id()
    request[REQUEST_ID] = rid
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = code_for_status(exc.status)
        message = exc.reason if exc.status != 413 else f"Request body too large ({exc.text})"
        return error_answer(exc.status, code, message, rid, dialect=dialect_of(request.path)).response()
    except Exception as exc:  # noqa: BLE001 - answered, and logged when unknown
        return failure_answer(exc, rid, dialect_of(request.path)).response()
    if not response.prepared:
        response.headers["x-request-id"] = rid
    return response
