"""The scheduler core: pure (no I/O, no asyncio), driven by the hub and by simulators alike.

Layer 1 keeps agents that serve the model, are not draining, and have a free slot. Layer 2 picks the
least loaded (in-flight / capacity), round-robin among ties. With no free slot anywhere, requests
wait in one FIFO queue bounded in length and in time; a slot that frees up (or an agent that
connects) is handed to the oldest waiting request it can serve, synchronously, so there is no
polling delay. The full scorer (hot models, latency, reliability) and fair queueing replace
`_choose` and the FIFO in the scheduler issue; the interface stays.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from potluck._shared.clock import Clock


class QueueFullError(Exception):
    """The wait queue is at its bound."""


@dataclass(slots=True)
class AgentSlots:
    agent_id: str
    models: frozenset[str]
    max_concurrency: int
    in_flight: int = 0
    draining: bool = False
    order: int = 0
    hot: frozenset[str] = frozenset()
    """Models loaded in VRAM on this agent now: no cold-load delay."""
    groups: frozenset[str] | None = None
    """Groups whose keys may reach this agent; None: no restriction (single-tenant tests, simulators)."""
    available: bool = True
    """The owner has not paused it and it is inside its availability windows."""
    owner: str | None = None
    own_only: bool = False
    """Serves only its owner's requests."""
    own_first: bool = False
    """Prefers its owner's requests."""

    def has_capacity(self) -> bool:
        return self.available and not self.draining and self.in_flight < self.max_concurrency

    def reachable(self, groups: frozenset[str] | None, requester: str | None = None) -> bool:
        """Isolation: a request reaches an agent only through a group both share (and the owner's rules)."""
        if self.own_only and requester != self.owner:
            return False
        return groups is None or self.groups is None or not self.groups.isdisjoint(groups)


@dataclass(slots=True, eq=False)
class Ticket:
    """A request waiting for a slot. ``agent_id`` is set when a slot is granted."""

    id: int
    model: str
    enqueued_at: float
    deadline: float
    exclude: frozenset[str] = frozenset()
    groups: frozenset[str] | None = None
    requester: str | None = None
    agent_id: str | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class Grant:
    ticket: Ticket
    agent_id: str


@dataclass(slots=True)
class _ModelIndex:
    agents: list[AgentSlots] = field(default_factory=list)
    rr: int = 0


