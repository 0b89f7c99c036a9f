"""Local LLM backends: their model catalogs, and relaying one request to one of them.

The agent forwards only the inference paths in `INFERENCE_PATHS`, to base URLs its owner
configured; nothing in a client's request can name another host or path. Auto-detection and
native protocols (Ollama, LM Studio, vLLM, llama.cpp) plug in here as further `Backend` kinds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import msgspec

from potluck.protocol.agent import BackendInfo, EndMessage, ErrorInfo, HeadMessage, ModelInfo, RequestMessage, Usage
from potluck.protocol.openai import INFERENCE_PATHS
from potluck.protocol.sse import SSEUsageScanner, add_include_usage, usage_from_json

log = logging.getLogger(__name__)

# Never relayed back: hop-by-hop headers, and ones the hub sets itself.
_DROP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-encoding",
        "date",
        "server",
        "set-cookie",
        "x-request-id",
        "access-control-allow-origin",
        "access-control-allow-credentials",
    }
)
_USAGE_BODY_LIMIT = 16 << 20
_CATALOG_TIMEOUT = aiohttp.ClientTimeout(total=5)


class _ModelList(msgspec.Struct):
    class _Model(msgspec.Struct):
        id: str

    data: list[_Model] = []


@dataclass(slots=True)
class Backend:
    """An OpenAI-compatible server the agent relays to."""

    url: str
    kind: str = "openai"
    healthy: bool = False
    models: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        base = self.url.rstrip("/")
        return base[:-3] if base.endswith("/v1") else base

    def info(self) -> BackendInfo:
        return BackendInfo(url=self.url, kind=self.kind, healthy=self.healthy)

    async def refresh(self, http: aiohttp.ClientSession) -> None:
        try:
            async with http.get(self.base + "/v1/models", timeout=_CATALOG_TIMEOUT) as resp:
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                listing = msgspec.json.decode(await resp.read(), type=_ModelList)
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            if self.healthy:
                log.warning("backend %s unreachable: %s", self.url, exc)
            self.healthy = False
            self.models = []
            return
        self.healthy = True
        self.models = [m.id for m in listing.data]


class Catalog:
    """Which backend serves which model. The first backend listing a model wins."""

    def __init__(self, backends: list[Backend]) -> None:
        self.backends = backends
        self._route: dict[str, Backend] = {}
        self._health: list[bool] = []

    async def refresh(self, http: aiohttp.ClientSession) -> bool:
        """Re-read every backend's models; True if what the agent serves changed."""
        await asyncio.gather(*(b.refresh(http) for b in self.backends))
        route: dict[str, Backend] = {}
        for backend in self.backends:
            for model in backend.models:
                route.setdefault(model, backend)
        health = [b.healthy for b in self.backends]
        changed = route != self._route or health != self._health
        self._route = route
        self._health = health
        return changed

    def backend_for(self, model: str) -> Backend | None:
        return self._route.get(model)

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, hot=True, backend=b.url) for m, b in sorted(self._route.items())]

    def infos(self) -> list[BackendInfo]:
        return [b.info() for b in self.backends]


class StreamSink:
    """Where a relay sends its response: implemented by the connection (frames to the hub)."""

    def head(self, head: HeadMessage) -> None:
        raise NotImplementedError

    async def data(self, payload: bytes) -> None:
        """Send body bytes; waits while the hub has granted no credit (backpressure)."""
        raise NotImplementedError


def _failed(req: RequestMessage, status: int, code: str, message: str, *, retriable: bool = False) -> EndMessage:
    return EndMessage(request_id=req.request_id, error=ErrorInfo(status, code, message, retriable))


async def relay(
    http: aiohttp.ClientSession,
    catalog: Catalog,
    req: RequestMessage,
    body: bytes,
    sink: StreamSink,
    now: Callable[[], float] = time.monotonic,
) -> EndMessage:
    """Send one request to the backend serving its model and stream the answer into ``sink``.

    Returns the END message to send. Raises CancelledError when the hub cancels (the backend
    connection is then closed by leaving the request context).
    """
    if req.path not in INFERENCE_PATHS or req.method != "POST":
        return _failed(req, 404, "not_found", f"the agent does not forward {req.method} {req.path}")
    backend = catalog.backend_for(req.model)
    if backend is None:
        return _failed(req, 404, "model_not_found", f"no backend here serves `{req.model}`", retriable=True)
    if req.strip_usage:
        body = add_include_usage(body)
    headers = {"Content-Type": req.headers.get("content-type", "application/json"), "Accept-Encoding": "identity"}
    started = now()
    try:
        async with http.post(backend.base + req.path, data=body, headers=headers) as resp:
            relayed = [(str(k), v) for k, v in resp.headers.items() if k.lower() not in _DROP_HEADERS]
            sink.head(HeadMessage(resp.status, relayed))
            if resp.status < 400 and resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                usage, first_at = await _relay_events(resp, sink, SSEUsageScanner(req.strip_usage), now)
            else:
                usage, first_at = await _relay_body(resp, sink, now, keep=resp.status < 400)
    except aiohttp.ClientConnectorError as exc:
        message = f"cannot connect to the backend: {exc.os_error}"
        return _failed(req, 502, "backend_unavailable", message, retriable=True)
    except aiohttp.ClientPayloadError as exc:
        return _failed(req, 502, "upstream_error", f"the backend broke off its response: {exc}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _failed(req, 502, "upstream_error", f"backend request failed: {exc!r}")
    ttft = None if first_at is None else first_at - started
    return EndMessage(request_id=req.request_id, usage=usage, ttft_s=ttft, total_s=now() - started)


async def _relay_events(
    resp: aiohttp.ClientResponse, sink: StreamSink, scanner: SSEUsageScanner, now: Callable[[], float]
) -> tuple[Usage | None, float | None]:
    """Relay an SSE stream as whole events (whatever arrived together goes as one chunk)."""
    first_at: float | None = None
    async for chunk in resp.content.iter_any():
        if first_at is None:
            first_at = now()
        events = scanner.feed(chunk)
        if events:
            await sink.data(events)
    rest = scanner.flush()
    if rest:
        await sink.data(rest)
    return scanner.usage, first_at


async def _relay_body(
    resp: aiohttp.ClientResponse, sink: StreamSink, now: Callable[[], float], *, keep: bool
) -> tuple[Usage | None, float | None]:
    """Relay a plain body as it arrives; keep a copy (up to a limit) to read its usage at the end."""
    first_at: float | None = None
    kept: list[bytes] = []
    kept_size = 0
    async for chunk in resp.content.iter_any():
        if first_at is None:
            first_at = now()
        if keep and kept_size <= _USAGE_BODY_LIMIT:
            kept.append(chunk)
            kept_size += len(chunk)
        await sink.data(chunk)
    usage = usage_from_json(b"".join(kept)) if keep and kept_size <= _USAGE_BODY_LIMIT else None
    return usage, first_at
