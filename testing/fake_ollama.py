"""A faithful fake of Ollama's HTTP server (native `/api/*` and its OpenAI-compatible `/v1/*`), for tests.

`FakeOllama` builds a real aiohttp application shaped as /work/shared/reference/backends.md section 5.2 says
(and, where that is silent, as Ollama's `server/routes.go`, `api/types.go` and `middleware/openai.go` do):

- utility: `GET|HEAD /` (`Ollama is running`), `GET|HEAD /api/version`;
- models: `GET|HEAD /api/tags`, `GET /api/ps`, `POST /api/show`;
- inference: `POST /api/generate`, `POST /api/chat` (NDJSON streams by default), `POST /api/embed`,
  `POST /api/embeddings` (legacy);
- OpenAI layer: `GET /v1/models`, `GET /v1/models/{model}`, `POST /v1/chat/completions`, `POST /v1/completions`,
  `POST /v1/embeddings` (SSE streams ending in `data: [DONE]`);
- management, recorded so tests can prove nobody calls them: `POST /api/pull`, `DELETE|POST /api/delete`,
  `POST /api/create`, `POST /api/copy`, `POST /api/push` (pull and delete do change the model list).

The model state is a small scheduler: the pulled models (`models`), the models resident in VRAM (`loaded`,
with an expiry from `keep_alive`, 5m by default), at most `num_parallel` requests generating per model (the rest
queue in order), and cold loads: a request for a model that is not loaded waits `load_delay` seconds, then the
model appears in `/api/ps`. With `max_loaded` set (OLLAMA_MAX_LOADED_MODELS), a cold load first evicts the least
recently used resident model that no request is using or waiting for; when every resident model is in use, the
load waits until one is idle (Ollama picks a victim and waits for its requests to finish; waiting for the first
idle one is close enough and never cuts a running request short). Tests may change the state and every knob at
any time, from any thread.

Every request is recorded (`RequestRecord`), client disconnects included. Run it in a thread of its own
(`with FakeOllama().running() as url:`), in any aiohttp runner (`FakeOllama().make_app()`; pass
`handler_cancellation=True` so that waits end at once when the client goes away), or as a process:

    python -m testing.fake_ollama --port 0 [--models a,b] [--loaded a] [--load-delay S] [--token-delay S]
                                        [--max-loaded N]

which prints one line, `listening http://127.0.0.1:PORT`, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import math
import random
import re
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from testing import recording
from testing.serving import MAX_BODY_BYTES, FakeServer, serve_forever

DEFAULT_PORT = 11434
EMBEDDING_DIM = 8
"""Length of the fake embedding vectors (`dimensions` may shorten them)."""
KEEP_ALIVE_FOREVER_NS = 2**63 - 1
"""What a negative `keep_alive` becomes (Go's `math.MaxInt64` nanoseconds: the model never expires)."""
DEFAULT_KEEP_ALIVE_NS = 5 * 60 * 1_000_000_000
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
RUNNER_ERROR = (
    "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, "
    "check ollama server logs for details"
)
SYSTEM_FINGERPRINT = "fp_ollama"

_NS = 1_000_000_000
_DEFAULT_REGISTRY = "registry.ollama.ai"
_NDJSON = "application/x-ndjson"
_GIN_JSON = "application/json; charset=utf-8"
_SSE_HEADERS = {"Content-Type": "text/event-stream"}
_DONE_FRAME = b"data: [DONE]\n\n"
# How often a wait for a slot or a load re-checks the queue (and the connection).
_SLOT_POLL_S = 0.005
# Nanoseconds the fake "spends" per prompt token and at least per generated token (omitempty: never 0 if counted).
_PROMPT_EVAL_NS_PER_TOKEN = 250_000
_MIN_EVAL_NS_PER_TOKEN = 1_000

_T = TypeVar("_T")
_encode = msgspec.json.encode
_decode = msgspec.json.decode


@dataclass(eq=False)
class RequestRecord(recording.RequestRecord):
    """One request the fake received, updated while it is answered (from the server's thread)."""

    model: str | None = None
    """The pulled model the request resolved to (`llama3.2:latest` for `llama3.2`), once known."""
    options: dict[str, Any] | None = None
    """The native `options` the model runs with; for `/v1` requests, as Ollama translates them."""
    cold_load: bool = False
    """This request found its model unloaded and started loading it (`load_delay`)."""
    completed_at: float | None = None

    def mark_completed(self) -> None:
        self.completed_at = time.monotonic()
        self.completed = True


class _BadRequestError(Exception):
    """A 400 before any output; `message` is Ollama's error text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class _Card:
    """A pulled model, as /api/tags and /api/show describe it."""

    name: str
    digest: str
    modified_ns: int
    size: int
    family: str
    parameter_size: str
    parameter_count: int
    quantization: str
    embedding: bool

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }


@dataclass(slots=True)
class _Resident:
    """A model in VRAM."""

    context_length: int
    expires_ns: int
    """Wall clock (`time.time_ns()`) when it unloads, once no request uses it."""
    in_use: int = 0
    last_used: float = 0.0
    """`time.monotonic()` when a request last took or released it (eviction picks the oldest)."""


@dataclass(slots=True)
class _Loading:
    ready_at: float
    """`time.monotonic()` when the load completes."""
    context_length: int
    keep_ns: int


@dataclass(frozen=True, slots=True)
class _Early:
    """A complete native answer decided before any generation: an error, or a load/unload reply."""

    status: int
    payload: dict[str, Any]


@dataclass(slots=True, eq=False)
class _Job:
    """One request using a model: what it holds (released by `_finish`) and what it generates."""

    start_ns: int
    model: str = ""
    """The name as the client wrote it (Ollama echoes it back)."""
    name: str = ""
    chat: bool = False
    prompt_tokens: int = 0
    tokens: int = 0
    done_reason: str = "stop"
    raw: bool = False
    keep_ns: int = DEFAULT_KEEP_ALIVE_NS
    loaded_ns: int = 0
    eval_start_ns: int = 0
    holds_model: bool = False
    holds_slot: bool = False


_Answer = Callable[[web.Request, RequestRecord], Awaitable[web.StreamResponse]]


class FakeOllama(FakeServer[RequestRecord, _BadRequestError]):
    """A scripted Ollama server; see the module docstring.

    Knobs (plain attributes, settable at any time from any thread): `chunks`, `token_delay`, `load_delay`,
    `num_parallel`, `max_loaded`, `max_queue`, `keep_alive`, `version`, and for failure tests `fail_after`,
    `error_after`, `error_message`, `status`, `hang`. The failure knobs act only on inference requests (generate, chat,
    embed, embeddings and their `/v1` forms), in this order: `hang`, `status`, then the request itself.
    """

    def __init__(
        self,
        models: Sequence[str] = ("llama3.2:latest",),
        *,
        loaded: Sequence[str] = (),
        version: str = "0.12.3",
        load_delay: float = 0.0,
        token_delay: float = 0.0,
        chunks: int = 6,
        num_parallel: int = 1,
        size_bytes: int = 2_000_000_000,
        context_length: int = 4096,
        max_loaded: int | None = None,
    ) -> None:
        super().__init__(_BadRequestError)
        if load_delay < 0 or token_delay < 0 or chunks < 0 or num_parallel < 1 or size_bytes < 0:
            raise ValueError("delays, chunks and size_bytes must be >= 0 and num_parallel >= 1")
        if max_loaded is not None and max_loaded < 1:
            raise ValueError("max_loaded must be >= 1 (or None: no limit)")
        if context_length < 1:
            raise ValueError("context_length must be >= 1")
        self.version = version
        self.load_delay = load_delay
        """Seconds a cold load takes (the request waits, then the model appears in /api/ps)."""
        self.token_delay = token_delay
        """Seconds between two content chunks (each one then written on its own)."""
        self.chunks = chunks
        """Content tokens per answer, "tok0 ", "tok1 ", ...; a smaller `options.num_predict` cuts them ("length")."""
        self.num_parallel = num_parallel
        """Requests one model generates at once (OLLAMA_NUM_PARALLEL); the others wait in order."""
        self.max_loaded = max_loaded
        """Models resident or loading at once (OLLAMA_MAX_LOADED_MODELS); None: no limit. A cold load beyond it
        evicts the least recently used idle model, or waits for one to become idle."""
        self.evictions: list[str] = []
        """Models unloaded to make room for a cold load (or an explicit `load`), in order."""
        self.max_queue = 512
        """Requests that may wait for a load or a slot (OLLAMA_MAX_QUEUE); beyond it, 503 `BUSY_MESSAGE`."""
        self.keep_alive: float | str = "5m"
        """Default `keep_alive` (OLLAMA_KEEP_ALIVE): seconds or a Go duration; negative means forever."""
        self.size_bytes = size_bytes
        self.context_length = context_length
        """The context a model loads with (OLLAMA_CONTEXT_LENGTH) unless `options.num_ctx` asks otherwise."""
        self.fail_after: int | None = None
        """Close the connection after this many content chunks (streams); without streaming, answer nothing."""
        self.error_after: int | None = None
        """After this many content chunks, fail the way a crashed runner does: a last `{"error": ...}` line
        (status already 200); without streaming, a 500."""
        self.error_message: str = RUNNER_ERROR
        self.status: int | None = None
        """Answer this HTTP error status, in Ollama's error shape (OpenAI's on /v1), before anything else."""
        self.hang: bool = False
        """Never answer; wait until the client disconnects."""
        self._cards: dict[str, _Card] = {}
        self._resident: dict[str, _Resident] = {}
        self._loading: dict[str, _Loading] = {}
        self._queues: dict[str, deque[object]] = {}
        self._wanted: dict[str, int] = {}
        """Requests waiting for each model to load: it is not idle for eviction until they hold it."""
        self._active: dict[str, int] = {}
        self._waiting = 0
        created = time.time_ns()
        for name in models:
            self._add_card(name, created)
        for name in loaded:
            self.load(name)

    # ------------------------------------------------------------------ model state (any thread)

    @property
    def models(self) -> tuple[str, ...]:
        """Pulled model names (`name:tag`), oldest first."""
        with self._lock:
            return tuple(self._cards)

    @property
    def waiting(self) -> int:
        """Requests waiting for a model to load or for a slot (what `max_queue` bounds)."""
        with self._lock:
            return self._waiting

    @property
    def loaded(self) -> tuple[str, ...]:
        """Names of the models in VRAM, as /api/ps lists them (latest expiry first)."""
        with self._lock:
            self._refresh_locked()
            return tuple(sorted(self._resident, key=lambda n: -self._resident[n].expires_ns))

    def resolve(self, name: str) -> str | None:
        """The pulled model a request naming `name` uses (`llama3.2` -> `llama3.2:latest`), or None."""
        wanted = normalize_name(name).lower()
        with self._lock:
            return next((n for n in self._cards if n.lower() == wanted), None)

    def pull(self, name: str) -> str:
        """Add a model (or refresh its modified_at); return its full name."""
        full = normalize_name(name)
        if not full:
            raise ValueError("a model needs a name")
        with self._lock:
            existing = self.resolve(full)
            self._cards.pop(existing or full, None)
            self._add_card(existing or full, time.time_ns())
        self._changed()
        return existing or full

    def delete(self, name: str) -> str:
        """Remove a pulled model (and unload it); KeyError when it is not pulled."""
        with self._lock:
            full = self._require(name)
            del self._cards[full]
            self._resident.pop(full, None)
            self._loading.pop(full, None)
        self._changed()
        return full

    def load(self, name: str, *, keep_alive: float | str | None = None, context_length: int | None = None) -> str:
        """Put a pulled model in VRAM at once (no `load_delay`); KeyError when it is not pulled.

        Under `max_loaded` it evicts idle models (least recently used first) to make room; when all are in use,
        it loads anyway, beyond the limit: the caller asked for this state.
        """
        keep_ns = self._keep_ns(parse_keep_alive(keep_alive))
        with self._lock:
            full = self._require(name)
            self._loading.pop(full, None)
            resident = self._resident.get(full)
            ctx = context_length or self.context_length
            if resident is None:
                self._make_room_locked(full)
                self._resident[full] = _Resident(ctx, time.time_ns() + keep_ns, last_used=time.monotonic())
            else:
                resident.context_length = ctx
                resident.expires_ns = time.time_ns() + keep_ns
        self._changed()
        return full

    def unload(self, name: str) -> bool:
        """Drop a model from VRAM (requests using it finish anyway); False when it was not loaded."""
        with self._lock:
            full = self.resolve(name)
            was = full is not None and (self._resident.pop(full, None) is not None)
            if full is not None:
                self._loading.pop(full, None)
        self._changed()
        return was

    def _require(self, name: str) -> str:
        full = self.resolve(name)
        if full is None:
            raise KeyError(f"model {name!r} is not pulled")
        return full

    def _add_card(self, name: str, modified_ns: int) -> None:
        full = normalize_name(name)
        if not full:
            raise ValueError("a model needs a name")
        embedding = "embed" in full.lower()
        tag = full.rsplit(":", 1)[1].lower()
        size_match = re.match(r"(\d+(?:\.\d+)?)b\b", tag)
        if embedding:
            family, parameter_size, quantization = "nomic-bert", "137M", "F16"
        else:
            family, quantization = "llama", "Q4_K_M"
            parameter_size = f"{size_match[1]}B" if size_match else "3.2B"
        count = int(float(parameter_size[:-1]) * (1e6 if parameter_size.endswith("M") else 1e9))
        self._cards[full] = _Card(
            name=full,
            digest=hashlib.sha256(full.encode()).hexdigest(),
            modified_ns=modified_ns,
            size=self.size_bytes,
            family=family,
            parameter_size=parameter_size,
            parameter_count=count,
            quantization=quantization,
            embedding=embedding,
        )

    def _keep_ns(self, requested: int | None) -> int:
        if requested is not None:
            return requested
        default = parse_keep_alive(self.keep_alive)
        return DEFAULT_KEEP_ALIVE_NS if default is None else default

    def _make_room_locked(self, name: str) -> bool:
        """Evict idle residents (least recently used first) until `name` may load under `max_loaded`;
        False when too many are busy or loading."""
        limit = self.max_loaded
        if limit is None:
            return True
        while len(self._resident) + len(self._loading) >= limit:
            idle = [
                (r.last_used, n)
                for n, r in self._resident.items()
                if r.in_use <= 0 and not self._wanted.get(n) and n != name
            ]
            if not idle:
                return False
            victim = min(idle)[1]
            del self._resident[victim]
            self.evictions.append(victim)
        return True

    def _refresh_locked(self) -> None:
        """Finish due loads and drop expired idle models (the scheduler's timers, applied lazily)."""
        now_m, now = time.monotonic(), time.time_ns()
        for name, loading in list(self._loading.items()):
            if now_m >= loading.ready_at:
                del self._loading[name]
                if name in self._cards:
                    self._resident[name] = _Resident(loading.context_length, now + loading.keep_ns, last_used=now_m)
        for name, resident in list(self._resident.items()):
            if resident.in_use <= 0 and resident.expires_ns <= now:
                del self._resident[name]

    def make_app(self) -> web.Application:
        """A new aiohttp application serving this fake (records, state and knobs are the fake's)."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        routes: list[tuple[str, str, _Answer]] = [
            ("GET", "/", self._root),
            ("GET", "/api/version", self._version),
            ("GET", "/api/tags", self._tags),
            ("GET", "/api/ps", self._ps),
            ("POST", "/api/show", self._show),
            ("POST", "/api/generate", self._generate),
            ("POST", "/api/chat", self._chat),
            ("POST", "/api/embed", self._embed),
            ("POST", "/api/embeddings", self._embeddings_legacy),
            ("POST", "/api/pull", self._pull),
            ("DELETE", "/api/delete", self._delete),
            ("POST", "/api/delete", self._delete),
            ("POST", "/api/create", self._create),
            ("POST", "/api/copy", self._copy),
            ("POST", "/api/push", self._push),
            ("GET", "/v1/models", self._v1_models),
            ("GET", "/v1/models/{model:.+}", self._v1_model),
            ("POST", "/v1/chat/completions", self._v1_chat),
            ("POST", "/v1/completions", self._v1_completions),
            ("POST", "/v1/embeddings", self._v1_embeddings),
        ]
        for method, path, answer in routes:
            if method == "GET":
                app.router.add_get(path, self._handler(answer))  # HEAD too, as Ollama's gin routes
            else:
                app.router.add_route(method, path, self._handler(answer))
        app.router.add_route("*", "/{path:.*}", self._handler(self._unknown_route))
        app.on_shutdown.append(self._on_shutdown)
        return app

    # ------------------------------------------------------------------ request bookkeeping

    def _reject(self, request: web.Request, exc: _BadRequestError) -> web.Response:
        error = _openai_error if request.path.startswith("/v1/") else _native_error
        return error(400, exc.message)

    def _begin(self, request: web.Request, body: bytes) -> RequestRecord:
        rec = RequestRecord.of(next(self._ids), request, body)
        with self._lock:
            self._in_flight += 1
            self.records.append(rec)
        self._changed()
        return rec

    # ------------------------------------------------------------------ utility and model routes

    async def _root(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._send(request, rec, web.Response(text="Ollama is running", content_type="text/plain"))

    async def _version(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._send(request, rec, _native({"version": self.version}))

    async def _tags(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        with self._lock:
            cards = sorted(self._cards.values(), key=lambda c: -c.modified_ns)  # newest first (stable)
        models = [
            {
                "name": c.name,
                "model": c.name,
                "modified_at": rfc3339(c.modified_ns, utc=False),
                "size": c.size,
                "digest": c.digest,
                "details": c.details(),
            }
            for c in cards
        ]
        return await self._send(request, rec, _native({"models": models}))

    async def _ps(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        with self._lock:
            self._refresh_locked()
            rows = [(self._cards[n], r.expires_ns, r.context_length) for n, r in self._resident.items()]
        rows.sort(key=lambda row: -row[1])  # longest remaining first
        models = [
            {
                "name": card.name,
                "model": card.name,
                "size": card.size,
                "digest": card.digest,
                "details": card.details(),
                "expires_at": rfc3339(expires, utc=False),
                "size_vram": card.size,
                "context_length": ctx,
            }
            for card, expires, ctx in rows
        ]
        return await self._send(request, rec, _native({"models": models}))

    async def _show(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body = _parse_native(rec)
        model = body.get("model") or body.get("name")
        if not model or not isinstance(model, str):
            return await self._send(request, rec, _native_error(400, "model is required"))
        card = self._card(model)
        if card is None:
            return await self._send(request, rec, _native_error(404, f"model '{model}' not found"))
        rec.model = card.name
        arch = card.family
        tokens = ["<|begin_of_text|>", "<|end_of_text|>", "!", '"', "#", "$", "%"] if body.get("verbose") else []
        model_info: dict[str, Any] = {
            "general.architecture": arch,
            "general.basename": card.name.split(":")[0].rsplit("/", 1)[-1],
            "general.file_type": 15,
            "general.parameter_count": card.parameter_count,
            "general.quantization_version": 2,
            f"{arch}.block_count": 28,
            f"{arch}.context_length": self.context_length,
            f"{arch}.embedding_length": 3072,
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [1] * len(tokens),
        }
        template = "{{ .Prompt }}" if card.embedding else "{{ if .System }}{{ .System }}\n{{ end }}{{ .Prompt }}"
        parameters = "" if card.embedding else f'{"stop":<30} "<|eot_id|>"'
        modelfile = (
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this, replace FROM with:\n"
            f"# FROM {card.name}\n\n"
            f"FROM /root/.ollama/models/blobs/sha256-{card.digest}\n"
            f'TEMPLATE """{template}"""\n'
            + ("" if card.embedding else 'PARAMETER stop "<|eot_id|>"\n')
            + 'LICENSE """Fake model license for tests."""\n'
        )
        payload: dict[str, Any] = {
            "license": "Fake model license for tests.",
            "modelfile": modelfile,
            "parameters": parameters,
            "template": template,
            "details": card.details(),
            "model_info": model_info,
            "capabilities": ["embedding"] if card.embedding else ["completion"],
            "modified_at": rfc3339(card.modified_ns, utc=False),
        }
        if not parameters:
            del payload["parameters"]  # omitempty
        return await self._send(request, rec, _native(payload))

    def _card(self, name: str) -> _Card | None:
        full = self.resolve(name)
        with self._lock:
            return None if full is None else self._cards.get(full)

    async def _unknown_route(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        # gin's plain-text answers (HandleMethodNotAllowed is on in Ollama's router).
        known = request.path in _KNOWN_PATHS or request.path.startswith("/v1/models/")
        if known:
            resp = web.Response(status=405, text="405 method not allowed", content_type="text/plain")
        else:
            resp = web.Response(status=404, text="404 page not found", content_type="text/plain")
        return await self._send(request, rec, resp)

    # ------------------------------------------------------------------ management routes (recorded, inert)

    async def _pull(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body = _parse_native(rec)
        name = body.get("model") or body.get("name")
        if not name or not isinstance(name, str) or not normalize_name(name):
            return await self._send(request, rec, _native_error(400, "invalid model name"))
        rec.model = full = self.pull(name)
        card = self._card(full)
        assert card is not None
        progress: list[dict[str, Any]] = [
            {"status": "pulling manifest"},
            {"status": f"pulling {card.digest[:12]}", "digest": f"sha256:{card.digest}", "total": card.size},
            {
                "status": f"pulling {card.digest[:12]}",
                "digest": f"sha256:{card.digest}",
                "total": card.size,
                "completed": card.size,
            },
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"},
        ]
        return await self._progress(request, rec, body, progress)

    async def _delete(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body = _parse_native(rec)
        name = body.get("model") or body.get("name")
        if not name or not isinstance(name, str):
            return await self._send(request, rec, _native_error(400, f'name "{name or ""}" is invalid'))
        try:
            rec.model = self.delete(name)
        except KeyError:
            return await self._send(request, rec, _native_error(404, f"model '{name}' not found"))
        return await self._send(request, rec, web.Response(status=200))

    async def _create(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body = _parse_native(rec)
        if not (body.get("model") or body.get("name")):
            return await self._send(request, rec, _native_error(400, "model is required"))
        progress = [{"status": "using existing layer sha256:" + "0" * 64}, {"status": "writing manifest"}]
        return await self._progress(request, rec, body, [*progress, {"status": "success"}])

    async def _copy(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        _parse_native(rec)
        return await self._send(request, rec, web.Response(status=200))

    async def _push(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body = _parse_native(rec)
        if not (body.get("model") or body.get("name")):
            return await self._send(request, rec, _native_error(400, "model is required"))
        progress = [{"status": "retrieving manifest"}, {"status": "pushing manifest"}, {"status": "success"}]
        return await self._progress(request, rec, body, progress)

    async def _progress(
        self, request: web.Request, rec: RequestRecord, body: dict[str, Any], progress: list[dict[str, Any]]
    ) -> web.StreamResponse:
        if body.get("stream") is False:
            return await self._send(request, rec, _native(progress[-1]))
        resp = web.Response(body=b"".join(_encode(p) + b"\n" for p in progress), headers={"Content-Type": _NDJSON})
        return await self._send(request, rec, resp)

    # ------------------------------------------------------------------ shared inference steps

    async def _knobs(self, request: web.Request) -> _Early | None:
        """`hang`, then `status`: what acts before the request is even looked at."""
        if self.hang:
            await self._pause(request, None)
        status = self.status
        if status is not None:
            message = BUSY_MESSAGE if status == 503 else f"fake error {status}"
            return _Early(status, {"error": message})
        return None

    def _admit(self, rec: RequestRecord, job: _Job, body: dict[str, Any]) -> _Early | None:
        """Validate the fields every inference request has: model, keep_alive, options."""
        model = body.get("model")
        if model is None or model == "":
            return _Early(400, {"error": "model is required"})
        if not isinstance(model, str):
            raise _BadRequestError(_go_type_error("model", model, "string"))
        full = self.resolve(model)
        if full is None:
            return _Early(404, {"error": f"model '{model}' not found"})
        job.model, job.name, rec.model = model, full, full
        try:
            job.keep_ns = self._keep_ns(parse_keep_alive(body.get("keep_alive")))
        except ValueError as exc:
            raise _BadRequestError(str(exc)) from exc
        options = body.get("options")
        if options is not None and not isinstance(options, dict):
            raise _BadRequestError(_go_type_error("options", options, "map[string]interface {}"))
        if rec.options is None:
            rec.options = options
        return None

    async def _take_model(self, request: web.Request, rec: RequestRecord, job: _Job, num_ctx: int | None) -> None:
        """Wait until the model is resident (loading it when it is not), and hold it."""
        with self._lock:
            if self._waiting >= self.max_queue:
                raise _BusyError
            self._waiting += 1
            self._wanted[job.name] = self._wanted.get(job.name, 0) + 1
        self._changed()  # `waiting` is something tests wait on
        try:
            while True:
                with self._lock:
                    self._refresh_locked()
                    resident = self._resident.get(job.name)
                    if job.name not in self._cards:
                        raise _GoneError(job.model)
                    if resident is not None and (num_ctx is None or resident.context_length == num_ctx):
                        resident.in_use += 1
                        resident.expires_ns = time.time_ns() + job.keep_ns
                        resident.last_used = time.monotonic()
                        job.holds_model = True
                        break
                    ready_at: float | None = None
                    if resident is not None and resident.in_use <= 0:
                        del self._resident[job.name]  # another num_ctx: reload
                        resident = None
                    if resident is None:
                        loading = self._loading.get(job.name)
                        if loading is None and self._make_room_locked(job.name):
                            loading = _Loading(time.monotonic() + self.load_delay, num_ctx or self.context_length, 0)
                            self._loading[job.name] = loading
                            rec.cold_load = True
                        if loading is not None:  # else: no room yet, poll until a resident model is idle
                            loading.keep_ns = job.keep_ns
                            ready_at = loading.ready_at
                self._changed()
                wait = _SLOT_POLL_S if ready_at is None else max(0.0, ready_at - time.monotonic())
                await self._pause(request, wait)
        finally:
            with self._lock:
                self._waiting -= 1
                self._wanted[job.name] -= 1
        job.loaded_ns = time.monotonic_ns()
        self._changed()

    async def _take_slot(self, request: web.Request, job: _Job) -> None:
        """Wait, in arrival order, for one of the model's `num_parallel` slots."""
        ticket = object()
        with self._lock:
            if self._waiting >= self.max_queue:
                raise _BusyError
            self._waiting += 1
            queue = self._queues.setdefault(job.name, deque())
            queue.append(ticket)
        self._changed()
        try:
            while True:
                with self._lock:
                    active = self._active.get(job.name, 0)
                    if queue[0] is ticket and active < self.num_parallel:
                        queue.popleft()
                        self._active[job.name] = active + 1
                        job.holds_slot = True
                        break
                await self._pause(request, _SLOT_POLL_S, step=_SLOT_POLL_S)
        finally:
            with self._lock:
                self._waiting -= 1
                if not job.holds_slot:
                    with contextlib.suppress(ValueError):
                        queue.remove(ticket)
        self._changed()
        job.eval_start_ns = time.monotonic_ns()

    def _finish(self, job: _Job) -> None:
        """Release what the job holds; the keep_alive timer starts now (0: unload at once)."""
        with self._lock:
            if job.holds_slot:
                self._active[job.name] -= 1
                job.holds_slot = False
            if job.holds_model:
                job.holds_model = False
                resident = self._resident.get(job.name)
                if resident is not None:
                    resident.in_use -= 1
                    resident.expires_ns = time.time_ns() + job.keep_ns
                    resident.last_used = time.monotonic()
                    if resident.in_use <= 0 and job.keep_ns == 0:
                        del self._resident[job.name]
        self._changed()

    def _metrics(self, job: _Job) -> dict[str, int]:
        """The six metric fields of a `done` answer; zero values are left out (`omitempty`)."""
        end = time.monotonic_ns()
        load = max(job.loaded_ns - job.start_ns, 1)
        prompt_eval = job.prompt_tokens * _PROMPT_EVAL_NS_PER_TOKEN
        evaluation = max(end - job.eval_start_ns, job.tokens * _MIN_EVAL_NS_PER_TOKEN) if job.tokens else 0
        metrics = {
            "total_duration": max(end - job.start_ns, load + prompt_eval + evaluation),
            "load_duration": load,
            "prompt_eval_count": job.prompt_tokens,
            "prompt_eval_duration": prompt_eval,
            "eval_count": job.tokens,
            "eval_duration": evaluation,
        }
        return {k: v for k, v in metrics.items() if v}

    # ------------------------------------------------------------------ generation core

    async def _prepare(
        self, request: web.Request, rec: RequestRecord, body: dict[str, Any], job: _Job
    ) -> _Early | None:
        """Everything before the first token: validation, unload/load-only requests, loading, queueing.

        Returns the whole answer when it is decided early (native shape), None when `job` is ready to generate.
        """
        early = self._admit(rec, job, body)
        if early is not None:
            return early
        options: dict[str, Any] = body.get("options") or {}
        empty = _read_prompt(body, job)
        if empty and job.keep_ns == 0 and body.get("keep_alive") is not None:
            self.unload(job.name)
            return _Early(200, self._load_reply(job, "unload"))
        card = self._card(job.name)
        if card is None:
            return _Early(404, {"error": f"model '{job.model}' not found"})
        if card.embedding:
            return _Early(400, {"error": f'"{job.model}" does not support {"chat" if job.chat else "generate"}'})
        num_predict = _int_option(options, "num_predict")
        num_ctx = _int_option(options, "num_ctx")
        job.tokens, job.done_reason = self.chunks, "stop"
        if num_predict is not None and 0 < num_predict < job.tokens:
            job.tokens, job.done_reason = num_predict, "length"
        try:
            await self._take_model(request, rec, job, num_ctx if num_ctx and num_ctx > 0 else None)
        except _BusyError:
            return _Early(503, {"error": BUSY_MESSAGE})
        except _GoneError:
            return _Early(404, {"error": f"model '{job.model}' not found"})
        if empty:
            return _Early(200, self._load_reply(job, "load"))
        try:
            await self._take_slot(request, job)
        except _BusyError:
            return _Early(503, {"error": BUSY_MESSAGE})
        return None

    def _load_reply(self, job: _Job, reason: str) -> dict[str, Any]:
        reply: dict[str, Any] = {"model": job.model, "created_at": _now()}
        if job.chat:
            reply["message"] = {"role": "assistant", "content": ""}
        else:
            reply["response"] = ""
        reply["done"] = True
        reply["done_reason"] = reason
        return reply

    def _native_token(self, job: _Job, index: int) -> bytes:
        piece = f"tok{index} "
        head: dict[str, Any] = {"model": job.model, "created_at": _now()}
        if job.chat:
            head["message"] = {"role": "assistant", "content": piece}
        else:
            head["response"] = piece
        head["done"] = False
        return _encode(head) + b"\n"

    def _native_done(self, job: _Job, text: str) -> dict[str, Any]:
        done: dict[str, Any] = {"model": job.model, "created_at": _now()}
        if job.chat:
            done["message"] = {"role": "assistant", "content": text}
        else:
            done["response"] = text
        done["done"] = True
        done["done_reason"] = job.done_reason
        if not job.chat and not job.raw and job.prompt_tokens + job.tokens:
            done["context"] = [128000 + i for i in range(job.prompt_tokens + job.tokens)]
        done.update(self._metrics(job))
        return done

    async def _emit(
        self,
        request: web.Request,
        rec: RequestRecord,
        headers: dict[str, str],
        count: int,
        frame: Callable[[int], bytes],
        *,
        opening: bytes = b"",
        ending: Callable[[], bytes],
        failure: Callable[[], bytes],
    ) -> web.StreamResponse:
        """Stream `opening`, `count` content frames paced by `token_delay`, then `ending` (or the failure knobs)."""
        fail_after, error_after = self.fail_after, self.error_after
        cut = fail_after if fail_after is not None else error_after
        sent = count if cut is None else min(count, cut)
        resp = web.StreamResponse(headers=headers)
        rec.status = resp.status
        await resp.prepare(request)
        delay = self.token_delay
        if not delay or sent <= 1:
            first = opening + b"".join(frame(i) for i in range(sent))
            if first:
                await resp.write(first)
        else:
            await resp.write(opening + frame(0))
            for index in range(1, sent):
                await self._pause(request, delay)
                await resp.write(frame(index))
        if fail_after is not None:
            return self._abort(request, rec, resp)
        await resp.write(failure() if error_after is not None else ending())
        await resp.write_eof()
        rec.mark_completed()
        return resp

    async def _whole(self, request: web.Request, rec: RequestRecord, job: _Job) -> str | None:
        """Wait as long as the stream would have taken; the text, or None when a failure knob fired."""
        fail_after, error_after = self.fail_after, self.error_after
        cut = fail_after if fail_after is not None else error_after
        produced = job.tokens if cut is None else min(job.tokens, cut)
        if self.token_delay and produced > 1:
            await self._pause(request, self.token_delay * (produced - 1))
        if cut is not None:
            return None
        return "".join(f"tok{i} " for i in range(job.tokens))

    # ------------------------------------------------------------------ native inference routes

    async def _generate(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._native_generation(request, rec, chat=False)

    async def _chat(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._native_generation(request, rec, chat=True)

    async def _native_generation(self, request: web.Request, rec: RequestRecord, *, chat: bool) -> web.StreamResponse:
        early = await self._knobs(request)
        if early is not None:
            return await self._send(request, rec, _native(early.payload, early.status))
        job = _Job(start_ns=time.monotonic_ns(), chat=chat)
        try:
            try:
                body = _parse_native(rec)
                stream = _stream_flag(body.get("stream"), default=True)
                early = await self._prepare(request, rec, body, job)
            except _BadRequestError as exc:
                return await self._send(request, rec, _native_error(400, exc.message))
            if early is not None:
                return await self._send(request, rec, _native(early.payload, early.status))
            if stream:
                return await self._emit(
                    request,
                    rec,
                    {"Content-Type": _NDJSON},
                    job.tokens,
                    lambda i: self._native_token(job, i),
                    ending=lambda: _encode(self._native_done(job, "")) + b"\n",
                    failure=lambda: _encode({"error": self.error_message}) + b"\n",
                )
            text = await self._whole(request, rec, job)
            if text is None:
                if self.fail_after is not None:
                    return self._abort(request, rec)
                return await self._send(request, rec, _native_error(500, self.error_message))
            return await self._send(request, rec, _native(self._native_done(job, text)))
        finally:
            self._finish(job)

    async def _embed(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        def read(body: dict[str, Any]) -> tuple[list[str], int]:
            raw_input = body.get("input")
            if isinstance(raw_input, str):
                inputs = [raw_input] if raw_input else []
            elif isinstance(raw_input, list) and all(isinstance(v, str) for v in raw_input):
                inputs = list(raw_input)
            elif raw_input is None:
                inputs = []
            else:
                raise _BadRequestError("invalid input type")
            dims = body.get("dimensions") or 0
            if not isinstance(dims, int) or isinstance(dims, bool) or dims < 0:
                raise _BadRequestError(_go_type_error("dimensions", dims, "int"))
            return inputs, dims

        def answer(job: _Job, parsed: tuple[list[str], int]) -> dict[str, Any]:
            inputs, dims = parsed
            job.prompt_tokens = sum(_words(text) for text in inputs)
            if not inputs:
                return {"model": job.model, "embeddings": []}
            payload: dict[str, Any] = {
                "model": job.model,
                "embeddings": [_embedding(text, dims or EMBEDDING_DIM) for text in inputs],
                "total_duration": max(time.monotonic_ns() - job.start_ns, 1),
                "load_duration": max(job.loaded_ns - job.start_ns, 1),
                "prompt_eval_count": job.prompt_tokens,
            }
            return {k: v for k, v in payload.items() if v != 0}

        return await self._embedding_route(request, rec, read, answer)

    async def _embeddings_legacy(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        def read(body: dict[str, Any]) -> str:
            prompt = body.get("prompt") or ""
            if not isinstance(prompt, str):
                raise _BadRequestError(_go_type_error("prompt", prompt, "string"))
            return prompt

        def answer(job: _Job, prompt: str) -> dict[str, Any]:
            return {"embedding": _embedding(prompt, EMBEDDING_DIM) if prompt else []}

        return await self._embedding_route(request, rec, read, answer)

    async def _embedding_route(
        self,
        request: web.Request,
        rec: RequestRecord,
        read: Callable[[dict[str, Any]], _T],
        answer: Callable[[_Job, _T], dict[str, Any]],
    ) -> web.StreamResponse:
        """The native embedding routes: knobs, `read(body)` (its 400s), the model and a slot, then `answer`."""
        early = await self._knobs(request)
        if early is not None:
            return await self._send(request, rec, _native(early.payload, early.status))
        job = _Job(start_ns=time.monotonic_ns())
        try:
            try:
                body = _parse_native(rec)
                parsed = read(body)
                early = await self._embed_prepare(request, rec, body, job)
            except _BadRequestError as exc:
                return await self._send(request, rec, _native_error(400, exc.message))
            if early is not None:
                return await self._send(request, rec, _native(early.payload, early.status))
            return await self._send(request, rec, _native(answer(job, parsed)))
        finally:
            self._finish(job)

    async def _embed_prepare(
        self, request: web.Request, rec: RequestRecord, body: dict[str, Any], job: _Job
    ) -> _Early | None:
        early = self._admit(rec, job, body)
        if early is not None:
            return early
        num_ctx = _int_option(body.get("options") or {}, "num_ctx")
        try:
            await self._take_model(request, rec, job, num_ctx if num_ctx and num_ctx > 0 else None)
            await self._take_slot(request, job)
        except _BusyError:
            return _Early(503, {"error": BUSY_MESSAGE})
        except _GoneError:
            return _Early(404, {"error": f"model '{job.model}' not found"})
        return None

    # ------------------------------------------------------------------ OpenAI-compatible routes

    async def _v1_models(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        with self._lock:
            cards = sorted(self._cards.values(), key=lambda c: -c.modified_ns)
        data = [_v1_model_object(c.name, c.modified_ns) for c in cards]
        return await self._send(request, rec, _openai({"object": "list", "data": data}))

    async def _v1_model(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        name = request.match_info["model"]
        card = self._card(name)
        if card is None:
            return await self._send(request, rec, _openai_error(404, f"model '{name}' not found"))
        rec.model = card.name
        return await self._send(request, rec, _openai(_v1_model_object(name, card.modified_ns)))

    async def _v1_chat(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._v1_generation(request, rec, chat=True)

    async def _v1_completions(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._v1_generation(request, rec, chat=False)

    async def _v1_generation(self, request: web.Request, rec: RequestRecord, *, chat: bool) -> web.StreamResponse:
        early = await self._knobs(request)
        if early is not None:
            return await self._send(request, rec, _openai_error(early.status, early.payload["error"]))
        job = _Job(start_ns=time.monotonic_ns(), chat=chat)
        try:
            try:
                body = _parse_openai(rec)
                stream = _stream_flag(body.get("stream"), default=False)
                stream_options = body.get("stream_options")
                include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
                native = _v1_to_native(body, chat=chat)
                rec.options = native["options"]
                early = await self._prepare(request, rec, native, job)
            except _BadRequestError as exc:
                return await self._send(request, rec, _openai_error(400, exc.message))
            if early is not None:
                if "error" in early.payload:
                    return await self._send(request, rec, _openai_error(early.status, early.payload["error"]))
                return await self._v1_single(request, rec, job, early.payload, stream, include_usage)
            ident = f"{'chatcmpl' if chat else 'cmpl'}-{random.randrange(999)}"
            created = int(time.time())
            if stream:
                return await self._v1_stream(request, rec, job, ident, created, include_usage)
            text = await self._whole(request, rec, job)
            if text is None:
                if self.fail_after is not None:
                    return self._abort(request, rec)
                return await self._send(request, rec, _openai_error(500, self.error_message))
            choice: dict[str, Any]
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text}}
            else:
                choice = {"text": text, "index": 0}
            choice["finish_reason"] = job.done_reason
            payload = {
                **_v1_head(ident, created, job.model, chat=chat, stream=False),
                "choices": [choice],
                "usage": _v1_usage(job.prompt_tokens, job.tokens),
            }
            return await self._send(request, rec, _openai(payload))
        finally:
            self._finish(job)

    async def _v1_stream(
        self, request: web.Request, rec: RequestRecord, job: _Job, ident: str, created: int, include_usage: bool
    ) -> web.StreamResponse:
        chat = job.chat
        head = _v1_head(ident, created, job.model, chat=chat, stream=True)

        def sse(payload: dict[str, Any]) -> bytes:
            return b"data: " + _encode(payload) + b"\n\n"

        def choice(delta_or_text: Any, finish: str | None) -> dict[str, Any]:
            if chat:
                return {**head, "choices": [{"index": 0, "delta": delta_or_text, "finish_reason": finish}]}
            return {**head, "choices": [{"text": delta_or_text, "index": 0, "finish_reason": finish}]}

        def frame(index: int) -> bytes:
            piece = f"tok{index} "
            return sse(choice({"role": "assistant", "content": piece} if chat else piece, None))

        def ending() -> bytes:
            out = sse(choice({} if chat else "", job.done_reason))
            if include_usage:
                out += sse({**head, "choices": [], "usage": _v1_usage(job.prompt_tokens, job.tokens)})
            return out + _DONE_FRAME

        def failure() -> bytes:
            # Ollama's /v1 writer decodes the runner's {"error": ...} line as an empty response: one empty
            # chunk (model "", no finish_reason), then the stream just ends, without [DONE].
            empty = {**head, "model": ""}
            if chat:
                return sse(
                    {
                        **empty,
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                    }
                )
            return sse({**empty, "choices": [{"text": "", "index": 0, "finish_reason": None}]})

        opening = sse(choice({"role": "assistant", "content": ""}, None)) if chat else b""
        return await self._emit(
            request, rec, _SSE_HEADERS, job.tokens, frame, opening=opening, ending=ending, failure=failure
        )

    async def _v1_single(
        self,
        request: web.Request,
        rec: RequestRecord,
        job: _Job,
        native: dict[str, Any],
        stream: bool,
        include_usage: bool,
    ) -> web.StreamResponse:
        """A load or unload reply (an empty prompt on /v1/completions), converted as Ollama's middleware does."""
        chat = job.chat
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{random.randrange(999)}"
        created = int(time.time())
        reason = native.get("done_reason")
        if not stream:
            choice: dict[str, Any]
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": reason}
            else:
                choice = {"text": "", "index": 0, "finish_reason": reason}
            payload = {
                **_v1_head(ident, created, job.model, chat=chat, stream=False),
                "choices": [choice],
                "usage": _v1_usage(0, 0),
            }
            return await self._send(request, rec, _openai(payload))
        head = _v1_head(ident, created, job.model, chat=chat, stream=True)
        if chat:
            first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": reason}
        else:
            first = {"text": "", "index": 0, "finish_reason": reason}
        body = b"data: " + _encode({**head, "choices": [first]}) + b"\n\n"
        if include_usage:
            body += b"data: " + _encode({**head, "choices": [], "usage": _v1_usage(0, 0)}) + b"\n\n"
        return await self._send(request, rec, web.Response(body=body + _DONE_FRAME, headers=_SSE_HEADERS))

    async def _v1_embeddings(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        early = await self._knobs(request)
        if early is not None:
            return await self._send(request, rec, _openai_error(early.status, early.payload["error"]))
        job = _Job(start_ns=time.monotonic_ns())
        try:
            try:
                body = _parse_openai(rec)
                encoding = body.get("encoding_format") or ""
                if not isinstance(encoding, str) or (encoding and encoding.lower() not in ("float", "base64")):
                    raise _BadRequestError(
                        f"Invalid value for 'encoding_format' = {encoding}. Supported values: ['float', 'base64']."
                    )
                inputs = _v1_embedding_inputs(body.get("input"))
                dims = body.get("dimensions") or 0
                if not isinstance(dims, int) or isinstance(dims, bool) or dims < 0:
                    raise _BadRequestError(_go_type_error("dimensions", dims, "int"))
                early = await self._embed_prepare(request, rec, {"model": body.get("model")}, job)
            except _BadRequestError as exc:
                return await self._send(request, rec, _openai_error(400, exc.message))
            if early is not None:
                return await self._send(request, rec, _openai_error(early.status, early.payload["error"]))
            data = []
            for index, text in enumerate(inputs):
                vector = _embedding(text, dims or EMBEDDING_DIM)
                embedding: Any = vector
                if encoding.lower() == "base64":
                    embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                data.append({"object": "embedding", "embedding": embedding, "index": index})
            tokens = sum(_words(text) for text in inputs)
            payload = {
                "object": "list",
                "data": data,
                "model": job.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
            return await self._send(request, rec, _openai(payload))
        finally:
            self._finish(job)


class _BusyError(Exception):
    """More than `max_queue` requests wait."""


class _GoneError(Exception):
    """The model was deleted while the request waited for it."""


_KNOWN_PATHS = frozenset(
    {
        "/",
        "/api/version",
        "/api/tags",
        "/api/ps",
        "/api/show",
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
        "/api/pull",
        "/api/delete",
        "/api/create",
        "/api/copy",
        "/api/push",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    }
)


# ---------------------------------------------------------------------- names, durations, timestamps


def normalize_name(name: str) -> str:
    """Ollama's short form of a model name: the tag defaults to `latest`; the default registry and the
    `library/` namespace are dropped (`registry.ollama.ai/library/llama3.2` -> `llama3.2:latest`)."""
    name = name.strip()
    if not name:
        return ""
    if name.rfind(":") <= name.rfind("/"):
        name += ":latest"
    parts = name.split("/")
    if len(parts) == 3 and parts[0].lower() == _DEFAULT_REGISTRY:
        parts = parts[1:]
    if len(parts) == 2 and parts[0].lower() == "library":
        parts = parts[1:]
    return "/".join(parts)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")  # Go accepts both micro signs
_DURATION_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": _NS, "m": 60 * _NS}
_DURATION_UNIT_NS["h"] = 3600 * _NS


def parse_go_duration(text: str) -> int:
    """Go's `time.ParseDuration` (`"5m"`, `"1h30m"`, `"-1s"`, `"0"`), in nanoseconds; ValueError like Go's."""
    rest, sign = text, 1
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if match is None:
            if re.fullmatch(r"[\d.]+", rest[pos:]):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match[1]) * _DURATION_UNIT_NS[match[2]]
        pos = match.end()
    return sign * int(total)


def parse_keep_alive(value: object) -> int | None:
    """A request's `keep_alive` in nanoseconds (None when absent): seconds as a number, or a Go duration
    string; anything negative means forever (`KEEP_ALIVE_FOREVER_NS`)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"json: cannot unmarshal {_go_kind(value)} into Go struct field .keep_alive of type string")
    if isinstance(value, str):
        ns = parse_go_duration(value)
    else:
        if not math.isfinite(value):
            raise ValueError("keep_alive must be finite")
        ns = -1 if value < 0 else int(value * _NS)
    return KEEP_ALIVE_FOREVER_NS if ns < 0 else ns


def rfc3339(ns: int, *, utc: bool = True) -> str:
    """Go's RFC3339Nano: nanoseconds with trailing zeros dropped, `Z` or the local offset."""
    seconds, frac = divmod(ns, _NS)
    moment = datetime.fromtimestamp(seconds, UTC)
    if not utc:
        moment = moment.astimezone()
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset else 0
    if not minutes:
        return text + "Z"
    sign = "+" if minutes > 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _now() -> str:
    return rfc3339(time.time_ns())


# ---------------------------------------------------------------------- wire helpers


def _native(payload: dict[str, Any], status: int = 200) -> web.Response:
    """gin's `c.JSON`: compact JSON, no trailing newline."""
    return web.Response(body=_encode(payload), status=status, headers={"Content-Type": _GIN_JSON})


def _native_error(status: int, message: str) -> web.Response:
    return _native({"error": message}, status)


def _openai(payload: dict[str, Any], status: int = 200) -> web.Response:
    """Ollama's /v1 writers: `json.NewEncoder(...).Encode`, hence the trailing newline."""
    return web.Response(body=_encode(payload) + b"\n", status=status, headers={"Content-Type": "application/json"})


def _openai_error(status: int, message: str) -> web.Response:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return _openai({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def _v1_head(ident: str, created: int, model: str, *, chat: bool, stream: bool) -> dict[str, Any]:
    obj = ("chat.completion.chunk" if stream else "chat.completion") if chat else "text_completion"
    return {"id": ident, "object": obj, "created": created, "model": model, "system_fingerprint": SYSTEM_FINGERPRINT}


def _v1_usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _v1_model_object(name: str, modified_ns: int) -> dict[str, Any]:
    parts = normalize_name(name).split("/")
    owner = parts[-2] if len(parts) >= 2 else "library"
    return {"id": name, "object": "model", "created": modified_ns // _NS, "owned_by": owner}


def _parse_native(rec: RequestRecord) -> dict[str, Any]:
    if not rec.body.strip():
        raise _BadRequestError("missing request body")
    if rec.json is not None:
        return rec.json
    try:
        parsed = _decode(rec.body)
    except msgspec.DecodeError as exc:
        raise _BadRequestError(f"invalid character in JSON body: {exc}") from exc
    raise _BadRequestError(f"json: cannot unmarshal {_go_kind(parsed)} into Go value of type api.Request")


def _parse_openai(rec: RequestRecord) -> dict[str, Any]:
    try:
        return _parse_native(rec)
    except _BadRequestError as exc:
        if exc.message == "missing request body":
            raise _BadRequestError("EOF") from exc  # gin's ShouldBindJSON on an empty body
        raise


def _stream_flag(value: object, *, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _BadRequestError(_go_type_error("stream", value, "bool"))
    return value


def _go_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _go_type_error(key: str, value: object, go_type: str) -> str:
    return f"json: cannot unmarshal {_go_kind(value)} into Go struct field .{key} of type {go_type}"


def _int_option(options: dict[str, Any], key: str) -> int | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadRequestError(f'option "{key}" must be of type integer')
    return int(value)


def _words(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _count_messages(messages: list[Any]) -> int:
    words = 0
    for message in messages:
        if not isinstance(message, dict):
            raise _BadRequestError(_go_type_error("messages", message, "api.Message"))
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise _BadRequestError(_go_type_error("messages.content", content, "string"))
        words += _words(content)
    return words


def _v1_embedding_inputs(value: object) -> list[str]:
    if value == "":
        return [""]
    if value is None or value == []:
        raise _BadRequestError("invalid input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _BadRequestError("invalid input type")


def _v1_to_native(body: dict[str, Any], *, chat: bool) -> dict[str, Any]:
    """What Ollama's OpenAI middleware hands the native handler (`FromChatRequest`, `FromCompleteRequest`)."""
    native: dict[str, Any] = {"model": body.get("model"), "options": _v1_options(body, chat=chat)}
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequestError("[] is too short - 'messages'")
        native["messages"] = _v1_messages(messages)
        return native
    prompt = body.get("prompt", "")
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise _BadRequestError(
            _go_type_error("prompt", prompt, "string").replace(".prompt", "CompletionRequest.prompt")
        )
    native["prompt"] = prompt
    if body.get("suffix"):
        native["suffix"] = body["suffix"]
    return native


def _v1_options(body: dict[str, Any], *, chat: bool) -> dict[str, Any]:
    options: dict[str, Any] = {}
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        if not all(isinstance(s, str) for s in stop):
            raise _BadRequestError("invalid type for 'stop' field")
        options["stop"] = stop
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise _BadRequestError(_go_type_error("max_tokens", max_tokens, "int"))
        options["num_predict"] = max_tokens
    temperature = body.get("temperature")
    options["temperature"] = 1.0 if temperature is None else temperature
    if body.get("seed") is not None:
        options["seed"] = body["seed"]
    for key in ("frequency_penalty", "presence_penalty"):
        if body.get(key) is not None:
            options[key] = body[key]
        elif not chat:
            options[key] = 0.0
    options["top_p"] = body.get("top_p") or 1.0
    return options


def _read_prompt(body: dict[str, Any], job: _Job) -> bool:
    """Count the prompt's tokens into `job`; True when there is no prompt (a load or unload request)."""
    if job.chat:
        messages = body.get("messages")
        if messages is not None and not isinstance(messages, list):
            raise _BadRequestError(_go_type_error("messages", messages, "[]api.Message"))
        job.prompt_tokens = _count_messages(messages or [])
        return not messages
    prompt, system = body.get("prompt", ""), body.get("system", "")
    for key, value in (("prompt", prompt), ("system", system)):
        if value is not None and not isinstance(value, str):
            raise _BadRequestError(_go_type_error(key, value, "string"))
    job.prompt_tokens = _words(prompt) + _words(system)
    job.raw = bool(body.get("raw"))
    return not prompt


def _v1_messages(messages: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _BadRequestError("invalid message format")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
                    raise _BadRequestError("invalid message format")
                if part["type"] == "text":
                    if not isinstance(part.get("text"), str):
                        raise _BadRequestError("invalid message format")
                    out.append({"role": message["role"], "content": part["text"]})
                else:
                    out.append({"role": message["role"], "content": ""})
        elif message.get("tool_calls"):
            out.append({"role": message["role"], "content": ""})
        else:
            raise _BadRequestError(f"invalid message content type: {'<nil>' if content is None else _go_kind(content)}")
    return out


def _embedding(text: str, dims: int) -> list[float]:
    """A deterministic unit vector (Ollama normalises embeddings) for one input."""
    raw = hashlib.shake_256(text.encode()).digest(4 * dims)
    values = [u / 2**31 - 1.0 for u in struct.unpack(f"<{dims}I", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 7) for v in values]


# ---------------------------------------------------------------------- a server in its own process


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m testing.fake_ollama`: serve a fake Ollama until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m testing.fake_ollama", description="A fake Ollama server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    parser.add_argument("--models", default="llama3.2:latest", help="comma-separated pulled models")
    parser.add_argument("--loaded", default="", help="comma-separated models already in VRAM")
    parser.add_argument("--version", default="0.12.3", help="what /api/version answers")
    parser.add_argument("--chunks", type=int, default=6, help="content tokens per answer")
    parser.add_argument("--load-delay", type=float, default=0.0, help="seconds a cold load takes")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between content chunks")
    parser.add_argument("--num-parallel", type=int, default=1, help="requests one model generates at once")
    parser.add_argument("--max-loaded", type=int, default=None, help="models in VRAM at once (default: no limit)")
    args = parser.parse_args(argv)
    fake = FakeOllama(
        [m for m in args.models.split(",") if m],
        loaded=[m for m in args.loaded.split(",") if m],
        version=args.version,
        chunks=args.chunks,
        load_delay=args.load_delay,
        token_delay=args.token_delay,
        num_parallel=args.num_parallel,
        max_loaded=args.max_loaded,
    )
    serve_forever(fake.make_app, args.host, args.port)


if __name__ == "__main__":
    main()
