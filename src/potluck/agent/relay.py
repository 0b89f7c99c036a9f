"""Relaying one request to a backend, streaming the answer into a sink (frames to the hub).

The agent forwards only the inference paths in `INFERENCE_PATHS`, to the base URL of a backend
its owner configured or it found on loopback; nothing in a client's request can name another host
or path. Answers in the client's dialect go through byte for byte; others are translated
(`dialects.select` says which).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from potluck.agent.backend_client import (
    BackendClient,
    BackendConnectError,
    BackendError,
    BackendPayloadError,
    BackendResponse,
)
from potluck.agent.backends.base import Backend, BodyTransform, ResponseTranslator
from potluck.agent.catalog import Catalog
from potluck.agent.counting import count_tokens
from potluck.agent.dialects.select import PASS_THROUGH, PassThrough, RefusedError, counts_here, upstream_for
from potluck.protocol.agent import EndMessage, ErrorInfo, HeadMessage, RequestMessage, Usage
from potluck.protocol.openai import INFERENCE_PATHS

# Never relayed back: hop-by-hop headers, and ones the hub sets itself.
_DROP_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"content-encoding",
        b"date",
        b"server",
        b"set-cookie",
        b"x-request-id",
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
    }
)
_USAGE_BODY_LIMIT = 16 << 20
_ERROR_BODY_LIMIT = 1 << 20


class StreamSink:
    """Where a relay sends its response: implemented by the connection (frames to the hub)."""

    usage: Usage | None = None
    """The usage read so far, so a cancelled request still reports what was delivered."""

    def head(self, head: HeadMessage) -> None:
        raise NotImplementedError

    async def data(self, payload: bytes) -> None:
        """Send body bytes; waits while the hub has granted no credit (backpressure)."""
        raise NotImplementedError


def _failed(req: RequestMessage, status: int, code: str, message: str, *, retriable: bool = False) -> EndMessage:
    return EndMessage(request_id=req.request_id, error=ErrorInfo(status, code, message, retriable))


async def _answer(req: RequestMessage, sink: StreamSink, status: int, body: bytes) -> EndMessage:
    """Answer without the backend's model: a request the translation refuses, a token count."""
    sink.head(HeadMessage(status, [("Content-Type", "application/json")]))
    await sink.data(body)
    return EndMessage(request_id=req.request_id)


async def relay(
    client: BackendClient,
    catalog: Catalog,
    req: RequestMessage,
    body: bytes,
    sink: StreamSink,
    now: Callable[[], float] = time.monotonic,
) -> EndMessage:
    """Send one request to the backend serving its model and stream the answer into ``sink``.

    Returns the END message to send. Raises CancelledError when the hub cancels (the backend
    connection is then closed by leaving the response's context).
    """
    if req.path not in INFERENCE_PATHS or req.method != "POST":
        return _failed(req, 404, "not_found", f"the agent does not forward {req.method} {req.path}")
    backend = catalog.backend_for(req.model)
    if backend is None:
        return _failed(req, 404, "model_not_found", f"no backend here serves `{req.model}`", retriable=True)
    if counts_here(backend, req):
        return await _count(client, backend, req, body, sink)
    try:
        upstream = upstream_for(backend, req, body)
    except RefusedError as exc:
        return await _answer(req, sink, exc.status, exc.body)
    started = now()
    responded = False
    try:
        with catalog.waiting_on(req.model):
            resp = await client.post(backend.base, upstream.path, upstream.body)
            async with resp:
                responded = True
                if upstream.translator is not None:
                    usage, first_at, error = await _relay_translated(resp, sink, upstream.translator, now)
                else:
                    reading = PASS_THROUGH[upstream.dialect]
                    usage, first_at, error = await _relay_native(resp, sink, req, reading, now)
                if error is not None:
                    return EndMessage(request_id=req.request_id, error=error, usage=usage)
    except BackendConnectError as exc:
        message = f"cannot connect to the backend: {exc.os_error}"
        return _failed(req, 502, "backend_unavailable", message, retriable=True)
    except BackendPayloadError as exc:
        # The hub ends the client's stream; the usage read so far is what was delivered.
        error = ErrorInfo(502, "upstream_error", f"the backend broke off its response: {exc}")
        return EndMessage(request_id=req.request_id, error=error, usage=sink.usage)
    except BackendError as exc:
        # Before any response the backend never answered: another agent may (retriable).
        code = "upstream_error" if responded else "backend_unavailable"
        return _failed(req, 502, code, f"backend request failed: {exc!r}", retriable=not responded)
    ttft = None if first_at is None else first_at - started
    return EndMessage(request_id=req.request_id, usage=usage, ttft_s=ttft, total_s=now() - started)


async def _count(
    client: BackendClient, backend: Backend, req: RequestMessage, body: bytes, sink: StreamSink
) -> EndMessage:
    """Answer ``/v1/messages/count_tokens`` for a backend without it (its tokenizer, else an estimate)."""
    try:
        status, counted = await count_tokens(client, backend, req, body)
    except BackendConnectError as exc:
        return _failed(
            req, 502, "backend_unavailable", f"cannot connect to the backend: {exc.os_error}", retriable=True
        )
    return await _answer(req, sink, status, counted)


