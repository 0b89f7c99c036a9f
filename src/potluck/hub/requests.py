"""One owner per client request, from admission to settlement.

`RequestOwner.serve` takes a dialect-neutral `ClientRequest` from an API adapter and owns it to the
end: permission, rate and concurrency limits, the credit hold, placement and retries (the dispatcher),
the relay (the adapter reads the `Exchange` and writes its bytes), the outcome (an `Outcome`, decided
here and nowhere else), the usage record, settlement and metrics. The adapter only translates HTTP
to and from it::

    async with hub.requests.serve(request) as exchange:
        ...  # write exchange.head and the bytes of exchange.read() to the client

A request that never reached an agent (no agent serves the model, every agent busy, shutting down)
is recorded with its outcome, 0 tokens and no agent. One whose answer was an error status, or that
failed before anything reached the client, is charged nothing and its hold released.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

import msgspec

from potluck._shared.clock import Clock
from potluck._shared.ids import new_request_id
from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting, Served, usage_parts
from potluck.hub.claims import Sample
from potluck.hub.dispatch import Dispatcher, Exchange, RelayRequest
from potluck.hub.errors import (
    HubError,
    ModelNotFoundError,
    ModelUnavailableError,
    PermissionDeniedError,
    ShuttingDownError,
)
from potluck.hub.lifecycle import Lifecycle
from potluck.hub.limits import NO_LIMITS, Admission, Limits, RateLimiter
from potluck.hub.metering import UsageJournal
from potluck.hub.metrics import HubMetrics
from potluck.hub.observe import Observer
from potluck.hub.outcome import Outcome, outcome_of_failure, outcome_of_response
from potluck.hub.returning import Relinking, Returning
from potluck.hub.scheduler import Want
from potluck.protocol.agent import EndMessage, Usage
from potluck.store.keys import ApiKey
from potluck.store.usage import UsageRecord

_FORWARD_HEADERS = {"content-type": "application/json", "accept": "application/json"}


class ClientRequest(msgspec.Struct, frozen=True, gc=False):
    """What an API adapter hands the hub: who asks, which path and body, and the routing fields it decoded."""

    request_id: str
    key: ApiKey
    path: str
    """The backend path the body is for (``/v1/chat/completions``...)."""
    body: bytes
    """Passed to the agent as is (an alias is the only field ever rewritten)."""
    model: str
    stream: bool
    include_usage: bool
    """The client asked for a usage chunk (``stream_options.include_usage``); others get it hidden."""
    explain: bool = False
    """An admin asked why this agent (``x-potluck-explain: 1``)."""
    metered: bool = True
    """Generates tokens, so it is held for and charged (counting tokens does not, and costs nothing)."""


class RequestOwner:
    """The hub service that owns every client request (see the module docstring)."""

    def __init__(
        self,
        *,
        access: AccessMap,
        limiter: RateLimiter,
        accounting: Accounting,
        dispatcher: Dispatcher,
        journal: UsageJournal,
        metrics: HubMetrics,
        clock: Clock,
        lifecycle: Lifecycle,
        returning: Returning | None = None,
        relinking: Relinking | None = None,
        on_served: Callable[[Sample], None] | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.on_served = on_served
        """Told of every request an agent served in full (the throughput floor, the spot checks' budget)."""
        self.observer = observer
        """The dashboard's live numbers: told of every finished request (one O(1) call)."""
        self.lifecycle = lifecycle
        self.returning = returning
        self.relinking = relinking
        self.access = access
        self.limiter = limiter
        self.accounting = accounting
        self.dispatcher = dispatcher
        self.journal = journal
        self.metrics = metrics
        self.clock = clock

    def serve(self, request: ClientRequest) -> Serving:
        """Admit, place and relay ``request``; use as ``async with``: the exchange is its value."""
        return Serving(self, request)

    @property
    def closing(self) -> bool:
        """The hub is shutting down: new requests get 503, those in flight finish."""
        return self.lifecycle.closing

    @property
    def in_flight(self) -> int:
        return self.dispatcher.in_flight

    async def wait_idle(self, timeout: float) -> bool:
        return await self.dispatcher.wait_idle(timeout)

    # -- admission ------------------------------------------------------------------------------

    async def admit(self, request: ClientRequest) -> tuple[RelayRequest, Admission]:
        """Permission, limits and the credit hold; raises the refusal (nothing is recorded for one)."""
        if self.closing:
            raise ShuttingDownError("The hub is shutting down; retry shortly")
        key = request.key
        if key.models is not None and request.model not in key.models:
            raise PermissionDeniedError(f"This key may not use the model `{request.model}`")
        access = self.access
        want = access.want(key, request.model)
        owner = access.owner_of_key(key)
        admission = self.limiter.admit(
            key.id, Limits(key.rpm, key.tpm, key.max_concurrency), owner, access.user_limits.get(owner, NO_LIMITS)
        )
        hold = None
        try:
            await self.limiter.confirm(admission)  # cluster-wide limits (a no-op on one hub)
            if request.metered:
                want, hold = await self.accounting.admit(request.request_id, want, request.body)
        except BaseException:
            self.limiter.finish(admission, 0)
            raise
        relay = RelayRequest(
            request_id=request.request_id,
            key_id=key.id,
            path=request.path,
            model=request.model,
            stream=request.stream,
            strip_usage=request.stream and not request.include_usage,
            body=request.body,
            headers=_FORWARD_HEADERS,
            received_at=self.clock.now(),
            want=want,
            explain=request.explain and want.requester in access.admins,
            hold=hold,
            metered=request.metered,
        )
        return relay, admission

    async def probe(self, model: str, body: bytes, want: Want) -> Exchange:
        """The hub's own request (a spot check): placed, sent and relayed as a client's non-streamed chat
        completion is (the same frame, headers and request id generator), but admitted and recorded
        nowhere: no limits, no hold, no usage record, no settlement, no earnings. Close the exchange."""
        if self.closing:
            raise ShuttingDownError("The hub is shutting down; retry shortly")
        relay = RelayRequest(
            request_id=new_request_id(),
            key_id=None,
            path="/v1/chat/completions",
            model=model,
            stream=False,
            strip_usage=False,
            body=body,
            headers=_FORWARD_HEADERS,
            received_at=self.clock.now(),
            want=want,
            metered=False,
        )
        return await self.dispatcher.open(relay)

    # -- placement and relay --------------------------------------------------------------------

    async def relay(self, relay: RelayRequest) -> Exchange:
        """Place and send the request; a request that fails before its response is recorded here."""
        try:
            exchange = await self._open(relay)
        except BaseException as exc:
            status = exc.status if isinstance(exc, HubError) else 499
            # Settling a request that reached no agent releases its hold.
            self._record(relay, outcome_of_failure(exc), status=status, agent_id=None, model=relay.model)
            raise
        exchange.on_finish = self._finished
        return exchange

    async def _open(self, relay: RelayRequest) -> Exchange:
        """Place the request; where its model is only away for a moment (hub/returning.py), wait for a peer
        link or answer 503 ``model_unavailable`` rather than 404."""
        until: float | None = None
        while True:
            try:
                return await self.dispatcher.open(relay)
            except ModelNotFoundError as exc:
                want = relay.want
                reachable = self._reachable(want)
                if self.returning is not None and (retry := self.returning.awaited(want.models, reachable)):
                    raise ModelUnavailableError(relay.model, retry_after=retry) from None
                relinking = self.relinking
                if relinking is None or not relinking.unlinked(want.models, reachable):
                    raise exc from None
                now = self.clock.now()
                if until is None:
                    until = now + relinking.lease_s
                    self.metrics.link_waits.inc()
                if now >= until or not await relinking.relinked(until - now):
                    raise ModelUnavailableError(relay.model, retry_after=1) from None

    def _reachable(self, want: Want) -> list[str] | None:
        """The agents a request's groups reach (None: any)."""
        if want.groups is None:
            return None
        return [a for a, groups in self.access.agent_groups.items() if not want.groups.isdisjoint(groups)]

    def _finished(self, exchange: Exchange, outcome: Outcome, end: EndMessage | None) -> None:
        if exchange.request.hold is not None:
            # Settling signs a receipt (~50 µs): do it after the response is written, not before.
            asyncio.get_running_loop().call_soon(self._record_exchange, exchange, outcome, end)
        else:
            self._record_exchange(exchange, outcome, end)

    def _record_exchange(self, exchange: Exchange, outcome: Outcome, end: EndMessage | None) -> None:
        placement = exchange.slot.placement
        self._record(
            exchange.request,
            outcome,
            status=exchange.status,
            agent_id=placement.agent_id,
            model=placement.model,
            usage=end.usage if end is not None else None,
            queued_s=exchange.slot.queued_s,
            first_byte_at=exchange.first_byte_at,
            response_bytes=exchange.stream.bytes_received,
            delivered=exchange.delivered,
            stream_events=exchange.sent_events if exchange.request.stream else None,
        )
        usage = end.usage if end is not None else None
        if self.on_served is not None and usage is not None and outcome is Outcome.OK and exchange.status < 400:
            self.on_served(
                Sample.of(
                    placement.agent_id,
                    placement.model,
                    exchange.request.want.groups,
                    completion_tokens=usage.completion_tokens,
                    stream=exchange.request.stream,
                    started_at=exchange.started_at,
                    first_byte_at=exchange.first_byte_at,
                    now=self.clock.now(),
                )
            )

    # -- the record -----------------------------------------------------------------------------

    def _record(
        self,
        req: RelayRequest,
        outcome: Outcome,
        *,
        status: int,
        agent_id: str | None,
        model: str,
        usage: Usage | None = None,
        queued_s: float = 0.0,
        first_byte_at: float | None = None,
        response_bytes: int = 0,
        delivered: int = 0,
        stream_events: int | None = None,
    ) -> None:
        """Settle the request's hold and write its usage record and metrics: the request's last step."""
        clock = self.clock
        now = clock.now()
        if not req.metered:
            usage, delivered = None, 0  # nothing generated: nothing to count or charge
        served = Served(
            key_id=req.key_id,
            key_groups=req.want.groups,
            agent_id=agent_id,
            model=model,
            usage=usage,
            request_bytes=len(req.body),
            response_bytes=response_bytes,
            delivered_bytes=delivered,
            stream_events=stream_events,
            outcome=outcome,
            status=status,
        )
        bill = self.accounting.settle(req.hold, served)
        ttft = None if first_byte_at is None else first_byte_at - req.received_at
        self.metrics.request_done(outcome, bill.prompt_tokens, bill.completion_tokens, ttft)
        self.journal.record(
            record := UsageRecord(
                request_id=req.request_id,
                key_id=req.key_id,
                agent_id=agent_id,
                model=model,
                path=req.path,
                outcome=outcome,
                status=status,
                prompt_tokens=bill.prompt_tokens,
                completion_tokens=bill.completion_tokens,
                queue_ms=round(queued_s * 1000),
                ttft_ms=None if ttft is None else round(ttft * 1000),
                total_ms=round((now - req.received_at) * 1000),
                created_at=clock.wall(),
                user_id=req.want.requester,
                group_id=bill.group_id,
                owner_id=bill.owner_id,
                tokens_estimated=bill.estimated,
                flagged=bill.flagged,
                charged=bill.charged,
                earned=bill.earned,
                **usage_parts(usage, bill.estimated),
            )
        )
        if self.observer is not None:
            self.observer.finished(record, now)


class Serving:
    """One request being served: admitted and placed on enter, its outcome decided and recorded on exit."""

    __slots__ = ("_admission", "_owner", "_request", "exchange")

    @property
    def admission_headers(self) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for the response."""
        return self._admission.headers if self._admission is not None else {}

    def __init__(self, owner: RequestOwner, request: ClientRequest) -> None:
        self._owner = owner
        self._request = request
        self._admission: Admission | None = None
        self.exchange: Exchange | None = None

    async def __aenter__(self) -> Exchange:
        owner = self._owner
        relay, self._admission = await owner.admit(self._request)
        try:
            self.exchange = await owner.relay(relay)
        except BaseException:
            owner.limiter.finish(self._admission, 0)
            raise
        return self.exchange

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        exchange, admission = self.exchange, self._admission
        if exchange is None or admission is None:
            return  # __aenter__ failed: the refusal or failure was handled there
        if exc is not None and exchange.failure is None:
            exchange.client_gone = True  # the adapter could not write: the client went away (or was cancelled)
        outcome = outcome_of_response(
            status=exchange.status,
            failure=exchange.failure,
            client_gone=exchange.client_gone,
            done_sent=exchange.done_sent,
        )
        exchange.close(outcome)
        end = exchange.stream.end
        tokens = end.usage.total_tokens if end is not None and end.usage is not None else 0
        self._owner.limiter.finish(admission, tokens)
