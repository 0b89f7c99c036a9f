"""OpenAI requests to Ollama's native API, and Ollama's NDJSON answers back to OpenAI's SSE/JSON.

Used when a request needs what Ollama's own OpenAI layer cannot carry (``options`` such as
``num_ctx``, ``keep_alive``, ``think``); otherwise requests go to Ollama's ``/v1`` untouched.
Counts come from ``prompt_eval_count``/``eval_count`` on the ``done`` line, always.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import struct
import time
from typing import Any

import msgspec

from potluck.protocol.agent import ErrorInfo, Usage
from potluck.protocol.errors import error_envelope

_encode = msgspec.json.encode
_decode = msgspec.json.decode

NATIVE_PATHS = {
    "/v1/chat/completions": "/api/chat",
    "/v1/completions": "/api/generate",
    "/v1/embeddings": "/api/embed",
}
"""The native endpoint that serves each OpenAI one."""

# OpenAI sampling fields and the Ollama option each becomes.
_OPTION_OF = {
    "max_tokens": "num_predict",
    "max_completion_tokens": "num_predict",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "repeat_penalty": "repeat_penalty",
}
_PASSED_AS_IS = ("keep_alive", "think", "tools", "logprobs", "top_logprobs", "truncate", "dimensions", "suffix")


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for field, option in _OPTION_OF.items():
        value = body.get(field)
        if value is not None:
            options[option] = [value] if option == "stop" and isinstance(value, str) else value
    # The client's own Ollama options are the most specific: they win.
    explicit = body.get("options")
    if isinstance(explicit, dict):
        options.update(explicit)
    return options


def _format(body: dict[str, Any]) -> Any:
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return body.get("format")
    if response_format.get("type") == "json_object":
        return "json"
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema")
        return schema.get("schema") if isinstance(schema, dict) else None
    return None


def _message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    out = dict(message)
    content = message.get("content")
    if isinstance(content, list):
        out["content"], images = _parts(content)
        if images:
            out["images"] = images
    elif content is None:
        out["content"] = ""
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [_tool_call_to_native(c) for c in calls]
    return out


def _parts(content: list[Any]) -> tuple[str, list[str]]:
    """OpenAI content parts → Ollama's text and base64 images (only inline data URLs: never fetched)."""
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif part.get("type") == "image_url":
            url = part.get("image_url", {})
            url = url.get("url", "") if isinstance(url, dict) else str(url)
            if url.startswith("data:") and "," in url:
                images.append(url.split(",", 1)[1])
    return "".join(texts), images


def _tool_call_to_native(call: Any) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    function = dict(call["function"])
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(msgspec.DecodeError):
            function["arguments"] = _decode(arguments)
    return {**call, "function": function}