async def _relay_native(
    resp: BackendResponse, sink: StreamSink, req: RequestMessage, reading: PassThrough, now: Callable[[], float]
) -> tuple[Usage | None, float | None, ErrorInfo | None]:
    """Relay an answer in the client's dialect byte for byte (headers filtered), reading its usage on the way."""
    if resp.status >= 400 and reading.error_body is not None:
        return await _relay_error(resp, sink, reading.error_body, now)
    relayed = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in resp.raw_headers
        if name.lower() not in _DROP_HEADERS
    ]
    sink.head(HeadMessage(resp.status, relayed))
    if resp.status < 400 and resp.content_type.startswith("text/event-stream"):
        return await _relay_through(resp, sink, reading.stream(req), now)
    usage, first_at = await _relay_body(resp, sink, now, reading.body_usage if resp.status < 400 else None)
    return usage, first_at, None


async def _relay_body(
    resp: BackendResponse, sink: StreamSink, now: Callable[[], float], usage_of: Callable[[bytes], Usage | None] | None
) -> tuple[Usage | None, float | None]:
    """Relay a plain body as it arrives; keep a copy (up to a limit) to read its usage at the end (``usage_of``)."""
    keep = usage_of is not None
    first_at: float | None = None
    kept: list[bytes] = []
    kept_size = 0
    while chunk := await resp.read_some():
        if first_at is None:
            first_at = now()
        if keep and kept_size <= _USAGE_BODY_LIMIT:
            kept.append(chunk)
            kept_size += len(chunk)
        await sink.data(chunk)
    if usage_of is None or kept_size > _USAGE_BODY_LIMIT:
        return None, first_at
    return usage_of(kept[0] if len(kept) == 1 else b"".join(kept)), first_at


async def _relay_error(
    resp: BackendResponse, sink: StreamSink, translate: Callable[[int, bytes], bytes], now: Callable[[], float]
) -> tuple[Usage | None, float | None, ErrorInfo | None]:
    """Relay the backend's error answer in the client's dialect (its status kept)."""
    body = await resp.read(_ERROR_BODY_LIMIT)
    sink.head(HeadMessage(resp.status, [("Content-Type", "application/json")]))
    await sink.data(translate(resp.status, body))
    return None, now(), None


async def _relay_translated(
    resp: BackendResponse, sink: StreamSink, translator: ResponseTranslator, now: Callable[[], float]
) -> tuple[Usage | None, float | None, ErrorInfo | None]:
    """Relay an answer translated to the client's dialect; errors become error bodies of that dialect."""
    if resp.status >= 400:
        return await _relay_error(resp, sink, translator.translate_error, now)
    head = HeadMessage(resp.status, [("Content-Type", translator.content_type)])
    if translator.content_type != "text/event-stream":
        return await _relay_whole(resp, sink, translator, head, now)
    sink.head(head)
    return await _relay_through(resp, sink, translator, now)


async def _relay_whole(
    resp: BackendResponse, sink: StreamSink, translator: ResponseTranslator, head: HeadMessage, now: Callable[[], float]
) -> tuple[Usage | None, float | None, ErrorInfo | None]:
    """Translate a whole answer, then relay it: one that cannot be translated ends with an error and no head,
    so the hub still answers with an error status."""
    first_at: float | None = None
    parts: list[bytes] = []
    while chunk := await resp.read_some():
        if first_at is None:
            first_at = now()
        parts.append(translator.feed(chunk))
        if translator.error is not None:
            return translator.usage, first_at, translator.error
    parts.append(translator.finish())
    if translator.error is None:
        sink.head(head)
        body = b"".join(parts)
        if body:
            await sink.data(body)
    return translator.usage, first_at, translator.error


async def _relay_through(
    resp: BackendResponse, sink: StreamSink, transform: BodyTransform, now: Callable[[], float]
) -> tuple[Usage | None, float | None, ErrorInfo | None]:
    """Relay a body through a transform (whole SSE events, or native → the client's dialect) as it arrives.

    Stops at the first error the transform reports: nothing after it reaches the client. A stream that
    breaks off ends with the transform's terminal error event, if it writes one (else the hub ends it).
    """
    first_at: float | None = None
    try:
        while chunk := await resp.read_some():
            if first_at is None:
                first_at = now()
            out = transform.feed(chunk)
            if transform.usage is not None:
                sink.usage = transform.usage
            if out:
                await sink.data(out)
            if transform.error is not None:
                return transform.usage, first_at, transform.error
        rest = transform.finish()
    except BackendPayloadError as exc:
        tail = transform.abort(f"the backend broke off its response: {exc}")
        if not tail:
            raise
        await sink.data(tail)
        return transform.usage, first_at, transform.error
    if rest:
        await sink.data(rest)
    return transform.usage, first_at, transform.error