class Scheduler:
    def __init__(self, clock: Clock, *, max_queue: int = 256, queue_timeout: float = 30.0) -> None:
        self._clock = clock
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self._agents: dict[str, AgentSlots] = {}
        self._by_model: dict[str, _ModelIndex] = {}
        self._queue: list[Ticket] = []
        self._ids = itertools.count(1)
        self._order = itertools.count()

    # -- fleet --------------------------------------------------------------------------------

    def upsert_agent(
        self,
        agent_id: str,
        models: Iterable[str],
        max_concurrency: int,
        *,
        draining: bool | None = None,
        hot: Iterable[str] | None = None,
        groups: frozenset[str] | None = None,
        owner_rules: tuple[bool, str | None, bool, bool] | None = None,
    ) -> list[Grant]:
        """``owner_rules``: (available, owner, own requests only, own requests first)."""
        """Add an agent or change what it serves; returns queued requests it can take now."""
        models = frozenset(models)
        agent = self._agents.get(agent_id)
        if agent is None:
            agent = AgentSlots(agent_id, models, max(1, max_concurrency), order=next(self._order))
            self._agents[agent_id] = agent
            for model in models:
                self._by_model.setdefault(model, _ModelIndex()).agents.append(agent)
        else:
            for model in agent.models - models:
                self._unindex(model, agent)
            for model in models - agent.models:
                self._by_model.setdefault(model, _ModelIndex()).agents.append(agent)
            agent.models = models
            agent.max_concurrency = max(1, max_concurrency)
        if draining is not None:
            agent.draining = draining
        if hot is not None:
            agent.hot = frozenset(hot)
        if groups is not None:
            agent.groups = groups
        if owner_rules is not None:
            agent.available, agent.owner, agent.own_only, agent.own_first = owner_rules
        return self._fill(agent)

    def remove_agent(self, agent_id: str) -> None:
        agent = self._agents.pop(agent_id, None)
        if agent is None:
            return
        for model in agent.models:
            self._unindex(model, agent)

    def set_draining(self, agent_id: str, draining: bool) -> list[Grant]:
        agent = self._agents.get(agent_id)
        if agent is None:
            return []
        agent.draining = draining
        return [] if draining else self._fill(agent)

    def _unindex(self, model: str, agent: AgentSlots) -> None:
        index = self._by_model.get(model)
        if index is None:
            return
        index.agents = [a for a in index.agents if a is not agent]
        if not index.agents:
            del self._by_model[model]

    # -- queries ------------------------------------------------------------------------------

    def serves(self, model: str, groups: frozenset[str] | None = None, requester: str | None = None) -> bool:
        """Some connected agent these groups reach lists this model (draining or busy ones included)."""
        index = self._by_model.get(model)
        return index is not None and (groups is None or any(a.reachable(groups, requester) for a in index.agents))

    def routable(
        self,
        model: str,
        exclude: frozenset[str] = frozenset(),
        groups: frozenset[str] | None = None,
        requester: str | None = None,
    ) -> bool:
        """Some agent listing this model, other than ``exclude``, takes new work (is not draining), busy or not."""
        index = self._by_model.get(model)
        return index is not None and any(
            a.available and not a.draining and a.agent_id not in exclude and a.reachable(groups, requester)
            for a in index.agents
        )

    def models(self) -> dict[str, int]:
        """Model -> number of agents listing it."""
        return {model: len(index.agents) for model, index in self._by_model.items()}

    def agent(self, agent_id: str) -> AgentSlots | None:
        return self._agents.get(agent_id)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- acquiring and releasing slots --------------------------------------------------------

    def acquire(
        self,
        model: str,
        exclude: frozenset[str] = frozenset(),
        groups: frozenset[str] | None = None,
        requester: str | None = None,
    ) -> str | None:
        """Reserve a slot on the best agent for ``model`` now, or None when every capable one is full."""
        index = self._by_model.get(model)
        if index is None:
            return None
        agent = self._choose(index, model, exclude, groups, requester)
        if agent is None:
            return None
        agent.in_flight += 1
        return agent.agent_id

    def _choose(
        self,
        index: _ModelIndex,
        model: str,
        exclude: frozenset[str],
        groups: frozenset[str] | None,
        requester: str | None,
    ) -> AgentSlots | None:
        best: list[AgentSlots] = []
        best_load = 5.0
        for agent in index.agents:
            if not agent.has_capacity() or agent.agent_id in exclude or not agent.reachable(groups, requester):
                continue
            # A cold model costs a load (seconds to a minute): any hot agent beats every cold one.
            load = agent.in_flight / agent.max_concurrency + (0.0 if model in agent.hot else 2.0)
            if agent.own_first and requester is not None and requester == agent.owner:
                load -= 1.0  # the owner's own GPU first, before load (but after hot/cold)
            if load < best_load:
                best_load = load
                best = [agent]
            elif load == best_load:
                best.append(agent)
        if not best:
            return None
        choice = best[index.rr % len(best)]
        index.rr += 1
        return choice

    def enqueue(
        self,
        model: str,
        exclude: frozenset[str] = frozenset(),
        groups: frozenset[str] | None = None,
        requester: str | None = None,
    ) -> Ticket:
        """Wait for a slot. Raises QueueFullError at the bound."""
        if len(self._queue) >= self.max_queue:
            raise QueueFullError
        now = self._clock.now()
        ticket = Ticket(next(self._ids), model, now, now + self.queue_timeout, exclude, groups, requester)
        self._queue.append(ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Withdraw a waiting ticket (client gone, or timed out). A granted ticket's slot must be released."""
        if not ticket.done:
            ticket.done = True
            with contextlib.suppress(ValueError):
                self._queue.remove(ticket)

    def release(self, agent_id: str) -> list[Grant]:
        """A request on this agent finished; hand the slot to a waiting request if one fits."""
        agent = self._agents.get(agent_id)
        if agent is None:
            return []
        if agent.in_flight > 0:
            agent.in_flight -= 1
        return self._fill(agent)

    def expire(self) -> list[Ticket]:
        """Remove and return the tickets whose wait has run out."""
        now = self._clock.now()
        expired = [t for t in self._queue if t.deadline <= now]
        for ticket in expired:
            ticket.done = True
            self._queue.remove(ticket)
        return expired

    def _fill(self, agent: AgentSlots) -> list[Grant]:
        if not self._queue:
            return []
        grants: list[Grant] = []
        now = self._clock.now()
        kept: list[Ticket] = []
        for ticket in self._queue:
            if (
                agent.has_capacity()
                and ticket.deadline > now
                and ticket.model in agent.models
                and agent.agent_id not in ticket.exclude
                and agent.reachable(ticket.groups, ticket.requester)
            ):
                agent.in_flight += 1
                ticket.agent_id = agent.agent_id
                ticket.done = True
                grants.append(Grant(ticket, agent.agent_id))
            else:
                kept.append(ticket)
        if grants:
            self._queue = kept
        return grants

    def expected_wait(self) -> float:
        """A rough bound for Retry-After: the queue timeout scaled by how full the queue is."""
        return max(1.0, self.queue_timeout * len(self._queue) / max(1, self.max_queue))
