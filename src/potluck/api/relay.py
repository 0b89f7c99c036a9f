"""Relaying a client request through the hub's request owner, in any dialect.

Request bodies go to the agent as the client sent them; only the routing fields are decoded.
Responses are written as they arrive, never buffered (error bodies excepted: they are small and
must be checked for the dialect's shape before the status line is committed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from potluck.api.context import HUB, request_id
from potluck.api.dialects import id_headers, stream_error, upstream_error
from potluck.hub.auth import ApiKey
from potluck.hub.dispatch import Exchange
from potluck.hub.errors import AuthError, HubError, InvalidRequestError, ShuttingDownError
from potluck.hub.requests import ClientRequest
from potluck.protocol.openai import Dialect, RoutingFields

log = logging.getLogger(__name__)

_decode_routing = msgspec.json.Decoder(RoutingFields).decode
_ERROR_BODY_LIMIT = 1 << 20
_DIRECT_BACKLOG = 1 << 16
"""Bytes a client's socket may hold unsent before chunks go back to the relay task, which waits for the client
to drain it (aiohttp's own writer waits above the same 64 KiB)."""
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def _credential(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise AuthError("Authorization header must be `Bearer <key>`")
    return request.headers.get("x-api-key")


def authenticate(request: web.Request) -> ApiKey:
    return request.app[HUB].keys.authenticate(_credential(request))


def parse_routing(body: bytes) -> RoutingFields:
    try:
        fields = _decode_routing(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        param = text.rsplit("$.", 1)[-1].split(".")[0].split("[")[0].rstrip("`") if "$." in text else None
        raise InvalidRequestError(f"Invalid request body: {text}", param=param) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"Request body is not a JSON object: {exc}") from None
    if not fields.model:
        raise InvalidRequestError("You must provide a model parameter", param="model")
    return fields


async def relay(
    request: web.Request, path: str, dialect: Dialect, *, streams: bool, hides_usage: bool, metered: bool = True
) -> web.StreamResponse:
    """Serve one client request of ``dialect`` to a backend ``path``.

    ``streams``: the path can answer as an event stream; ``hides_usage``: a stream whose client did not
    ask for usage gets it hidden (OpenAI's chat and completions: the hub always asks for it).
    """
    hub = request.app[HUB]
    rid = request_id(request)
    key = authenticate(request)
    if hub.requests.closing:
        raise ShuttingDownError("The hub is shutting down; retry shortly")
    body = await request.read()
    fields = parse_routing(body)
    client_request = ClientRequest(
        request_id=rid,
        key=key,
        path=path,
        body=body,
        model=fields.model or "",
        stream=bool(fields.stream) and streams,
        include_usage=not hides_usage or bool(fields.stream_options and fields.stream_options.include_usage),
        explain=request.headers.get("x-potluck-explain") == "1",
        metered=metered,
    )
    serving = hub.requests.serve(client_request)
    async with serving as exchange:
        try:
            headers = {**_routing_headers(exchange, serving.admission_headers), **id_headers(dialect, rid)}
            return await _respond(request, exchange, rid, headers, dialect)
        except (ConnectionError, RuntimeError) as exc:
            # The client went away while we wrote (aiohttp raises ConnectionResetError or, on a closing
            # transport, RuntimeError); nothing left to answer.
            exchange.client_gone = True
            log.debug("client of %s gone: %s", rid, exc)
            return web.Response(status=499)


def _routing_headers(exchange: Exchange, headers: dict[str, str]) -> dict[str, str]:
    """Rate-limit headers, plus how long the request queued and, for admins who asked, why this agent."""
    slot = exchange.slot
    if slot.position:
        headers = {
            **headers,
            "x-potluck-queue-position": str(slot.position),
            "x-potluck-queue-wait-ms": str(round(slot.queued_s * 1000)),
        }
    if exchange.explanation is not None:
        route = exchange.explanation.as_dict()
        route["served_by"] = {"agent_id": slot.placement.agent_id, "model": slot.placement.model}
        headers = {**headers, "x-potluck-route": msgspec.json.encode(route).decode()}
    return headers


async def _respond(
    request: web.Request, exchange: Exchange, rid: str, extra_headers: dict[str, str], dialect: Dialect
) -> web.StreamResponse:
    """Write the exchange to the client."""
    if exchange.status >= 400:
        return await _relay_error(exchange, rid, dialect)
    headers, content_length = _response_headers(exchange, rid)
    headers.update(extra_headers)
    is_sse = headers.get("Content-Type", "").startswith("text/event-stream")
    first: bytes | None = None
    if content_length is not None and not is_sse:
        # A whole body usually arrives in one frame: answer it in one write. Nothing is written
        # before it is complete, so an agent failing here still gets a clean error status.
        first = await exchange.read()
        if first is not None and len(first) == content_length:
            exchange.sent(first)
            return web.Response(status=exchange.status, body=first, headers=headers)
    if is_sse:
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    response = web.StreamResponse(status=exchange.status, headers=headers)
    if content_length is not None:
        response.content_length = content_length
    await response.prepare(request)
    await _stream_body(request, response, exchange, first, dialect if is_sse else None)
    return response


async def _relay_error(exchange: Exchange, rid: str, dialect: Dialect) -> web.Response:
    """An upstream error: its status and body (wrapped in the dialect's shape if it was not), and its Retry-After."""
    body = upstream_error(dialect, exchange.status, await exchange.read_all(_ERROR_BODY_LIMIT))
    headers = id_headers(dialect, rid)
    headers.update((name, value) for name, value in exchange.head.headers if name.lower() == "retry-after")
    return web.Response(status=exchange.status, body=body, content_type="application/json", headers=headers)


def _response_headers(exchange: Exchange, rid: str) -> tuple[CIMultiDict[str], int | None]:
    """The agent's head as the hub checked it (hub/heads.py: allow-listed names, a numeric content-length)."""
    headers: CIMultiDict[str] = CIMultiDict(_NOSNIFF)
    content_length: int | None = None
    for name, value in exchange.head.headers:
        if name == "content-length":
            content_length = int(value)
        else:
            headers.add(name, value)
    headers["x-request-id"] = rid
    return headers, content_length


async def _stream_body(
    request: web.Request,
    response: web.StreamResponse,
    exchange: Exchange,
    first: bytes | None,
    events: Dialect | None,
) -> None:
    """Copy the body to the client as it arrives (a failure mid-way is the exchange's to remember).

    ``events``: the body is an event stream of this dialect, which a failure ends with its error event.
    """
    try:
        if first is not None:
            await response.write(first)
            exchange.sent(first)
        exchange.deliver_through(_direct_writer(request, response))
        while (chunk := await exchange.read()) is not None:
            await response.write(chunk)
            exchange.sent(chunk)
    except HubError as exc:
        # Bytes already reached the client: no status to change. A stream gets a terminal error
        # event (never a fake [DONE]); a plain body is cut short so the client sees it incomplete.
        log.warning("request %s failed mid-response: %s", exchange.request.request_id, exc.message)
        if events is not None:
            if not getattr(exc, "terminal_sent", False):  # the agent's translator may have ended it already
                await response.write(stream_error(events, exc.code, exc.message))
            await response.write_eof()
        elif request.transport is not None:
            request.transport.close()
        return
    finally:
        exchange.deliver_through(None)
    await response.write_eof()


def _direct_writer(request: web.Request, response: web.StreamResponse) -> Callable[[bytes], bool] | None:
    """Writes the chunks of a chunked response straight to the client's socket, in HTTP/1.1 chunk framing
    (what aiohttp's writer would send), while the socket takes them without backlog; None for any other
    response (a set length, HTTP/1.0, compression), which the relay task writes as it reads."""
    transport = request.transport
    if transport is None or response.compression or response.headers.get("Transfer-Encoding") != "chunked":
        return None

    def write(data: bytes) -> bool:
        if transport.is_closing() or transport.get_write_buffer_size() > _DIRECT_BACKLOG:
            return False  # the relay task writes it, waiting for the client as aiohttp's writer does
        if data:  # an empty chunk would end the body
            transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        return True

    return write
