"""A fake vLLM OpenAI server (`vllm serve`), faithful to the shapes measured from vLLM 0.32.0.

`FakeVLLM` serves one model under its served name, like `vllm serve PATH --served-model-name NAME`:

- `GET /health`: 200 with an empty body; 503 (still empty) once `dead` is set. `GET|POST /ping` answers the same.
- `GET /v1/models`: the measured card (`root`, `parent`, `max_model_len`, `permission`); `GET /version`;
  `GET /load` -> `{"server_load": N}`, N the generation requests in flight.
- `GET /metrics`: Prometheus text from a real `prometheus_client` registry, labelled
  `{engine="0",model_name="<served name>"}`. The gauges are live: `vllm:num_requests_running` counts generation
  requests in flight, `vllm:num_requests_waiting` reads the `waiting` attribute, `vllm:kv_cache_usage_perc` (and
  the deprecated `vllm:gpu_cache_usage_perc`) read `kv_cache_usage`. Token counters and latency histograms count
  what the fake really sent.
- `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` in vLLM's body shapes (ids `chatcmpl-`/`cmpl-`/
  `embd-` plus 16 hex, `system_fingerprint` `vllm-<version>-<hash8>`, `stop_reason`, `token_ids`,
  `prompt_tokens_details`...). Streams: a role chunk (chat only), one chunk per token, the finish; a usage chunk only
  with `stream_options.include_usage`; `data: [DONE]`. As in vLLM, `finish_reason: "length"` rides on the last
  token's chunk, while a natural stop is a chunk of its own with `content: ""` (the EOS token, which vLLM counts in
  `completion_tokens`). The `system_fingerprint` is stamped on the terminal chunk only.
- `POST /tokenize` (`{"model", "messages"}` or `{"model", "prompt"}` → `{"count", "max_model_len", "tokens",
  "token_strs"}`, the prompt's words as tokens) and `GET /openapi.json`, FastAPI's document of the routes served.
  With `messages=True`, Anthropic's `/v1/messages` and `/v1/messages/count_tokens` too (`testing.fake_messages`).
- Errors in vLLM's envelope: `{"error":{"message","type":"NotFoundError","param","code":404}}`; unknown paths get
  FastAPI's `{"detail":"Not Found"}` (405 `Method Not Allowed` for a known path).

Generation is scripted like `FakeBackend` (whose bookkeeping this wraps): server-wide defaults from the
constructor, overridden per request by a `"fake": {...}` body field (`chunks`, `delay`, `first_delay`, `hang`,
`fail_after`, `status`, `raw_error`; see `testing.fake_backend.Knobs`). Every request is recorded.

    python -m testing.fake_vllm --port 0 [--model tiny] [--max-model-len 512] [--chunks N] [--delay S]

prints `listening http://127.0.0.1:PORT` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from testing.fake_backend import (
    EMBEDDING_DIM,
    SSE_HEADERS,
    BackendWrapper,
    FakeBackend,
    Knobs,
    RequestRecord,
    _count_chat_prompt,
    _count_prompt,
    _count_words,
    _embed,
    _embedding_inputs,
    _InvalidRequestError,
    _json_response,
    _Plan,
    write_sse,
)
from testing.fake_messages import add_messages_routes
from testing.serving import serve_until_signalled

_encode = msgspec.json.encode
VLLM_SSE_HEADERS = {**SSE_HEADERS, "Content-Type": "text/event-stream; charset=utf-8"}
ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."
FIRST_TOKEN_ID = 1000
"""Token ids are made up: content token i is FIRST_TOKEN_ID + i, the EOS token EOS_TOKEN_ID, prompt tokens 1, 2, 3..."""
EOS_TOKEN_ID = 2
_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}
_ROUTES = ("/health", "/ping", "/version", "/load", "/metrics", "/v1/models")
_GENERATION_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
_Answer = Callable[[web.Request, RequestRecord], Awaitable[web.StreamResponse]]


class FakeVLLM(BackendWrapper):
    """A scripted vLLM server; see the module docstring.

    `dead`, `waiting` and `kv_cache_usage` may be set at any time from any thread, and so may `defaults`.
    `records`, `server_load`, `wait_for` and `wait_for_async` may be used from any thread.
    """

    def __init__(
        self,
        model: str = "tiny",
        *,
        max_model_len: int = 512,
        chunks: int = 6,
        delay: float = 0.0,
        version: str = "0.32.0",
        first_delay: float = 0.0,
        root: str | None = None,
        record: bool = True,
        messages: bool = False,
    ) -> None:
        self.model = model
        self.messages = messages
        """Serve Anthropic's Messages API too (vLLM 0.11 and later, on `vllm serve`)."""
        """The served model name: the only `id` of `/v1/models` and the `model_name` label of the metrics."""
        self.root = root if root is not None else model
        """The model path or repository (`--model`); `/v1/models` reports it as `root`."""
        self.max_model_len = max_model_len
        self.version = version
        self.system_fingerprint = f"vllm-{version}-{_hash8(model, str(max_model_len), version)}"
        self.dead = False
        """The engine died: `/health` answers 503 and generation 500 (`EngineDeadError`)."""
        self.waiting = 0
        """Reported as `vllm:num_requests_waiting` (requests queued for capacity)."""
        self.kv_cache_usage = 0.0
        """Reported as `vllm:kv_cache_usage_perc` and `vllm:gpu_cache_usage_perc`, from 0 to 1."""
        self._backend = FakeBackend(
            [model], chunks=chunks, delay=delay, first_delay=first_delay, record=record, owned_by="vllm"
        )
        self._running = 0
        self._metrics = _Metrics(self)

    # ------------------------------------------------------------------ observing (any thread)

    @property
    def server_load(self) -> int:
        """Generation requests (chat, completions, embeddings) in flight: `num_requests_running` and `/load`."""
        return self._running

    def metrics_text(self) -> str:
        """What `GET /metrics` would answer now."""
        return generate_latest(self._metrics.registry).decode()

    # ------------------------------------------------------------------ running

    def make_app(self) -> web.Application:
        """A new aiohttp application serving this fake (records, knobs and state are the fake's)."""
        app = self._new_app()
        route = self._route
        app.router.add_get("/health", route(self._health))
        app.router.add_get("/ping", route(self._health))
        app.router.add_post("/ping", route(self._health))
        app.router.add_get("/version", route(self._version))
        app.router.add_get("/load", route(self._load))
        app.router.add_get("/metrics", route(self._metrics_route))
        app.router.add_get("/v1/models", route(self._models))
        app.router.add_post("/v1/chat/completions", route(self._generation(self._chat)))
        app.router.add_post("/v1/completions", route(self._generation(self._completions)))
        app.router.add_post("/v1/embeddings", route(self._generation(self._embeddings)))
        app.router.add_post("/tokenize", route(self._tokenize))
        app.router.add_get("/openapi.json", route(self._openapi))
        if self.messages:
            add_messages_routes(app, self._backend)
        app.router.add_route("*", "/{path:.*}", route(self._unknown_route))
        return app

    # ------------------------------------------------------------------ bookkeeping

    def _generation(self, answer: _Answer) -> _Answer:
        """Count the request as running (and in `/load`) from arrival to end, and render 400s vLLM's way."""

        async def counted(request: web.Request, rec: RequestRecord) -> web.StreamResponse:
            self._running += 1
            self._backend._changed()
            try:
                return await answer(request, rec)
            except _InvalidRequestError as exc:
                return await self._send(request, rec, _vllm_error(400, exc.message, param=exc.param))
            finally:
                self._running -= 1
                self._backend._changed()

        return counted

    # ------------------------------------------------------------------ simple routes

    async def _health(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._send(request, rec, web.Response(status=503 if self.dead else 200))

    async def _version(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._send(request, rec, _json_response(_encode({"version": self.version})))

    async def _load(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._send(request, rec, _json_response(_encode({"server_load": self._running})))

    async def _metrics_route(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body = generate_latest(self._metrics.registry)
        return await self._send(request, rec, web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST}))

    async def _models(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        created = int(time.time())
        card = {
            "id": self.model,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": self.root,
            "parent": None,
            "max_model_len": self.max_model_len,
            "permission": [
                {
                    "id": "modelperm-" + secrets.token_hex(8),
                    "object": "model_permission",
                    "created": created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        return await self._send(request, rec, _json_response(_encode({"object": "list", "data": [card]})))

    async def _tokenize(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body, _, early = await self._preamble(request, rec)
        if early is not None:
            return early
        if "messages" in body:
            count = _count_chat_prompt(body.get("messages"))
        else:
            count = _count_prompt(body.get("prompt"), "prompt")
        answer = {"count": count, "max_model_len": self.max_model_len, "tokens": list(range(1, count + 1))}
        return await self._send(request, rec, _json_response(_encode({**answer, "token_strs": None})))

    async def _openapi(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        served = [*_ROUTES, *_GENERATION_ROUTES, "/tokenize", "/openapi.json"]
        if self.messages:
            served += ["/v1/messages", "/v1/messages/count_tokens"]
        document = {
            "openapi": "3.1.0",
            "info": {"title": "FastAPI", "version": "0.1.0"},
            "paths": {path: {"post" if path not in _ROUTES else "get": {}} for path in served},
        }
        return await self._send(request, rec, _json_response(_encode(document)))

    async def _unknown_route(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        if request.path in _ROUTES or request.path in _GENERATION_ROUTES:
            resp = _json_response(b'{"detail":"Method Not Allowed"}', 405)
        else:
            resp = _json_response(b'{"detail":"Not Found"}', 404)
        return await self._send(request, rec, resp)

    # ------------------------------------------------------------------ generation routes

    async def _preamble(
        self, request: web.Request, rec: RequestRecord
    ) -> tuple[dict[str, Any], Knobs, web.Response | None]:
        """Parse the body and apply, in `FakeBackend`'s order, first_delay, hang, errors, then the model check."""
        body, knobs = self._backend._body_and_knobs(rec)
        early = await self._backend._scripted(request, rec, knobs, _vllm_error)
        if early is not None:
            return body, knobs, early
        if self.dead:
            return body, knobs, await self._send(request, rec, _vllm_error(500, ENGINE_DEAD_MESSAGE))
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise _InvalidRequestError("'model' must be a string", "model")
        # vLLM serves its first served name when the request names no model.
        if model and model != self.model:
            message = f"The model `{model}` does not exist. Valid aliases: {self.model}."
            return body, knobs, await self._send(request, rec, _vllm_error(404, message, param="model"))
        return body, knobs, None

    def _plan(self, body: dict[str, Any], knobs: Knobs, prompt_tokens: int, *, chat: bool) -> _Plan:
        """`FakeBackend`'s plan, bounded by the context window as vLLM bounds it."""
        if body.get("stream_options") is not None and not body.get("stream"):
            raise _InvalidRequestError("Stream options can only be defined when `stream=True`.", "stream_options")
        plan = self._backend._plan({**body, "model": self.model}, knobs, prompt_tokens, chat=chat)
        window = self.max_model_len
        if prompt_tokens >= window:
            raise _InvalidRequestError(
                f"This model's maximum context length is {window} tokens. However, your request has "
                f"{prompt_tokens} input tokens. Please reduce the length of the input messages.",
                "messages" if chat else "prompt",
            )
        key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
        asked = body.get(key)
        if asked is not None and prompt_tokens + asked > window:
            raise _InvalidRequestError(
                f"'max_tokens' or 'max_completion_tokens' is too large: {asked}. This model's maximum context "
                f"length is {window} tokens and your request has {prompt_tokens} input tokens "
                f"({asked} > {window} - {prompt_tokens}). (parameter={key}, value={asked})",
                key,
            )
        room = window - prompt_tokens
        if asked is None and room <= plan.completion_tokens:
            plan = dataclasses.replace(plan, completion_tokens=room, finish_reason="length")
        return plan

    async def _chat(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body, knobs, early = await self._preamble(request, rec)
        if early is not None:
            return early
        plan = self._plan(body, knobs, _count_chat_prompt(body.get("messages")), chat=True)
        return await self._answer(request, rec, body, knobs, plan, chat=True)

    async def _completions(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body, knobs, early = await self._preamble(request, rec)
        if early is not None:
            return early
        plan = self._plan(body, knobs, _count_prompt(body.get("prompt"), "prompt"), chat=False)
        return await self._answer(request, rec, body, knobs, plan, chat=False)

    async def _embeddings(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body, _, early = await self._preamble(request, rec)
        if early is not None:
            return early
        inputs = _embedding_inputs(body.get("input"))
        dims = body.get("dimensions") or EMBEDDING_DIM
        if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 4096:
            raise _InvalidRequestError("'dimensions' must be an integer from 1 to 4096", "dimensions")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _InvalidRequestError("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        tokens = sum(_count_words(item) for item in inputs)
        self._metrics.prompt(tokens)
        data = []
        for index, item in enumerate(inputs):
            vector = _embed(item, dims)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if encoding == "base64" else vector
            )
            data.append({"index": index, "object": "embedding", "embedding": embedding})
        payload = {
            "id": "embd-" + secrets.token_hex(8),
            "object": "list",
            "created": int(time.time()),
            "model": self.model,
            "data": data,
            "usage": {
                "prompt_tokens": tokens,
                "total_tokens": tokens,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            },
        }
        resp = await self._send(request, rec, _json_response(_encode(payload)))
        self._metrics.finished("stop", rec.started_at)
        return resp

    async def _answer(
        self, request: web.Request, rec: RequestRecord, body: dict[str, Any], knobs: Knobs, plan: _Plan, *, chat: bool
    ) -> web.StreamResponse:
        progress = _Progress(self._metrics, rec.started_at)
        self._metrics.prompt(plan.prompt_tokens)
        ids = bool(body.get("return_token_ids"))
        try:
            if plan.stream:
                resp = await self._answer_stream(request, rec, knobs, plan, progress, chat=chat, token_ids=ids)
            else:
                resp = await self._answer_whole(request, rec, knobs, plan, progress, chat=chat, token_ids=ids)
        finally:
            self._metrics.finished(plan.finish_reason if rec.completed else "abort", rec.started_at)
        return resp

    async def _answer_whole(
        self,
        request: web.Request,
        rec: RequestRecord,
        knobs: Knobs,
        plan: _Plan,
        progress: _Progress,
        *,
        chat: bool,
        token_ids: bool,
    ) -> web.StreamResponse:
        count = plan.completion_tokens
        produced = count if knobs.fail_after is None else min(count, knobs.fail_after)
        progress.tokens_out(min(produced, 1))
        if knobs.delay and produced > 1:
            await self._backend._pause(request, knobs.delay * (produced - 1))
        progress.tokens_out(produced - 1)
        if knobs.fail_after is not None:
            return self._backend._abort(request, rec)
        progress.tokens_out(1 if plan.finish_reason == "stop" else 0)
        text = "".join(f"tok{i} " for i in range(count))
        ids = _output_ids(plan) if token_ids else None
        prompt_ids = list(range(1, plan.prompt_tokens + 1)) if token_ids else None
        head: dict[str, Any]
        if chat:
            message = {
                "role": "assistant",
                "content": text,
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
                "reasoning": None,
            }
            choice = {"index": 0, "message": message, "logprobs": None}
            head = {"id": "chatcmpl-" + secrets.token_hex(8), "object": "chat.completion"}
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
            head = {"id": "cmpl-" + secrets.token_hex(8), "object": "text_completion"}
        choice.update(finish_reason=plan.finish_reason, stop_reason=None, token_ids=ids)
        if not chat:
            choice.update(prompt_logprobs=None, prompt_token_ids=prompt_ids)
        payload = {
            **head,
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": self.system_fingerprint,
            "usage": {**_usage(plan), "prompt_tokens_details": None},
        }
        if chat:
            payload.update(prompt_logprobs=None, prompt_token_ids=prompt_ids)
        payload["kv_transfer_params"] = None
        return await self._send(request, rec, _json_response(_encode(payload)))

    async def _answer_stream(
        self,
        request: web.Request,
        rec: RequestRecord,
        knobs: Knobs,
        plan: _Plan,
        progress: _Progress,
        *,
        chat: bool,
        token_ids: bool,
    ) -> web.StreamResponse:
        count = plan.completion_tokens
        ident = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(8)
        kind = "chat.completion.chunk" if chat else "text_completion"
        prefix = (
            b'data: {"id":"'
            + ident.encode()
            + b'","object":"'
            + kind.encode()
            + b'","created":'
            + str(int(time.time())).encode()
            + b',"model":'
            + _encode(self.model)
            + b',"choices":['
        )
        fingerprint = b',"system_fingerprint":' + _encode(self.system_fingerprint)
        # The fingerprint goes on the terminal chunk, or on the usage chunk when there is one.
        terminal_tail = b"}\n\n" if plan.include_usage else fingerprint + b"}\n\n"

        def choice(text: str, finish: str | None, ids: list[int] | None) -> bytes:
            if chat:
                out = b'{"index":0,"delta":{"content":' + _encode(text) + b'},"logprobs":null,"finish_reason":'
                out += _encode(finish) + (b"" if finish is None else b',"stop_reason":null')
            else:
                out = b'{"index":0,"text":' + _encode(text) + b',"logprobs":null,"finish_reason":' + _encode(finish)
                out += b',"stop_reason":null,"prompt_token_ids":null'
            return out + b',"token_ids":' + _encode(ids) + b"}]"

        def token_id(i: int) -> list[int] | None:
            return [FIRST_TOKEN_ID + i] if token_ids else None

        head = b""
        if chat:
            prompt_ids = _encode(list(range(1, plan.prompt_tokens + 1))) if token_ids else b"null"
            head = (
                prefix + b'{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]'
                b',"prompt_token_ids":' + prompt_ids + b"}\n\n"
            )
        tokens = [prefix + choice(f"tok{i} ", None, token_id(i)) + b"}\n\n" for i in range(count)]
        ending: list[bytes] = []
        if plan.finish_reason == "length" and count:
            # The finish reason rides on the last token's own chunk.
            tokens[-1] = prefix + choice(f"tok{count - 1} ", "length", token_id(count - 1)) + terminal_tail
        else:
            ending.append(
                prefix + choice("", plan.finish_reason, [EOS_TOKEN_ID] if token_ids else None) + terminal_tail
            )
        if plan.include_usage:
            usage = {**_usage(plan)}
            ending.append(prefix + b'],"usage":' + _encode(usage) + fingerprint + b"}\n\n")
        ending.append(b"data: [DONE]\n\n")
        eos = 1 if plan.finish_reason == "stop" else 0
        return await write_sse(
            self._backend,
            request,
            rec,
            knobs,
            head,
            tokens,
            ending,
            on_tokens=progress.tokens_out,
            eos=eos,
            headers=VLLM_SSE_HEADERS,
        )


# ---------------------------------------------------------------------- metrics


_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0)
_FINISH_REASONS = ("stop", "length", "abort", "error")


class _Metrics:
    """vLLM's Prometheus metrics (names, help texts, labels and buckets as vLLM registers them)."""

    def __init__(self, fake: FakeVLLM) -> None:
        self.registry = CollectorRegistry()
        # vLLM serves prometheus_client's default registry, whose process and Python collectors come first.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        names = ["model_name", "engine"]
        labels = (fake.model, "0")
        reg = self.registry

        def gauge(name: str, doc: str, read: Callable[[], float]) -> None:
            Gauge(name, doc, names, registry=reg).labels(*labels).set_function(read)

        gauge("vllm:num_requests_running", "Number of requests in model execution batches.", lambda: fake._running)
        gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", lambda: fake.waiting)
        by_reason = Gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of requests waiting to be processed, by the reason they wait.",
            [*names, "reason"],
            registry=reg,
        )
        by_reason.labels(*labels, "capacity").set_function(lambda: fake.waiting)
        by_reason.labels(*labels, "deferred").set_function(lambda: 0)
        gauge(
            "vllm:gpu_cache_usage_perc",
            "GPU KV-cache usage. 1 means 100 percent usage.DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
            lambda: fake.kv_cache_usage,
        )
        gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", lambda: fake.kv_cache_usage)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, names, registry=reg).labels(*labels)

        self.prefix_cache_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        )
        self.prefix_cache_hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        )
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*names, "finished_reason"],
            registry=reg,
        )
        self.success = {reason: success.labels(*labels, reason) for reason in _FINISH_REASONS}

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, names, buckets=buckets, registry=reg).labels(*labels)

        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", _TTFT_BUCKETS
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", _ITL_BUCKETS
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", _LATENCY_BUCKETS
        )

    def prompt(self, tokens: int) -> None:
        self.prompt_tokens.inc(tokens)
        self.prefix_cache_queries.inc(tokens)

    def finished(self, reason: str, started_at: float) -> None:
        self.success[reason].inc()
        self.e2e.observe(time.monotonic() - started_at)


@dataclass(slots=True, eq=False)
class _Progress:
    """The tokens of one request as they are sent, for the token counter and the latency histograms."""

    metrics: _Metrics
    started_at: float
    last_at: float | None = None

    def tokens_out(self, n: int) -> None:
        if n <= 0:
            return
        now = time.monotonic()
        if self.last_at is None:
            self.metrics.ttft.observe(now - self.started_at)
        else:
            self.metrics.itl.observe(now - self.last_at)
        for _ in range(n - 1):  # tokens sent together: no time between them
            self.metrics.itl.observe(0.0)
        self.last_at = now
        self.metrics.generation_tokens.inc(n)


# ---------------------------------------------------------------------- wire helpers


def _hash8(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:8]


def _usage(plan: _Plan) -> dict[str, int]:
    """vLLM's usage (its key order); a natural stop counts the EOS token as generated."""
    completion = plan.completion_tokens + (1 if plan.finish_reason == "stop" else 0)
    return {
        "prompt_tokens": plan.prompt_tokens,
        "total_tokens": plan.prompt_tokens + completion,
        "completion_tokens": completion,
    }


def _output_ids(plan: _Plan) -> list[int]:
    ids = [FIRST_TOKEN_ID + i for i in range(plan.completion_tokens)]
    return [*ids, EOS_TOKEN_ID] if plan.finish_reason == "stop" else ids


def _vllm_error(status: int, message: str, *, param: str | None = None) -> web.Response:
    kind = _ERROR_TYPES.get(status)
    if kind is None:  # not one vLLM raises itself (a scripted status): named the same way
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        kind = "".join(word.capitalize() for word in phrase.replace("-", " ").split()) + "Error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return _json_response(_encode(body), status)


# ---------------------------------------------------------------------- a server in its own process


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m testing.fake_vllm`: serve a fake vLLM until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m testing.fake_vllm", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    parser.add_argument("--model", default="tiny", help="the served model name")
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=6, help="content tokens per answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between content chunks")
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the response headers")
    parser.add_argument("--version", default="0.32.0", help="the vLLM version to report")
    args = parser.parse_args(argv)
    fake = FakeVLLM(
        args.model,
        max_model_len=args.max_model_len,
        chunks=args.chunks,
        delay=args.delay,
        first_delay=args.first_delay,
        version=args.version,
        record=False,
    )
    serve_until_signalled(fake.make_app(), args.host, args.port)


if __name__ == "__main__":
    main()
