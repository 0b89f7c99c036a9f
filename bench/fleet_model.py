"""The fleet simulator's model: a seeded fleet, an arrival trace, and a discrete-event replay of that
trace through the hub's real `Scheduler` (see bench/fleet.py for the experiments and the report).

Everything random comes from one ``random.Random(seed)``: the same seed gives the same fleet, the same
trace and, because the scheduler is deterministic too, the same numbers. The simulator only plays the
agents and the clients; every routing and queueing decision is the scheduler's.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from potluck._shared.clock import ManualClock
from potluck.hub.scheduler import Grant, Placement, QueueFullError, Scheduler, ScoreWeights, Ticket, Want

GB = 1_000_000_000

CATALOGUE: tuple[tuple[str, float], ...] = (
    ("gemma2-2b", 1.7),
    ("llama3.2-3b", 2.0),
    ("qwen2.5-3b", 2.1),
    ("phi3.5-mini", 2.4),
    ("mistral-7b", 4.4),
    ("qwen2.5-7b", 4.7),
    ("llama3.1-8b", 4.9),
    ("gemma2-9b", 5.4),
    ("mistral-nemo-12b", 7.1),
    ("qwen2.5-coder-14b", 9.0),
    ("phi4-14b", 9.1),
    ("gemma2-27b", 16.0),
    ("qwen2.5-32b", 20.0),
    ("deepseek-r1-32b", 20.0),
    ("llama3.3-70b", 43.0),
    ("qwen2.5-72b", 47.0),
)
"""Models (Q4 GGUF weights, GB) the fleet's owners run."""

GPU_CLASSES: tuple[tuple[float, float, tuple[float, float], tuple[int, int], float], ...] = (
    # VRAM GB, share of agents, memory bandwidth GB/s, slots (min, max), prefill factor
    (8, 0.10, (270, 450), (2, 2), 0.5),
    (12, 0.20, (360, 500), (2, 3), 0.6),
    (16, 0.20, (290, 720), (2, 4), 0.8),
    (24, 0.30, (900, 1000), (3, 6), 1.6),
    (48, 0.10, (770, 960), (4, 8), 1.4),
    (80, 0.10, (2000, 3300), (6, 8), 4.0),
)
"""Consumer and datacentre GPUs: decode is memory-bound (bandwidth / weights), prefill compute-bound."""

DISKS_GBPS = (0.25, 0.5, 1.0, 2.0, 3.5)
"""Where weights load from: network share, HDD-ish, SATA SSD, NVMe."""

