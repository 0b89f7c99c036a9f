"""A fake OpenAI-compatible LLM server (like vLLM or llama.cpp's server) with scripted behaviour.

`FakeBackend` builds a real aiohttp application speaking the OpenAI API: `GET /v1/models`, `GET /health`,
`POST /v1/chat/completions`, `POST /v1/completions` and `POST /v1/embeddings`, streaming (SSE) and not,
in OpenAI's exact shapes. Told to (`messages=True`), it also speaks Anthropic's `/v1/messages` and
`/v1/messages/count_tokens` natively, as llama.cpp, vLLM and Ollama do, and (`tokenizer=True`) llama.cpp's
`/apply-template` and `/tokenize` (both in `testing.fake_messages`). Each answer is scripted by knobs
(`Knobs`): server-wide defaults given to the constructor, overridden per request by an extra top-level
`"fake": {...}` field of the JSON body (the openai SDK sends it with `extra_body={"fake": {...}}`). Every
request is recorded (`RequestRecord`).

A tool turn is scripted with the `tool_call` knob: a chat completion that offers that function in `tools`
gets a call of it (`tool_calls`, finish_reason "tool_calls"), and once the client sends the tool's result
back (a last message of role "tool") it gets text again, in OpenAI's shapes streamed and not. A client that
cannot send the knob in its body (Claude Code, Codex CLI) gets it from the constructor's defaults.

Run it in a thread of its own (`with FakeBackend().running() as url:`), in any aiohttp runner
(`FakeBackend().make_app()`; pass `handler_cancellation=True` to the runner so that waits end at once when
the client goes away), or as a process for benchmarks:

    python -m testing.fake_backend --port 0 [--models a,b] [--chunks N] [--delay S]

which prints one line, `listening http://127.0.0.1:PORT`, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any

import msgspec
from aiohttp import web

from testing.recording import RequestRecord as RequestRecord
from testing.serving import MAX_BODY_BYTES, FakeServer, Servable, serve_forever
from testing.serving import BackgroundServer as BackgroundServer

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE_FRAME = b"data: [DONE]\n\n"
SYSTEM_FINGERPRINT = "fp_fake"
EMBEDDING_DIM = 8

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class ToolCall(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A function call the fake answers with (knob `tool_call`)."""

    name: str
    """The function's name; the call is made only to a request whose `tools` offer a function of this name."""
    arguments: str = "{}"
    """Its arguments: a JSON object as a string, as OpenAI sends them (streamed in pieces of 16 characters)."""


class Knobs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the fake answers a POST to /v1/chat/completions, /v1/completions or /v1/embeddings.

    The constructor of `FakeBackend` sets the defaults; a request overrides any of them with `"fake": {...}`.
    They act in this order: first_delay, hang, raw_error, status, then validation (400, unknown model 404),
    then the answer. Embeddings ignore chunks, delay and fail_after. `GET` routes ignore every knob.
    """

    chunks: Annotated[int, msgspec.Meta(ge=0)] = 8
    """Content tokens to generate, "tok0 ", "tok1 ", ...; `max_tokens` <= chunks cuts them (finish_reason "length")."""
    delay: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Seconds between two content chunks (each one then written on its own); a whole answer takes as long."""
    first_delay: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Seconds before the response headers are sent (time to first token, cold load)."""
    fail_after: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Close the connection after the role chunk and this many content chunks (no finish chunk, no [DONE]).

    Without streaming, the connection closes with no response at all."""
    status: Annotated[int, msgspec.Meta(ge=400, le=599)] | None = None
    """Answer this HTTP error status with an OpenAI-shaped error body (also for stream: true)."""
    hang: bool = False
    """Never answer; wait until the client disconnects."""
    raw_error: str | None = None
    """Answer `status` (default 500) with this text as a non-JSON body."""
    tool_call: ToolCall | None = None
    """Answer a chat completion with this call when the request offers the function and its last message is not
    a tool result (role "tool"); otherwise answer with text. `chunks`, `max_tokens` and `fail_after` do not apply
    to the call."""
    cached_tokens: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Prompt tokens (at most all) reported as read from the prompt cache: chat's
    `prompt_tokens_details.cached_tokens`, Messages' `cache_read_input_tokens`."""


class _InvalidRequestError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one generation request produces."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    stream: bool
    include_usage: bool
    cached_tokens: int = 0


