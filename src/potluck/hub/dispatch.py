"""Relay one client request through an agent: pick, send, await the answer, retry, cancel, meter.

`Dispatcher.open` returns an `Exchange` only once the agent has produced the response head and
its first body bytes (or its end). Until then nothing has reached the client, so an agent that
disconnects or whose backend refuses the connection is retried on another agent, up to
``max_attempts``. After that, failures surface mid-stream and the API layer ends the response.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from potluck._shared.clock import Clock
from potluck.hub.accounting import Accounting, Hold, Served, Settlement
from potluck.hub.errors import (
    HubError,
    ModelNotFoundError,
    OverloadedError,
    ShuttingDownError,
    UpstreamError,
    UpstreamTimeoutError,
)
from potluck.hub.metering import UsageJournal
from potluck.hub.metrics import HubMetrics
from potluck.hub.registry import Registry, Slot
from potluck.hub.scheduler import Explanation, Want
from potluck.hub.session import AgentSession, Stream
from potluck.protocol.agent import EndMessage, HeadMessage, RequestMessage, Usage
from potluck.protocol.errors import error_envelope
from potluck.store.usage import UsageRecord


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


class Exchange:
    """A response being relayed from one agent. Always `close` it exactly once."""

    __slots__ = (
        "_closed",
        "_dispatcher",
        "_done_sent",
        "_first_byte_at",
        "_sent_events",
        "explanation",
        "head",
        "request",
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
        explanation: Explanation | None,
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
        self._first_byte_at: float | None = None
        self._sent_events = 0
        self._done_sent = False

    @property
    def status(self) -> int:
        return self.head.status

    async def read(self) -> bytes | None:
        """The next bytes of the body (all that arrived, coalesced), or None at its end.

        Raises UpstreamError (or UpstreamTimeoutError) if the agent fails mid-way.
        """
        data = await self.stream.read()
        if data is not None and self._first_byte_at is None:
            self._first_byte_at = self._dispatcher.clock.now()
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """The rest of the body as it arrives."""
        while (data := await self.read()) is not None:
            yield data

    def consumed(self, nbytes: int) -> None:
        self.stream.consumed(nbytes)

    def sent(self, chunk: bytes) -> None:
        """These bytes reached the client: free their credit, and count the SSE events a client that
        hangs up early pays for (and whether it got ``[DONE]``: then it hung up after the end)."""
        self.stream.consumed(len(chunk))
        if self.request.stream:
            self._sent_events += chunk.count(b"data:")
            if b"data: [DONE]" in chunk:
                self._done_sent = True

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

    def close(self, outcome: str) -> None:
        if self._closed:
            return
        self._closed = True
        end = self.stream.end
        if outcome == "client_cancelled" and self._done_sent:
            outcome = "ok"  # the SDK closes the connection right after [DONE]: the client got everything
        events = self._sent_events if self.request.stream else None

        def record(final: EndMessage | None) -> None:
            self._dispatcher.record(
                self.request,
                agent_id=self.session.agent_id,
                outcome=outcome,
                status=self.head.status,
                usage=final.usage if final is not None else None,
                queued_s=self.slot.queued_s,
                first_byte_at=self._first_byte_at,
                model=self.slot.placement.model,
                response_bytes=self.stream.bytes_received,
                stream_events=events,
            )

        self._learn(outcome, end)

        if end is None:
            # Cancelled: the slot is freed now, and the usage the agent saw so far (its END answers
            # the cancel) is recorded when that END arrives, or without usage if it never does.
            self.stream.after_cancel = record
            self._dispatcher.finish(self.session, self.stream, cancel_reason=_CANCEL_REASONS.get(outcome, outcome))
        else:
            self._dispatcher.finish(self.session, self.stream, cancel_reason=None)
            if self.request.hold is not None:
                # Settling signs a receipt (~50 µs): do it after the response is written, not before.
                asyncio.get_running_loop().call_soon(record, end)
            else:
                record(end)
        self._dispatcher.exchange_closed()

    def _learn(self, outcome: str, end: EndMessage | None) -> None:
        """Tell the scheduler how the agent did: timings on success, failures for outlier ejection."""
        placement = self.slot.placement
        scheduler = self._dispatcher.registry.scheduler
        status = self.head.status
        if outcome in ("agent_failed", "timeout") or status >= 500:
            scheduler.report(placement.agent_id, placement.model, ok=False)
            return
        if outcome != "ok" or status >= 400:
            return  # the client's doing (a 4xx, a hang-up): says nothing about the agent
        now = self._dispatcher.clock.now()
        first = self._first_byte_at
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
    def __init__(
        self,
        registry: Registry,
        clock: Clock,
        settings: DispatchSettings,
        metrics: HubMetrics,
        journal: UsageJournal,
        accounting: Accounting | None = None,
    ) -> None:
        self.accounting = accounting
        self.registry = registry
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.journal = journal
        self.shutting_down = False
        self.in_flight = 0
        self.retrying = 0
        """Requests on their second or later attempt, waiting for its first byte."""
        self._idle = asyncio.Event()
        self._idle.set()

    async def open(self, req: RelayRequest) -> Exchange:
        if self.shutting_down:
            if self.accounting is not None:
                self.accounting.release(req.hold)
            raise ShuttingDownError("The hub is shutting down; retry shortly")
        self.in_flight += 1
        self._idle.clear()
        try:
            return await self._open(req)
        except BaseException as exc:
            self._done()
            outcome = "client_cancelled" if isinstance(exc, asyncio.CancelledError) else _outcome_of(exc)
            status = exc.status if isinstance(exc, HubError) else 499
            self.record(req, agent_id=None, outcome=outcome, status=status, usage=None, queued_s=0.0)
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
            want = dataclasses.replace(req.want, exclude=frozenset(tried)) if tried else req.want
            if tried and not self.registry.scheduler.routable(want.models, want.exclude, want.groups, want.requester):
                break  # no other agent could take it: answer with the last failure now
            if attempt and not self._retry_allowed():
                break
            if req.explain and explanation is None:
                explanation = self.registry.explain(want)
            retrying = bool(attempt)
            self.retrying += retrying
            try:
                slot = await self.registry.acquire(want, queue=req.model)
                exchange = await self._attempt(req, slot, explanation)
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

    async def _attempt(self, req: RelayRequest, slot: Slot, explanation: Explanation | None) -> Exchange:
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
        stream = session.open_stream(message, body)
        # One budget for the head and the first body bytes together.
        stream.set_deadline(settings.first_byte_timeout, _FIRST_BYTE_MESSAGE.format(settings.first_byte_timeout))
        try:
            head = await stream.head()
            await stream.wait_readable()
            stream_failure_before_bytes(stream)
        except UpstreamError as exc:
            self.finish(session, stream, cancel_reason=None)
            self.registry.scheduler.report(placement.agent_id, placement.model, ok=False)
            exc.agent_id = placement.agent_id
            raise
        except BaseException as exc:
            timed_out = isinstance(exc, UpstreamTimeoutError)
            self.finish(session, stream, cancel_reason="timeout" if timed_out else "client_disconnect")
            if timed_out:
                self.registry.scheduler.report(placement.agent_id, placement.model, ok=False)
            raise
        stream.set_deadline(settings.idle_timeout, _IDLE_MESSAGE.format(settings.idle_timeout))
        return Exchange(self, req, slot, stream, head, started_at, explanation)

    def finish(self, session: AgentSession, stream: Stream, *, cancel_reason: str | None) -> None:
        """Free the stream's slot now (the agent is told to cancel if the stream is still running)."""
        session.close_stream(stream, cancel_reason=cancel_reason)
        self.registry.release(session)

    def record(
        self,
        req: RelayRequest,
        *,
        agent_id: str | None,
        outcome: str,
        status: int,
        usage: Usage | None,
        queued_s: float,
        first_byte_at: float | None = None,
        model: str | None = None,
        response_bytes: int = 0,
        stream_events: int | None = None,
    ) -> None:
        now = self.clock.now()
        prompt = usage.prompt_tokens if usage else 0
        completion = usage.completion_tokens if usage else 0
        bill = Settlement(prompt, completion)
        if self.accounting is not None:
            served = Served(
                req.key_id,
                req.want.groups,
                agent_id,
                model or req.model,
                usage,
                len(req.body),
                response_bytes,
                stream_events,
                outcome,
            )
            bill = self.accounting.settle(req.hold, served)
            prompt, completion = bill.prompt_tokens, bill.completion_tokens
        metrics = self.metrics
        metrics.request_outcome(outcome).inc()
        if usage is not None:
            metrics.prompt_tokens.inc(prompt)
            metrics.completion_tokens.inc(completion)
        if first_byte_at is not None:
            self.metrics.ttft.observe(first_byte_at - req.received_at)
        self.journal.record(
            UsageRecord(
                request_id=req.request_id,
                key_id=req.key_id,
                agent_id=agent_id,
                model=model or req.model,
                path=req.path,
                outcome=outcome,
                status=status,
                prompt_tokens=prompt,
                completion_tokens=completion,
                queue_ms=round(queued_s * 1000),
                ttft_ms=None if first_byte_at is None else round((first_byte_at - req.received_at) * 1000),
                total_ms=round((now - req.received_at) * 1000),
                created_at=datetime.now(UTC),
                user_id=req.want.requester,
                group_id=bill.group_id,
                owner_id=bill.owner_id,
                tokens_estimated=bill.estimated,
                flagged=bill.flagged,
                charged=bill.charged,
                earned=bill.earned,
            )
        )

    def exchange_closed(self) -> None:
        self._done()

    def _done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait for every request in flight to finish; False if the timeout came first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


