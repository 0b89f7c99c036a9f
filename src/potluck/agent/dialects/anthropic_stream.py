"""A chat-completions event stream as an Anthropic Messages event stream, by an explicit state machine.

Fed the backend's bytes in any pieces, it decodes each whole ``data:`` event once (typed), and
writes Anthropic's grammar: one ``message_start``; per block a ``content_block_start``, its
deltas, a ``content_block_stop``; one ``message_delta`` with the stop reason and the cumulative
usage; ``message_stop``. A failure (the backend's error event, an event that is not a chunk, the
input ending before the answer did, or the caller's `fail`) is one ``error`` event, then nothing.

Anthropic's blocks never interleave, but a backend's parallel tool calls may: a block that arrives
while a tool call is still open (its arguments not yet a whole JSON object) waits in a queue and is
written, in order of first appearance, once that call is complete or the answer ends.
"""

from __future__ import annotations

import enum
from typing import Any, NoReturn

import msgspec

from potluck.agent.dialects.anthropic_request import AnswerContext
from potluck.agent.dialects.anthropic_response import (
    error_message,
    error_type,
    message_id,
    stop_reason,
    tool_input,
    tool_use_id,
    translate_error,
)
from potluck.protocol.agent import ErrorInfo, Usage
from potluck.protocol.anthropic import TextBlock, ThinkingBlock, ToolUseBlock
from potluck.protocol.anthropic_answer import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    ErrorDetail,
    ErrorEvent,
    ErrorType,
    InputJSONDelta,
    Message,
    MessageDelta,
    MessageDeltaEvent,
    MessageDeltaUsage,
    MessageStartEvent,
    MessageStopEvent,
    TextDelta,
    ThinkingDelta,
)
from potluck.protocol.chat_completions import (
    ChatCompletion,
    Choice,
    ErrorFields,
    ToolCallDelta,
    error_fields,
    read_error,
)
from potluck.protocol.errors import ErrorCode
from potluck.protocol.usage import TokenUsage

_decode_chunk = msgspec.json.Decoder(ChatCompletion).decode
_encode = msgspec.json.encode
_EVENT_LIMIT = 16 << 20  # one event this large is not a chat completion chunk


def _frame(name: bytes) -> tuple[bytes, bytes]:
    return b"event: " + name + b"\ndata: ", b"\n\n"


_FRAMES: dict[type[Any], tuple[bytes, bytes]] = {
    cls: _frame(str(cls.__struct_config__.tag).encode())
    for cls in (
        MessageStartEvent,
        ContentBlockStartEvent,
        ContentBlockDeltaEvent,
        ContentBlockStopEvent,
        MessageDeltaEvent,
        MessageStopEvent,
        ErrorEvent,
    )
}


class Phase(enum.Enum):
    """Where the translated stream is."""

    WAITING = "waiting"
    """Nothing written yet."""
    STREAMING = "streaming"
    """``message_start`` written; blocks follow."""
    DONE = "done"
    """``message_stop`` written."""
    FAILED = "failed"
    """An ``error`` event written."""


class _Kind(enum.Enum):
    TEXT = "text"
    THINKING = "thinking"
    TOOL = "tool"


class _Tool:
    __slots__ = ("args", "closed", "id", "name")

    def __init__(self, call_id: str | None, name: str | None) -> None:
        self.id = call_id
        self.name = name
        self.args: list[str] = []
        self.closed = False

    def input(self) -> dict[str, object] | None:
        return tool_input("".join(self.args))


class _Waiting:
    """A block that arrived while a tool call was open: written once that call is complete."""

    __slots__ = ("kind", "parts", "tool")

    def __init__(self, kind: _Kind, tool: _Tool | None, parts: list[str]) -> None:
        self.kind = kind
        self.tool = tool
        self.parts = parts


class _Failed(Exception):
    """Unwinds the current feed after the error event is written."""


