"""The scheduler core: pure (no I/O, no asyncio, an injected clock), driven by the hub and by bench/fleet.py alike.

**Layer 1** keeps the agents that may take a request: they list one of the wanted models (an alias
resolves to several, in order of preference), a group of the request reaches them, their owner's
rules allow it (paused, outside its hours, own requests only), they are not draining, not ejected
for that model, and have a free slot.

**Layer 2** scores each candidate; the highest score wins, round-robin among ties. The terms and
their default weights (`ScoreWeights`, configurable with ``--score-weight NAME=VALUE``):

- ``hot`` 100: the model is loaded in VRAM. A cold load costs 10-60 s, so this dominates.
- ``alias`` 40 per step down an alias's preference list: a hot second choice beats a cold first one.
- ``owner`` 20: the requester's own agent, when the agent asks for its owner first or the key does.
- ``cold`` 10 x (expected load time / the slowest cold candidate's), plus half of it again when the
  agent must evict a model to make room: among cold candidates, the one expected to load fastest.
- ``load`` 6 x in-flight / capacity.
- ``latency`` 4 x how much slower than the best candidate the agent's TTFT and decode rate EWMAs are
  (0 for the best, towards 1 for much slower; agents with no samples yet count as best).
- ``reliability`` 4 x (1 - success EWMA).
- ``gpu`` 2 x GPU utilization (the busiest GPU of the agent).

The ``least_loaded`` and ``round_robin`` policies exist for comparison (bench/fleet.py): they use
the same filters and ignore everything but load (or nothing at all).

**Queueing.** With no free slot anywhere, a request waits. Each requested model name has its own
queue, served by deficit round robin over users: each user's quantum is its key's priority, so one
user flooding the queue waits behind everyone else's next request instead of in front of it. A user
may hold at most ``user_share`` of the queue. A slot that frees (or an agent that connects) is
granted synchronously, so queued work starts in the same loop turn.

**Outlier ejection** (as Envoy does it): ``failures`` consecutive local-origin failures (connection
errors, timeouts, 5xx) eject an agent for that model for ``base_s`` x 2^(ejections - 1), capped at
``max_s``; never more than ``max_percent`` of a model's agents at once; client errors never count.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from potluck._shared.clock import Clock
from potluck.hub.fairqueue import FairQueue, Grant, QueueFullError, QueueShareError, Ticket
from potluck.hub.scoring import (
    DEFAULT_SERVICE_S,
    EWMA_ALPHA,
    RELIABILITY_ALPHA,
    AgentSlots,
    Candidate,
    EjectionSettings,
    Explanation,
    ModelStats,
    Placement,
    Policy,
    ScoreWeights,
    Want,
    score_terms,
)

__all__ = [
    "AgentSlots",
    "EjectionSettings",
    "Explanation",
    "Grant",
    "Placement",
    "Policy",
    "QueueFullError",
    "QueueShareError",
    "Scheduler",
    "ScoreWeights",
    "Ticket",
    "Want",
]


@dataclass(slots=True)
class _ModelIndex:
    agents: list[AgentSlots] = field(default_factory=list)
    rr: int = 0


class Scheduler:
    def __init__(
        self,
        clock: Clock,
        *,
        max_queue: int = 256,
        queue_timeout: float = 30.0,
        policy: Policy | str = Policy.POTLUCK,
        weights: ScoreWeights | None = None,
        ejection: EjectionSettings | None = None,
        user_share: float = 0.5,
    ) -> None:
        self._clock = clock
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.policy = Policy(policy)
        self.weights = weights or ScoreWeights()
        self.ejection = ejection or EjectionSettings()
        self.user_share = user_share
        self._agents: dict[str, AgentSlots] = {}
        self._by_model: dict[str, _ModelIndex] = {}
        self._stats: dict[tuple[str, str], ModelStats] = {}
        self._service: dict[str, float] = {}
        """Model -> EWMA of request duration in seconds (for expected waits)."""
        self._queue = FairQueue(max_queue, user_share)
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
        sizes: dict[str, int] | None = None,
    ) -> list[Grant]:
        """Add an agent or change what it serves; returns queued requests it can take now.

        ``owner_rules``: (available, owner, own requests only, own requests first).
        """
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
        if sizes is not None:
            agent.sizes = sizes
        return self._fill(agent)

    def set_hardware(self, agent_id: str, *, free_vram: int | None, gpu_util: float) -> None:
        """Latest GPU figures from the agent's LOAD frame."""
        agent = self._agents.get(agent_id)
        if agent is not None:
            agent.free_vram = free_vram
            agent.gpu_util = min(1.0, max(0.0, gpu_util))

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

    def serves(
        self, model: str | tuple[str, ...], groups: frozenset[str] | None = None, requester: str | None = None
    ) -> bool:
        """Some connected agent these groups reach lists this model (draining, busy or ejected ones included)."""
        for name in (model,) if isinstance(model, str) else model:
            index = self._by_model.get(name)
            if index is not None and (groups is None or any(a.reachable(groups, requester) for a in index.agents)):
                return True
        return False

    def routable(
        self,
        model: str | tuple[str, ...],
        exclude: frozenset[str] = frozenset(),
        groups: frozenset[str] | None = None,
        requester: str | None = None,
    ) -> bool:
        """Some agent listing this model, other than ``exclude``, takes new work (busy or not)."""
        now = self._clock.now()
        for name in (model,) if isinstance(model, str) else model:
            index = self._by_model.get(name)
            if index is not None and any(
                a.available
                and not a.draining
                and a.agent_id not in exclude
                and a.reachable(groups, requester)
                and not self._ejected(a.agent_id, name, now)
                for a in index.agents
            ):
                return True
        return False

    def models(self) -> dict[str, int]:
        """Model -> number of agents listing it."""
        return {model: len(index.agents) for model, index in self._by_model.items()}

    def agent(self, agent_id: str) -> AgentSlots | None:
        return self._agents.get(agent_id)

    def stats(self, agent_id: str, model: str) -> ModelStats | None:
        return self._stats.get((agent_id, model))

    def ejected(self) -> list[tuple[str, str, float]]:
        """(agent, model, ejected until) for every pair out of rotation now."""
        now = self._clock.now()
        return [(a, m, s.ejected_until) for (a, m), s in self._stats.items() if s.ejected_until > now]

    @property
    def queue_depth(self) -> int:
        return self._queue.depth

    def capacity(self, model: str) -> tuple[int, int]:
        """(slots in use, slots in total) over the agents taking new work for ``model``."""
        index = self._by_model.get(model)
        if index is None:
            return 0, 0
        busy = total = 0
        for agent in index.agents:
            if agent.available and not agent.draining:
                busy += agent.in_flight
                total += agent.max_concurrency
        return busy, total

    def queued(self, model: str) -> int:
        """Requests waiting that ``model`` could serve."""
        return self._queue.queued(model)

    # -- layer 1 and 2 ------------------------------------------------------------------------

    def _ejected(self, agent_id: str, model: str, now: float) -> bool:
        stats = self._stats.get((agent_id, model))
        return stats is not None and stats.ejected_until > now

    def _filter(self, agent: AgentSlots, model: str, want: Want, now: float) -> str:
        """Why layer 1 drops this agent for this request ('' when it is a candidate)."""
        if agent.agent_id in want.exclude:
            return "already tried for this request"
        if not agent.reachable(want.groups, want.requester):
            return "not shared with the request's groups" if not agent.own_only else "serves only its owner"
        if not agent.available:
            return "paused or outside its hours"
        if agent.draining:
            return "draining"
        if self._ejected(agent.agent_id, model, now):
            return "ejected after consecutive failures"
        if agent.in_flight >= agent.max_concurrency:
            return "no free slot"
        return ""

    def _candidates(self, want: Want, now: float) -> list[tuple[AgentSlots, str, int]]:
        found: list[tuple[AgentSlots, str, int]] = []
        for rank, model in enumerate(want.models):
            index = self._by_model.get(model)
            if index is None:
                continue
            for agent in index.agents:
                if not self._filter(agent, model, want, now):
                    found.append((agent, model, rank))
        return found

    def _terms(self, cands: list[tuple[AgentSlots, str, int]], want: Want) -> list[dict[str, float]]:
        return score_terms(cands, want, policy=self.policy, weights=self.weights, stats=self._stats)

    def _choose(self, want: Want, now: float) -> Placement | None:
        cands = self._candidates(want, now)
        if not cands:
            return None
        if len(cands) == 1:
            agent, model, _ = cands[0]
            return Placement(agent.agent_id, model, model in agent.hot)
        scores = [sum(t.values()) for t in self._terms(cands, want)]
        top = max(scores)
        best = [c for c, s in zip(cands, scores, strict=True) if s >= top - 1e-9]
        index = self._by_model[want.models[0]] if want.models[0] in self._by_model else self._by_model[best[0][1]]
        agent, model, _ = best[index.rr % len(best)]
        index.rr += 1
        return Placement(agent.agent_id, model, model in agent.hot)

    def explain(self, want: Want) -> Explanation:
        """Every agent listing a wanted model: why it was filtered, or its score terms; and the choice now."""
        now = self._clock.now()
        cands = self._candidates(want, now)
        scored = {
            (a.agent_id, m): (terms, sum(terms.values()))
            for (a, m, _), terms in zip(cands, self._terms(cands, want), strict=True)
        }
        out: list[Candidate] = []
        for model in want.models:
            index = self._by_model.get(model)
            for agent in index.agents if index is not None else ():
                hit = scored.get((agent.agent_id, model))
                if hit is None:
                    out.append(Candidate(agent.agent_id, model, False, self._filter(agent, model, want, now)))
                else:
                    terms = {k: round(v, 4) for k, v in hit[0].items()}
                    out.append(Candidate(agent.agent_id, model, True, terms=terms, score=hit[1]))
        out.sort(key=lambda c: (not c.eligible, -c.score))
        choice = None
        if cands:
            top = max(s for _, s in scored.values())
            best = next(c for c in out if c.eligible and c.score >= top - 1e-9)
            agent = self._agents[best.agent_id]
            choice = Placement(best.agent_id, best.model, best.model in agent.hot)
        weights = {f.name: getattr(self.weights, f.name) for f in fields(self.weights)}
        return Explanation(str(self.policy), want.models, weights, tuple(out), choice, self._queue.depth)

    # -- acquiring and releasing slots --------------------------------------------------------

    def place(self, want: Want) -> Placement | None:
        """Reserve a slot on the best agent now, or None when no candidate has a free slot."""
        placement = self._choose(want, self._clock.now())
        if placement is not None:
            self._agents[placement.agent_id].in_flight += 1
        return placement

    def acquire(
        self,
        model: str,
        exclude: frozenset[str] = frozenset(),
        groups: frozenset[str] | None = None,
        requester: str | None = None,
    ) -> str | None:
        """`place` for one model; the agent id."""
        placement = self.place(Want((model,), exclude, groups, requester))
        return None if placement is None else placement.agent_id

    def enqueue(self, want: Want, *, queue: str | None = None) -> Ticket:
        """Wait for a slot in the queue named ``queue`` (default: the first wanted model).

        Raises QueueFullError at the bound, QueueShareError past the user's share.
        """
        now = self._clock.now()
        ticket = Ticket(next(self._ids), want, queue or want.models[0], now, now + self.queue_timeout)
        self._queue.push(ticket)
        return ticket

    def position(self, ticket: Ticket) -> tuple[int, float]:
        """(place in line, 1 = next; expected wait in seconds from the models' service times and slots)."""
        if ticket.done:
            return 0, 0.0
        place, models = self._queue.ahead(ticket)
        if not place:
            return 0, 0.0
        service = min((self._service.get(m, DEFAULT_SERVICE_S) for m in models), default=DEFAULT_SERVICE_S)
        slots = sum(self.capacity(m)[1] for m in models)
        return place, place * service / max(1, slots)

    def cancel(self, ticket: Ticket) -> None:
        """Withdraw a waiting ticket (client gone, or timed out). A granted ticket's slot must be released."""
        if not ticket.done:
            ticket.done = True
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
        """Remove and return the tickets whose wait has run out (the simulator's queue timeout)."""
        now = self._clock.now()
        expired = [t for t in self._queue.tickets() if t.deadline <= now]
        for ticket in expired:
            self.cancel(ticket)
        return expired

    def _fill(self, agent: AgentSlots) -> list[Grant]:
        if not self._queue.depth:
            return []
        grants: list[Grant] = []
        now = self._clock.now()

        def eligible(ticket: Ticket) -> bool:
            return ticket.deadline > now and any(self._servable(agent, m, ticket.want, now) for m in ticket.want.models)

        while agent.has_capacity():
            ticket = self._queue.next_for(agent.models, eligible)
            if ticket is None:
                break
            model = next(m for m in ticket.want.models if self._servable(agent, m, ticket.want, now))
            placement = Placement(agent.agent_id, model, model in agent.hot)
            agent.in_flight += 1
            ticket.placement = placement
            ticket.done = True
            grants.append(Grant(ticket, placement))
        return grants

    def _servable(self, agent: AgentSlots, model: str, want: Want, now: float) -> bool:
        return model in agent.models and not self._filter(agent, model, want, now)

    # -- learning -----------------------------------------------------------------------------

    def report(
        self,
        agent_id: str,
        model: str,
        *,
        ok: bool | None,
        hot: bool = True,
        ttft: float | None = None,
        decode_rate: float | None = None,
        duration: float | None = None,
    ) -> None:
        """How a request on this agent went: a success (True), a local-origin failure (False), or
        neither (None: a client error or a cancelled request, which say nothing about the agent)."""
        if ok is None:
            return
        stats = self._stats.get((agent_id, model))
        if stats is None:
            stats = self._stats[(agent_id, model)] = ModelStats()
        stats.reliability += RELIABILITY_ALPHA * ((1.0 if ok else 0.0) - stats.reliability)
        if ok:
            self._succeeded(stats, agent_id, model, hot, ttft, decode_rate, duration)
        else:
            self._failed(stats, model)

    def _failed(self, stats: ModelStats, model: str) -> None:
        now = self._clock.now()
        stats.failures += 1
        if stats.failures >= self.ejection.failures and stats.ejected_until <= now and self._may_eject(model, now):
            stats.ejections += 1
            backoff = self.ejection.base_s * 2 ** (stats.ejections - 1)
            stats.ejected_until = now + min(self.ejection.max_s, backoff)
            stats.failures = 0

    def _succeeded(
        self,
        stats: ModelStats,
        agent_id: str,
        model: str,
        hot: bool,
        ttft: float | None,
        decode_rate: float | None,
        duration: float | None,
    ) -> None:
        stats.failures = 0
        if stats.ejections and self._clock.now() > stats.ejected_until + self.ejection.max_s:
            stats.ejections = 0  # healthy for a long while: the next ejection starts short again
        if duration is not None:
            self._service[model] = _ewma(self._service.get(model), duration)
        if decode_rate is not None and decode_rate > 0:
            stats.decode = _ewma(stats.decode, decode_rate)
        if ttft is None:
            return
        if hot:
            stats.ttft = _ewma(stats.ttft, ttft)
            return
        agent = self._agents.get(agent_id)
        size = agent.sizes.get(model) if agent is not None else None
        if agent is not None and size and ttft > 0:
            agent.load_rate = _ewma(agent.load_rate, size / ttft)

    def _may_eject(self, model: str, now: float) -> bool:
        index = self._by_model.get(model)
        if index is None:
            return False
        ejected = sum(1 for a in index.agents if self._ejected(a.agent_id, model, now))
        return ejected + 1 <= math.floor(len(index.agents) * self.ejection.max_percent / 100)

    def expected_wait(self) -> float:
        """A rough bound for Retry-After: the queue timeout scaled by how full the queue is."""
        return max(1.0, self.queue_timeout * self._queue.depth / max(1, self.max_queue))


def _ewma(previous: float | None, sample: float) -> float:
    return sample if previous is None else previous + EWMA_ALPHA * (sample - previous)