def stream_failure_before_bytes(stream: Stream) -> None:
    """Raise the stream's failure if it failed before any body byte (so it can still be retried)."""
    if stream.bytes_received == 0 and stream.end is None:
        failure = stream.failure
        if failure is not None:
            raise failure


_CANCEL_REASONS = {"client_cancelled": "client_disconnect"}


def _outcome_of(exc: BaseException) -> str:
    if isinstance(exc, ModelNotFoundError):
        return "model_not_found"
    if isinstance(exc, OverloadedError | ShuttingDownError):
        return "overloaded"
    if isinstance(exc, UpstreamTimeoutError):
        return "timeout"
    if isinstance(exc, UpstreamError):
        return "agent_failed"
    return "error"


class _ErrorObject(msgspec.Struct):
    message: str


class _ErrorShape(msgspec.Struct):
    error: _ErrorObject


def normalize_error_body(status: int, body: bytes) -> bytes:
    """An upstream error body in OpenAI's shape: kept as is when it already is, wrapped otherwise."""
    try:
        msgspec.json.decode(body, type=_ErrorShape)
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = body.decode("utf-8", "replace").strip()[:1000] or f"upstream answered HTTP {status}"
        return error_envelope("upstream_error", text)
    return body


def with_model(body: bytes, model: str) -> bytes:
    """The request body naming ``model`` (an alias resolved to a concrete model); the rest is kept."""
    document = msgspec.json.decode(body)
    document["model"] = model
    return msgspec.json.encode(document)
