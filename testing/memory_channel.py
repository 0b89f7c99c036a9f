"""An in-memory `AgentChannel`: the hub side of an agent connection, with no socket.

It records every frame the hub sends (decoded with the real `iter_frames`, so what the tests see is
what an agent would parse) and lets a test wait for the next frame of a given type. The test plays
the agent by calling `AgentSession.on_frame` / `Registry.on_models` / `Registry.on_state` itself.
"""

from __future__ import annotations

import asyncio

import msgspec
from prometheus_client import CollectorRegistry

from potluck._shared.clock import Clock, ManualClock
from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting
from potluck.hub.dispatch import Dispatcher, DispatchSettings, RelayRequest
from potluck.hub.ledger import Ledger
from potluck.hub.lifecycle import Lifecycle
from potluck.hub.limits import MemoryRateLimiter
from potluck.hub.metering import UsageJournal
from potluck.hub.metrics import HubMetrics
from potluck.hub.receipts import HubSigner
from potluck.hub.registry import Registry
from potluck.hub.requests import ClientRequest, RequestOwner
from potluck.hub.scheduler import Scheduler, Want
from potluck.hub.session import AgentSession
from potluck.protocol.agent import EndMessage, Frame, FrameType, HeadMessage, ModelInfo, iter_frames
from potluck.store.keys import ApiKey
from potluck.store.usage import UsageRecord


class MemoryChannel:
    """Implements `potluck.hub.channel.AgentChannel`."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.closed = False
        self._changed = asyncio.Event()
        self._cursor: dict[int, int] = {}

    # -- AgentChannel ---------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        assert not self.closed, "the hub sent a frame on a closed channel"
        self.frames.extend(iter_frames(frame))
        self._changed.set()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    # -- for tests ------------------------------------------------------------------------------

    def of_type(self, ftype: FrameType) -> list[Frame]:
        return [f for f in self.frames if f.type == ftype]

    def messages(self, ftype: FrameType) -> list[msgspec.Struct]:
        return [f.message for f in self.of_type(ftype) if f.message is not None]

    async def next_frame(self, ftype: FrameType, timeout: float = 2.0) -> Frame:
        """The first frame of this type not yet returned by `next_frame`; waits (bounded) for it."""
        async with asyncio.timeout(timeout):
            while True:
                for i in range(self._cursor.get(ftype, 0), len(self.frames)):
                    if self.frames[i].type == ftype:
                        self._cursor[ftype] = i + 1
                        return self.frames[i]
                self._changed.clear()
                await self._changed.wait()


def make_session(
    agent_id: str,
    clock: Clock,
    *,
    models: tuple[str, ...] = ("m",),
    max_concurrency: int = 1,
    credit_window: int = 1024,
) -> tuple[AgentSession, MemoryChannel]:
    """An authenticated agent session over a fresh memory channel (not yet attached to a registry)."""
    channel = MemoryChannel()
    session = AgentSession(
        agent_id=agent_id,
        name=agent_id,
        channel=channel,
        clock=clock,
        models=[ModelInfo(m) for m in models],
        backends=[],
        max_concurrency=max_concurrency,
        credit_window=credit_window,
        version="test",
    )
    return session, channel


class HubCore:
    """Registry + Dispatcher wired as app.py wires them, on a manual clock, with no transport.

    The test plays each agent: it reads what the hub sent from the agent's `MemoryChannel` and
    answers by calling `AgentSession.on_frame` (or the helpers below).
    """

    def __init__(
        self,
        *,
        max_queue: int = 8,
        queue_timeout: float = 30.0,
        heartbeat_timeout: float = 15.0,
        max_attempts: int = 3,
        first_byte_timeout: float = 2.0,
        idle_timeout: float = 2.0,
        retry_budget_percent: float = 20.0,
        min_retry_concurrency: int = 3,
    ) -> None:
        self.clock = ManualClock(1000.0)
        self.scheduler = Scheduler(self.clock, max_queue=max_queue, queue_timeout=queue_timeout)
        self.registry = Registry(self.scheduler, self.clock, heartbeat_timeout=heartbeat_timeout)
        self.metrics = HubMetrics(CollectorRegistry())
        self.records: list[UsageRecord] = []

        async def append(batch: list[UsageRecord]) -> None:
            self.records.extend(batch)

        self.journal = UsageJournal(append)
        self.dispatcher = Dispatcher(
            self.registry,
            self.clock,
            DispatchSettings(
                max_attempts=max_attempts,
                first_byte_timeout=first_byte_timeout,
                idle_timeout=idle_timeout,
                retry_budget_percent=retry_budget_percent,
                min_retry_concurrency=min_retry_concurrency,
            ),
            self.metrics,
        )
        access = AccessMap("admin", "default")

        async def discard(txns: object, receipts: object) -> None:
            pass

        self.owner = RequestOwner(
            access=access,
            limiter=MemoryRateLimiter(self.clock),
            accounting=Accounting(Ledger(discard), HubSigner.generate(), access, self.scheduler, clock=self.clock),
            dispatcher=self.dispatcher,
            journal=self.journal,
            metrics=self.metrics,
            clock=self.clock,
            lifecycle=Lifecycle(),
        )
        self._ids = 0

    def attach(
        self, agent_id: str, *, models: tuple[str, ...] = ("m",), max_concurrency: int = 1, credit_window: int = 1024
    ) -> tuple[AgentSession, MemoryChannel]:
        session, channel = make_session(
            agent_id, self.clock, models=models, max_concurrency=max_concurrency, credit_window=credit_window
        )
        self.registry.attach(session)
        return session, channel

    def request(self, model: str = "m", body: bytes = b'{"model":"m"}', *, stream: bool = True) -> RelayRequest:
        self._ids += 1
        return RelayRequest(
            request_id=f"req_{self._ids}",
            key_id="key_1",
            path="/v1/chat/completions",
            model=model,
            stream=stream,
            strip_usage=False,
            body=body,
            headers={"content-type": "application/json"},
            received_at=self.clock.now(),
            want=Want((model,)),
        )

    def client_request(self, model: str = "m", body: bytes = b'{"model":"m"}', *, stream: bool = True) -> ClientRequest:
        """A request as an API adapter hands it to the request owner, from an admin key."""
        self._ids += 1
        key = ApiKey("key_1", "k", "pk-", "", self.clock.wall(), None)
        return ClientRequest(f"req_{self._ids}", key, "/v1/chat/completions", body, model, stream, False)

    async def queued(self, depth: int) -> None:
        """Let tasks started with create_task run until ``depth`` requests sit in the queue (bounded, no sleeping)."""
        async with asyncio.timeout(2):
            while self.scheduler.queue_depth < depth:
                await asyncio.sleep(0)

    def in_flight(self, agent_id: str) -> int:
        slots = self.scheduler.agent(agent_id)
        assert slots is not None
        return slots.in_flight


def send_head(session: AgentSession, stream_id: int, status: int = 200) -> None:
    session.on_frame(FrameType.HEAD, stream_id, HeadMessage(status, [("content-type", "text/event-stream")]), b"")


def send_data(session: AgentSession, stream_id: int, data: bytes) -> None:
    session.on_frame(FrameType.DATA, stream_id, None, data)
    session.deliver()  # a message of its own


def send_end(session: AgentSession, stream_id: int, end: EndMessage) -> None:
    session.on_frame(FrameType.END, stream_id, end, b"")