_Answer = Callable[[web.Request, RequestRecord], Awaitable[web.StreamResponse]]


class FakeBackend(FakeServer[RequestRecord, _InvalidRequestError]):
    """A scripted OpenAI-compatible LLM server; see the module docstring.

    `records`, `in_flight`, `wait_for` and `wait_for_async` may be used from any thread.
    """

    def __init__(
        self,
        models: Sequence[str] = ("fake-model",),
        *,
        chunks: int = 8,
        delay: float = 0.0,
        first_delay: float = 0.0,
        fail_after: int | None = None,
        status: int | None = None,
        hang: bool = False,
        raw_error: str | None = None,
        tool_call: ToolCall | None = None,
        record: bool = True,
        owned_by: str = "fake",
        cached_tokens: int = 0,
        messages: bool = False,
        tokenizer: bool = False,
    ) -> None:
        super().__init__(_InvalidRequestError)
        if not models:
            raise ValueError("a backend serves at least one model")
        self.models: tuple[str, ...] = tuple(models)
        self.defaults: Knobs = msgspec.convert(
            {
                "chunks": chunks,
                "delay": delay,
                "first_delay": first_delay,
                "fail_after": fail_after,
                "status": status,
                "hang": hang,
                "raw_error": raw_error,
                "tool_call": tool_call,
                "cached_tokens": cached_tokens,
            },
            Knobs,
        )
        """Knobs used when a request does not override them; may be replaced at any time."""
        self.record = record
        """Keep a `RequestRecord` of every request in `records` (turn off for benchmarks)."""
        self.messages = messages
        """Speak Anthropic's Messages API natively too."""
        self.tokenizer = tokenizer
        """Serve llama.cpp's `/apply-template` and `/tokenize` too."""
        self._token_frames: list[tuple[bytes, bytes]] = []  # (chat delta, completion text) per token index
        self._created = int(time.time())
        self._owned_by = owned_by
        self.set_models(models)

    def set_models(self, models: Sequence[str]) -> None:
        """Serve these models from now on: what ``/v1/models`` lists, and what requests may name."""
        if not models:
            raise ValueError("a backend serves at least one model")
        self.models = tuple(models)
        cards = {m: {"id": m, "object": "model", "created": self._created, "owned_by": self._owned_by} for m in models}
        self._models_body = _encode({"object": "list", "data": list(cards.values())})
        self._model_bodies = {m: _encode(card) for m, card in cards.items()}

    # ------------------------------------------------------------------ running

    def make_app(self) -> web.Application:
        """A new aiohttp application serving this backend (records and knobs are the backend's)."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/health", self._handler(self._health))
        app.router.add_get("/v1/models", self._handler(self._list_models))
        app.router.add_get("/v1/models/{model}", self._handler(self._get_model))
        app.router.add_post("/v1/chat/completions", self._handler(self._chat))
        app.router.add_post("/v1/completions", self._handler(self._completions))
        app.router.add_post("/v1/embeddings", self._handler(self._embeddings))
        if self.messages or self.tokenizer:
            from testing.fake_messages import add_llamacpp_tokenizer, add_messages_routes  # it builds on this module

            if self.messages:
                add_messages_routes(app, self)
            if self.tokenizer:
                add_llamacpp_tokenizer(app, self)
        app.router.add_route("*", "/{path:.*}", self._handler(self._unknown_route))
        app.on_shutdown.append(self._on_shutdown)
        return app

    # ------------------------------------------------------------------ request bookkeeping

    def _reject(self, request: web.Request, exc: _InvalidRequestError) -> web.Response:
        return _error(400, exc.message, param=exc.param)

    def _begin(self, request: web.Request, body: bytes) -> RequestRecord:
        with self._lock:
            self._in_flight += 1
        rec_id = next(self._ids)
        if not self.record:
            self._changed()
            return RequestRecord(rec_id, request.method, request.path, {}, body, None, time.monotonic())
        rec = RequestRecord.of(rec_id, request, body)
        with self._lock:
            self.records.append(rec)
        self._changed()
        return rec

    # ------------------------------------------------------------------ simple routes

    async def _health(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._send(request, rec, _json_response(b'{"status":"ok"}'))

    async def _list_models(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._send(request, rec, _json_response(self._models_body))

    async def _get_model(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        model = request.match_info["model"]
        body = self._model_bodies.get(model)
        if body is None:
            return await self._send(request, rec, _model_not_found(model))
        return await self._send(request, rec, _json_response(body))

    async def _unknown_route(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        return await self._send(request, rec, _error(404, f"Invalid URL ({request.method} {request.path})"))

    # ------------------------------------------------------------------ generation routes

    async def _preamble(
        self, request: web.Request, rec: RequestRecord
    ) -> tuple[dict[str, Any], Knobs, web.Response | None]:
        """Parse the body and apply the knobs that act before any answer: first_delay, hang and errors."""
        body, knobs = self._body_and_knobs(rec)
        early = await self._scripted(request, rec, knobs, _error)
        if early is not None:
            return body, knobs, early
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _InvalidRequestError("you must provide a model parameter", "model")
        if model not in self.models:
            return body, knobs, await self._send(request, rec, _model_not_found(model))
        return body, knobs, None

    def _body_and_knobs(self, rec: RequestRecord) -> tuple[dict[str, Any], Knobs]:
        """The JSON object of a generation request and the knobs it runs with."""
        body = rec.json if rec.json is not None else _parse_object(rec.body)
        return body, self._knobs(body)

    async def _scripted(
        self, request: web.Request, rec: RequestRecord, knobs: Knobs, error: Callable[[int, str], web.Response]
    ) -> web.Response | None:
        """Apply first_delay, hang, raw_error and status, in that order; the error answer (`error(status, message)`
        renders `status`) when one was sent, else None."""
        if knobs.first_delay:
            await self._pause(request, knobs.first_delay)
        if knobs.hang:
            await self._pause(request, None)
        if knobs.raw_error is not None:
            resp = web.Response(status=knobs.status or 500, text=knobs.raw_error, content_type="text/plain")
            return await self._send(request, rec, resp)
        if knobs.status is not None:
            return await self._send(request, rec, error(knobs.status, f"fake error {knobs.status}"))
        return None

    def _knobs(self, body: dict[str, Any]) -> Knobs:
        fake = body.get("fake")
        if fake is None:
            return self.defaults
        if not isinstance(fake, dict):
            raise _InvalidRequestError("'fake' must be an object", "fake")
        try:
            return msgspec.convert({**msgspec.structs.asdict(self.defaults), **fake}, Knobs)
        except msgspec.ValidationError as exc:
            raise _InvalidRequestError(f"invalid 'fake': {exc}", "fake") from exc

    def _plan(self, body: dict[str, Any], knobs: Knobs, prompt_tokens: int, *, chat: bool) -> _Plan:
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise _InvalidRequestError("'stream' must be a boolean", "stream")
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise _InvalidRequestError("'stream_options' must be an object", "stream_options")
        include_usage = bool(options and options.get("include_usage"))
        limit_key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
        limit = body.get(limit_key)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise _InvalidRequestError(f"'{limit_key}' must be an integer of at least 1", limit_key)
        count, finish = knobs.chunks, "stop"
        # A real model that reaches the limit reports "length" even if it would have stopped right there.
        if limit is not None and limit <= count:
            count, finish = limit, "length"
        cached = min(knobs.cached_tokens, prompt_tokens)
        return _Plan(body["model"], prompt_tokens, count, finish, stream, include_usage, cached)

    async def _chat(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body, knobs, early = await self._preamble(request, rec)
        if early is not None:
            return early
        plan = self._plan(body, knobs, _count_chat_prompt(body.get("messages")), chat=True)
        call = _tool_call_due(body, knobs.tool_call)
        if call is not None:
            return await self._answer_tool_call(request, rec, knobs, plan, call)
        if plan.stream:
            return await self._answer_stream(request, rec, knobs, plan, chat=True)
        return await self._answer_whole(request, rec, knobs, plan, chat=True)

    async def _completions(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body, knobs, early = await self._preamble(request, rec)
        if early is not None:
            return early
        plan = self._plan(body, knobs, _count_prompt(body.get("prompt"), "prompt"), chat=False)
        if plan.stream:
            return await self._answer_stream(request, rec, knobs, plan, chat=False)
        return await self._answer_whole(request, rec, knobs, plan, chat=False)

    async def _embeddings(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body, _, early = await self._preamble(request, rec)
        if early is not None:
            return early
        inputs = _embedding_inputs(body.get("input"))
        dims = body.get("dimensions", EMBEDDING_DIM)
        if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 4096:
            raise _InvalidRequestError("'dimensions' must be an integer from 1 to 4096", "dimensions")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _InvalidRequestError("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        data = []
        for index, item in enumerate(inputs):
            vector = _embed(item, dims)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if encoding == "base64" else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(_count_words(item) for item in inputs)
        payload = {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return await self._send(request, rec, _json_response(_encode(payload)))

    def _token_frame(self, index: int) -> tuple[bytes, bytes]:
        frames = self._token_frames
        while len(frames) <= index:
            text = _encode(f"tok{len(frames)} ")
            frames.append((b'{"content":' + text + b"}", b'"text":' + text))
        return frames[index]

    async def _answer_whole(
        self, request: web.Request, rec: RequestRecord, knobs: Knobs, plan: _Plan, *, chat: bool
    ) -> web.StreamResponse:
        count = plan.completion_tokens
        produced = count if knobs.fail_after is None else min(count, knobs.fail_after)
        if knobs.delay and produced > 1:
            await self._pause(request, knobs.delay * (produced - 1))
        if knobs.fail_after is not None:
            return self._abort(request, rec)
        text = "".join(f"tok{i} " for i in range(count))
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text}
        choice["logprobs"] = None
        choice["finish_reason"] = plan.finish_reason
        payload = {**_head(plan.model, chat=chat, stream=False), "choices": [choice], "usage": _usage(plan)}
        return await self._send(request, rec, _json_response(_encode(payload)))

    async def _answer_stream(
        self, request: web.Request, rec: RequestRecord, knobs: Knobs, plan: _Plan, *, chat: bool
    ) -> web.StreamResponse:
        count = plan.completion_tokens
        prefix = b"data: " + _encode(_head(plan.model, chat=chat, stream=True))[:-1]
        if chat:
            choice_open = b',"choices":[{"index":0,"delta":'
            opening = prefix + choice_open + b'{"role":"assistant","content":""}' + _NULL_TAIL
            tokens = [prefix + choice_open + self._token_frame(i)[0] + _NULL_TAIL for i in range(count)]
            finish = prefix + choice_open + b'{},"logprobs":null,"finish_reason":"' + plan.finish_reason.encode()
        else:
            choice_open = b',"choices":[{"index":0,'
            opening = b""
            tokens = [prefix + choice_open + self._token_frame(i)[1] + _NULL_TAIL for i in range(count)]
            finish = prefix + choice_open + b'"text":"","logprobs":null,"finish_reason":"' + plan.finish_reason.encode()
        ending = [finish + b'"}]}\n\n']
        if plan.include_usage:
            ending.append(prefix + b',"choices":[],"usage":' + _encode(_usage(plan)) + b"}\n\n")
        ending.append(DONE_FRAME)
        return await write_sse(self, request, rec, knobs, opening, tokens, ending)

    async def _answer_tool_call(
        self, request: web.Request, rec: RequestRecord, knobs: Knobs, plan: _Plan, call: ToolCall
    ) -> web.StreamResponse:
        plan = replace(plan, completion_tokens=_count_words(call.arguments), finish_reason="tool_calls")
        call_id = "call_" + secrets.token_hex(12)
        head = {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        if not plan.stream:
            message = {"role": "assistant", "content": None, "tool_calls": [head]}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
            payload = {**_head(plan.model, chat=True, stream=False), "choices": [choice], "usage": _usage(plan)}
            return await self._send(request, rec, _json_response(_encode(payload)))
        prefix = (
            b"data: " + _encode(_head(plan.model, chat=True, stream=True))[:-1] + b',"choices":[{"index":0,"delta":'
        )
        opening = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{**head, "index": 0, "function": {"name": call.name, "arguments": ""}}],
        }
        pieces = [call.arguments[i : i + 16] for i in range(0, len(call.arguments), 16)]
        tokens = [
            prefix + _encode({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) + _NULL_TAIL for p in pieces
        ]
        ending = [prefix + b'{},"logprobs":null,"finish_reason":"tool_calls"}]}\n\n']
        if plan.include_usage:
            ending.append(
                prefix[: prefix.index(b',"choices"')] + b',"choices":[],"usage":' + _encode(_usage(plan)) + b"}\n\n"
            )
        ending.append(DONE_FRAME)
        quiet = msgspec.structs.replace(knobs, fail_after=None)
        return await write_sse(self, request, rec, quiet, prefix + _encode(opening) + _NULL_TAIL, tokens, ending)


async def write_sse(
    backend: FakeBackend,
    request: web.Request,
    rec: RequestRecord,
    knobs: Knobs,
    head: bytes,
    tokens: Sequence[bytes],
    ending: Sequence[bytes],
    *,
    on_tokens: Callable[[int], None] | None = None,
    eos: int = 0,
    headers: Mapping[str, str] = SSE_HEADERS,
) -> web.StreamResponse:
    """Write an SSE answer (`head`, one frame per token, `ending`) paced by the knobs.

    `knobs.delay` separates the token frames (each then written on its own), `knobs.fail_after` cuts the stream
    after that many tokens and closes the connection. `on_tokens(n)` is called as n tokens go out, `eos` extra
    tokens (a stop token that has no frame of its own) counting with the ending. Shared with `fake_lmstudio` and
    `fake_vllm`.
    """
    resp = web.StreamResponse(headers=headers)
    rec.status = resp.status
    await resp.prepare(request)
    count = on_tokens or (lambda n: None)
    sent = len(tokens) if knobs.fail_after is None else min(len(tokens), knobs.fail_after)
    finished = knobs.fail_after is None
    if not knobs.delay or sent <= 1:
        count(sent + (eos if finished else 0))
        await resp.write(b"".join([head, *tokens[:sent], *(ending if finished else ())]))
    else:
        count(1)
        await resp.write(head + tokens[0])
        for frame in tokens[1:sent]:
            await backend._pause(request, knobs.delay)
            count(1)
            await resp.write(frame)
        if finished:
            count(eos)
            await resp.write(b"".join(ending))
    if not finished:
        return backend._abort(request, rec, resp)
    await resp.write_eof()
    rec.completed = True
    return resp


class BackendWrapper(Servable):
    """What a fake built on a `FakeBackend` (`FakeLMStudio`, `FakeVLLM`) lends from it: records and waits, knobs,
    request bookkeeping. A subclass sets `_backend` and builds its application with `_new_app` and `_route`.

    `records`, `in_flight`, `find`, `wait_for` and `wait_for_async` may be used from any thread, and so may `defaults`.
    """

    _backend: FakeBackend

    @property
    def defaults(self) -> Knobs:
        """Knobs used when a request does not override them (`"fake": {...}`); may be replaced at any time."""
        return self._backend.defaults

    @defaults.setter
    def defaults(self, knobs: Knobs) -> None:
        self._backend.defaults = knobs

    @property
    def records(self) -> list[RequestRecord]:
        """Every request received, in order (see `testing.recording.RequestRecord`)."""
        return self._backend.records

    @property
    def in_flight(self) -> int:
        """Requests of any kind being answered right now."""
        return self._backend.in_flight

    def method_of(self, record: RequestRecord) -> str:
        """The HTTP method of a recorded request."""
        return record.method

    def find(self, path: str | None = None, *, method: str | None = None) -> list[RequestRecord]:
        """The recorded requests to `path` (any when None) with `method` (any when None)."""
        return [
            r
            for r in list(self._backend.records)
            if (path is None or r.path == path) and (method is None or r.method == method)
        ]

    def wait_for(self, predicate: Callable[[], object], timeout: float) -> bool:
        """Block until `predicate()` is true (re-checked on every change); False after `timeout` seconds.

        Never from the server's loop (use `wait_for_async` there)."""
        return self._backend.wait_for(predicate, timeout)

    async def wait_for_async(self, predicate: Callable[[], object], timeout: float) -> bool:
        """Wait, without blocking the caller's event loop, until `predicate()` is true; False on timeout."""
        return await self._backend.wait_for_async(predicate, timeout)

    def clear_records(self) -> None:
        """Forget the recorded requests."""
        self._backend.clear_records()

    def _new_app(self) -> web.Application:
        """An empty application that cancels the backend's waiting answers on shutdown."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.on_shutdown.append(self._backend._on_shutdown)
        return app

    def _route(self, answer: _Answer) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The backend's handler: records (with the method), in-flight count, disconnects."""
        return self._backend._handler(answer)

    async def _send(self, request: web.Request, rec: RequestRecord, resp: web.Response) -> web.Response:
        return await self._backend._send(request, rec, resp)


