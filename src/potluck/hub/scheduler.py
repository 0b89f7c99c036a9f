"""The scheduler core: pure (no I/O, no asyncio, an injected clock), driven by the hub and by bench/fleet.py alike.

**Layer 1** (`potluck.hub.roster`) keeps the agents that may take a request: they list one of the wanted
models (an alias resolves to several, in order of preference), a group of the request reaches them,
their owner's rules allow it, the group's claims allow it (approved for the name where the group requires
it, not flagged by spot checks nor parked below a throughput floor: `potluck.hub.claims`), they are not
draining, not ejected for that model, and have a free slot.

**Layer 2** (`potluck.hub.scoring`, where the terms and their default weights are listed) scores each
candidate; the highest score wins, round robin among ties. The ``least_loaded`` and ``round_robin``
policies exist for comparison (bench/fleet.py): same filters, then load alone or nothing, and they
never hold a request back for a hot slot.

**Hot slots before cold loads** (potluck policy). A cold load takes a slot for 10-60 s and may evict
models others use, so a request whose best free candidate would have to load the model waits in the
queue instead when every agent with the model hot is busy and a hot slot is expected in less than
`patience.HOT_WAIT_SHARE` of the cold start: expected wait = (requests queued for the model + 1) / the rate at
which its hot slots free up (each hot agent's slots / its learnt request duration). A slot that frees
goes first to a queued request whose model is hot (or loading) on that agent, users taking turns; a
request that would load cold there gets it only once it may take a cold slot (`Ticket.cold_after`: it
has waited as long as its shortest expected cold start, at the latest `patience.LAST_CHANCE_S` before its wait
times out, or no agent has its model hot or loading any more) and only if the scores pick that agent
for it. `poll`, which the hub calls every second, hands such requests the best free slot anywhere.

**Loads in progress.** A cold placement records a `Load` on the agent: until the agent reports the
model hot (which teaches its weight-loading speed) or the load goes stale, requests for that model
count it half hot there and join it rather than start another load elsewhere; its expected time is
the remaining wait, and other loads on the same agent queue behind it (one disk).

**Queueing.** Each requested model name has its own queue, served by deficit round robin over users:
each user's quantum is its key's priority, so one user flooding the queue waits behind everyone
else's next request instead of in front of it. A user may hold at most ``user_share`` of the queue.
A slot that frees (or an agent that connects) is offered to the queue synchronously, so queued work
starts in the same loop turn. Outlier ejection is in `potluck.hub.learning`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields

from potluck._shared.clock import Clock
from potluck.hub.fairqueue import FairQueue, Grant, QueueFullError, QueueShareError, Ticket
from potluck.hub.learning import Learning
from potluck.hub.patience import Patience
from potluck.hub.roster import ClaimCheck, Roster
from potluck.hub.scoring import (
    AgentSlots,
    Candidate,
    EjectionSettings,
    Explanation,
    Load,
    ModelStats,
    Placement,
    Policy,
    ScoreWeights,
    Want,
    cold_wait_s,
    score_terms,
)

INTERN_LIMIT = 4096
"""Distinct model and group sets kept for sharing before the table starts over."""

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
        claims: ClaimCheck | None = None,
    ) -> None:
        """``claims``: who may serve which name in which group (`potluck.hub.claims.ClaimView`); None: anyone."""
        self._clock = clock
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.policy = Policy(policy)
        self.weights = weights or ScoreWeights()
        self.ejection = ejection or EjectionSettings()
        self.user_share = user_share
        self._learning = Learning(self.ejection)
        self._roster = Roster(self._learning.ejected_now, claims)
        self._interned: dict[frozenset[str], frozenset[str]] = {}
        self._queue = FairQueue(max_queue, user_share)
        self._patience = Patience(self._roster, self._queue, self._learning)
        self._ids = itertools.count(1)

    @property
    def _waits_for_hot(self) -> bool:
        """Only the potluck policy holds requests back for a hot slot; the others are baselines."""
        return self.policy is Policy.POTLUCK

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

        ``hot``: the models loaded in VRAM; a new agent that does not say has them all hot (as a backend
        that cannot tell reports). ``owner_rules``: (available, owner, own requests only, own requests
        first). A model whose load the scheduler started and that ``hot`` now lists is loaded: its load
        time teaches the agent's weight-loading speed.
        """
        agent = self._roster.upsert(agent_id, self._intern(models), max_concurrency)
        if draining is not None:
            agent.draining = draining
        if sizes is not None:
            agent.sizes = sizes
        if hot is not None:
            agent.hot = self._intern(hot)
        if groups is not None:
            agent.groups = self._intern(groups)
        if owner_rules is not None:
            agent.available, agent.owner, agent.own_only, agent.own_first = owner_rules
        self._settle(agent, self._clock.now())
        return self._fill(agent)

    def _settle(self, agent: AgentSlots, now: float) -> None:
        """Forget loads that finished (learning from them), lost their model, or went stale."""
        for model, load in list(agent.loading.items()):
            if model in agent.hot:
                self._learning.loaded(agent, model, load, now)
                del agent.loading[model]
            elif model not in agent.models or load.stale(now):
                del agent.loading[model]

    def _intern(self, names: Iterable[str]) -> frozenset[str]:
        """One shared frozenset per distinct set: a fleet of 10,000 agents serving the same models (and
        sharing the same groups) holds a few sets, not 30,000 (about 650 bytes an agent)."""
        key = frozenset(names)
        if len(self._interned) > INTERN_LIMIT:
            self._interned.clear()  # sets already handed out stay valid; only sharing restarts
        return self._interned.setdefault(key, key)

    def set_hardware(self, agent_id: str, *, free_vram: int | None, gpu_util: float) -> None:
        """Latest GPU figures from the agent's LOAD frame."""
        agent = self._roster.agents.get(agent_id)
        if agent is not None:
            agent.free_vram = free_vram
            agent.gpu_util = min(1.0, max(0.0, gpu_util))

    def remove_agent(self, agent_id: str) -> None:
        self._roster.remove(agent_id)

    def set_draining(self, agent_id: str, draining: bool) -> list[Grant]:
        agent = self._roster.agents.get(agent_id)
        if agent is None:
            return []
        agent.draining = draining
        return [] if draining else self._fill(agent)

    # -- queries ------------------------------------------------------------------------------

    def serves(
        self, model: str | tuple[str, ...], groups: frozenset[str] | None = None, requester: str | None = None
    ) -> bool:
        """Some connected agent these groups reach lists this model (draining, busy or ejected ones included)."""
        return self._roster.serves((model,) if isinstance(model, str) else model, groups, requester)

    def routable(
        self,
        model: str | tuple[str, ...],
        exclude: frozenset[str] = frozenset(),
        groups: frozenset[str] | None = None,
        requester: str | None = None,
        pinned: str | None = None,
    ) -> bool:
        """Some agent listing this model, other than ``exclude`` (only ``pinned``, when given), takes new work
        (busy or not)."""
        models = (model,) if isinstance(model, str) else model
        return self._roster.routable(models, exclude, groups, requester, self._clock.now(), pinned)

    def models(self) -> dict[str, int]:
        """Model -> number of agents listing it."""
        return self._roster.models()

    def agent(self, agent_id: str) -> AgentSlots | None:
        return self._roster.agents.get(agent_id)

    def stats(self, agent_id: str, model: str) -> ModelStats | None:
        return self._learning.stats.get((agent_id, model))

    def ejected(self) -> list[tuple[str, str, float]]:
        """(agent, model, ejected until) for every pair out of rotation now."""
        return self._learning.ejected(self._clock.now())

    @property
    def queue_depth(self) -> int:
        return self._queue.depth

    def capacity(self, model: str) -> tuple[int, int]:
        """(slots in use, slots in total) over the agents taking new work for ``model``."""
        return self._roster.capacity(model)

    def queued(self, model: str) -> int:
        """Requests waiting that ``model`` could serve."""
        return self._queue.queued(model)

    def queued_by_model(self) -> dict[str, int]:
        """`queued` of every model with requests waiting for it."""
        return self._queue.queued_by_model()

    def waiting(self) -> Iterator[Ticket]:
        """Every request in the wait queue (the dashboard counts those a viewer may see)."""
        return self._queue.tickets()

    # -- layer 2 ------------------------------------------------------------------------------

    def _terms(self, cands: list[tuple[AgentSlots, str, int]], want: Want, now: float) -> list[dict[str, float]]:
        return score_terms(cands, want, policy=self.policy, weights=self.weights, stats=self._learning.stats, now=now)

    def _best(self, want: Want, now: float) -> tuple[list[tuple[AgentSlots, str]], bool]:
        """The candidates with the top score (ties), and whether there was more than one candidate."""
        cands = self._roster.candidates(want, now)
        if len(cands) <= 1:
            return [(a, m) for a, m, _ in cands], False
        scores = [sum(t.values()) for t in self._terms(cands, want, now)]
        top = max(scores)
        return [(a, m) for (a, m, _), s in zip(cands, scores, strict=True) if s >= top - 1e-9], True

    def _choose(self, want: Want, now: float) -> tuple[AgentSlots, str] | None:
        best, several = self._best(want, now)
        if not several:
            return best[0] if best else None
        return self._roster.rotate(want, best)

    def explain(self, want: Want) -> Explanation:
        """Every agent listing a wanted model: why it was filtered, or its score terms; and the choice now
        (none when the request would rather wait for a hot slot than start the model cold)."""
        now = self._clock.now()
        cands = self._roster.candidates(want, now)
        scored = {
            (a.agent_id, m): (terms, sum(terms.values()))
            for (a, m, _), terms in zip(cands, self._terms(cands, want, now), strict=True)
        }
        out: list[Candidate] = []
        for model in want.models:
            for agent in self._roster.listing(model):
                hit = scored.get((agent.agent_id, model))
                if hit is None:
                    out.append(Candidate(agent.agent_id, model, False, self._roster.filter(agent, model, want, now)))
                else:
                    terms = {k: round(v, 4) for k, v in hit[0].items()}
                    out.append(Candidate(agent.agent_id, model, True, terms=terms, score=hit[1]))
        out.sort(key=lambda c: (not c.eligible, -c.score))
        choice = None
        wait = ""
        if cands:
            top = max(s for _, s in scored.values())
            best = next(c for c in out if c.eligible and c.score >= top - 1e-9)
            agent = self._roster.agents[best.agent_id]
            hot_s = self._worth_waiting(want, agent, best.model, now)
            if hot_s is None:
                choice = Placement(best.agent_id, best.model, best.model in agent.hot)
            else:
                cold_s = cold_wait_s(agent, best.model, now)
                wait = f"waits for a hot slot (expected in {hot_s:.1f} s) rather than a cold start ({cold_s:.1f} s)"
        weights = {f.name: getattr(self.weights, f.name) for f in fields(self.weights)}
        return Explanation(str(self.policy), want.models, weights, tuple(out), choice, self._queue.depth, wait)

    def _worth_waiting(self, want: Want, agent: AgentSlots, model: str, now: float) -> float | None:
        """The expected wait for a hot slot, when the request should rather wait for it (potluck policy)."""
        return self._patience.worth_waiting(want, agent, model, now) if self._waits_for_hot else None

    # -- acquiring and releasing slots --------------------------------------------------------

    def place(self, want: Want) -> Placement | None:
        """Reserve a slot on the best agent now, or None when no candidate has a free slot, or when (potluck
        policy) the best one must load the model and a hot slot is expected to free up well before that."""
        now = self._clock.now()
        chosen = self._choose(want, now)
        if chosen is None:
            return None
        agent, model = chosen
        if self._worth_waiting(want, agent, model, now) is not None:
            return None
        return self._take(agent, model, now)

    def _take(self, agent: AgentSlots, model: str, now: float) -> Placement:
        """Reserve the slot; a cold placement that joins no load under way there starts one."""
        hot = model in agent.hot
        if not hot and model not in agent.loading:
            agent.loading[model] = Load(now, cold_wait_s(agent, model, now))
        agent.in_flight += 1
        return Placement(agent.agent_id, model, hot)

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
        ticket.cold_after = self._patience.cold_after(want, now, ticket.deadline) if self._waits_for_hot else now
        self._queue.push(ticket)
        return ticket

    def position(self, ticket: Ticket) -> tuple[int, float]:
        """(place in line, 1 = next; expected wait in seconds from the models' service times and slots)."""
        if ticket.done:
            return 0, 0.0
        place, models = self._queue.ahead(ticket)
        if not place:
            return 0, 0.0
        service = min(self._learning.service_s(m) for m in models)
        slots = sum(self.capacity(m)[1] for m in models)
        return place, place * service / max(1, slots)

    def cancel(self, ticket: Ticket) -> None:
        """Withdraw a waiting ticket (client gone, or timed out). A granted ticket's slot must be released."""
        if not ticket.done:
            ticket.done = True
            self._queue.remove(ticket)

    def release(self, agent_id: str) -> list[Grant]:
        """A request on this agent finished; hand the slot to a waiting request if one fits."""
        agent = self._roster.agents.get(agent_id)
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

    def _grant(self, ticket: Ticket, agent: AgentSlots, model: str, now: float) -> Grant:
        placement = self._take(agent, model, now)
        ticket.placement = placement
        ticket.done = True
        return Grant(ticket, placement)

    def _fill(self, agent: AgentSlots) -> list[Grant]:
        """Offer the agent's free slots to the queue. Potluck policy: requests with a wanted model hot (or
        loading) on it first; then requests that may take a cold slot, if the scores would pick this agent
        for them (not just whichever agent freed a slot first)."""
        if not self._queue.depth:
            return []
        grants: list[Grant] = []
        now = self._clock.now()
        warm_homes: dict[Want, bool] = {}
        best_here: dict[Want, bool] = {}

        def servable(ticket: Ticket) -> list[str]:
            if ticket.deadline <= now:
                return []
            return [m for m in ticket.want.models if self._roster.servable(agent, m, ticket.want, now)]

        def warm(ticket: Ticket) -> bool:
            return any(m in agent.hot or m in agent.loading for m in servable(ticket))

        def cold(ticket: Ticket) -> bool:
            if not servable(ticket) or not self._patience.cold_eligible(ticket, now, warm_homes):
                return False
            here = best_here.get(ticket.want)
            if here is None:
                here = best_here[ticket.want] = any(a is agent for a, _ in self._best(ticket.want, now)[0])
            return here

        passes: tuple[Callable[[Ticket], bool], ...] = (
            (warm, cold) if self._waits_for_hot else (lambda t: bool(servable(t)),)
        )
        while agent.has_capacity():
            ticket = next((t for p in passes if (t := self._queue.next_for(agent.models, p)) is not None), None)
            if ticket is None:
                break
            models = servable(ticket)
            model = next((m for m in models if m in agent.hot), None) or next(
                (m for m in models if m in agent.loading), models[0]
            )
            grants.append(self._grant(ticket, agent, model, now))
            best_here.clear()  # this agent is busier now
        return grants

    def poll(self) -> list[Grant]:
        """Re-offer the queue to agents with free slots; the hub calls it every second.

        Potluck policy: a queued request declines a free cold slot while a hot one is expected sooner;
        once it has waited as long as a cold start would take (`Ticket.cold_after`), or no agent has its
        model hot or loading any more, it takes the best free slot anywhere. A request whose best free
        slot has its model hot or loading takes it at once. Users take turns, oldest request first.
        Loads never reported hot are forgotten here once stale.
        """
        now = self._clock.now()
        for agent in self._roster.agents.values():
            if agent.loading:
                self._settle(agent, now)
        if not self._queue.depth or not self._waits_for_hot:
            return []
        free = {m for a in self._roster.agents.values() if a.has_capacity() for m in a.models}
        if not free:
            return []
        warm_homes: dict[Want, bool] = {}
        grants: list[Grant] = []
        for ticket in self._queue.in_turns():
            if ticket.deadline <= now or free.isdisjoint(ticket.want.models):
                continue
            chosen = self._choose(ticket.want, now)
            if chosen is None:
                continue
            agent, model = chosen
            if model in agent.hot or model in agent.loading or self._patience.cold_eligible(ticket, now, warm_homes):
                self._queue.remove(ticket)
                grants.append(self._grant(ticket, agent, model, now))
        return grants

    def next_wakeup(self) -> float | None:
        """When `poll` may next have something new to do: the earliest time a waiting request may take a
        cold slot (None: none ahead). A timer that calls `poll` every second needs none of this."""
        if not self._waits_for_hot:
            return None
        now = self._clock.now()
        return min((t.cold_after for t in self._queue.tickets() if t.cold_after > now), default=None)

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
        prompt_tokens: int | None = None,
    ) -> None:
        """How a request on this agent went: a success (True), a local-origin failure (False), or
        neither (None: a client error or a cancelled request, which say nothing about the agent).

        ``hot``: the request found the model hot (`Placement.hot`); only such requests teach TTFT,
        prefill speed and request duration. ``prompt_tokens``: the prompt's size from the usage (None or 0
        when unknown): the agent's prefill speed (seconds per 1,000 prompt tokens) is then compared, not raw TTFT.
        """
        if ok is None:
            return
        self._learning.report(
            agent_id,
            model,
            self._clock.now(),
            ok=ok,
            hot=hot,
            ttft=ttft,
            decode_rate=decode_rate,
            duration=duration,
            prompt_tokens=prompt_tokens,
            listing=[a.agent_id for a in self._roster.listing(model)],
        )

    def expected_wait(self) -> float:
        """A rough bound for Retry-After: the queue timeout scaled by how full the queue is."""
        return max(1.0, self.queue_timeout * self._queue.depth / max(1, self.max_queue))