COLD_LOAD_S = (10.0, 60.0)
ZIPF_S = 1.1
PROMPT_TOKENS = (600.0, 1.0, 16, 16_000)
"""Lognormal median, sigma, clamp low, clamp high."""
COMPLETION_TOKENS = (200.0, 0.8, 8, 2048)
BATCH_SLOWDOWN = 0.1
"""Each extra stream running on an agent slows every stream's decode by this fraction (batching)."""
VRAM_HEADROOM = 0.9
"""Share of VRAM weights may use; the rest is KV cache and the runtime."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    size_gb: float
    popularity: float


@dataclass(frozen=True, slots=True)
class AgentSpec:
    agent_id: str
    vram_gb: float
    mem_gbps: float
    prefill_factor: float
    load_gbps: float
    slots: int
    models: tuple[str, ...]
    hot: tuple[str, ...]
    """Resident at the start, least recently used first."""

    def decode_tps(self, size_gb: float) -> float:
        return 0.6 * self.mem_gbps / size_gb

    def prefill_tps(self, size_gb: float) -> float:
        return 3000.0 * self.prefill_factor * 5.0 / size_gb

    def load_s(self, size_gb: float) -> float:
        return min(COLD_LOAD_S[1], max(COLD_LOAD_S[0], size_gb / self.load_gbps))


@dataclass(frozen=True, slots=True)
class Fleet:
    agents: tuple[AgentSpec, ...]
    models: tuple[ModelSpec, ...]
    users: tuple[str, ...]
    noisy: str
    """The noisy neighbour (one of ``users``)."""
    noisy_factor: float
    """Its rate when flooding, in multiples of the normal rate."""
    base_rate: float
    """Requests/s of each user at the normal rate."""
    user_seeds: tuple[int, ...]

    @property
    def slots(self) -> int:
        return sum(a.slots for a in self.agents)

    def size(self, model: str) -> float:
        return next(m.size_gb for m in self.models if m.name == model)


@dataclass(frozen=True, slots=True)
class Request:
    at: float
    user: str
    model: str
    prompt: int
    completion: int


def build_fleet(seed: int, n_agents: int, *, users: int = 8, load: float = 0.4, noisy_factor: float = 10.0) -> Fleet:
    """Agents, models and users. ``load`` sets the normal per-user rate: with the neighbour flooding,
    the work offered (at hot-model service times) fills that share of the fleet's slots. Agents take
    few requests at once well, so their GPUs are busy much more of the time than that (the report
    shows both)."""
    rng = random.Random(seed)
    # Smaller models tend to be more popular, but not strictly.
    ranked = sorted(CATALOGUE, key=lambda m: m[1] * rng.lognormvariate(0.0, 0.8))
    weights = [1.0 / (rank + 1) ** ZIPF_S for rank in range(len(ranked))]
    total = sum(weights)
    models = tuple(ModelSpec(name, size, w / total) for (name, size), w in zip(ranked, weights, strict=True))
    agents = []
    for i in range(n_agents):
        vram, _, bw, slots, prefill = rng.choices(GPU_CLASSES, weights=[c[1] for c in GPU_CLASSES])[0]
        fits = [m for m in models if m.size_gb <= vram * VRAM_HEADROOM]
        listed = [m.name for m in fits if rng.random() < 0.7] or [fits[0].name]
        hot = _initial_hot(rng, [m for m in models if m.name in listed], vram * VRAM_HEADROOM)
        agents.append(
            AgentSpec(
                agent_id=f"agent-{i:02d}",
                vram_gb=float(vram),
                mem_gbps=rng.uniform(*bw) * rng.uniform(0.8, 1.2),
                prefill_factor=prefill * rng.uniform(0.8, 1.2),
                load_gbps=rng.choice(DISKS_GBPS),
                slots=rng.randint(*slots),
                models=tuple(listed),
                hot=hot,
            )
        )
    names = ("noisy", *(f"user-{u}" for u in range(1, users)))
    seeds = tuple(rng.getrandbits(64) for _ in names)
    total_rate = load * sum(a.slots for a in agents) / mean_service_s(agents, models)
    base_rate = total_rate / (users - 1 + noisy_factor)
    return Fleet(tuple(agents), models, names, names[0], noisy_factor, base_rate, seeds)


def _initial_hot(rng: random.Random, listed: list[ModelSpec], room: float) -> tuple[str, ...]:
    """What the owner happened to leave loaded: popular models more likely."""
    hot: list[str] = []
    pool = list(listed)
    while pool:
        pick = rng.choices(pool, weights=[m.popularity for m in pool])[0]
        pool.remove(pick)
        if pick.size_gb <= room:
            hot.append(pick.name)
            room -= pick.size_gb
    return tuple(reversed(hot))


def mean_service_s(agents: list[AgentSpec], models: tuple[ModelSpec, ...]) -> float:
    """Expected seconds a request holds a slot with its model hot, averaged over models by popularity."""
    prompt, completion = _lognormal_mean(PROMPT_TOKENS), _lognormal_mean(COMPLETION_TOKENS)
    total = 0.0
    for model in models:
        serving = [a for a in agents if model.name in a.models]
        if not serving:
            continue
        per_agent = [
            prompt / a.prefill_tps(model.size_gb)
            + completion / (a.decode_tps(model.size_gb) / (1 + BATCH_SLOWDOWN * (a.slots - 1) / 2))
            for a in serving
        ]
        total += model.popularity * sum(per_agent) / len(per_agent)
    return total


def _lognormal_mean(spec: tuple[float, float, int, int]) -> float:
    median, sigma, _, high = spec
    return min(float(high), median * math.exp(sigma * sigma / 2))


def _lognormal(rng: random.Random, spec: tuple[float, float, int, int]) -> int:
    median, sigma, low, high = spec
    return max(low, min(high, round(rng.lognormvariate(math.log(median), sigma))))


def build_trace(fleet: Fleet, duration: float, *, flooded: bool, warmup: float = 0.0) -> list[Request]:
    """Poisson arrivals per user over ``warmup + duration`` seconds, models by Zipf popularity.

    During the warm-up every user's rate ramps up linearly from nothing (a day's traffic growing),
    so that agents' hot sets settle to the demand before measuring starts. Each user has its own
    random stream (seeded from the fleet's), and the neighbour's normal-rate trace is a thinning of
    its flooding one: the two traces share every other user's requests exactly.
    """
    names = [m.name for m in fleet.models]
    popularity = [m.popularity for m in fleet.models]
    flood = max(1.0, fleet.noisy_factor)
    noisy_keep = 1.0 if flooded else 1.0 / flood
    end = warmup + duration
    out: list[Request] = []
    for user, seed in zip(fleet.users, fleet.user_seeds, strict=True):
        rng = random.Random(seed)
        keep = random.Random(seed ^ 0x5EED)
        noisy = user == fleet.noisy
        rate = fleet.base_rate * (flood if noisy else 1.0)
        t = rng.expovariate(rate)
        while t < end:
            model = rng.choices(names, weights=popularity)[0]
            req = Request(t, user, model, _lognormal(rng, PROMPT_TOKENS), _lognormal(rng, COMPLETION_TOKENS))
            ramp = t / warmup if t < warmup else 1.0
            if keep.random() < ramp * (noisy_keep if noisy else 1.0):
                out.append(req)
            t += rng.expovariate(rate)
    out.sort(key=lambda r: (r.at, r.user))
    return out


# =============================================================================================
# The replay


@dataclass(slots=True)
class _Agent:
    spec: AgentSpec
    hot: dict[str, None]
    """Resident models, least recently used first."""
    loading: dict[str, float] = field(default_factory=dict)
    """Model -> when its load completes."""
    using: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    busy_since: float = 0.0
    disk_free_at: float = 0.0
    """Loads share the disk: one at a time."""


@dataclass(slots=True)
class RunResult:
    window: tuple[float, float]
    """What is measured: requests arriving in it, and slots busy and requests completing during it."""
    ttft: list[tuple[str, float]] = field(default_factory=list)
    """(user, seconds) of every request that started."""
    completed_in_window: int = 0
    busy_slot_s: float = 0.0
    busy_agent_s: float = 0.0
    """Agent-seconds with at least one request on the agent (its GPU busy, or loading for it)."""
    cold_loads: int = 0
    """Loads started in the window."""
    cold_starts: int = 0
    """Requests that waited for a load (their own or one under way)."""
    timeouts: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)


_LOADED, _FINISH, _EXPIRE, _POLL, _ARRIVE = range(5)
"""Event kinds, in the order events at the same instant are handled: freed capacity first."""
POLL_INTERVAL_S = 1.0
"""The hub's timer calling `Registry.poll` (so `Scheduler.poll`): once a second, while requests wait."""


class Simulation:
    def __init__(
        self,
        fleet: Fleet,
        trace: list[Request],
        window: tuple[float, float],
        policy: str,
        *,
        queue_timeout: float = 120.0,
        max_queue: int = 1024,
        user_share: float = 0.5,
        weights: ScoreWeights | None = None,
    ) -> None:
        self.fleet = fleet
        self.trace = trace
        self.clock = ManualClock(0.0)
        self.scheduler = Scheduler(
            self.clock,
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            policy=policy,
            user_share=user_share,
            weights=weights,
        )
        self.agents = {a.agent_id: _Agent(a, dict.fromkeys(a.hot)) for a in fleet.agents}
        self.sizes = {m.name: m.size_gb for m in fleet.models}
        self.result = RunResult(window)
        self._events: list[tuple[float, int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self._waiting: dict[int, Request] = {}
        self._grants: list[tuple[Request, Placement]] = []
        self._poll_at: float | None = None

    def run(self) -> RunResult:
        for agent in self.agents.values():
            self._sync(agent)
        for req in self.trace:
            self._push(req.at, _ARRIVE, self._arrive, req)
        while self._events:
            at, _, _, handler, args = heapq.heappop(self._events)
            self.clock.advance(at - self.clock.now())
            handler(*args)
            # Like the hub's registry: queued requests granted a slot start in the same turn.
            while self._grants:
                self._start(*self._grants.pop(0))
            if self.scheduler.queue_depth and self._poll_at is None:
                self._poll_at = (math.floor(self.clock.now() / POLL_INTERVAL_S) + 1) * POLL_INTERVAL_S
                self._push(self._poll_at, _POLL, self._poll)
        return self.result

    def _push(self, at: float, kind: int, handler: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, kind, self._seq, handler, args))

    # -- clients ----------------------------------------------------------------------------------

    def _arrive(self, req: Request) -> None:
        measured = req.at >= self.result.window[0]
        if measured:
            self.result.requests[req.user] += 1
        want = Want((req.model,), requester=req.user, weight=1)
        if not self.scheduler.serves(req.model):
            if measured:
                self.result.rejected[req.user] += 1  # the hub answers 404: no agent lists the model
            return
        placement = self.scheduler.place(want)
        if placement is not None:
            self._start(req, placement)
            return
        try:
            ticket = self.scheduler.enqueue(want)
        except QueueFullError:  # QueueShareError included: the user's share of the queue is used up
            if measured:
                self.result.rejected[req.user] += 1
            return
        self._waiting[ticket.id] = req
        self._push(ticket.deadline, _EXPIRE, self._expire, ticket)

    def _expire(self, ticket: Ticket) -> None:
        if ticket.done:
            return
        for gone in self.scheduler.expire():
            req = self._waiting.pop(gone.id)
            if req.at >= self.result.window[0]:
                self.result.timeouts[req.user] += 1

    def _poll(self) -> None:
        self._poll_at = None
        self._grant(self.scheduler.poll())

    def _grant(self, grants: list[Grant]) -> None:
        for grant in grants:
            self._grants.append((self._waiting.pop(grant.ticket.id), grant.placement))

    # -- agents -----------------------------------------------------------------------------------

    def _start(self, req: Request, placement: Placement) -> None:
        now = self.clock.now()
        agent = self.agents[placement.agent_id]
        spec = agent.spec
        model = placement.model
        size = self.sizes[model]
        agent.in_flight += 1
        if agent.in_flight == 1:
            agent.busy_since = now
        agent.using[model] += 1
        if model in agent.hot:
            del agent.hot[model]
            agent.hot[model] = None  # most recently used
            ready = now
        elif model in agent.loading:
            ready = agent.loading[model]  # someone's load of it is under way: wait for the same one
        else:
            ready = self._load(agent, model, now)
        first = ready + req.prompt / spec.prefill_tps(size)
        decode = spec.decode_tps(size) / (1 + BATCH_SLOWDOWN * (agent.in_flight - 1))
        end = first + req.completion / decode
        if req.at >= self.result.window[0]:
            self.result.ttft.append((req.user, first - req.at))
            self.result.cold_starts += ready > now
        self._push(end, _FINISH, self._finish, req, placement, now, first)
        self._hardware(agent)

    def _load(self, agent: _Agent, model: str, now: float) -> float:
        size = self.sizes[model]
        room = agent.spec.vram_gb * VRAM_HEADROOM
        used = sum(self.sizes[m] for m in agent.hot) + sum(self.sizes[m] for m in agent.loading)
        # Idle models go first, least recently used first; models in use only if that is not enough
        # (their running requests finish; the next ones find the model cold).
        order = [m for m in agent.hot if not agent.using[m]] + [m for m in agent.hot if agent.using[m]]
        evicted = False
        for victim in order:
            if used + size <= room:
                break
            del agent.hot[victim]
            used -= self.sizes[victim]
            evicted = True
        start = max(now, agent.disk_free_at)
        ready = agent.disk_free_at = start + agent.spec.load_s(size)
        agent.loading[model] = ready
        if now >= self.result.window[0]:
            self.result.cold_loads += 1
        self._push(ready, _LOADED, self._loaded, agent, model)
        if evicted:
            self._sync(agent)
        return ready

    def _loaded(self, agent: _Agent, model: str) -> None:
        del agent.loading[model]
        agent.hot[model] = None
        self._sync(agent)

    def _finish(self, req: Request, placement: Placement, started: float, first: float) -> None:
        now = self.clock.now()
        agent = self.agents[placement.agent_id]
        agent.in_flight -= 1
        agent.using[placement.model] -= 1
        begin, end = self.result.window
        if begin <= now <= end:
            self.result.completed_in_window += 1
        self.result.busy_slot_s += max(0.0, min(now, end) - max(started, begin))
        if not agent.in_flight:
            self.result.busy_agent_s += max(0.0, min(now, end) - max(agent.busy_since, begin))
        self.scheduler.report(
            placement.agent_id,
            placement.model,
            ok=True,
            hot=placement.hot,
            ttft=first - started,
            decode_rate=(req.completion - 1) / (now - first) if req.completion > 1 and now > first else None,
            duration=now - started,
            prompt_tokens=req.prompt,
        )
        self._grant(self.scheduler.release(placement.agent_id))
        self._hardware(agent)

    def _sync(self, agent: _Agent) -> None:
        """What the agent's catalog refresh tells the hub: its models, which are hot, and their sizes."""
        spec = agent.spec
        sizes = {m: int(self.sizes[m] * GB) for m in spec.models}
        self._grant(self.scheduler.upsert_agent(spec.agent_id, spec.models, spec.slots, hot=agent.hot, sizes=sizes))
        self._hardware(agent)

    def _hardware(self, agent: _Agent) -> None:
        spec = agent.spec
        used = sum(self.sizes[m] for m in agent.hot) + sum(self.sizes[m] for m in agent.loading)
        free = int(max(0.0, spec.vram_gb * VRAM_HEADROOM - used) * GB)
        self.scheduler.set_hardware(spec.agent_id, free_vram=free, gpu_util=agent.in_flight / spec.slots)
