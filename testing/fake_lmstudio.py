"""A fake LM Studio server (`lms server start`, default port 1234), with its model states and quirks.

`FakeLMStudio` knows some downloaded models, of which some are loaded (`load()`/`unload()` change that from any
thread). Like LM Studio:

- `GET /v1/models` lists every downloaded model while JIT loading is on, only the loaded ones when it is off, as
  `{"data":[{"id","object":"model","owned_by":"organization_owner"}],"object":"list"}`: no context length, no state.
- `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` speak OpenAI with LM Studio's ids
  (`chatcmpl-` plus 21 lower-case alphanumerics). A request picks its model this way:
  1. a loaded model is used;
  2. with JIT loading on, a downloaded model that is not loaded is loaded first (`load_delay` seconds; requests
     for it wait for the same load). With auto-evict on (LM Studio's default) that unloads the models JIT loaded
     before it; models loaded otherwise stay;
  3. with exactly one model loaded, any other name (even an unknown one) is served by that model (issue #619);
  4. else 404 `No models loaded. ...` when none is loaded and JIT is off, or 404 `Model "x" not found. ...`.
- `GET /api/v0/models`, `GET /api/v0/models/{id}`: every downloaded model with `type` (llm, vlm, embeddings),
  `state` (loaded, not-loaded), `max_context_length`...; `POST /api/v0/chat/completions`, `/api/v0/completions`
  add `stats`, `model_info` and `runtime` to the OpenAI body; `POST /api/v0/embeddings`.
- `GET /api/v1/models` (`loaded_instances` with their config), `POST /api/v1/models/load` and `/unload`.
- Any other path or method answers **200** `{"error":"Unexpected endpoint or method. (GET /path)"}`.

Generation is scripted like `FakeBackend` (whose bookkeeping this wraps): tokens "tok0 ", "tok1 "... with
server-wide defaults from the constructor, overridden per request by a `"fake": {...}` body field (`chunks`,
`delay`, `first_delay`, `hang`, `fail_after`, `status`, `raw_error`; see `testing.fake_backend.Knobs`).
Every request is recorded.

    python -m testing.fake_lmstudio --port 0 [--models a,b] [--loaded a] [--no-jit] [--load-delay S]

prints `listening http://127.0.0.1:PORT` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import re
import secrets
import string
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from aiohttp import web

from testing.fake_backend import (
    EMBEDDING_DIM,
    BackendWrapper,
    FakeBackend,
    Knobs,
    RequestRecord,
    _count_chat_prompt,
    _count_prompt,
    _embed,
    _embedding_inputs,
    _error,
    _InvalidRequestError,
    _json_response,
    _parse_object,
    _Plan,
    _usage,
    write_sse,
)
from testing.serving import ClientGoneError, serve_until_signalled

_encode = msgspec.json.encode
NO_MODELS_LOADED = "No models loaded. Please load a model in the developer page or use the `lms load` command."
_ID_ALPHABET = string.ascii_lowercase + string.digits
_POLL_S = 0.05
_STOP_REASONS = {"stop": "eosFound", "length": "maxPredictedTokensReached"}


@dataclass(frozen=True, slots=True)
class LMStudioModel:
    """A downloaded model, as LM Studio's REST APIs describe it. Fields left None are derived from `id`."""

    id: str
    type: Literal["llm", "vlm", "embeddings"] | None = None
    """`embeddings` when the id contains "embed", else `llm`."""
    publisher: str = "lmstudio-community"
    arch: str | None = None
    compatibility_type: Literal["gguf", "mlx"] = "gguf"
    quantization: str | None = None
    """Q4_K_M (gguf), 4bit (mlx), F16 (embeddings)."""
    max_context_length: int | None = None
    """32768, or 2048 for embeddings."""
    context_length: int | None = None
    """The context length a load gives it: 4096, or `max_context_length` for embeddings."""
    size_bytes: int = 4_683_073_536
    params_string: str | None = None
    """"7B" from "qwen2.5-7b-instruct"; none for embeddings."""
    display_name: str | None = None
    trained_for_tool_use: bool = False

    def resolved(self) -> LMStudioModel:
        """This model with every derivable field filled."""
        name = self.id.rsplit("/", 1)[-1]
        kind = self.type or ("embeddings" if "embed" in self.id.lower() else "llm")
        embeddings = kind == "embeddings"
        arch = self.arch
        if arch is None:
            match = re.match(r"[a-z]+\d*", name.lower())
            arch = "nomic-bert" if embeddings else (match.group(0) if match else "llama")
        quantization = self.quantization or (
            "F16" if embeddings else ("4bit" if self.compatibility_type == "mlx" else "Q4_K_M")
        )
        max_context = self.max_context_length or (2048 if embeddings else 32768)
        params = self.params_string
        if params is None and not embeddings:
            found = re.search(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([bm])(?![a-z])", name.lower())
            params = found.group(1) + found.group(2).upper() if found else None
        display = self.display_name or " ".join(
            part.upper() if re.fullmatch(r"\d+(?:\.\d+)?[bm]", part) else part[:1].upper() + part[1:]
            for part in re.split(r"[-_]", name)
            if part
        )
        return dataclasses.replace(
            self,
            type=kind,
            arch=arch,
            quantization=quantization,
            max_context_length=max_context,
            context_length=self.context_length or (max_context if embeddings else min(4096, max_context)),
            params_string=params,
            display_name=display,
        )


@dataclass(frozen=True, slots=True)
class _Instance:
    context_length: int
    jit: bool
    """Loaded just in time by a request (auto-evict unloads these only)."""


class FakeLMStudio(BackendWrapper):
    """A scripted LM Studio server; see the module docstring.

    `load`, `unload` and the attributes `jit_loading`, `load_delay`, `auto_evict` and `defaults` may be used from
    any thread, and so may `records`, `loaded`, `loading`, `wait_for` and `wait_for_async`.
    """

    def __init__(
        self,
        models: Sequence[str | LMStudioModel] = ("qwen2.5-7b-instruct",),
        *,
        loaded: Sequence[str] = (),
        jit_loading: bool = True,
        load_delay: float = 0.0,
        chunks: int = 6,
        delay: float = 0.0,
        first_delay: float = 0.0,
        auto_evict: bool = True,
        record: bool = True,
    ) -> None:
        specs = [m.resolved() if isinstance(m, LMStudioModel) else LMStudioModel(m).resolved() for m in models]
        self._specs = {spec.id: spec for spec in specs}
        if len(self._specs) != len(specs):
            raise ValueError("model ids must be unique")
        self.jit_loading = jit_loading
        """List every downloaded model on /v1/models, and load a requested one on demand."""
        self.load_delay = load_delay
        """Seconds a load takes (JIT or `POST /api/v1/models/load`; `load()` is immediate)."""
        self.auto_evict = auto_evict
        """A JIT load unloads the models JIT loaded before it."""
        # The backend only lends its bookkeeping, knobs and plans: its own model list is never consulted.
        self._backend = FakeBackend(
            list(self._specs) or ["-"], chunks=chunks, delay=delay, first_delay=first_delay, record=record
        )
        self._lock = threading.Lock()
        self._loaded: dict[str, _Instance] = {}
        self._jit_tasks: dict[str, asyncio.Task[None]] = {}
        for model in loaded:
            self.load(model)

    # ------------------------------------------------------------------ model state (any thread)

    @property
    def models(self) -> tuple[str, ...]:
        """The downloaded models."""
        return tuple(self._specs)

    @property
    def loaded(self) -> tuple[str, ...]:
        """The loaded models, in the order they were loaded."""
        with self._lock:
            return tuple(self._loaded)

    @property
    def loading(self) -> tuple[str, ...]:
        """The models being loaded just in time right now."""
        with self._lock:
            return tuple(self._jit_tasks)

    def load(self, model: str, *, context_length: int | None = None) -> None:
        """Load a downloaded model now (as `lms load` would: auto-evict leaves it alone)."""
        spec = self._spec(model)
        with self._lock:
            self._loaded[model] = _Instance(context_length or _context(spec), jit=False)
        self._backend._changed()

    def unload(self, model: str) -> None:
        """Unload a model (nothing happens if it is not loaded)."""
        self._spec(model)
        with self._lock:
            self._loaded.pop(model, None)
        self._backend._changed()

    def _spec(self, model: str) -> LMStudioModel:
        try:
            return self._specs[model]
        except KeyError:
            raise ValueError(f"{model!r} is not a downloaded model ({', '.join(self._specs)})") from None

    def _listed(self) -> list[str]:
        """The models /v1/models lists (and "Your models:" of the not-found error)."""
        if self.jit_loading:
            return list(self._specs)
        with self._lock:
            return list(self._loaded)

    # ------------------------------------------------------------------ running

    def make_app(self) -> web.Application:
        """A new aiohttp application serving this fake (records, knobs and model state are the fake's)."""
        app = self._new_app()
        route = self._route
        app.router.add_get("/v1/models", route(self._openai_models))
        app.router.add_post("/v1/chat/completions", route(self._chat))
        app.router.add_post("/v1/completions", route(self._completions))
        app.router.add_post("/v1/embeddings", route(self._embeddings))
        app.router.add_get("/api/v0/models", route(self._v0_models))
        app.router.add_get("/api/v0/models/{model:.+}", route(self._v0_model))
        app.router.add_post("/api/v0/chat/completions", route(self._v0_chat))
        app.router.add_post("/api/v0/completions", route(self._v0_completions))
        app.router.add_post("/api/v0/embeddings", route(self._embeddings))
        app.router.add_get("/api/v1/models", route(self._v1_models))
        app.router.add_post("/api/v1/models/load", route(self._v1_load))
        app.router.add_post("/api/v1/models/unload", route(self._v1_unload))
        app.router.add_route("*", "/{path:.*}", route(self._unexpected))
        app.on_shutdown.append(self._cancel_loads)
        return app

    async def _cancel_loads(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            tasks = list(self._jit_tasks.values())
        for task in tasks:
            if task.get_loop() is loop:
                task.cancel()

    # ------------------------------------------------------------------ choosing the model

    async def _serving_model(self, request: web.Request, rec: RequestRecord, requested: object) -> str | web.Response:
        """The model that answers a request for `requested`, loaded; or the error response, already sent."""
        name = requested if isinstance(requested, str) else None
        with self._lock:
            loaded = list(self._loaded)
            being_loaded = name in self._jit_tasks
        if name in loaded:
            return name
        if name in self._specs and (self.jit_loading or being_loaded):
            await self._load_just_in_time(request, name)
            return name
        if len(loaded) == 1:
            return loaded[0]
        if not loaded and not self.jit_loading:
            message = NO_MODELS_LOADED
        else:
            message = f'Model "{name or "undefined"}" not found. Please specify a valid model.'
            message += "\n\nYour models:\n\n" + "\n".join(self._listed())
        return await self._send(request, rec, _model_not_found(message))

    async def _load_just_in_time(self, request: web.Request, model: str) -> None:
        with self._lock:
            task = self._jit_tasks.get(model)
            started = task is None
            if task is None:
                task = self._jit_tasks[model] = asyncio.get_running_loop().create_task(self._jit_load(model))
        if started:
            self._backend._changed()
        # The load goes on if this client leaves: others may wait for it, and LM Studio would finish it anyway.
        while not task.done():
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ClientGoneError
            await asyncio.wait({task}, timeout=_POLL_S)
        task.result()

    async def _jit_load(self, model: str) -> None:
        try:
            await asyncio.sleep(self.load_delay)
            with self._lock:
                if self.auto_evict:
                    for other, instance in list(self._loaded.items()):
                        if instance.jit and other != model:
                            del self._loaded[other]
                self._loaded.setdefault(model, _Instance(_context(self._specs[model]), jit=True))
        finally:
            with self._lock:
                self._jit_tasks.pop(model, None)
            self._backend._changed()

    # ------------------------------------------------------------------ generation

    async def _chat(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._generate(request, rec, chat=True, native=False)

    async def _completions(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._generate(request, rec, chat=False, native=False)

    async def _v0_chat(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._generate(request, rec, chat=True, native=True)

    async def _v0_completions(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._generate(request, rec, chat=False, native=True)

    async def _preamble(
        self, request: web.Request, rec: RequestRecord
    ) -> tuple[dict[str, Any], Knobs, str, web.Response | None]:
        """Parse the body; apply first_delay, hang and scripted errors (in `FakeBackend`'s order); pick the model.

        A response, when there is one, was sent already: the handler returns it.
        """
        body, knobs = self._backend._body_and_knobs(rec)
        early = await self._backend._scripted(request, rec, knobs, _error)
        if early is not None:
            return body, knobs, "", early
        model = await self._serving_model(request, rec, body.get("model"))
        if isinstance(model, web.Response):
            return body, knobs, "", model
        return body, knobs, model, None

    async def _generate(
        self, request: web.Request, rec: RequestRecord, *, chat: bool, native: bool
    ) -> web.StreamResponse:
        body, knobs, model, early = await self._preamble(request, rec)
        if early is not None:
            return early
        prompt = _count_chat_prompt(body.get("messages")) if chat else _count_prompt(body.get("prompt"), "prompt")
        # LM Studio takes max_tokens -1 for "no limit".
        limit = None if body.get("max_tokens") == -1 else body.get("max_tokens")
        plan = self._backend._plan({**body, "model": model, "max_tokens": limit}, knobs, prompt, chat=chat)
        if plan.stream:
            return await self._answer_stream(request, rec, knobs, plan, chat=chat)
        return await self._answer_whole(request, rec, knobs, plan, chat=chat, native=native)

    async def _answer_whole(
        self, request: web.Request, rec: RequestRecord, knobs: Knobs, plan: _Plan, *, chat: bool, native: bool
    ) -> web.StreamResponse:
        count = plan.completion_tokens
        produced = count if knobs.fail_after is None else min(count, knobs.fail_after)
        first_token_at = time.monotonic()
        if knobs.delay and produced > 1:
            await self._backend._pause(request, knobs.delay * (produced - 1))
        generation_time = time.monotonic() - first_token_at
        if knobs.fail_after is not None:
            return self._backend._abort(request, rec)
        text = "".join(f"tok{i} " for i in range(count))
        choice: dict[str, Any]
        if chat:
            choice = {"index": 0, "logprobs": None, "finish_reason": plan.finish_reason}
            choice["message"] = {"role": "assistant", "content": text}
            head = {"id": _lms_id("chatcmpl-"), "object": "chat.completion"}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": plan.finish_reason}
            head = {"id": _lms_id("cmpl-"), "object": "text_completion"}
        payload: dict[str, Any] = {
            **head,
            "created": int(time.time()),
            "model": plan.model,
            "choices": [choice],
            "usage": _usage(plan),
        }
        if native:
            spec = self._specs[plan.model]
            payload["stats"] = {
                "tokens_per_second": count / generation_time if generation_time > 0 else 0.0,
                "time_to_first_token": round(first_token_at - rec.started_at, 3),
                "generation_time": round(generation_time, 3),
                "stop_reason": _STOP_REASONS[plan.finish_reason],
            }
            with self._lock:
                instance = self._loaded.get(plan.model)
            payload["model_info"] = {
                "arch": spec.arch,
                "quant": spec.quantization,
                "format": spec.compatibility_type,
                "context_length": instance.context_length if instance else _context(spec),
            }
            payload["runtime"] = _runtime(spec)
        else:
            payload["stats"] = {}
            payload["system_fingerprint"] = plan.model
        return await self._send(request, rec, _json_response(_encode(payload)))

    async def _answer_stream(
        self, request: web.Request, rec: RequestRecord, knobs: Knobs, plan: _Plan, *, chat: bool
    ) -> web.StreamResponse:
        head: dict[str, Any] = {
            "id": _lms_id("chatcmpl-" if chat else "cmpl-"),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": plan.model,
            "system_fingerprint": plan.model,
        }
        prefix = b"data: " + _encode(head)[:-1] + b',"choices":['
        tail = b',"logprobs":null,"finish_reason":null}]}\n\n'
        texts = [_encode(f"tok{i} ") for i in range(plan.completion_tokens)]
        finish = b',"logprobs":null,"finish_reason":' + _encode(plan.finish_reason) + b"}]}\n\n"
        if chat:
            tokens = [prefix + b'{"index":0,"delta":{"role":"assistant","content":' + t + b"}" + tail for t in texts]
            ending = [prefix + b'{"index":0,"delta":{}' + finish]
        else:
            tokens = [prefix + b'{"index":0,"text":' + t + tail for t in texts]
            ending = [prefix + b'{"index":0,"text":""' + finish]
        if plan.include_usage:
            ending.append(prefix + b'],"usage":' + _encode(_usage(plan)) + b"}\n\n")
        ending.append(b"data: [DONE]\n\n")
        return await write_sse(self._backend, request, rec, knobs, b"", tokens, ending)

    async def _embeddings(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body, _, model, early = await self._preamble(request, rec)
        if early is not None:
            return early
        inputs = _embedding_inputs(body.get("input"))
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _InvalidRequestError("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        data = []
        for index, item in enumerate(inputs):
            vector = _embed(item, EMBEDDING_DIM)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{EMBEDDING_DIM}f", *vector)).decode()
                if encoding == "base64"
                else vector
            )
            data.append({"object": "embedding", "embedding": embedding, "index": index})
        # LM Studio's own example reports no token counts for embeddings.
        payload = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 0, "total_tokens": 0}}
        return await self._send(request, rec, _json_response(_encode(payload)))

    # ------------------------------------------------------------------ model listings

    async def _openai_models(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        data = [{"id": m, "object": "model", "owned_by": "organization_owner"} for m in self._listed()]
        return await self._send(request, rec, _json_response(_encode({"data": data, "object": "list"})))

    def _v0_card(self, spec: LMStudioModel) -> dict[str, Any]:
        with self._lock:
            loaded = spec.id in self._loaded
        return {
            "id": spec.id,
            "object": "model",
            "type": spec.type,
            "publisher": spec.publisher,
            "arch": spec.arch,
            "compatibility_type": spec.compatibility_type,
            "quantization": spec.quantization,
            "state": "loaded" if loaded else "not-loaded",
            "max_context_length": spec.max_context_length,
        }

    async def _v0_models(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        data = [self._v0_card(spec) for spec in self._specs.values()]
        return await self._send(request, rec, _json_response(_encode({"object": "list", "data": data})))

    async def _v0_model(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        spec = self._specs.get(request.match_info["model"])
        if spec is None:
            message = f'Model "{request.match_info["model"]}" not found. Please specify a valid model.'
            return await self._send(request, rec, _model_not_found(message))
        return await self._send(request, rec, _json_response(_encode(self._v0_card(spec))))

    async def _v1_models(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        with self._lock:
            instances = dict(self._loaded)
        models = []
        for spec in self._specs.values():
            instance = instances.get(spec.id)
            loaded = (
                [] if instance is None else [{"id": spec.id, "config": _load_config(spec, instance.context_length)}]
            )
            card: dict[str, Any] = {
                "type": "embedding" if spec.type == "embeddings" else "llm",
                "publisher": spec.publisher,
                "key": spec.id,
                "display_name": spec.display_name,
            }
            if spec.type != "embeddings":
                card["architecture"] = spec.arch
            card.update(
                quantization={"name": spec.quantization, "bits_per_weight": _bits(spec.quantization)},
                size_bytes=spec.size_bytes,
                params_string=spec.params_string,
                loaded_instances=loaded,
                max_context_length=spec.max_context_length,
                format=spec.compatibility_type,
            )
            if spec.type != "embeddings":
                card["capabilities"] = {"vision": spec.type == "vlm", "trained_for_tool_use": spec.trained_for_tool_use}
                card["description"] = None
            models.append(card)
        return await self._send(request, rec, _json_response(_encode({"models": models})))

    async def _v1_load(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body = rec.json if rec.json is not None else _parse_object(rec.body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _InvalidRequestError("'model' is required", "model")
        spec = self._specs.get(model)
        if spec is None:
            message = f'Model "{model}" not found. Please specify a valid model.'
            return await self._send(request, rec, _model_not_found(message))
        context_length = body.get("context_length")
        if context_length is not None and (not isinstance(context_length, int) or context_length < 1):
            raise _InvalidRequestError("'context_length' must be a positive integer", "context_length")
        started = time.monotonic()
        if self.load_delay:
            await self._backend._pause(request, self.load_delay)
        self.load(model, context_length=context_length)
        payload: dict[str, Any] = {
            "type": "embedding" if spec.type == "embeddings" else "llm",
            "instance_id": model,
            "load_time_seconds": round(time.monotonic() - started, 3),
            "status": "loaded",
        }
        if body.get("echo_load_config"):
            payload["load_config"] = _load_config(spec, context_length or _context(spec))
        return await self._send(request, rec, _json_response(_encode(payload)))

    async def _v1_unload(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body = rec.json if rec.json is not None else _parse_object(rec.body)
        instance_id = body.get("instance_id")
        if not isinstance(instance_id, str) or not instance_id:
            raise _InvalidRequestError("'instance_id' is required", "instance_id")
        with self._lock:
            found = self._loaded.pop(instance_id, None) is not None
        if not found:
            message = f'No loaded model instance with identifier "{instance_id}".'
            return await self._send(request, rec, _model_not_found(message))
        self._backend._changed()
        return await self._send(request, rec, _json_response(_encode({"instance_id": instance_id})))

    async def _unexpected(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        # LM Studio's catch-all logs "Returning 200 anyway" and does.
        message = f"Unexpected endpoint or method. ({request.method} {request.path_qs})"
        return await self._send(request, rec, _json_response(_encode({"error": message})))


# ---------------------------------------------------------------------- wire helpers


def _lms_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(21))


def _model_not_found(message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
    return _json_response(_encode(body), 404)


def _context(spec: LMStudioModel) -> int:
    assert spec.context_length is not None, "specs are resolved"
    return spec.context_length


def _load_config(spec: LMStudioModel, context_length: int) -> dict[str, Any]:
    if spec.type == "embeddings":
        return {"context_length": context_length}
    return {
        "context_length": context_length,
        "eval_batch_size": 512,
        "parallel": 4,
        "flash_attention": True,
        "offload_kv_cache_to_gpu": True,
    }


def _bits(quantization: str | None) -> int | None:
    found = re.search(r"\d+", quantization or "")
    return int(found.group(0)) if found else None


def _runtime(spec: LMStudioModel) -> dict[str, Any]:
    if spec.compatibility_type == "mlx":
        return {
            "name": "mlx-llm-mac-arm64-apple-metal-advsimd",
            "version": "0.21.0",
            "supported_formats": ["safetensors"],
        }
    return {"name": "llama.cpp-linux-x86_64-nvidia-cuda12-avx2", "version": "1.3.0", "supported_formats": ["gguf"]}


# ---------------------------------------------------------------------- a server in its own process


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m testing.fake_lmstudio`: serve a fake LM Studio until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m testing.fake_lmstudio", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    parser.add_argument("--models", default="qwen2.5-7b-instruct", help="comma-separated downloaded model ids")
    parser.add_argument("--loaded", default="", help="comma-separated model ids loaded at start")
    parser.add_argument("--no-jit", action="store_true", help="turn just-in-time loading off")
    parser.add_argument("--load-delay", type=float, default=0.0, help="seconds a model load takes")
    parser.add_argument("--chunks", type=int, default=6, help="content tokens per answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between content chunks")
    args = parser.parse_args(argv)
    fake = FakeLMStudio(
        [m for m in args.models.split(",") if m],
        loaded=[m for m in args.loaded.split(",") if m],
        jit_loading=not args.no_jit,
        load_delay=args.load_delay,
        chunks=args.chunks,
        delay=args.delay,
        record=False,
    )
    serve_until_signalled(fake.make_app(), args.host, args.port)


if __name__ == "__main__":
    main()
