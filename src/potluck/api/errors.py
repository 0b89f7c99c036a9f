"""The single place where exceptions become HTTP responses, in the shape of the route's dialect, with a request id."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from potluck._shared.ids import new_request_id
from potluck.api.context import REQUEST_ID
from potluck.api.dialects import dialect_of, error_body, error_status, id_headers
from potluck.hub.errors import as_hub_error
from potluck.protocol.errors import PotluckError, code_for_status
from potluck.protocol.openai import Dialect

log = logging.getLogger(__name__)


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    param: str | None = None,
    retry_after: int | None = None,
    dialect: Dialect = Dialect.OPENAI,
) -> web.Response:
    headers = id_headers(dialect, request_id)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.Response(
        status=error_status(dialect, code, status),
        body=error_body(dialect, code, message, param=param),
        content_type="application/json",
        headers=headers,
    )


DEFAULT_RETRY_AFTER = 5
"""Seconds suggested on a 503 or 429 that did not compute its own."""


def render(exc: PotluckError, request_id: str, dialect: Dialect = Dialect.OPENAI) -> web.Response:
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is None and exc.status in (429, 503):
        retry_after = DEFAULT_RETRY_AFTER
    response = error_response(
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
        response.headers.update(extra)
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = new_request_id()
    request[REQUEST_ID] = rid
    try:
        response = await handler(request)
    except PotluckError as exc:
        return render(exc, rid, dialect_of(request.path))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = code_for_status(exc.status)
        message = exc.reason if exc.status != 413 else f"Request body too large ({exc.text})"
        return error_response(exc.status, code, message, rid, dialect=dialect_of(request.path))
    except Exception as exc:
        if (known := as_hub_error(exc)) is not None:
            log.warning("request %s: %s (%s)", rid, known.message, exc)
            return render(known, rid, dialect_of(request.path))
        log.exception("unhandled error (request %s)", rid)
        message = "Internal error; the request id identifies it in the hub log"
        return error_response(500, "internal_error", message, rid, dialect=dialect_of(request.path))
    if not response.prepared:
        response.headers["x-request-id"] = rid
    return response