# ---------------------------------------------------------------------- wire helpers

_NULL_TAIL = b',"logprobs":null,"finish_reason":null}]}\n\n'


def _head(model: str, *, chat: bool, stream: bool) -> dict[str, Any]:
    if chat:
        ident, obj = "chatcmpl-" + secrets.token_hex(12), "chat.completion.chunk" if stream else "chat.completion"
    else:
        ident, obj = "cmpl-" + secrets.token_hex(12), "text_completion"
    return {
        "id": ident,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def _usage(plan: _Plan) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
    }
    if plan.cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": plan.cached_tokens}
    return usage


def _json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> web.Response:
    if status == 401:
        kind = "authentication_error"
    elif status == 403:
        kind = "permission_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return _json_response(_encode(body), status)


def _model_not_found(model: str) -> web.Response:
    return _error(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = _decode(body)
    except msgspec.DecodeError as exc:
        raise _InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise _InvalidRequestError("the request body must be a JSON object")
    return parsed


def _count_words(text: object) -> int:
    """Prompt tokens of one text (whitespace-separated words) or token list, at least 1."""
    if isinstance(text, str):
        return max(1, len(text.split()))
    if isinstance(text, list):
        return max(1, len(text))
    return 1


def _tool_call_due(body: dict[str, Any], call: ToolCall | None) -> ToolCall | None:
    """The scripted call when the request offers its function and is not already answering a call."""
    if call is None:
        return None
    tools = body.get("tools")
    offered = isinstance(tools, list) and any(
        isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name") == call.name
        for t in tools
    )
    messages = body["messages"]
    answering = isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"
    return call if offered and not answering else None


def _count_chat_prompt(messages: object) -> int:
    if not isinstance(messages, list) or not messages:
        raise _InvalidRequestError("'messages' must be a non-empty array", "messages")
    words = 0
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _InvalidRequestError("each message must be an object with a 'role'", "messages")
        content = message.get("content")
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    words += len(part["text"].split())
    return max(1, words)


def _count_prompt(prompt: object, param: str) -> int:
    if isinstance(prompt, str):
        return _count_words(prompt)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):
            return len(prompt)
        if all(isinstance(p, str | list) for p in prompt):
            return max(1, sum(len(p.split()) if isinstance(p, str) else len(p) for p in prompt))
    raise _InvalidRequestError(f"'{param}' must be a string, an array of strings or an array of tokens", param)