def native_request(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The native request for an OpenAI one (``path`` is the OpenAI path)."""
    out: dict[str, Any] = {"model": body.get("model")}
    if path == "/v1/embeddings":
        out["input"] = body.get("input")
    elif path == "/v1/completions":
        prompt = body.get("prompt")
        out["prompt"] = prompt[0] if isinstance(prompt, list) and prompt and isinstance(prompt[0], str) else prompt
        out["stream"] = bool(body.get("stream"))
    else:
        out["messages"] = [_message(m) for m in body.get("messages") or []]
        out["stream"] = bool(body.get("stream"))
    options = _options(body)
    if options:
        out["options"] = options
    fmt = _format(body)
    if fmt is not None and path != "/v1/embeddings":
        out["format"] = fmt
    for field in _PASSED_AS_IS:
        if field in body:
            out[field] = body[field]
    return out


def _usage(done: dict[str, Any]) -> Usage:
    prompt = int(done.get("prompt_eval_count") or 0)
    completion = int(done.get("eval_count") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def translate_error(status: int, body: bytes) -> bytes:
    """Ollama's ``{"error": "..."}`` as OpenAI's error object."""
    try:
        message = str(_decode(body).get("error") or "")
    except (msgspec.DecodeError, AttributeError):
        message = body.decode("utf-8", "replace").strip()
    code = "model_not_found" if status == 404 else "invalid_request_error" if status < 500 else "upstream_error"
    return error_envelope(code, message or f"backend answered HTTP {status}")


class _NDJSONTranslator:
    """Shared NDJSON line handling; subclasses turn each object into OpenAI bytes."""

    def __init__(self, model: str, *, stream: bool, include_usage: bool) -> None:
        self.model = model
        self.stream = stream
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.error: ErrorInfo | None = None
        self.content_type = "text/event-stream" if stream else "application/json"
        self.created = int(time.time())
        self._pending = b""

    def abort(self, message: str) -> bytes:
        """Nothing: the answer is OpenAI's, whose streams the hub ends with its own error event."""
        return b""

    def translate_error(self, status: int, body: bytes) -> bytes:
        return translate_error(status, body)

    def feed(self, data: bytes) -> bytes:
        if self.error is not None:
            return b""
        data = self._pending + data
        lines = data.split(b"\n")
        self._pending = lines.pop()
        out: list[bytes] = []
        for line in lines:
            if line.strip():
                out.append(self._line(line))
                if self._stopped():  # nothing after an error reaches the client
                    self._pending = b""
                    break
        return b"".join(out)

    def _stopped(self) -> bool:
        return self.error is not None

    def finish(self) -> bytes:
        rest, self._pending = self._pending, b""
        if self.error is not None or not rest.strip():
            return b""
        return self._line(rest)

    def _line(self, line: bytes) -> bytes:
        try:
            obj = _decode(line)
        except msgspec.DecodeError:
            self.error = ErrorInfo(502, "upstream_error", "the backend sent a line that is not JSON")
            return b""
        if not isinstance(obj, dict):
            return b""
        if "error" in obj:
            self.error = ErrorInfo(502, "upstream_error", str(obj["error"]))
            return b""
        if obj.get("done"):
            self.usage = _usage(obj)
        return self._object(obj)

    def _object(self, obj: dict[str, Any]) -> bytes:
        raise NotImplementedError

    @staticmethod
    def _event(payload: dict[str, Any]) -> bytes:
        return b"data: " + _encode(payload) + b"\n\n"

    def _usage_dict(self) -> dict[str, int]:
        usage = self.usage or Usage()
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }


def _finish_reason(done: dict[str, Any], called_tools: bool) -> str:
    if called_tools:
        return "tool_calls"
    return "length" if done.get("done_reason") == "length" else "stop"


def _tool_calls_to_openai(calls: list[Any], start: int = 0) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        function = call.get("function", {}) if isinstance(call, dict) else {}
        arguments = function.get("arguments", {})
        out.append(
            {
                "index": start + i,
                "id": call.get("id") or f"call_{secrets.token_hex(4)}",
                "type": "function",
                "function": {
                    "name": function.get("name", ""),
                    "arguments": arguments if isinstance(arguments, str) else _encode(arguments).decode(),
                },
            }
        )
    return out


class ChatTranslator(_NDJSONTranslator):
    """``/api/chat`` lines → ``chat.completion.chunk`` events, or one ``chat.completion``."""

    def __init__(self, model: str, *, stream: bool, include_usage: bool) -> None:
        super().__init__(model, stream=stream, include_usage=include_usage)
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self._started = False
        self._content: list[str] = []
        self._thinking: list[str] = []
        self._tool_calls: list[dict[str, Any]] = []

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _object(self, obj: dict[str, Any]) -> bytes:
        message = obj.get("message") or {}
        content = message.get("content") or ""
        thinking = message.get("thinking") or ""
        calls = message.get("tool_calls") or []
        if not self.stream:
            self._content.append(content)
            self._thinking.append(thinking)
            self._tool_calls.extend(_tool_calls_to_openai(calls, len(self._tool_calls)))
            return self._whole(obj) if obj.get("done") else b""
        out = []
        if not self._started:
            self._started = True
            out.append(self._event(self._chunk({"role": "assistant", "content": ""}, None)))
        delta: dict[str, Any] = {}
        if content:
            delta["content"] = content
        if thinking:
            delta["reasoning_content"] = thinking
        if calls:
            converted = _tool_calls_to_openai(calls, len(self._tool_calls))
            self._tool_calls.extend(converted)
            delta["tool_calls"] = converted
        if delta:
            out.append(self._event(self._chunk(delta, None)))
        if obj.get("done"):
            out.append(self._event(self._chunk({}, _finish_reason(obj, bool(self._tool_calls)))))
            if self.include_usage:
                final = self._chunk({}, None)
                final["choices"] = []
                final["usage"] = self._usage_dict()
                out.append(self._event(final))
            out.append(b"data: [DONE]\n\n")
        return b"".join(out)

    def _whole(self, done: dict[str, Any]) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content)}
        if any(self._thinking):
            message["reasoning_content"] = "".join(self._thinking)
        if self._tool_calls:
            message["tool_calls"] = self._tool_calls
        return _encode(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_ollama",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": _finish_reason(done, bool(self._tool_calls)),
                    }
                ],
                "usage": self._usage_dict(),
            }
        )


