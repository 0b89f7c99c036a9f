"""Relaying a client request through the hub's request owner, in any dialect.

Request bodies go to the agent as the client sent them; only the routing fields are decoded.
Responses are written as they arrive, never buffered (error bodies excepted: they are small and
must be checked for the dialect's shape before the status line is committed).

`serve_relay` is the one relay; it writes its answer through an `Answer`, so that the same code serves
a request that came through aiohttp (`relay`, for in-process servers and any route the front server hands
over) and one that came straight from a socket (api/front.py, the hub's own listener).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from potluck.api.context import HUB, request_id
from potluck.api.dialects import id_headers, stream_error, upstream_error
from potluck.hub.auth import ApiKey
from potluck.hub.dispatch import Exchange
from potluck.hub.errors import AuthError, HubError, InvalidRequestError, ShuttingDownError
from potluck.hub.requests import ClientRequest
from potluck.hub.services import HubServices
from potluck.protocol.openai import Dialect, RoutingFields

log = logging.getLogger(__name__)

_decode_routing = msgspec.json.Decoder(RoutingFields).decode
_ERROR_BODY_LIMIT = 1 << 20
_DIRECT_BACKLOG = 1 << 16
"""Bytes a client's socket may hold unsent before chunks go back to the relay task, which waits for the client
to drain it (aiohttp's own writer waits above the same 64 KiB)."""
_NOSNIFF = ("X-Content-Type-Options", "nosniff")
_JSON = ("Content-Type", "application/json")

Headers = list[tuple[str, str]]


class Route(NamedTuple):
    """A relayed route: the backend path it is sent to and how it answers."""

    path: str
    dialect: Dialect
    streams: bool
    """The path can answer as an event stream."""
    hides_usage: bool
    """A stream whose client did not ask for usage gets it hidden (OpenAI's chat and completions: the hub
    always asks for it)."""
    metered: bool = True


ROUTES: dict[str, Route] = {
    route.path: route
    for route in (
        Route("/v1/chat/completions", Dialect.OPENAI, streams=True, hides_usage=True),
        Route("/v1/completions", Dialect.OPENAI, streams=True, hides_usage=True),
        Route("/v1/embeddings", Dialect.OPENAI, streams=False, hides_usage=False),
        Route("/v1/messages", Dialect.ANTHROPIC, streams=True, hides_usage=False),
        # The backend's token count of a Messages request: admitted and placed like one, never charged.
        Route("/v1/messages/count_tokens", Dialect.ANTHROPIC, streams=False, hides_usage=False, metered=False),
        Route("/v1/responses", Dialect.RESPONSES, streams=True, hides_usage=False),
    )
}
"""Every route the hub relays (all ``POST``), by path."""


class Answer(Protocol):
    """Where `serve_relay` writes a response. A write to a client that went away raises ConnectionError."""

    def whole(self, status: int, headers: Headers, body: bytes) -> None:
        """A complete response, in one write."""

    async def begin(self, status: int, headers: Headers, content_length: int | None) -> None:
        """The head of a response whose body follows (chunked when ``content_length`` is None)."""

    def direct(self) -> Callable[[bytes], bool] | None:
        """A writer of body chunks straight to the socket while it takes them without backlog (see
        `Exchange.deliver_through`), or None."""

    async def write(self, data: bytes) -> None:
        """A part of the body, once the client's socket has room for it."""

    async def end(self) -> None:
        """The end of the body."""

    def cut(self) -> None:
        """End a body of known length short: the client sees it incomplete."""


def credential(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, else ``x-api-key``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise AuthError("Authorization header must be `Bearer <key>`")
    return api_key


def authenticate(request: web.Request) -> ApiKey:
    headers = request.headers
    return request.app[HUB].keys.authenticate(credential(headers.get("Authorization"), headers.get("x-api-key")))


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


async def serve_relay(
    hub: HubServices,
    route: Route,
    rid: str,
    key_credential: str | None,
    body: bytes,
    out: Answer,
    *,
    explain: bool = False,
) -> None:
    """Serve one client request of ``route``, its body already read and checked (api/bodies.py), writing the
    answer to ``out``. Errors before anything is written are raised (the caller renders them in the route's
    dialect); a client gone mid-answer is noted on the exchange and ends the call quietly."""
    key = hub.keys.authenticate(key_credential)
    if hub.requests.closing:
        raise ShuttingDownError("The hub is shutting down; retry shortly")
    fields = parse_routing(body)
    client_request = ClientRequest(
        request_id=rid,
        key=key,
        path=route.path,
        body=body,
        model=fields.model or "",
        stream=bool(fields.stream) and route.streams,
        include_usage=not route.hides_usage or bool(fields.stream_options and fields.stream_options.include_usage),
        explain=explain,
        metered=route.metered,
    )
    serving = hub.requests.serve(client_request)
    async with serving as exchange:
        try:
            await _respond(out, exchange, rid, _routing_headers(exchange, serving.admission_headers), route.dialect)
        except (ConnectionError, RuntimeError) as exc:
            # The client went away while we wrote (a closing transport raises ConnectionResetError or, in
            # aiohttp, RuntimeError); nothing left to answer.
            exchange.client_gone = True
            log.debug("client of %s gone: %s", rid, exc)


def _routing_headers(exchange: Exchange, admission: dict[str, str]) -> Headers:
    """Rate-limit headers, plus how long the request queued and, for admins who asked, why this agent."""
    headers = list(admission.items())
    slot = exchange.slot
    if slot.position:
        headers.append(("x-potluck-queue-position", str(slot.position)))
        headers.append(("x-potluck-queue-wait-ms", str(round(slot.queued_s * 1000))))
    if exchange.explanation is not None:
        route = exchange.explanation.as_dict()
        route["served_by"] = {"agent_id": slot.placement.agent_id, "model": slot.placement.model}
        headers.append(("x-potluck-route", msgspec.json.encode(route).decode()))
    return headers


async def _respond(out: Answer, exchange: Exchange, rid: str, extra_headers: Headers, dialect: Dialect) -> None:
    """Write the exchange to the client."""
    if exchange.status >= 400:
        await _relay_error(out, exchange, rid, dialect)
        return
    # The agent's head as the hub checked it (hub/heads.py: allow-listed names, a numeric content-length).
    headers: Headers = [_NOSNIFF]
    content_length: int | None = None
    is_sse = False
    for name, value in exchange.head.headers:
        if name == "content-length":
            content_length = int(value)
        else:
            headers.append((name, value))
            is_sse = is_sse or (name == "content-type" and value.startswith("text/event-stream"))
    headers.extend(extra_headers)
    headers.extend(id_headers(dialect, rid).items())
    first: bytes | None = None
    if content_length is not None and not is_sse:
        # A whole body usually arrives in one frame: answer it in one write. Nothing is written
        # before it is complete, so an agent failing here still gets a clean error status.
        first = await exchange.read()
        if first is not None and len(first) == content_length:
            exchange.sent(first)
            out.whole(exchange.status, headers, first)
            return
    if is_sse:
        headers.append(("Cache-Control", "no-cache"))
        headers.append(("X-Accel-Buffering", "no"))
    await out.begin(exchange.status, headers, content_length)
    await _stream_body(out, exchange, first, dialect if is_sse else None)


async def _relay_error(out: Answer, exchange: Exchange, rid: str, dialect: Dialect) -> None:
    """An upstream error: its status and body (wrapped in the dialect's shape if it was not), and its Retry-After."""
    body = upstream_error(dialect, exchange.status, await exchange.read_all(_ERROR_BODY_LIMIT))
    headers: Headers = [_JSON, *id_headers(dialect, rid).items()]
    headers.extend((name, value) for name, value in exchange.head.headers if name.lower() == "retry-after")
    out.whole(exchange.status, headers, body)


async def _stream_body(out: Answer, exchange: Exchange, first: bytes | None, events: Dialect | None) -> None:
    """Copy the body to the client as it arrives (a failure mid-way is the exchange's to remember).

    ``events``: the body is an event stream of this dialect, which a failure ends with its error event.
    """
    try:
        if first is not None:
            await out.write(first)
            exchange.sent(first)
        exchange.deliver_through(out.direct())
        while (chunk := await exchange.read()) is not None:
            await out.write(chunk)
            exchange.sent(chunk)
    except HubError as exc:
        # Bytes already reached the client: no status to change. A stream gets a terminal error
        # event (never a fake [DONE]); a plain body is cut short so the client sees it incomplete.
        log.warning("request %s failed mid-response: %s", exchange.request.request_id, exc.message)
        if events is not None:
            if not getattr(exc, "terminal_sent", False):  # the agent's translator may have ended it already
                await out.write(stream_error(events, exc.code, exc.message))
            await out.end()
        else:
            out.cut()
        return
    finally:
        exchange.deliver_through(None)
    await out.end()


def direct_writer(transport: asyncio.WriteTransport) -> Callable[[bytes], bool]:
    """Writes chunks straight to the client's socket, in HTTP/1.1 chunk framing, while the socket takes them
    without backlog; once it does not (or is closing), answers False and the relay task writes the chunk,
    waiting for the client."""
    write_buffer_size, is_closing, writelines = (
        transport.get_write_buffer_size,
        transport.is_closing,
        transport.writelines,
    )

    def write(data: bytes) -> bool:
        if is_closing() or write_buffer_size() > _DIRECT_BACKLOG:
            return False
        if data:  # an empty chunk would end the body
            writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        return True

    return write


# -- through aiohttp -------------------------------------------------------------------------------------------


class _AiohttpAnswer:
    """An `Answer` as aiohttp's response objects."""

    __slots__ = ("request", "response")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None

    def whole(self, status: int, headers: Headers, body: bytes) -> None:
        self.response = web.Response(status=status, body=body, headers=CIMultiDict(headers))

    async def begin(self, status: int, headers: Headers, content_length: int | None) -> None:
        self.response = response = web.StreamResponse(status=status, headers=CIMultiDict(headers))
        if content_length is not None:
            response.content_length = content_length
        await response.prepare(self.request)

    def direct(self) -> Callable[[bytes], bool] | None:
        """Only for a chunked response (what aiohttp's writer would send); None for any other (a set length,
        HTTP/1.0, compression), which the relay task writes as it reads."""
        transport, response = self.request.transport, self.response
        if transport is None or response is None or response.compression:
            return None
        return direct_writer(transport) if response.headers.get("Transfer-Encoding") == "chunked" else None

    async def write(self, data: bytes) -> None:
        await self._begun().write(data)

    async def end(self) -> None:
        await self._begun().write_eof()

    def _begun(self) -> web.StreamResponse:
        if self.response is None:
            raise TypeError("a body written before its head")
        return self.response

    def cut(self) -> None:
        if self.request.transport is not None:
            self.request.transport.close()


async def relay(request: web.Request, route: Route) -> web.StreamResponse:
    """Serve one client request of ``route`` that came through aiohttp."""
    out = _AiohttpAnswer(request)
    headers = request.headers
    await serve_relay(
        request.app[HUB],
        route,
        request_id(request),
        credential(headers.get("Authorization"), headers.get("x-api-key")),
        await request.read(),
        out,
        explain=headers.get("x-potluck-explain") == "1",
    )
    return out.response if out.response is not None else web.Response(status=499)  # the client went away


def relay_handler(path: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of the relayed route at ``path``."""
    route = ROUTES[path]

    async def handle(request: web.Request) -> web.StreamResponse:
        return await relay(request, route)

    return handle
