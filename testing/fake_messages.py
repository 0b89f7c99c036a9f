"""Anthropic's Messages API as a local server speaks it natively, and llama.cpp's tokenizer routes, for the fakes.

`add_messages_routes(app, backend)` adds to a fake's application what llama.cpp, vLLM and Ollama serve
for Claude Code, field for field as Anthropic documents it:

- `POST /v1/messages`: `{"id": "msg_...", "type": "message", "role": "assistant", "model", "content": [{"type":
  "text", "text"}], "stop_reason": "end_turn"|"max_tokens", "stop_sequence": null, "usage": {"input_tokens",
  "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"}}`; with `"stream": true`, the events
  `message_start` (the usage so far, `output_tokens` 1), `content_block_start`, `ping`, one `content_block_delta`
  (`text_delta`) per token, `content_block_stop`, `message_delta` (stop reason, `usage.output_tokens`),
  `message_stop`, each as `event: <type>` and `data: <json>`.
- `POST /v1/messages/count_tokens`: `{"input_tokens": N}`.
- Errors: `{"type": "error", "error": {"type": "invalid_request_error"|"not_found_error"|..., "message"}}`.

`add_llamacpp_tokenizer(app, backend)` adds llama.cpp's `POST /apply-template` (a chat body → `{"prompt"}`) and
`POST /tokenize` (`{"content"}` → `{"tokens": [ids]}`).

Answers follow the backend's knobs (`testing.fake_backend.Knobs`, overridden by the body's `"fake"` field):
`chunks` tokens "tok0 ", "tok1 ", ... (`max_tokens` <= chunks cuts them: `max_tokens`), `delay`, `first_delay`,
`fail_after`, `hang`, `status`, `raw_error`, and `cached_tokens` reported as `cache_read_input_tokens`. Prompt
tokens are the words of the system prompt and the messages' text, as the chat routes count them, so a request
served natively and one translated to chat completions report the same usage; the templated prompt holds just
those words, so tokenizing it counts them too.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from aiohttp import web

from testing.fake_backend import (
    SSE_HEADERS,
    FakeBackend,
    Knobs,
    RequestRecord,
    _count_chat_prompt,
    _InvalidRequestError,
    _json_response,
    write_sse,
)

_encode = msgspec.json.encode
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str) -> web.Response:
    """An error answer in Anthropic's shape."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return _json_response(_encode({"type": "error", "error": {"type": kind, "message": message}}), status)


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode({"type": name, **payload}) + b"\n\n"


def _text(content: object) -> list[str]:
    """The texts of a message's content, a system prompt, or a tool result: a string or blocks."""
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict):
            if isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") == "tool_result":
                texts.extend(_text(block.get("content")))
    return texts


def _chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's system prompt and messages as the chat messages the prompt count reads."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _InvalidRequestError("messages: at least one message is required")
    chat = [{"role": "system", "content": " ".join(_text(body.get("system")))}] if body.get("system") else []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _InvalidRequestError("messages: each message needs a role of `user` or `assistant`")
        chat.append({"role": message["role"], "content": " ".join(_text(message.get("content")))})
    return chat


class _Messages:
    """The Messages routes of one fake backend (its knobs, models and records)."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    async def messages(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        backend = self.backend
        try:
            body, knobs = backend._body_and_knobs(rec)
            early = await backend._scripted(request, rec, knobs, anthropic_error)
            if early is not None:
                return early
            missing = self._missing_model(body)
            if missing is not None:
                return await backend._send(request, rec, missing)
            prompt = _count_chat_prompt(_chat_messages(body))
            limit = body.get("max_tokens")
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise _InvalidRequestError("max_tokens: Field required (an integer of at least 1)")
        except _InvalidRequestError as exc:
            return await backend._send(request, rec, anthropic_error(400, exc.message))
        count, stop = (limit, "max_tokens") if limit <= knobs.chunks else (knobs.chunks, "end_turn")
        cached = min(knobs.cached_tokens, prompt)
        usage = {
            "input_tokens": prompt - cached,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
            "output_tokens": count,
        }
        message = {"id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant", "model": body["model"]}
        if body.get("stream") is True:
            return await self._stream(request, rec, knobs, message, usage, stop)
        if knobs.delay and count > 1:
            await backend._pause(request, knobs.delay * (count - 1))
        if knobs.fail_after is not None:
            return backend._abort(request, rec)
        text = "".join(f"tok{i} " for i in range(count))
        answer = {**message, "content": [{"type": "text", "text": text}], "stop_reason": stop, "stop_sequence": None}
        return await backend._send(request, rec, _json_response(_encode({**answer, "usage": usage})))

    async def _stream(
        self,
        request: web.Request,
        rec: RequestRecord,
        knobs: Knobs,
        message: dict[str, Any],
        usage: dict[str, int],
        stop: str,
    ) -> web.StreamResponse:
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        head = (
            _event("message_start", {"message": start})
            + _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            + _event("ping", {})
        )
        tokens = [
            _event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": f"tok{i} "}})
            for i in range(usage["output_tokens"])
        ]
        ending = [
            _event("content_block_stop", {"index": 0})
            + _event(
                "message_delta",
                {
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
            + _event("message_stop", {})
        ]
        return await write_sse(self.backend, request, rec, knobs, head, tokens, ending, headers=SSE_HEADERS)

    async def count_tokens(self, request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        backend = self.backend
        try:
            body, _ = backend._body_and_knobs(rec)
            missing = self._missing_model(body)
            if missing is not None:
                return await backend._send(request, rec, missing)
            prompt = _count_chat_prompt(_chat_messages(body))
        except _InvalidRequestError as exc:
            return await backend._send(request, rec, anthropic_error(400, exc.message))
        return await backend._send(request, rec, _json_response(_encode({"input_tokens": prompt})))

    def _missing_model(self, body: dict[str, Any]) -> web.Response | None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _InvalidRequestError("model: Field required")
        return None if model in self.backend.models else anthropic_error(404, f"model: {model}")


def add_messages_routes(app: web.Application, backend: FakeBackend) -> None:
    """Serve `/v1/messages` and `/v1/messages/count_tokens` natively (before any catch-all route is added)."""
    routes = _Messages(backend)
    app.router.add_post("/v1/messages", backend._handler(routes.messages))
    app.router.add_post("/v1/messages/count_tokens", backend._handler(routes.count_tokens))


def add_llamacpp_tokenizer(app: web.Application, backend: FakeBackend) -> None:
    """Serve llama.cpp's `/apply-template` and `/tokenize` (before any catch-all route is added)."""

    async def apply_template(request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        body, _ = backend._body_and_knobs(rec)
        messages = body.get("messages")
        _count_chat_prompt(messages)  # the same checks as chat
        assert isinstance(messages, list)
        prompt = "\n".join(" ".join(_text(m.get("content"))) for m in messages)
        return await backend._send(request, rec, _json_response(_encode({"prompt": prompt})))

    async def tokenize(request: web.Request, rec: RequestRecord) -> web.StreamResponse:
        content = (rec.json or {}).get("content")
        if not isinstance(content, str):
            raise _InvalidRequestError("'content' must be a string", "content")
        return await backend._send(request, rec, _json_response(_encode({"tokens": list(range(len(content.split())))})))

    app.router.add_post("/apply-template", backend._handler(apply_template))
    app.router.add_post("/tokenize", backend._handler(tokenize))
