"""The backend adapter interface, and the generic OpenAI-compatible server every other kind extends.

A `Backend` knows one local server: `refresh` reads what it serves (models, which are loaded in
VRAM, its load, which client dialects it speaks itself) and `upstream` says how to send it one
OpenAI request (the path, the body, and whether the answer needs translating). The base class is
the generic OpenAI-compatible server: it lists ``/v1/models``, reports every model hot (it cannot
tell), passes OpenAI requests through untouched, and speaks no other dialect natively (requests in
Anthropic's or the Responses API's are translated to chat completions: `agent.dialects.select`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import msgspec

from potluck.protocol.agent import BackendInfo, ErrorInfo, ModelInfo, RequestMessage, Usage
from potluck.protocol.openai import Dialect

log = logging.getLogger(__name__)

PROBE_TIMEOUT = aiohttp.ClientTimeout(total=3, sock_connect=1)


class BodyTransform(Protocol):
    """Sees a response body once as it streams: returns what to relay, picks out usage and errors."""

    @property
    def usage(self) -> Usage | None: ...

    @property
    def error(self) -> ErrorInfo | None:
        """An error the backend reported inside a response that had already started."""

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...

    def abort(self, message: str) -> bytes:
        """The backend's answer broke off: the terminal error event that ends the client's stream in its dialect
        (then ``error`` says ``terminal_sent``), or b"" when the hub is to end it."""
        ...


class ResponseTranslator(BodyTransform, Protocol):
    """Turns a backend's native response bytes into OpenAI's, as they stream."""

    content_type: str

    def translate_error(self, status: int, body: bytes) -> bytes:
        """A native error body in OpenAI's shape."""
        ...


@dataclass(slots=True)
class Upstream:
    """How to send one request to the backend."""

    path: str
    body: bytes
    translator: ResponseTranslator | None = None
    """None: the answer is in the client's dialect already and goes through byte for byte."""
    dialect: Dialect = Dialect.OPENAI
    """The client's dialect, which an answer passed through speaks (how to read its usage and errors)."""


class _ModelList(msgspec.Struct):
    class _Model(msgspec.Struct):
        id: str
        max_model_len: int | None = None
        meta: dict[str, Any] | None = None

    data: list[_Model] = []


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    """GET a JSON document; raises aiohttp.ClientError/TimeoutError/ValueError on any failure."""
    async with http.get(url, timeout=PROBE_TIMEOUT) as resp:
        if resp.status != 200:
            raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
        return msgspec.json.decode(await resp.read())


async def probe_json(http: aiohttp.ClientSession, url: str, body: object | None = None) -> tuple[int, Any]:
    """GET (or POST ``body`` as JSON to) a URL: its status, and its JSON (None if the answer is not JSON).

    Raises aiohttp.ClientError/TimeoutError when no answer came."""
    data = None if body is None else msgspec.json.encode(body)
    headers = None if body is None else {"Content-Type": "application/json"}
    method = "GET" if body is None else "POST"
    async with http.request(method, url, data=data, headers=headers, timeout=PROBE_TIMEOUT) as resp:
        raw = await resp.read()
    try:
        return resp.status, msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return resp.status, None


async def get_text(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url, timeout=PROBE_TIMEOUT) as resp:
        if resp.status != 200:
            raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
        return await resp.text()


FETCH_ERRORS = (aiohttp.ClientError, TimeoutError, ValueError, msgspec.DecodeError, msgspec.ValidationError)


class Backend:
    """A generic OpenAI-compatible server."""

    kind = "openai"

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.healthy = False
        self.version: str | None = None
        self.models: list[ModelInfo] = []
        self.running: int | None = None
        self.waiting: int | None = None
        self.slots: int | None = None
        self.kv_cache_usage: float | None = None
        self.native_paths: frozenset[str] = frozenset()
        """The client dialects' paths this backend serves itself (passed through, not translated)."""
        self._probed: frozenset[str] | None = None
        """What a kind that asks the backend found it serves natively; None until it has a definite answer."""

    @property
    def base(self) -> str:
        return self.url[:-3] if self.url.endswith("/v1") else self.url

    def info(self) -> BackendInfo:
        return BackendInfo(
            url=self.url,
            kind=self.kind,
            healthy=self.healthy,
            version=self.version,
            running=self.running,
            waiting=self.waiting,
            slots=self.slots,
            kv_cache_usage=self.kv_cache_usage,
            native_paths=sorted(self.native_paths),
        )

    async def refresh(self, http: aiohttp.ClientSession) -> None:
        """Re-read models and load. A backend that does not answer is unhealthy and serves nothing."""
        try:
            await self._refresh(http)
        except FETCH_ERRORS as exc:
            if self.healthy:
                log.warning("backend %s (%s) unreachable: %r", self.url, self.kind, exc)
            self.healthy = False
            self.models = []
            self.running = self.waiting = self.slots = None
            self.kv_cache_usage = None
            self.native_paths = frozenset()
            self._probed = None  # it may come back as another build: ask again
            return
        self.healthy = True
        self.native_paths = await self._native_paths(http)

    async def _refresh(self, http: aiohttp.ClientSession) -> None:
        self.models = await self.openai_models(http)

    async def _native_paths(self, http: aiohttp.ClientSession) -> frozenset[str]:
        """Which client dialects' paths to pass through. A generic OpenAI-compatible server: none (every
        Anthropic or Responses request is translated to chat completions, which any such server speaks)."""
        return frozenset()

    async def openai_models(self, http: aiohttp.ClientSession, *, hot: bool = True) -> list[ModelInfo]:
        listing = msgspec.convert(await get_json(http, self.base + "/v1/models"), _ModelList)
        models = []
        for m in listing.data:
            context = m.max_model_len
            if context is None and m.meta is not None and isinstance(m.meta.get("n_ctx"), int):
                context = m.meta["n_ctx"]
            models.append(ModelInfo(id=m.id, hot=hot, backend=self.url, context_length=context))
        return models

    def upstream(self, req: RequestMessage, body: bytes, fields: Mapping[str, Any] | None = None) -> Upstream:
        """How to send this request here. The generic server takes OpenAI requests as they are."""
        return Upstream(path=req.path, body=body)
