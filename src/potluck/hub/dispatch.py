"""Relay one client request through an agent: pick, send, await the answer, retry, cancel, meter.

`Dispatcher.open` returns an `Exchange` only once the agent has produced the response head and
its first body bytes (or its end). Until then nothing has reached the client, so an agent that
disconnects or whose backend refuses the connection is retried on another agent, up to
``max_attempts``. After that, failures surface mid-stream and the API layer ends the response.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from potluck._shared.clock import Clock
from potluck._shared.waiting import wait_set
from potluck.hub.accounting import Hold
from potluck.hub.errors import (
    HubError,
    ModelNotFoundError,
    ReplicaRefusedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from potluck.hub.metrics import HubMetrics
from potluck.hub.outcome import Outcome
from potluck.hub.registry import Registry, Slot
from potluck.hub.scheduler import Explanation, Want
from potluck.hub.session import AgentSession
from potluck.hub.stream import Stream, WaitingStream
from potluck.protocol.agent import CancelReason, EndMessage, HeadMessage, RequestMessage


@dataclass(slots=True)
class RelayRequest:
    request_id: str
    key_id: str | None
    path: str
    model: str
    stream: bool
    strip_usage: bool
    body: bytes
    headers: dict[str, str]
    received_at: float
    want: Want
    """What the scheduler needs: the concrete models (an alias's list), the groups the key reaches agents
    through, whose request it is, its fair-queue weight and owner affinity."""
    explain: bool = False
    """Keep the scheduler's reasoning for the response (admins' ``x-potluck-explain: 1``)."""
    hold: Hold | None = None
    """Credit held for it (groups billing in credits); settled or released when it is recorded."""
    metered: bool = True
    """Charged for its tokens (a token count is not)."""


_FIRST_BYTE_MESSAGE = "no response from the agent within {:g} s"
_IDLE_MESSAGE = "the agent sent nothing for {:g} s"


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    max_attempts: int = 3
    first_byte_timeout: float = 600.0
    idle_timeout: float = 300.0
    retry_budget_percent: float = 20.0
    """Retries in progress may be at most this share of the requests in flight (Envoy's retry budget)..."""
    min_retry_concurrency: int = 3
    """...or this many, whichever is more, so a quiet hub can still retry."""
    first_byte_message: str = field(init=False, repr=False, compare=False)
    idle_message: str = field(init=False, repr=False, compare=False)
    """The timeouts' messages, written once rather than per request."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "first_byte_message", _FIRST_BYTE_MESSAGE.format(self.first_byte_timeout))
        object.__setattr__(self, "idle_message", _IDLE_MESSAGE.format(self.idle_timeout))


_CHAT_END = (b"data: [DONE]",)
STREAM_ENDS: dict[str, tuple[bytes, ...]] = {
    "/v1/messages": (b"event: message_stop",),
    "/v1/responses": (b"event: response.completed", b"event: response.incomplete"),
}
"""The event that ends a complete stream, by backend path (chat and completions end with ``[DONE]``)."""


class ExchangeFinished(Protocol):
    """Told once when an exchange is over, with its outcome and the agent's END (None: the agent sent none)."""

    def __call__(self, exchange: Exchange, outcome: Outcome, end: EndMessage | None) -> None: ...


class Exchange:
    """A response being relayed from one agent. Always `close` it exactly once."""

    __slots__ = (
        "_closed",
        "_dispatcher",
        "_end_marks",
        "client_gone",
        "delivered",
        "done_sent",
        "explanation",
        "failure",
        "first_byte_at",
        "head",
        "on_finish",
        "request",
        "sent_events",
        "session",
        "slot",
        "started_at",
        "stream",
    )

    def __init__(
        self,
        dispatcher: Dispatcher,
        request: RelayRequest,
        slot: Slot,
        stream: Stream,
        head: HeadMessage,
        started_at: float,
        explanation: Explanation | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self.request = request
        self.slot = slot
        self.session = slot.session
        self.stream = stream
        self.head = head
        self.started_at = started_at
        """When the chosen agent got the request (after any queueing and failed attempts)."""
        self.explanation = explanation
        self._closed = False
        self.first_byte_at: float | None = None
        self.sent_events = 0
        """SSE data events that reached the client (streams only)."""
        self.delivered = 0
        """Body bytes that reached the client."""
        self.done_sent = False
        """A stream's last event reached the client (``data: [DONE]``, Anthropic's ``message_stop``,
        the Responses API's ``response.completed`` or ``response.incomplete``)."""
        self._end_marks = STREAM_ENDS.get(request.path, _CHAT_END)
        self.failure: HubError | None = None
        """The agent failed mid-response (read raised it)."""
        self.client_gone = False
        """The client went away before the response was complete."""
        self.on_finish: ExchangeFinished | None = None

    @property
    def status(self) -> int:
        return self.head.status

    async def read(self) -> bytes | None:
        """The next bytes of the body (all that arrived, coalesced), or None at its end.

        Raises UpstreamError (or UpstreamTimeoutError) if the agent fails mid-way, and remembers it.
        """
        try:
            data = await self.stream.read()
        except HubError as exc:
            self.failure = exc
            raise
        if data is not None and self.first_byte_at is None:
            self.first_byte_at = self._dispatcher.clock.now()
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """The rest of the body as it arrives."""
        while (data := await self.read()) is not None:
            yield data

    def consumed(self, nbytes: int) -> None:
        self.stream.consumed(nbytes)

    def deliver_through(self, write: Callable[[bytes], bool] | None) -> None:
        """Have the body's bytes written as they arrive, from the frame loop, with ``write`` (None: stop).

        ``write`` returns False when it cannot take bytes now (the client is slow or gone): those bytes,
        and all after them until `read` caught up, wait for `read` as before, so the order never changes.
        What ``write`` took counts as `sent` (its credit once the agent's message is read: `Stream.consumed_soon`).
        Per chunk this saves waking the reading task, which is most of what relaying a chunk costs."""
        if write is None:
            self.stream.sink = None
            return

        stream = self.stream

        def sink(data: bytes) -> bool:
            if not write(data):
                return False
            if self.first_byte_at is None:
                self.first_byte_at = self._dispatcher.clock.now()
            stream.consumed_soon(len(data))
            self._count(data)
            return True

        self.stream.sink = sink

    def sent(self, chunk: bytes) -> None:
        """These bytes reached the client: free their credit, and count the SSE events a client that
        hangs up early pays for (and whether it got the stream's last event: then it hung up after the end,
        as Codex does right after ``response.completed``)."""
        self.stream.consumed(len(chunk))
        self._count(chunk)

    def _count(self, chunk: bytes) -> None:
        self.delivered += len(chunk)
        if self.request.stream:
            self.sent_events += chunk.count(b"data:")
            if not self.done_sent:
                for mark in self._end_marks:  # a plain loop: a generator per chunk cost more than the search
                    if mark in chunk:
                        self.done_sent = True
                        break

    async def read_all(self, limit: int) -> bytes:
        """The whole (small) body, for error responses that the hub inspects before relaying."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            parts.append(chunk)
            size += len(chunk)
            self.consumed(len(chunk))
            if size > limit:
                break
        return b"".join(parts)

    def close(self, outcome: Outcome) -> None:
        """Free the agent's slot (cancelling the request there if it still runs), tell the scheduler how the
        agent did, and hand the outcome and the agent's END to `on_finish` (once the END arrives, for a
        cancelled stream: it carries the usage the agent saw)."""
        if self._closed:
            return
        self._closed = True
        end = self.stream.end
        self._learn(outcome, end)
        if end is None:
            self.stream.after_cancel = lambda final: self._finished(outcome, final)
            self._dispatcher.finish(self.session, self.stream, cancel_reason=outcome.cancel_reason)
        else:
            self._dispatcher.finish(self.session, self.stream, cancel_reason=None)
            self._finished(outcome, end)
        self._dispatcher.exchange_closed()

    def _finished(self, outcome: Outcome, end: EndMessage | None) -> None:
        if self.on_finish is not None:
            self.on_finish(self, outcome, end)

    def _learn(self, outcome: Outcome, end: EndMessage | None) -> None:
        """Tell the scheduler how the agent did: timings on success, failures for outlier ejection."""
        placement = self.slot.placement
        scheduler = self._dispatcher.registry.scheduler
        status = self.head.status
        if outcome.agent_fault or status >= 500:
            scheduler.report(placement.agent_id, placement.model, ok=False)
            return
        if outcome is not Outcome.OK or status >= 400:
            return  # the client's doing (a 4xx, a hang-up): says nothing about the agent
        now = self._dispatcher.clock.now()
        first = self.first_byte_at
        decode = None
        usage = end.usage if end is not None else None
        if usage is not None and first is not None and usage.completion_tokens > 1 and now > first:
            decode = (usage.completion_tokens - 1) / (now - first)
        scheduler.report(
            placement.agent_id,
            placement.model,
            ok=True,
            hot=placement.hot,
            ttft=None if first is None else first - self.started_at,
            decode_rate=decode,
            duration=now - self.started_at,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
        )


class Dispatcher:
    """Places a request on an agent and relays it, retrying on another agent until the first byte."""

    def __init__(self, registry: Registry, clock: Clock, settings: DispatchSettings, metrics: HubMetrics) -> None:
        self.registry = registry
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.in_flight = 0
        self.retrying = 0
        """Requests on their second or later attempt, waiting for its first byte."""
        self._idle = asyncio.Event()
        self._idle.set()

    async def open(self, req: RelayRequest) -> Exchange:
        """The agent's response head and first bytes; raises the failure that stopped every attempt."""
        self.in_flight += 1
        self._idle.clear()
        try:
            return await self._open(req)
        except BaseException:
            self._done()
            raise

    def _retry_allowed(self) -> bool:
        settings = self.settings
        budget = max(settings.min_retry_concurrency, self.in_flight * settings.retry_budget_percent / 100)
        if self.retrying < budget:
            return True
        self.metrics.retries_over_budget.inc()
        return False

    async def _open(self, req: RelayRequest) -> Exchange:
        settings = self.settings
        tried: set[str] = set()
        last_error: UpstreamError | None = None
        explanation: Explanation | None = None
        for attempt in range(settings.max_attempts):
            want = msgspec.structs.replace(req.want, exclude=req.want.exclude | tried) if tried else req.want
            if tried and not self.registry.scheduler.routable(want.models, want.exclude, want.groups, want.requester):
                break  # no other agent could take it: answer with the last failure now
            # A refusal by the agent's replica (cluster mode) reached no agent: placing it again is no retry storm.
            if attempt and not isinstance(last_error, ReplicaRefusedError) and not self._retry_allowed():
                break
            if req.explain and explanation is None:
                explanation = self.registry.explain(want)
            retrying = bool(attempt)
            self.retrying += retrying
            try:
                slot = await self.registry.acquire(want, queue=req.model)
                exchange = await self._attempt(req, slot, explanation, self._may_wait_there(want, slot))
            except UpstreamError as exc:
                if not exc.retriable:
                    raise
                tried.add(exc.agent_id or "")
                last_error = exc
                self.metrics.retries.inc()
                continue
            finally:
                self.retrying -= retrying
            return exchange
        if last_error is None:  # every candidate was excluded before a first try: cannot happen
            raise ModelNotFoundError(req.model)
        raise last_error

    def _may_wait_there(self, want: Want, slot: Slot) -> bool:
        """Placed on another replica's agent (cluster mode), the request waits there for a slot only when no other
        agent could take it: the replicas each count only their own requests on it, so it may be full there."""
        if not slot.session.remote:
            return False
        scheduler = self.registry.scheduler
        exclude = want.exclude | {slot.placement.agent_id}
        return not scheduler.routable(want.models, exclude, want.groups, want.requester)

    async def _attempt(
        self, req: RelayRequest, slot: Slot, explanation: Explanation | None, may_wait: bool = False
    ) -> Exchange:
        """Send the request to the slot's agent and wait for the head and first body bytes."""
        settings = self.settings
        session, placement = slot.session, slot.placement
        message = RequestMessage(
            request_id=req.request_id,
            method="POST",
            path=req.path,
            model=placement.model,
            stream=req.stream,
            strip_usage=req.strip_usage,
            headers=req.headers,
        )
        body = req.body if placement.model == req.model else with_model(req.body, placement.model)
        started_at = self.clock.now()
        stream = session.open_stream(message, body, factory=WaitingStream if may_wait else Stream)
        # One budget for the head and the first body bytes together; the timer armed for it serves the idle
        # deadline that follows too.
        stream.set_deadline(
            settings.first_byte_timeout, settings.first_byte_message, check_within=settings.idle_timeout
        )
        try:
            head = await stream.head()
            await stream.wait_readable()
            stream_failure_before_bytes(stream)
        except UpstreamError as exc:
            self.finish(session, stream, cancel_reason=None)
            if not isinstance(exc, ReplicaRefusedError):  # the agent's replica had no slot for it: not its fault
                self.registry.scheduler.report(placement.agent_id, placement.model, ok=False)
            exc.agent_id = placement.agent_id
            raise
        except BaseException as exc:
            timed_out = isinstance(exc, UpstreamTimeoutError)
            reason = CancelReason.TIMEOUT if timed_out else CancelReason.CLIENT_DISCONNECT
            self.finish(session, stream, cancel_reason=reason)
            if timed_out:
                self.registry.scheduler.report(placement.agent_id, placement.model, ok=False)
            raise
        stream.set_deadline(settings.idle_timeout, settings.idle_message)
        return Exchange(self, req, slot, stream, head, started_at, explanation)

    def finish(self, session: AgentSession, stream: Stream, *, cancel_reason: CancelReason | None) -> None:
        """Free the stream's slot now (the agent is told to cancel if the stream is still running)."""
        session.close_stream(stream, cancel_reason=cancel_reason)
        self.registry.release(session)

    def exchange_closed(self) -> None:
        self._done()

    def _done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait for every request in flight to finish; False if the timeout came first."""
        return await wait_set(self._idle, timeout)


def stream_failure_before_bytes(stream: Stream) -> None:
    """Raise the stream's failure if it failed before any body byte (so it can still be retried)."""
    if stream.bytes_received == 0 and stream.end is None:
        failure = stream.failure
        if failure is not None:
            raise failure


def with_model(body: bytes, model: str) -> bytes:
    """The request body naming ``model`` (an alias resolved to a concrete model); the rest is kept."""
    document = msgspec.json.decode(body)
    document["model"] = model
    return msgspec.json.encode(document)