class CompletionTranslator(_NDJSONTranslator):
    """``/api/generate`` lines → ``text_completion`` chunks, or one ``text_completion``."""

    def __init__(self, model: str, *, stream: bool, include_usage: bool) -> None:
        super().__init__(model, stream=stream, include_usage=include_usage)
        self.id = "cmpl-" + secrets.token_hex(12)
        self._text: list[str] = []

    def _body(self, text: str, finish: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        }

    def _object(self, obj: dict[str, Any]) -> bytes:
        text = obj.get("response") or ""
        done = bool(obj.get("done"))
        if not self.stream:
            self._text.append(text)
            if not done:
                return b""
            whole = self._body("".join(self._text), _finish_reason(obj, False))
            whole["usage"] = self._usage_dict()
            return _encode(whole)
        out = []
        if text:
            out.append(self._event(self._body(text, None)))
        if done:
            out.append(self._event(self._body("", _finish_reason(obj, False))))
            if self.include_usage:
                final = self._body("", None)
                final["choices"] = []
                final["usage"] = self._usage_dict()
                out.append(self._event(final))
            out.append(b"data: [DONE]\n\n")
        return b"".join(out)


class EmbeddingTranslator(_NDJSONTranslator):
    """``/api/embed``'s one JSON object → OpenAI's embedding list (floats, or base64 if the client asked)."""

    def __init__(
        self, model: str, *, stream: bool = False, include_usage: bool = False, encoding_format: str | None = None
    ) -> None:
        super().__init__(model, stream=False, include_usage=False)
        self.base64 = encoding_format == "base64"

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        return b""

    def finish(self) -> bytes:
        body, self._pending = self._pending, b""
        try:
            obj = _decode(body)
        except msgspec.DecodeError:
            self.error = ErrorInfo(502, "upstream_error", "the backend's embedding answer is not JSON")
            return b""
        if not isinstance(obj, dict) or "error" in obj:
            self.error = ErrorInfo(502, "upstream_error", str(obj.get("error") if isinstance(obj, dict) else obj))
            return b""
        prompt = int(obj.get("prompt_eval_count") or 0)
        self.usage = Usage(prompt_tokens=prompt, total_tokens=prompt)
        vectors = obj.get("embeddings") or []
        data = [
            {"object": "embedding", "index": i, "embedding": _base64_floats(v) if self.base64 else v}
            for i, v in enumerate(vectors)
        ]
        return _encode(
            {
                "object": "list",
                "data": data,
                "model": self.model,
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }
        )

    def _object(self, obj: dict[str, Any]) -> bytes:  # pragma: no cover - feed/finish above handle it
        return b""


def _base64_floats(vector: list[float]) -> str:
    """OpenAI's base64 encoding of an embedding: little-endian float32s."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


TRANSLATORS: dict[str, type[_NDJSONTranslator]] = {
    "/v1/chat/completions": ChatTranslator,
    "/v1/completions": CompletionTranslator,
    "/v1/embeddings": EmbeddingTranslator,
}