class MessagesStream:
    """Translates one streamed answer; also a relay transform (``feed``/``finish``, ``usage``, ``error``)."""

    content_type = "text/event-stream"

    def __init__(self, answer: AnswerContext, msg_id: str | None = None) -> None:
        self.answer = answer
        self.id = msg_id or message_id()
        self.phase = Phase.WAITING
        self._over = False  # DONE or FAILED: read per event, so a plain flag
        self.tokens: TokenUsage | None = None
        """The backend's latest usage report."""
        self.error: ErrorInfo | None = None
        """Why the stream failed, once it has (its ``error`` event is already written: ``terminal_sent``)."""
        self._rest = b""  # the start of an event whose end has not arrived
        self._data: list[bytes] = []  # the data lines of the event being read
        self._error_event = False  # the event being read is named `error`
        self._out: list[bytes] = []
        self._open: _Kind | None = None
        self._open_tool: _Tool | None = None
        self._index = -1  # the open block's index
        self._next = 0
        self._buf: list[str] = []  # deltas of the open block, written as one at the end of a feed
        self._waiting: list[_Waiting] = []
        self._tools: dict[int, _Tool] = {}
        self._finish: str | None = None
        self._backend_stop: int | str | None = None

    def _ended(self) -> bool:
        return self._over

    @property
    def usage(self) -> Usage | None:
        """The usage as the agent→hub frame carries it."""
        return None if self.tokens is None else self.tokens.to_frame()

    def translate_error(self, status: int, body: bytes) -> bytes:
        return translate_error(status, body)

    def feed(self, data: bytes) -> bytes:
        """The next bytes of the backend's stream; returns the Anthropic events to write now."""
        if self._ended():
            return b""
        buffer = self._rest + data if self._rest else data
        if b"\r" in buffer:  # CRLF framing; a trailing \r stays in the rest until its \n arrives
            buffer = buffer.replace(b"\r\n", b"\n")
        events = buffer.split(b"\n\n")
        self._rest = events.pop()
        try:
            for event in events:
                self._read_event(event)
                if self._ended():  # whatever follows [DONE] is not part of the answer
                    break
            if len(self._rest) > _EVENT_LIMIT:
                self._fail("the backend sent an event of more than 16 MiB")
            self._flush()
        except _Failed:
            pass
        if self._ended():
            self._rest = b""
        return self._take()

    def finish(self) -> bytes:
        """The backend's stream ended: end the message, or fail it if the answer was not complete."""
        if self._ended():
            return b""
        try:
            rest, self._rest = self._rest.strip(b"\r\n"), b""
            if rest:  # a last event without its blank line
                self._read_event(rest)
            if not self._ended():
                if self._finish is None:
                    self._fail("the backend's stream ended before the answer was complete")
                self._end()
        except _Failed:
            pass
        return self._take()

    def abort(self, message: str) -> bytes:
        """The backend's stream broke off: the ``error`` event that ends the client's (a relay transform's end)."""
        return self.fail(message)

    def fail(self, message: str, type_: ErrorType = ErrorType.API) -> bytes:
        """End the stream with an ``error`` event (nothing if it has ended already)."""
        if self._over:
            return b""
        try:
            self._flush()
            self._fail(message, type_)
        except _Failed:
            pass
        return self._take()

    # -- reading the backend's events ------------------------------------------------------------

    def _read_event(self, event: bytes) -> None:
        if event.startswith(b"data: ") and b"\n" not in event:  # one data line: nearly every event
            self._data.append(event[6:])
        else:
            for line in event.split(b"\n"):
                self._read_line(line)
        if self._data:
            self._dispatch()
        self._error_event = False

    def _read_line(self, line: bytes) -> None:
        if line.startswith(b"data:"):
            self._data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        elif line.startswith(b"event:"):
            self._error_event = line[6:].strip() == b"error"
        elif line.startswith(b"error:"):  # llama.cpp wrote errors as `error: {...}` lines until 2025
            self._error_event = True
            self._data.append(line[6:].lstrip())

    def _dispatch(self) -> None:
        payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data = []
        if self._error_event:
            self._error_event = False
            self._backend_error(read_error(payload))
        if payload == b"[DONE]":
            self._end()
            return
        try:
            chunk = _decode_chunk(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._fail("the backend sent an event that is not a chat completion chunk")
        error = error_fields(chunk)
        if error is not None:
            self._backend_error(error)
        if chunk.usage is not None:
            self.tokens = TokenUsage.from_openai(chunk.usage)
        if self.phase is Phase.WAITING:
            self._start()
        for choice in chunk.choices or ():
            if choice.index == 0:
                self._choice(choice)

    def _choice(self, choice: Choice) -> None:
        delta = choice.delta
        if delta is not None:
            reasoning = delta.reasoning_content or delta.reasoning
            if reasoning and self.answer.thinking:
                self._text(_Kind.THINKING, reasoning)
            if delta.content:
                self._text(_Kind.TEXT, delta.content)
            for call in delta.tool_calls or ():
                self._tool_delta(call)
        if choice.finish_reason is not None:
            self._finish = choice.finish_reason
            self._backend_stop = choice.stop_reason

    def _backend_error(self, error: ErrorFields) -> NoReturn:
        message, code = error_message(error), error.code
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        self._fail(message or "the backend reported an error", error_type(status, code))

    # -- the blocks --------------------------------------------------------------------------------

    def _text(self, kind: _Kind, text: str) -> None:
        if self._open is kind and not self._waiting:
            self._buf.append(text)
        elif self._waiting or not self._closable():
            tail = self._waiting[-1] if self._waiting else None
            if tail is not None and tail.kind is kind:
                tail.parts.append(text)
            else:
                self._waiting.append(_Waiting(kind, None, [text]))
        else:
            self._close()
            self._start_block(kind, None)
            self._buf.append(text)

    def _tool_delta(self, call: ToolCallDelta) -> None:
        function = call.function
        name = function.name if function is not None else None
        arguments = function.arguments if function is not None else None
        index = call.index or 0
        tool = self._tools.get(index)
        if tool is None:
            tool = self._tools[index] = _Tool(call.id, name)
            if name and not self._waiting and self._closable():
                self._close()
                self._start_block(_Kind.TOOL, tool)
            else:
                self._waiting.append(_Waiting(_Kind.TOOL, tool, []))
        else:
            tool.id = tool.id or call.id
            tool.name = tool.name or name
        if arguments:
            if tool.closed:
                if arguments.strip():
                    self._fail(f"the backend went on with tool call `{tool.name}` after its arguments were complete")
                return
            tool.args.append(arguments)
            if tool is self._open_tool:
                self._buf.append(arguments)
        if self._waiting:
            self._drain()

    def _closable(self) -> bool:
        """The open block may end now: any text block; a tool call once its arguments are a whole object."""
        tool = self._open_tool
        return tool is None or (bool(tool.args) and tool.input() is not None)

    def _drain(self) -> None:
        while self._waiting and self._closable():
            head = self._waiting[0]
            if head.tool is not None and not head.tool.name:
                return
            del self._waiting[0]
            self._close()
            self._start_block(head.kind, head.tool)
            self._buf.extend(head.parts)

    def _start_block(self, kind: _Kind, tool: _Tool | None) -> None:
        block: TextBlock | ThinkingBlock | ToolUseBlock
        if tool is not None:
            tool.id = tool_use_id(tool.id)
            block = ToolUseBlock(tool.id, tool.name or "", {})
        elif kind is _Kind.TEXT:
            block = TextBlock("")
        else:
            block = ThinkingBlock("")
        self._index = self._next
        self._next += 1
        self._open, self._open_tool = kind, tool
        self._emit(ContentBlockStartEvent(self._index, block))
        if tool is not None:
            self._buf.extend(tool.args)

    def _close(self) -> None:
        if self._open is None:
            return
        self._flush()
        tool = self._open_tool
        if tool is not None:
            if tool.input() is None:
                self._fail(f"the backend's arguments for tool `{tool.name}` are not a JSON object")
            tool.closed = True
        self._emit(ContentBlockStopEvent(self._index))
        self._open = self._open_tool = None

    def _flush(self) -> None:
        if not self._buf:
            return
        text = self._buf[0] if len(self._buf) == 1 else "".join(self._buf)
        self._buf.clear()
        if self._open is _Kind.TEXT:
            self._emit(ContentBlockDeltaEvent(self._index, TextDelta(text)))
        elif self._open is _Kind.THINKING:
            self._emit(ContentBlockDeltaEvent(self._index, ThinkingDelta(text)))
        else:
            self._emit(ContentBlockDeltaEvent(self._index, InputJSONDelta(text)))

    # -- the message -------------------------------------------------------------------------------

    def _start(self) -> None:
        usage = (self.tokens or TokenUsage()).to_anthropic()
        self._emit(MessageStartEvent(Message(self.id, self.answer.model, [], None, None, usage)))
        self.phase = Phase.STREAMING

    def _end(self) -> None:
        if self.phase is Phase.WAITING:
            self._start()
        self._close()
        while self._waiting:
            head = self._waiting.pop(0)
            if head.tool is not None and not head.tool.name:
                self._fail("the backend called a tool without naming it")
            self._start_block(head.kind, head.tool)
            self._buf.extend(head.parts)
            self._close()
        reason, sequence = stop_reason(self._finish, self._backend_stop, bool(self._tools), self.answer)
        tokens = self.tokens or TokenUsage()
        usage = tokens.to_anthropic()
        delta_usage = MessageDeltaUsage(
            output_tokens=usage.output_tokens,
            input_tokens=usage.input_tokens,
            cache_creation_input_tokens=usage.cache_creation_input_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            output_tokens_details=usage.output_tokens_details,
        )
        self._emit(MessageDeltaEvent(MessageDelta(reason, sequence), delta_usage))
        self._emit(MessageStopEvent())
        self.phase = Phase.DONE
        self._over = True

    def _fail(self, message: str, type_: ErrorType = ErrorType.API) -> NoReturn:
        self._flush()  # what the backend sent before failing is the client's too
        self._emit(ErrorEvent(ErrorDetail(type_, message)))
        self.phase = Phase.FAILED
        self._over = True
        self.error = ErrorInfo(502, ErrorCode.UPSTREAM_ERROR, message, terminal_sent=True)
        raise _Failed

    def _emit(self, event: Any) -> None:
        head, tail = _FRAMES[type(event)]
        self._out.append(head + _encode(event) + tail)

    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out
