"""The hub's side of one request relayed through an agent: its head, its bytes, its credit and its deadline.

A `Stream` buffers at most one credit window of backend bytes: the agent may not send more until the hub
has written what it has to the client, and a stream whose agent sends past its window anyway is reset
(`AgentSession.reset`): its bytes are dropped, the request fails, and the agent gets a CANCEL with reason
``protocol_error``. So is one whose head is malformed (hub/heads.py), and one the agent ends as cancelled
when the hub never cancelled it. While a sink is set (the relay writing a chunked response), the bytes of
each agent message go to it in one piece from the frame loop, without waking the relay task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from potluck._shared.clock import Timer
from potluck.hub.errors import HubError, UpstreamError, UpstreamTimeoutError
from potluck.hub.heads import MalformedHeadError, checked_head
from potluck.protocol.agent import CreditMessage, EndMessage, ErrorInfo, HeadMessage

if TYPE_CHECKING:
    from potluck.hub.session import AgentSession


def _error_from(info: ErrorInfo) -> UpstreamError:
    error = UpstreamError(info.message, code=info.code, status=info.status, retriable=info.retriable)
    error.terminal_sent = info.terminal_sent
    return error


class Stream:
    """The hub's end of one request on one agent."""

    may_wait: ClassVar[bool] = False
    """On another replica's agent (cluster mode): the request may wait there for a slot (`WaitingStream`)."""

    __slots__ = (
        "_allowance",
        "_chunks",
        "_clock",
        "_credit_scheduled",
        "_credit_window",
        "_deadline_message",
        "_deadline_s",
        "_deferred",
        "_due",
        "_failure",
        "_head",
        "_loop",
        "_pending",
        "_progress_at",
        "_timer",
        "_uncredited",
        "_waiter",
        "after_cancel",
        "bytes_received",
        "cancelled",
        "end",
        "lingering",
        "request_id",
        "session",
        "sink",
        "stream_id",
    )

    def __init__(self, session: AgentSession, stream_id: int, request_id: str, credit_window: int) -> None:
        self.session = session
        self.stream_id = stream_id
        self.request_id = request_id
        self._credit_window = credit_window
        self._clock = session.clock
        self._loop = asyncio.get_running_loop()
        self._head: asyncio.Future[HeadMessage] = self._loop.create_future()
        self._timer: Timer | None = None
        self._deadline_s = 0.0
        self._deadline_message = ""
        self._due = 0.0
        """When the armed timer fires (it checks the deadline then, and re-arms for what is left)."""
        self._progress_at = 0.0
        self._chunks: deque[bytes] = deque()
        self._pending: list[bytes] = []
        """DATA of the agent's message being read, for the sink once the whole message is read (`deliver`)."""
        self._waiter: asyncio.Future[None] | None = None
        self._failure: HubError | None = None
        self._uncredited = 0
        self._deferred = 0
        self._credit_scheduled = False
        self._allowance = credit_window
        """Bytes of DATA the agent may still send: the window, plus what CREDIT granted, minus what came."""
        self.cancelled = False
        """The hub sent the agent a CANCEL for this stream (or reset it)."""
        self.end: EndMessage | None = None
        self.bytes_received = 0
        self.lingering = False
        """Cancelled and handed back by dispatch; kept only to receive the agent's END."""
        self.after_cancel: Callable[[EndMessage | None], None] | None = None
        """Called once with the agent's END after a cancel (it carries the usage seen so far), or
        with None if none comes within the linger time or the agent is lost."""
        self.sink: Callable[[bytes], bool] | None = None
        """Takes DATA straight from the frame loop, while nothing is buffered for `read`: what one message of the
        agent brought, in one piece, once the message is read (`AgentSession.deliver`). True when it delivered
        the bytes, False when it cannot take them now (they are then buffered for `read`)."""

    # -- fed by the session's frame loop --------------------------------------------------------

    def on_head(self, head: HeadMessage) -> None:
        if not self._head.done():
            try:
                checked = checked_head(head)
            except MalformedHeadError as exc:
                self.session.reset(self, exc)
                return
            self._head.set_result(checked)

    def within_window(self, nbytes: int) -> bool:
        """Spend ``nbytes`` of the agent's allowance; past it, reset the stream and return False."""
        allowance = self._allowance - nbytes
        if allowance < 0:
            self.session.reset(self, UpstreamError("the agent sent more than its credit window allows"))
            return False
        self._allowance = allowance
        return True

    def granted(self, nbytes: int) -> None:
        """A CREDIT of ``nbytes`` went to the agent: it may send that much more."""
        self._allowance += nbytes

    def on_data(self, data: bytes) -> None:
        if not self.within_window(len(data)):
            return
        if self.lingering:
            return  # cancelled and handed back: nobody reads these
        self.bytes_received += len(data)
        self._progress_at = self._clock.now()
        if self.sink is not None and not self._chunks and self._failure is None:
            pending = self._pending
            if not pending:
                self.session.delivering.append(self)
            pending.append(data)  # for the sink, without waking the reader: nothing waits ahead of these bytes
            return
        self._chunks.append(data)
        self._wake()

    def deliver(self) -> None:
        """The agent's message is read: what it brought goes to the sink in one write, or, when the sink cannot
        take it (or the stream failed meanwhile), ahead of anything buffered since, to `read`."""
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        sink = self.sink
        if sink is not None and not self._chunks and self._failure is None and sink(data):
            return
        self._chunks.appendleft(data)
        self._wake()

    def on_end(self, end: EndMessage) -> None:
        self.end = end
        self.stop_deadline()
        self.settle(end)
        if end.cancelled and not self.cancelled:
            # An end the hub never asked for is no clean end: the client must not take it for a whole answer.
            self._fail(UpstreamError("the agent cancelled the request on its own"))
        elif end.error is not None and not end.cancelled:
            self._fail(_error_from(end.error))
        elif not self._head.done():
            self._fail(UpstreamError("the agent ended the request without a response"))
        self._wake()

    def on_lost(self, error: HubError) -> None:
        if self.end is None:
            self._fail(error)
            self._wake()

    def on_reset(self, error: UpstreamError) -> None:
        """The session reset this stream: what it buffered is dropped, and the request fails with ``error``."""
        self.cancelled = True
        chunks = self._chunks
        self.bytes_received -= sum(map(len, chunks)) + sum(map(len, self._pending))  # dropped: never delivered
        chunks.clear()
        self._pending.clear()
        self._fail(error)
        self._wake()

    def settle(self, end: EndMessage | None) -> None:
        callback, self.after_cancel = self.after_cancel, None
        if callback is not None:
            callback(end)

    def _fail(self, error: HubError) -> None:
        self.stop_deadline()
        if self._failure is None:
            self._failure = error
        if not self._head.done():
            self._head.set_exception(error)
            # Retrieved later by whoever waits on the head; mark it so asyncio does not warn if nobody does.
            self._head.exception()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- consumed by dispatch -----------------------------------------------------------------

    @property
    def deadline_armed(self) -> bool:
        """Whether a deadline timer is scheduled (none once the stream is over)."""
        return self._timer is not None and not self._timer.cancelled()

    @property
    def finished(self) -> bool:
        return self.end is not None or self._failure is not None

    @property
    def failure(self) -> HubError | None:
        return self._failure

    # -- deadlines: one timer per stream, re-armed only when it fires, not on every chunk ------

    def set_deadline(self, seconds: float, message: str, *, check_within: float | None = None) -> None:
        """Fail the stream with UpstreamTimeoutError after ``seconds`` without a body byte.

        Data pushes the deadline back (lazily: the timer re-arms itself when it fires early), so a
        long stream that keeps producing never times out however long it runs. A timer already armed
        to fire no later than the new deadline is kept: it checks then and re-arms for the rest. So
        ``check_within`` (the next deadline's length, when one will follow this one) lets one timer
        serve a request's deadlines one after another, instead of a new timer for each.
        """
        if self.finished:
            return  # over already (a whole answer often comes in one message with its head): nothing to time
        clock = self._clock
        now = clock.now()
        self._deadline_s = seconds
        self._deadline_message = message
        self._progress_at = now
        if self._timer is not None:
            if self._due <= now + seconds:
                return
            self._timer.cancel()
        delay = seconds if check_within is None else min(seconds, check_within)
        self._due = now + delay
        self._timer = clock.call_later(delay, self._check_deadline)

    def stop_deadline(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_deadline(self) -> None:
        self._timer = None
        if self.finished:
            return
        clock = self._clock
        now = clock.now()
        left = self._progress_at + self._deadline_s - now
        if left > 0:
            self._due = now + left
            self._timer = clock.call_later(left, self._check_deadline)
            return
        self._fail(UpstreamTimeoutError(self._deadline_message))
        self._wake()

    async def head(self) -> HeadMessage:
        """The response head; raises the stream's failure (a deadline set with `set_deadline` included)."""
        return await self._head

    async def wait_readable(self) -> None:
        """Wait until there are bytes to read or the stream is over (without consuming anything)."""
        if self._chunks or self.end is not None or self._failure is not None:
            return
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read(self) -> bytes | None:
        """All bytes received so far as one chunk (coalesced), or None once the stream ended cleanly.

        Raises the stream's failure once the bytes before it have been read.
        """
        if not self._chunks:
            if self.end is None and self._failure is None:
                await self.wait_readable()
            if not self._chunks:
                if self._failure is not None:
                    raise self._failure
                return None
        chunks = self._chunks
        return chunks.popleft() if len(chunks) == 1 else b"".join([chunks.popleft() for _ in range(len(chunks))])

    def consumed_soon(self, nbytes: int) -> None:
        """`consumed`, once the frame loop has finished the agent's message being read: bytes a sink delivered
        from inside it free their credit only then. An agent that sends past its window in one burst is
        caught as when the relay task took the bytes, instead of being credited byte for byte as it floods.
        Only a CREDIT falling due schedules anything: smaller amounts wait to be sent with it."""
        self._deferred += nbytes
        if not self._credit_scheduled and self._uncredited + self._deferred >= self._credit_window // 2:
            self._credit_scheduled = True
            self._loop.call_soon(self._credit_deferred)

    def _credit_deferred(self) -> None:
        self._credit_scheduled = False
        self.consumed(0)

    def consumed(self, nbytes: int) -> None:
        """The client has taken ``nbytes`` more; top the agent's window up in half-window steps."""
        self._uncredited += nbytes + self._deferred
        self._deferred = 0
        if self._uncredited >= self._credit_window // 2 and self.end is None:
            self.session.send(CreditMessage(self._uncredited), self.stream_id)
            self.granted(self._uncredited)
            self._uncredited = 0


class WaitingStream(Stream):
    """A request placed on another replica's agent with no other agent to try: when every slot of the agent is
    taken, it waits in that replica's queue rather than being refused (hub/cluster_link.py)."""

    __slots__ = ()
    may_wait = True
