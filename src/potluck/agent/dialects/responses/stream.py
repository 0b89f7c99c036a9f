"""A chat completions stream → a Responses stream, by an explicit state machine.

The translator is fed the backend's bytes in whatever pieces they arrive (a line may be split anywhere,
even inside a UTF-8 character: only whole lines are decoded, each ``data:`` event once, by a typed
decoder). It returns Responses events, each ``event: <type>`` + ``data: <json>`` with a ``sequence_number``
one above the last. The grammar it writes (checked by ``testing/responses_grammar.py``)::

    response.created  response.in_progress
    then each output item in turn, never two open at once:
      reasoning      output_item.added  content_part.added  reasoning_text.delta*  reasoning_text.done
                     content_part.done  output_item.done
      message        output_item.added  content_part.added  output_text.delta*  output_text.done
                     content_part.done  output_item.done
      function_call  output_item.added  function_call_arguments.delta*  function_call_arguments.done
                     output_item.done
    then one of response.completed, response.incomplete (cut by the token limit or a filter; the last
    item is then ``incomplete``) or response.failed (a backend error, an unreadable event, or a stream
    that ended before it finished): never a silent end.

Reasoning is sent as ``reasoning_text`` (raw reasoning, what chat backends stream), not as a summary:
the model wrote no summary, and calling its raw thoughts one would be false. Codex shows raw reasoning
when ``show_raw_agent_reasoning = true``.

Parallel tool calls become function_call items in the order the backend numbered them; a call's item
opens once its name is known and closes when the next begins. A backend that goes back to add to a
closed call (none known does) fails the response rather than corrupting its arguments.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import msgspec

from potluck.agent.dialects.responses.answer import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    INCOMPLETE,
    agent_usage,
    chunk_error,
    ending,
    item_id,
    new_call_id,
    new_response_id,
    now_s,
    response_object,
    responses_usage,
    translate_error,
)
from potluck.protocol.agent import ErrorInfo, Usage
from potluck.protocol.chat_completions import ChatChunk, Delta, ToolCallDelta
from potluck.protocol.responses import (
    ResponseEcho,
)
from potluck.protocol.responses_output import (
    ContentPartAdded,
    ContentPartDone,
    DeltaFrame,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    FunctionCallItem,
    MessageItem,
    OutputItem,
    OutputItemAdded,
    OutputItemDone,
    OutputText,
    OutputTextDelta,
    OutputTextDone,
    ReasoningItem,
    ReasoningText,
    ReasoningTextDelta,
    ReasoningTextDone,
    ResponseCompleted,
    ResponseCreated,
    ResponseError,
    ResponseFailed,
    ResponseIncomplete,
    ResponseInProgress,
    StreamEvent,
    sse_event,
)
from potluck.protocol.usage import OpenAIUsage

_decode_chunk = msgspec.json.Decoder(ChatChunk).decode
_NO_FRAME = DeltaFrame(OutputTextDelta, item_id="", output_index=0, content_index=0)


class Stage(enum.Enum):
    NEW = "new"
    """Nothing sent yet."""
    STREAMING = "streaming"
    """``response.created`` sent; output items may follow."""
    ENDED = "ended"
    """A terminal event sent; anything more from the backend is ignored."""


class Open(enum.Enum):
    """The output item being written, if any."""

    NOTHING = "nothing"
    REASONING = "reasoning"
    MESSAGE = "message"
    CALL = "call"


# Module-level names for the members compared on every chunk: an Enum class attribute lookup costs more.
_NEW, _STREAMING, _ENDED = Stage.NEW, Stage.STREAMING, Stage.ENDED
_NOTHING, _REASONING, _MESSAGE, _CALL = Open.NOTHING, Open.REASONING, Open.MESSAGE, Open.CALL


@dataclass(slots=True)
class _Call:
    index: int
    call_id: str
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    added: bool = False


class ResponsesStreamTranslator:
    """Chat completion chunks (SSE) → Responses events (SSE), as they stream."""

    content_type = "text/event-stream"

    def __init__(self, echo: ResponseEcho, *, response_id: str | None = None, created_at: int | None = None) -> None:
        self.echo = echo
        self.id = response_id or new_response_id()
        self.created_at = now_s() if created_at is None else created_at
        self.usage: Usage | None = None
        self.error: ErrorInfo | None = None
        """Set when the response failed (its ``response.failed`` is already in the output: ``terminal_sent``)."""
        self.stage = _NEW
        self._open = _NOTHING
        self._seq = 0
        self._out: list[bytes] = []
        self._output: list[OutputItem] = []  # closed items, in order
        self._item_id = ""
        self._pieces: list[str] = []  # the open reasoning or message text
        self._call: _Call | None = None
        self._closed_calls: set[int] = set()
        self._finish_reason: str | None = None
        self._chat_usage: OpenAIUsage | None = None
        self._frame = _NO_FRAME  # the open item's delta events
        self._pending = b""  # an incomplete line
        self._data: list[bytes] = []  # the data lines of the event being read

    def translate_error(self, status: int, body: bytes) -> bytes:
        return translate_error(status, body)

    def feed(self, data: bytes) -> bytes:
        """Take the backend's next bytes; return the Responses events they complete."""
        if self.stage is _ENDED:
            return b""
        if self.stage is _NEW:
            self._begin()
        if self._pending:
            data = self._pending + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data
            return self._take()
        self._pending = data[cut + 1 :]
        pending_data = self._data
        for line in data[:cut].split(b"\n"):
            # The common case inline (one `data: ` line, then a blank line); anything else goes to _line.
            if line.startswith(b"data: ") and not line.endswith(b"\r"):
                pending_data.append(line[6:])
            elif not line and pending_data:
                self._dispatch()
            else:
                self._line(line)
            if self.stage is _ENDED:
                self._pending = b""
                break
        return self._take()

    def finish(self) -> bytes:
        """The backend closed the stream: end the response (failed, if the answer was not over)."""
        if self.stage is _ENDED:
            return b""
        if self.stage is _NEW:
            self._begin()
        if self._pending:
            line, self._pending = self._pending, b""
            self._line(line)
        if self.stage is not _ENDED and self._data:
            self._dispatch()
        if self.stage is not _ENDED:
            if self._finish_reason is not None:
                self._end()  # a finish reason but no [DONE]: the answer was whole
            else:
                self._fail("the backend's stream ended before its answer did")
        return self._take()

    def abort(self, message: str) -> bytes:
        """The stream broke off (the connection to the backend failed): the ``response.failed`` to send."""
        if self.stage is _ENDED:
            return b""
        if self.stage is _NEW:
            self._begin()
        self._fail(message)
        return self._take()

    # -- reading --------------------------------------------------------------------------------------

    def _line(self, line: bytes) -> None:
        if line[-1:] == b"\r":
            line = line[:-1]
        if not line:
            if self._data:
                self._dispatch()
        elif line.startswith(b"data:"):
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])
        # `event:`, `id:`, `retry:` and comments carry nothing a chat stream needs.

    def _dispatch(self) -> None:
        data = self._data
        payload = data[0] if len(data) == 1 else b"\n".join(data)
        data.clear()
        if payload == b"[DONE]":
            self._end()
            return
        try:
            chunk = _decode_chunk(payload)
        except msgspec.DecodeError:
            self._fail("the backend sent an event that is not a chat completion chunk")
            return
        if chunk.error is not None or chunk.object == "error":
            self._fail(chunk_error(chunk) or "the backend reported an error")
            return
        if chunk.choices:
            choice = chunk.choices[0]
            if choice.delta is not None:
                self._delta(choice.delta)
            if choice.finish_reason:
                self._finish_reason = choice.finish_reason
        if chunk.usage is not None:
            self._chat_usage = chunk.usage
            self.usage = agent_usage(chunk.usage)

    def _delta(self, delta: Delta) -> None:
        reasoning = delta.reasoning_content or delta.reasoning
        if reasoning:
            self._reason(reasoning)
        text = delta.content or delta.refusal
        if text:
            self._say(text)
        for piece in delta.tool_calls or ():
            self._call_piece(piece)
            if self.stage is _ENDED:
                return

    # -- writing --------------------------------------------------------------------------------------

    def _emit(self, event: StreamEvent) -> None:
        self._out.append(sse_event(event))

    def _n(self) -> int:
        n = self._seq
        self._seq = n + 1
        return n

    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _begin(self) -> None:
        self.stage = _STREAMING
        response = response_object(self.echo, self.id, self.created_at, IN_PROGRESS, [])
        self._emit(ResponseCreated(response, self._n()))
        self._emit(ResponseInProgress(response, self._n()))

    def _reason(self, text: str) -> None:
        if self._open is not _REASONING:
            self._close(COMPLETED)
            self._open = _REASONING
            index = len(self._output)
            self._item_id = item_id("rs", self.id, index)
            self._emit(OutputItemAdded(index, ReasoningItem(self._item_id, IN_PROGRESS, []), self._n()))
            self._emit(ContentPartAdded(self._item_id, index, 0, ReasoningText(""), self._n()))
            self._frame = DeltaFrame(ReasoningTextDelta, item_id=self._item_id, output_index=index, content_index=0)
        self._pieces.append(text)
        n = self._seq
        self._seq = n + 1
        self._out.append(self._frame.render(text, n))

    def _say(self, text: str) -> None:
        if self._open is not _MESSAGE:
            self._close(COMPLETED)
            self._open = _MESSAGE
            index = len(self._output)
            self._item_id = item_id("msg", self.id, index)
            self._emit(OutputItemAdded(index, MessageItem(self._item_id, IN_PROGRESS, []), self._n()))
            self._emit(ContentPartAdded(self._item_id, index, 0, OutputText(""), self._n()))
            self._frame = DeltaFrame(OutputTextDelta, item_id=self._item_id, output_index=index, content_index=0)
        self._pieces.append(text)
        n = self._seq
        self._seq = n + 1
        self._out.append(self._frame.render(text, n))

    def _call_piece(self, piece: ToolCallDelta) -> None:
        call = self._call
        index = piece.index if piece.index is not None else call.index if call is not None else 0
        if call is None or call.index != index:
            if index in self._closed_calls:
                self._fail("the backend went back to a tool call it had finished")
                return
            self._close(COMPLETED)
            call = self._call = _Call(index, piece.id or "")
            self._open = _CALL
        elif piece.id and not call.call_id:
            call.call_id = piece.id
        function = piece.function
        arguments = function.arguments if function is not None else None
        if call.added:
            if arguments:
                call.arguments.append(arguments)
                self._out.append(self._frame.render(arguments, self._n()))
            return
        if function is not None and function.name:
            call.name = function.name
        if arguments:
            call.arguments.append(arguments)
        if call.name:
            self._add_call(call)

    def _add_call(self, call: _Call) -> None:
        index = len(self._output)
        call.added = True
        call.call_id = call.call_id or new_call_id()
        self._item_id = item_id("fc", self.id, index)
        item = FunctionCallItem(self._item_id, call.call_id, call.name, "", IN_PROGRESS)
        self._emit(OutputItemAdded(index, item, self._n()))
        self._frame = DeltaFrame(FunctionCallArgumentsDelta, item_id=self._item_id, output_index=index)
        if call.arguments:
            self._out.append(self._frame.render("".join(call.arguments), self._n()))

    def _close(self, status: str) -> None:
        """End the open item: its `.done` events, then ``output_item.done``."""
        opened = self._open
        if opened is _NOTHING:
            return
        index = len(self._output)
        item: OutputItem
        call = self._call
        if opened is _CALL and call is not None:
            if not call.added:
                self._add_call(call)
            arguments = "".join(call.arguments)
            self._emit(FunctionCallArgumentsDone(self._item_id, index, arguments, self._n()))
            item = FunctionCallItem(self._item_id, call.call_id, call.name, arguments, status)
            self._closed_calls.add(call.index)
            self._call = None
        else:
            text = "".join(self._pieces)
            self._pieces.clear()
            part: OutputText | ReasoningText
            if opened is _REASONING:
                self._emit(ReasoningTextDone(self._item_id, index, 0, text, self._n()))
                part = ReasoningText(text)
                item = ReasoningItem(self._item_id, status, [part])
            else:
                self._emit(OutputTextDone(self._item_id, index, 0, text, self._n()))
                part = OutputText(text)
                item = MessageItem(self._item_id, status, [part])
            self._emit(ContentPartDone(self._item_id, index, 0, part, self._n()))
        self._emit(OutputItemDone(index, item, self._n()))
        self._output.append(item)
        self._open = _NOTHING

    def _end(self) -> None:
        status, incomplete = ending(self._finish_reason)
        self._close(status)
        usage = responses_usage(self._chat_usage) if self._chat_usage is not None else None
        response = response_object(
            self.echo, self.id, self.created_at, status, self._output, usage=usage, incomplete=incomplete
        )
        seq = self._n()
        self._emit(ResponseIncomplete(response, seq) if incomplete is not None else ResponseCompleted(response, seq))
        self.stage = _ENDED

    def _fail(self, message: str) -> None:
        self.error = ErrorInfo(502, "upstream_error", message, terminal_sent=True)
        output = list(self._output)
        partial = self._partial_item()
        if partial is not None:
            output.append(partial)
        usage = responses_usage(self._chat_usage) if self._chat_usage is not None else None
        response = response_object(
            self.echo,
            self.id,
            self.created_at,
            FAILED,
            output,
            usage=usage,
            error=ResponseError("server_error", message),
        )
        self._emit(ResponseFailed(response, self._n()))
        self.stage = _ENDED

    def _partial_item(self) -> OutputItem | None:
        """The item that was open when the response failed, as far as it got (never closed in the stream)."""
        if self._open is _REASONING:
            return ReasoningItem(self._item_id, INCOMPLETE, [ReasoningText("".join(self._pieces))])
        if self._open is _MESSAGE:
            return MessageItem(self._item_id, INCOMPLETE, [OutputText("".join(self._pieces))])
        call = self._call
        if self._open is _CALL and call is not None and call.added:
            return FunctionCallItem(self._item_id, call.call_id, call.name, "".join(call.arguments), INCOMPLETE)
        return None