def _embedding_inputs(value: object) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [value]
        if all(isinstance(v, str) or (isinstance(v, list) and all(isinstance(t, int) for t in v)) for v in value):
            return value
    raise _InvalidRequestError("'input' must be a string, an array of strings or an array of tokens", "input")


def _embed(item: str | list[int], dims: int) -> list[float]:
    """A deterministic vector in [-1, 1) for one input."""
    data = item.encode() if isinstance(item, str) else _encode(item)
    raw = hashlib.shake_256(data).digest(4 * dims)
    return [round(u / 2**31 - 1.0, 6) for u in struct.unpack(f"<{dims}I", raw)]


# ---------------------------------------------------------------------- a server in its own thread


def start_in_thread(app_or_backend: web.Application | FakeBackend) -> tuple[str, Callable[[], None]]:
    """Serve an application (or a `FakeBackend`) on 127.0.0.1:0 in its own thread; return (url, stop)."""
    app = app_or_backend.make_app() if isinstance(app_or_backend, FakeBackend) else app_or_backend
    server = BackgroundServer(app)
    return server.start(), server.stop


# ---------------------------------------------------------------------- a server in its own process


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m testing.fake_backend`: serve a fake backend until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m testing.fake_backend", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    parser.add_argument("--models", default="fake-model", help="comma-separated model ids")
    parser.add_argument("--chunks", type=int, default=8, help="content tokens per answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between content chunks")
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the response headers")
    parser.add_argument("--record", action="store_true", help="keep a record of every request (memory grows)")
    parser.add_argument("--messages", action="store_true", help="speak Anthropic's /v1/messages natively too")
    args = parser.parse_args(argv)
    backend = FakeBackend(
        [m for m in args.models.split(",") if m],
        chunks=args.chunks,
        delay=args.delay,
        first_delay=args.first_delay,
        record=args.record,
        messages=args.messages,
    )
    serve_forever(backend.make_app, args.host, args.port)


if __name__ == "__main__":
    main()
