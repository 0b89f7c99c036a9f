"""The fleet as the hub sees it: connected agent sessions, their slots, and requests waiting for one.

It owns the pure `Scheduler` and the asyncio side of waiting: each queued ticket has a future that
a freed slot resolves synchronously, so queued work starts in the same loop turn. `poll`, called
every second, resolves the futures of requests that stop waiting for a hot slot and take a cold one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple, Protocol

import msgspec

from potluck._shared.clock import Clock
from potluck.hub.access import AccessMap
from potluck.hub.errors import AgentLostError, ModelNotFoundError, OverloadedError, ShuttingDownError
from potluck.hub.limits import RateLimitError
from potluck.hub.scheduler import (
    Explanation,
    Grant,
    Placement,
    QueueFullError,
    QueueShareError,
    Scheduler,
    Ticket,
    Want,
)
from potluck.hub.session import AgentSession, SessionState
from potluck.protocol.agent import DrainMessage, LoadMessage, ModelsMessage, PingMessage, StateMessage, encode_frame

log = logging.getLogger(__name__)


class RegistryObserver(Protocol):
    """Told when a session joins, changes what it serves or how loaded it is, or leaves (cluster mode
    publishes it to the other replicas, hub/cluster.py)."""

    def changed(self, session: AgentSession) -> None: ...

    def left(self, session: AgentSession) -> None: ...


class Slot(msgspec.Struct, frozen=True):
    """A reserved slot: where a request runs, and how long it waited for it."""

    session: AgentSession
    placement: Placement
    queued_s: float = 0.0
    position: int = 0
    """Its place in the wait queue when it arrived (0: it did not wait)."""


class Queued(NamedTuple):
    """A request waiting in the queue (`Registry.join`)."""

    ticket: Ticket
    position: int
    """Its place in the queue when it joined."""


class Registry:
    def __init__(
        self,
        scheduler: Scheduler,
        clock: Clock,
        *,
        heartbeat_timeout: float,
        access: AccessMap | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.access = access
        self._available: dict[str, bool] = {}
        """Who may reach which agent; None: no isolation (tests and simulators of one tenant)."""
        self._clock = clock
        self.heartbeat_timeout = heartbeat_timeout
        self.sessions: dict[str, AgentSession] = {}
        self.admin_drained: set[str] = set()
        """Agents an admin took out of rotation; survives their reconnects until resumed."""
        self._agent_draining: dict[str, bool] = {}
        self.closing = False
        """The hub is shutting down: no agent gets new work, whatever it reports."""
        self._waiters: dict[int, asyncio.Future[Slot]] = {}
        self.observer: RegistryObserver | None = None
        self._resets_of_gone = 0
        """`stream_resets` of the sessions no longer here."""

    def now(self) -> float:
        return self._clock.now()

    def stream_resets(self) -> int:
        """Streams reset since the hub started because their agent broke the protocol on them (an agent sending
        past its credit window), agents gone since included: read when /metrics is scraped."""
        return self._resets_of_gone + sum(s.protocol_errors for s in self.sessions.values())

    # -- sessions -------------------------------------------------------------------------------

    def attach(self, session: AgentSession, *, draining: bool = False) -> None:
        """A new authenticated connection. An older one of the same agent is closed (it lost the race)."""
        old = self.sessions.get(session.agent_id)
        if old is not None:
            log.info("agent %s reconnected; closing its previous connection", session.agent_id)
            self.detach(old)
            old.channel.close()
        self.sessions[session.agent_id] = session
        self._agent_draining[session.agent_id] = draining
        self._sync(session)
        if self.observer is not None:
            self.observer.changed(session)

    def detach(self, session: AgentSession) -> None:
        if self.sessions.get(session.agent_id) is session:
            del self.sessions[session.agent_id]
            self._resets_of_gone += session.protocol_errors
            self._agent_draining.pop(session.agent_id, None)
            self.scheduler.remove_agent(session.agent_id)
            self._refuse_pinned(session.agent_id)
            if self.observer is not None:
                self.observer.left(session)
        session.close(AgentLostError())

    def _refuse_pinned(self, agent_id: str) -> None:
        """Requests another replica placed on this agent stop waiting for it: it is gone from here."""
        for ticket in list(self.scheduler.waiting()):
            future = self._waiters.get(ticket.id)
            if ticket.want.pinned == agent_id and future is not None and not future.done():
                future.set_exception(AgentLostError("the agent left the replica holding it"))

    def _owner_rules(self, agent_id: str) -> tuple[bool, str | None, bool, bool]:
        access = self.access
        assert access is not None  # noqa: S101 - only called when isolation is on
        controls = access.controls_of(agent_id)
        available = controls.available(self._clock.wall())
        self._available[agent_id] = available
        return available, access.agent_owner.get(agent_id), controls.own_requests_only, controls.own_requests_first

    def apply_schedules(self) -> None:
        """Re-check availability windows (called every second); agents whose state flipped are updated."""
        if self.access is None:
            return
        now = self._clock.wall()
        for agent_id, session in self.sessions.items():
            if self.access.controls_of(agent_id).available(now) != self._available.get(agent_id, True):
                self._sync(session)

    def poll(self) -> None:
        """Re-offer the wait queue to free slots; the app calls it at `Scheduler.next_wakeup` (at least every
        second). A request waiting for a
        hot slot takes a cold one once it has waited about as long as the load would take
        (`Scheduler.poll`), and is answered in the same turn."""
        self._grant(self.scheduler.poll())

    def resync(self, agent_ids: list[str]) -> None:
        """Sharing changed for these agents: route by their new groups from the next request on."""
        for agent_id in agent_ids:
            session = self.sessions.get(agent_id)
            if session is not None:
                self._sync(session)

    def set_admin_drain(self, agent_id: str, drained: bool) -> None:
        if drained:
            self.admin_drained.add(agent_id)
        else:
            self.admin_drained.discard(agent_id)
        session = self.sessions.get(agent_id)
        if session is not None:
            self._sync(session)

    def _sync(self, session: AgentSession) -> None:
        """Tell the scheduler what the agent serves now; queued work it can take starts at once.

        An agent is routed to only if neither it nor an admin asked to drain it.
        """
        draining = (
            self.closing or self._agent_draining.get(session.agent_id, False) or session.agent_id in self.admin_drained
        )
        if session.state is not SessionState.CLOSED:
            session.transition(SessionState.DRAINING if draining else SessionState.ACTIVE)
        grants = self.scheduler.upsert_agent(
            session.agent_id,
            _model_ids(session),
            session.max_concurrency,
            draining=draining,
            hot={m.id for m in session.models if m.hot},
            sizes={m.id: m.size_bytes for m in session.models if m.size_bytes},
            groups=None if self.access is None else self.access.groups_of_agent(session.agent_id),
            owner_rules=None if self.access is None else self._owner_rules(session.agent_id),
        )
        self._grant(grants)

    def on_models(self, session: AgentSession, message: ModelsMessage) -> None:
        session.models = message.models
        session.backends = message.backends
        if self.sessions.get(session.agent_id) is session:
            self._sync(session)
            if self.observer is not None:
                self.observer.changed(session)

    def on_state(self, session: AgentSession, message: StateMessage) -> None:
        session.agent_in_flight = message.in_flight
        session.max_concurrency = max(1, message.max_concurrency)
        if session.state is SessionState.CLOSED or self.sessions.get(session.agent_id) is not session:
            return
        self._agent_draining[session.agent_id] = message.draining
        self._sync(session)
        if self.observer is not None:
            self.observer.changed(session)

    def on_load(self, session: AgentSession, message: LoadMessage) -> None:
        """Latest load figures: kept for the admin API, and GPU memory and utilization for the scorer."""
        session.agent_in_flight = message.in_flight
        session.host = message.host
        session.backends = message.backends
        gpus = message.host.gpus if message.host is not None else []
        if self.sessions.get(session.agent_id) is session and gpus:
            free = sum(max(0, g.memory_total_bytes - g.memory_used_bytes) for g in gpus)
            util = max(g.utilization_pct for g in gpus) / 100
            self.scheduler.set_hardware(session.agent_id, free_vram=free, gpu_util=util)

    def drain_all(self, deadline_s: float) -> None:
        """The hub is going away: no new work to anyone, and agents are told to finish up."""
        self.closing = True
        frame = encode_frame(DrainMessage(deadline_s))
        for session in self.sessions.values():
            self._sync(session)
            session.channel.send(frame)
        # Queued requests would only wait out their timeout: answer them now.
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(ShuttingDownError("The hub is shutting down; retry shortly"))

    def heartbeat(self) -> None:
        """Ping every agent and drop those silent for longer than the heartbeat timeout."""
        now = self._clock.now()
        frame = encode_frame(PingMessage(now))
        for session in list(self.sessions.values()):
            if now - session.last_rx > self.heartbeat_timeout:
                log.warning("agent %s silent for %.1f s; dropping it", session.agent_id, now - session.last_rx)
                self.detach(session)
                session.channel.close()
            else:
                session.channel.send(frame)

    # -- slots ----------------------------------------------------------------------------------

    async def acquire(self, want: Want, *, queue: str | None = None) -> Slot:
        """A session with a slot reserved for one of ``want.models``, waiting in the queue if every capable
        agent is busy.

        Only agents the request's groups reach count; a model served only elsewhere is "not found",
        exactly like one served nowhere. ``queue`` names the wait queue (the name the client asked
        for, alias or model). The caller must `release` the slot.
        """
        slot = self.try_acquire(want, queue=queue)
        return slot if slot is not None else await self.wait(want, queue=queue)

    def try_acquire(self, want: Want, *, queue: str | None = None) -> Slot | None:
        """`acquire` without the wait: a slot now, or None when the request must wait for one (`wait`).

        Raises what `acquire` raises before it would wait."""
        scheduler = self.scheduler
        if not scheduler.serves(want.models, want.groups, want.requester):
            raise ModelNotFoundError(queue or want.models[0])
        placement = scheduler.place(want)
        if placement is not None:
            return Slot(self.sessions[placement.agent_id], placement)
        if not scheduler.routable(want.models, want.exclude, want.groups, want.requester, want.pinned):
            # Draining, unavailable or ejected agents take no new work: waiting would only burn the queue timeout.
            raise OverloadedError(
                "Every agent serving this model is draining, paused, outside its hours or failing; retry later",
                retry_after=_retry_after(5),
            )
        return None

    async def wait(self, want: Want, *, queue: str | None = None) -> Slot:
        """Wait in the queue for a slot (after `try_acquire` found none). The caller must `release` it."""
        return await self.granted(self.join(want, queue=queue), want, queue=queue)

    def join(self, want: Want, *, queue: str | None = None) -> Queued:
        """Join the wait queue now, in this turn (`granted` waits for the slot, `withdraw` leaves the queue)."""
        ticket = self._enqueue(want, queue)
        position, _wait = self.scheduler.position(ticket)
        self._waiters[ticket.id] = asyncio.get_running_loop().create_future()
        return Queued(ticket, position)

    async def granted(self, queued: Queued, want: Want, *, queue: str | None = None) -> Slot:
        """The slot granted to a request that `join`ed the queue, once one frees; raises OverloadedError when
        the queue timeout comes first. Cancelled, it leaves the queue (a slot granted in the same turn goes back)."""
        ticket = queued.ticket
        future = self._waiters.get(ticket.id)
        if future is None:
            raise asyncio.CancelledError  # withdrawn before this wait began
        taken = False
        try:
            try:
                async with asyncio.timeout(max(0.0, ticket.deadline - self._clock.now())):
                    slot = await future
            except TimeoutError:
                if not future.done() or future.cancelled():
                    place, wait = self.scheduler.position(ticket)
                    raise OverloadedError(
                        f"No agent became free within {self.scheduler.queue_timeout:g} s; retry later",
                        retry_after=_retry_after(max(wait, 1.0)),
                        headers=_queue_headers(place, wait),
                    ) from None
                slot = future.result()  # granted in the very turn the wait ran out: take it
            taken = True
        finally:
            self._leave(ticket, taken=taken)
        if self.sessions.get(slot.session.agent_id) is not slot.session:
            # Granted on a connection that has since been replaced or closed: its slots went with it.
            return await self.acquire(want, queue=queue)
        return Slot(slot.session, slot.placement, self._clock.now() - ticket.enqueued_at, queued.position)

    def withdraw(self, queued: Queued) -> None:
        """The request stops waiting (its client left): out of the queue, and a slot already granted goes back."""
        self._leave(queued.ticket, taken=False)

    def _leave(self, ticket: Ticket, *, taken: bool) -> None:
        future = self._waiters.pop(ticket.id, None)
        self.scheduler.cancel(ticket)
        if taken or future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return
        self.release(future.result().session)  # granted, and never taken

    def _enqueue(self, want: Want, queue: str | None) -> Ticket:
        scheduler = self.scheduler
        try:
            return scheduler.enqueue(want, queue=queue)
        except QueueShareError:
            raise RateLimitError(
                "You already have your share of this hub's wait queue; retry when some of your requests finish",
                retry_after=_retry_after(scheduler.expected_wait()),
                headers={"x-potluck-queue-depth": str(scheduler.queue_depth)},
            ) from None
        except QueueFullError:
            raise OverloadedError(
                "All agents serving this model are busy and the queue is full; retry later",
                retry_after=_retry_after(scheduler.expected_wait()),
                headers={"x-potluck-queue-depth": str(scheduler.queue_depth)},
            ) from None

    def explain(self, want: Want) -> Explanation:
        return self.scheduler.explain(want)

    def release(self, session: AgentSession) -> None:
        """A request on this session finished. A slot of a replaced connection is not the new one's."""
        if self.sessions.get(session.agent_id) is session:
            self._grant(self.scheduler.release(session.agent_id))

    def _grant(self, grants: list[Grant]) -> None:
        for grant in grants:
            future = self._waiters.get(grant.ticket.id)
            if future is None or future.done():
                self._grant(self.scheduler.release(grant.agent_id))
            else:
                future.set_result(Slot(self.sessions[grant.agent_id], grant.placement))


def _model_ids(session: AgentSession) -> list[str]:
    return [m.id for m in session.models]


def _queue_headers(place: int, wait: float) -> dict[str, str]:
    return {"x-potluck-queue-position": str(place), "x-potluck-expected-wait-s": f"{wait:.1f}"}


def _retry_after(seconds: float) -> int:
    return max(1, min(60, round(seconds)))
