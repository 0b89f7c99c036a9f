"""A fake OpenAI-compatible LLM server (like vLLM or llama.cpp's server) with scripted behaviour.

`FakeBackend` builds a real aiohttp application speaking the OpenAI API: `GET /v1/models`, `GET /health`,
`POST /v1/chat/completions`, `POST /v1/completions` and `POST /v1/embeddings`, streaming (SSE) and not,
in OpenAI's exact shapes. Each answer is scripted by knobs (`Knobs`): server-wide defaults given to the
constructor, overridden per request by an extra top-level `"fake": {...}` field of the JSON body (the
openai SDK sends it with `extra_body={"fake": {...}}`). Every request is recorded (`RequestRecord`).

Run it in a thread of its own (`with FakeBackend().running() as url:`), in any aiohttp runner
(`FakeBackend().make_app()`; pass `handler_cancellation=True` to the runner so that waits end at once when
the client goes away), or as a process for benchmarks:

    python -m tests.support.fake_backend --port 0 [--models a,b] [--chunks N] [--delay S]

which prints one line, `listening http://127.0.0.1:PORT`, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import secrets
import signal
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from aiohttp import web

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE_FRAME = b"data: [DONE]\n\n"
SYSTEM_FINGERPRINT = "fp_fake"
EMBEDDING_DIM = 8
# How often a wait re-checks the connection when the runner does not cancel handlers on disconnect.
_DISCONNECT_POLL_S = 0.05
_MAX_BODY_BYTES = 64 * 1024 * 1024

_encode = msgspec.json.encode
_decode = msgspec.json.decode


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


@dataclass(eq=False)
class RequestRecord:
    """One request the fake received, updated while it is answered (from the server's thread)."""

    id: int
    path: str
    headers: dict[str, str]
    """Request headers, names lower-cased (a repeated header keeps its last value)."""
    body: bytes
    json: dict[str, Any] | None
    """The body parsed, when it is a JSON object."""
    started_at: float
    """`time.monotonic()` when the request arrived."""
    completed: bool = False
    """The whole response was written to the connection."""
    disconnected: bool = False
    """The client went away before the response was complete."""
    disconnected_at: float | None = None
    status: int | None = None
    """The HTTP status answered, once the response started."""
    aborted: bool = False
    """The fake closed the connection on purpose (`fail_after`)."""


class _InvalidRequestError(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class _ClientGoneError(Exception):
    """The connection closed while the handler was waiting (runners without handler cancellation)."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one generation request produces."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    stream: bool
    include_usage: bool


@dataclass(slots=True, eq=False)
class _AsyncWaiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)


_Answer = Callable[[web.Request, RequestRecord], Awaitable[web.StreamResponse]]


class FakeBackend:
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
        record: bool = True,
        owned_by: str = "fake",
    ) -> None:
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
            },
            Knobs,
        )
        """Knobs used when a request does not override them; may be replaced at any time."""
        self.record = record
        """Keep a `RequestRecord` of every request in `records` (turn off for benchmarks)."""
        self.records: list[RequestRecord] = []
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._async_waiters: set[_AsyncWaiter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shutdown_cancelled: set[asyncio.Task[Any]] = set()
        self._token_frames: list[tuple[bytes, bytes]] = []  # (chat delta, completion text) per token index
        created = int(time.time())
        self._models_body = _encode(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": created, "owned_by": owned_by} for m in self.models],
            }
        )
        self._model_bodies = {
            m: _encode({"id": m, "object": "model", "created": created, "owned_by": owned_by}) for m in self.models
        }

    # ------------------------------------------------------------------ observing (any thread)

    @property
    def in_flight(self) -> int:
        """Requests being answered right now."""
        return self._in_flight

    def wait_for(self, predicate: Callable[[], object], timeout: float) -> bool:
        """Block until `predicate()` is true (re-checked on every change); False after `timeout` seconds.

        Do not call it from the event loop the backend runs in (use `wait_for_async` there).
        """
        with self._cond:
            return bool(self._cond.wait_for(predicate, timeout))

    async def wait_for_async(self, predicate: Callable[[], object], timeout: float) -> bool:
        """Wait, without blocking the caller's event loop, until `predicate()` is true; False on timeout."""
        waiter = _AsyncWaiter(asyncio.get_running_loop())
        with self._cond:
            self._async_waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await waiter.event.wait()
                    waiter.event.clear()
        except TimeoutError:
            return bool(predicate())
        finally:
            with self._cond:
                self._async_waiters.discard(waiter)
        return True

    def clear_records(self) -> None:
        """Forget the recorded requests."""
        with self._cond:
            self.records.clear()
            self._cond.notify_all()

    def _changed(self) -> None:
        # Called on the server's loop after every change a waiter may look at.
        with self._cond:
            self._cond.notify_all()
            waiters = list(self._async_waiters)
        for waiter in waiters:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:  # pragma: no cover - always called from the server's loop
                running = None
            if waiter.loop is running:
                waiter.event.set()
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed: its waiter is gone
                    waiter.loop.call_soon_threadsafe(waiter.event.set)

    # ------------------------------------------------------------------ running

    def make_app(self) -> web.Application:
        """A new aiohttp application serving this backend (records and knobs are the backend's)."""
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_get("/health", self._handler(self._health))
        app.router.add_get("/v1/models", self._handler(self._list_models))
        app.router.add_get("/v1/models/{model}", self._handler(self._get_model))
        app.router.add_post("/v1/chat/completions", self._handler(self._chat))
        app.router.add_post("/v1/completions", self._handler(self._completions))
        app.router.add_post("/v1/embeddings", self._handler(self._embeddings))
        app.router.add_route("*", "/{path:.*}", self._handler(self._unknown_route))
        app.on_shutdown.append(self._on_shutdown)
        return app

    @contextlib.contextmanager
    def running(self, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve on `host:port` in a thread of its own; yield the base URL (`http://127.0.0.1:PORT`)."""
        with BackgroundServer(self.make_app(), host=host, port=port) as server:
            yield server.url

    async def _on_shutdown(self, app: web.Application) -> None:
        # Answers that wait (hang, delays) would hold the runner's shutdown for its whole timeout.
        loop = asyncio.get_running_loop()
        for task in list(self._tasks):
            if task.get_loop() is loop and not task.done():
                self._shutdown_cancelled.add(task)
                task.cancel()

    # ------------------------------------------------------------------ request bookkeeping

    def _handler(self, answer: _Answer) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            rec = self._begin(request, body)
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                return await answer(request, rec)
            except _InvalidRequestError as exc:
                return await self._send(request, rec, _error(400, exc.message, param=exc.param))
            except asyncio.CancelledError:
                if task not in self._shutdown_cancelled:
                    self._mark_disconnected(rec)
                raise
            except (ConnectionResetError, _ClientGoneError):
                self._mark_disconnected(rec)
                # Nothing can be sent any more; aiohttp treats the failed write as a client disconnect.
                return web.Response(status=499)
            finally:
                self._tasks.discard(task)
                self._shutdown_cancelled.discard(task)
                self._in_flight -= 1
                self._changed()

        return handle

    def _begin(self, request: web.Request, body: bytes) -> RequestRecord:
        self._in_flight += 1
        rec_id = next(self._ids)
        if not self.record:
            self._changed()
            return RequestRecord(rec_id, request.path, {}, body, None, time.monotonic())
        parsed: Any = None
        if body:
            with contextlib.suppress(msgspec.DecodeError):
                parsed = _decode(body)
        rec = RequestRecord(
            id=rec_id,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            json=parsed if isinstance(parsed, dict) else None,
            started_at=time.monotonic(),
        )
        with self._cond:
            self.records.append(rec)
        self._changed()
        return rec

    def _mark_disconnected(self, rec: RequestRecord) -> None:
        if not rec.completed and not rec.disconnected:
            rec.disconnected_at = time.monotonic()
            rec.disconnected = True

    async def _send(self, request: web.Request, rec: RequestRecord, resp: web.Response) -> web.Response:
        """Write a whole response now, so that `completed` is known before the handler returns."""
        rec.status = resp.status
        await resp.prepare(request)
        await resp.write_eof()
        rec.completed = True
        return resp

    async def _pause(self, request: web.Request, seconds: float | None) -> None:
        """Sleep `seconds` (forever when None), ending early with `_ClientGoneError` if the client goes away.

        Under a runner with `handler_cancellation=True` the handler is cancelled on disconnect anyway; the
        polling is for runners without it (aiohttp's default, e.g. `TestServer`).
        """
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while True:
            transport = request.transport
            if transport is None or transport.is_closing():
                raise _ClientGoneError
            step = _DISCONNECT_POLL_S if deadline is None else min(_DISCONNECT_POLL_S, deadline - loop.time())
            if step <= 0:
                return
            await asyncio.sleep(step)

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
        body = rec.json if rec.json is not None else _parse_object(rec.body)
        knobs = self._knobs(body)
        if knobs.first_delay:
            await self._pause(request, knobs.first_delay)
        if knobs.hang:
            await self._pause(request, None)
        if knobs.raw_error is not None:
            resp = web.Response(status=knobs.status or 500, text=knobs.raw_error, content_type="text/plain")
            return body, knobs, await self._send(request, rec, resp)
        if knobs.status is not None:
            return body, knobs, await self._send(request, rec, _error(knobs.status, f"fake error {knobs.status}"))
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _InvalidRequestError("you must provide a model parameter", "model")
        if model not in self.models:
            return body, knobs, await self._send(request, rec, _model_not_found(model))
        return body, knobs, None

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
        return _Plan(body["model"], prompt_tokens, count, finish, stream, include_usage)

    async def _chat(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body, knobs, early = await self._preamble(request, rec)
        if early is not None:
            return early
        plan = self._plan(body, knobs, _count_chat_prompt(body.get("messages")), chat=True)
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

        resp = web.StreamResponse(headers=SSE_HEADERS)
        rec.status = resp.status
        await resp.prepare(request)
        sent = count if knobs.fail_after is None else min(count, knobs.fail_after)
        if not knobs.delay or sent <= 1:
            out = [opening, *tokens[:sent]]
            if knobs.fail_after is None:
                out.extend(ending)
            await resp.write(b"".join(out))
        else:
            await resp.write(opening + tokens[0])
            for frame in tokens[1:sent]:
                await self._pause(request, knobs.delay)
                await resp.write(frame)
            if knobs.fail_after is None:
                await resp.write(b"".join(ending))
        if knobs.fail_after is not None:
            return self._abort(request, rec, resp)
        await resp.write_eof()
        rec.completed = True
        return resp

    def _abort(
        self, request: web.Request, rec: RequestRecord, resp: web.StreamResponse | None = None
    ) -> web.StreamResponse:
        # close() (not abort()) so that the chunks already written still reach the client first.
        rec.aborted = True
        transport = request.transport
        if transport is not None:
            transport.close()
        # aiohttp's final write to the closed transport fails as a client disconnect: nothing is logged.
        return resp if resp is not None else web.Response(status=499)


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


def _usage(plan: _Plan) -> dict[str, int]:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
    }


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


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class BackgroundServer:
    """Serves an aiohttp application on `host:port` (port 0: any free one) from a thread of its own.

    The thread runs its own event loop (uvloop when installed), so it serves sync tests and async tests
    alike without touching their loop. The runner cancels a handler when its client disconnects
    (`handler_cancellation=True`). `stop()` closes every connection, in-flight ones included.

        with BackgroundServer(app) as server:
            requests.get(server.url + "/health")
    """

    def __init__(
        self, app: web.Application, *, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = 2.0
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """`http://HOST:PORT`, with the port actually bound."""
        if self._url is None:
            raise RuntimeError("the server is not running")
        return self._url

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; return the base URL once the socket listens."""
        if self._thread is not None:
            raise RuntimeError("a BackgroundServer starts once")
        self._thread = threading.Thread(target=self._run, name="fake-backend-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the server did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise RuntimeError("the server failed to start") from self._error
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listening socket and every connection, then end the thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"the server thread did not end within {timeout} s")

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=_new_loop) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread, never lost in this one
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(
            self._app, handler_cancellation=True, access_log=None, shutdown_timeout=self._shutdown_timeout
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
            port = runner.addresses[0][1]
            self._url = f"http://{self._host}:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()


def start_in_thread(app_or_backend: web.Application | FakeBackend) -> tuple[str, Callable[[], None]]:
    """Serve an application (or a `FakeBackend`) on 127.0.0.1:0 in its own thread; return (url, stop)."""
    app = app_or_backend.make_app() if isinstance(app_or_backend, FakeBackend) else app_or_backend
    server = BackgroundServer(app)
    return server.start(), server.stop


# ---------------------------------------------------------------------- a server in its own process


async def _serve_forever(backend: FakeBackend, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(backend.make_app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        sys.stdout.write(f"listening http://{host}:{runner.addresses[0][1]}\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m tests.support.fake_backend`: serve a fake backend until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_backend", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free port")
    parser.add_argument("--models", default="fake-model", help="comma-separated model ids")
    parser.add_argument("--chunks", type=int, default=8, help="content tokens per answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between content chunks")
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the response headers")
    parser.add_argument("--record", action="store_true", help="keep a record of every request (memory grows)")
    args = parser.parse_args(argv)
    backend = FakeBackend(
        [m for m in args.models.split(",") if m],
        chunks=args.chunks,
        delay=args.delay,
        first_delay=args.first_delay,
        record=args.record,
    )
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(_serve_forever(backend, args.host, args.port))


if __name__ == "__main__":
    main()
