"""Relaying one request to a backend, streaming the answer into a sink (frames to the hub).

The agent forwards only the inference paths in `INFERENCE_PATHS`, to the base URL of a backend
its owner configured or it found on loopback; nothing in a client's request can name another host
or path. OpenAI-shaped answers go through byte for byte; native ones are translated.
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
from potluck.agent.backends.base import BodyTransform, ResponseTranslator
from potluck.agent.catalog import Catalog
from potluck.protocol.agent import EndMessage, ErrorInfo, HeadMessage, RequestMessage, Usage
from potluck.protocol.openai import INFERENCE_PATHS
from potluck.protocol.sse import SSEUsageScanner, add_include_usage, usage_from_json

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
    upstream = backend.upstream(req, body)
    payload = upstream.body
    if upstream.translator is None and req.strip_usage:
        payload = add_include_usage(payload)
    started = now()
    responded = False
    try:
        with catalog.waiting_on(req.model):
            resp = await client.post(backend.base, upstream.path, payload)
            async with resp:
                responded = True
                if upstream.translator is not None:
                    usage, first_at, error = await _relay_translated(resp, sink, upstream.translator, now)
                    if error is not None:
                        return EndMessage(request_id=req.request_id, error=error, usage=usage)
                else:
                    usage, first_at = await _relay_openai(resp, sink, req, now)
    except BackendConnectError as exc:
        message = f"cannot connect to the backend: {exc.os_error}"
        return _failed(req, 502, "backend_unavailable", message, retriable=True)
    except BackendPayloadError as exc:
        return _failed(req, 502, "upstream_error", f"the backend broke off its response: {exc}")
    except BackendError as exc:
        # Before any response the backend never answered: another agent may (retriable).
        code = "upstream_error" if responded else "backend_unavailable"
        return _failed(req, 502, code, f"backend request failed: {exc!r}", retriable=not responded)
    ttft = None if first_at is None else first_at - started
    return EndMessage(request_id=req.request_id, usage=usage, ttft_s=ttft, total_s=now() - started)


async def _relay_openai(
    resp: BackendResponse, sink: StreamSink, req: RequestMessage, now: Callable[[], float]
) -> tuple[Usage | None, float | None]:
    """Relay an OpenAI-shaped answer byte for byte (headers filtered), reading its usage on the way."""
    relayed = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in resp.raw_headers
        if name.lower() not in _DROP_HEADERS
    ]
    sink.head(HeadMessage(resp.status, relayed))
    if resp.status < 400 and resp.content_type.startswith("text/event-stream"):
        usage, first_at, _ = await _relay_through(resp, sink, SSEUsageScanner(req.strip_usage), now)
        return usage, first_at
    return await _relay_body(resp, sink, now, keep=resp.status < 400)


async def _relay_body(
    resp: BackendResponse, sink: StreamSink, now: Callable[[], float], *, keep: bool
) -> tuple[Usage | None, float | None]:
    """Relay a plain body as it arrives; keep a copy (up to a limit) to read its usage at the end."""
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
    if not keep or kept_size > _USAGE_BODY_LIMIT:
        return None, first_at
    return usage_from_json(kept[0] if len(kept) == 1 else b"".join(kept)), first_at


async def _relay_translated(
    resp: BackendResponse, sink: StreamSink, translator: ResponseTranslator, now: Callable[[], float]
) -> tuple[Usage | None, float | None, ErrorInfo | None]:
    """Relay a native answer translated to OpenAI's format; errors become OpenAI error bodies."""
    if resp.status >= 400:
        body = await resp.read(_ERROR_BODY_LIMIT)
        sink.head(HeadMessage(resp.status, [("Content-Type", "application/json")]))
        await sink.data(translator.translate_error(resp.status, body))
        return None, now(), None
    sink.head(HeadMessage(resp.status, [("Content-Type", translator.content_type)]))
    return await _relay_through(resp, sink, translator, now)


async def _relay_through(
    resp: BackendResponse, sink: StreamSink, transform: BodyTransform, now: Callable[[], float]
) -> tuple[Usage | None, float | None, ErrorInfo | None]:
    """Relay a body through a transform (whole SSE events, or native → OpenAI) as it arrives.

    Stops at the first error the transform reports: nothing after it reaches the client.
    """
    first_at: float | None = None
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
    if rest:
        await sink.data(rest)
    return transform.usage, first_at, transform.error
