"""Layer 2 of the scheduler: what it knows about each candidate, and the score terms that rank them.

`score_terms` is the one place they are computed, for routing and for route-explain alike. The terms
and their default weights (`ScoreWeights`, configurable with ``--score-weight NAME=VALUE``):

- ``hot`` 100: the model is loaded in VRAM. A cold load costs 10-60 s, so this dominates. A model
  whose load the scheduler started there (`Load`) earns half of it until the agent reports it hot.
- ``alias`` 40 per step down an alias's preference list: a hot second choice beats a cold first one.
- ``owner`` 20: the requester's own agent, when the agent asks for its owner first or the key does.
- ``cold`` 10 x (expected cold start / the slowest candidate's) + the eviction penalty: when the
  model needs more GPU memory than is free, `EVICTION_BASE` + `EVICTION_PER_REQUEST` per request in
  flight on the agent (they all use other models, which an eviction may take from under them).
  Expected cold start (`cold_wait_s`): what is left of a load under way, else size / learnt load rate
  (at least `MIN_COLD_LOAD_S`), after the other loads under way on the agent.
- ``load`` 6 x in-flight / capacity.
- ``latency`` 4 x how much slower than the best candidate the agent is: half prefill speed (seconds
  per 1,000 prompt tokens where prompt sizes are known, else raw TTFT), half decode rate; 0 for the
  best, towards 1 for much slower; agents with no samples yet count as best.
- ``reliability`` 4 x (1 - success EWMA).
- ``gpu`` 2 x GPU utilization (the busiest GPU of the agent).

bench/fleet.py's ``--score-weights`` replays a trace under other weights: raising ``latency`` above
``load`` lowered the mean TTFT at moderate load there, but made some seeds less stable near
saturation, so the defaults stay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

import msgspec


class Policy(StrEnum):
    POTLUCK = "potluck"
    LEAST_LOADED = "least_loaded"
    ROUND_ROBIN = "round_robin"


@dataclass(frozen=True, slots=True)
class ScoreWeights:
    hot: float = 100.0
    alias: float = 40.0
    owner: float = 20.0
    cold: float = 10.0
    load: float = 6.0
    latency: float = 4.0
    reliability: float = 4.0
    gpu: float = 2.0

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> ScoreWeights:
        """``"hot=100,load=6"`` (or a list of ``NAME=VALUE``) over the defaults; unknown names are an error."""
        items = [p for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
        names = {f.name for f in fields(cls)}
        changes: dict[str, float] = {}
        for item in items:
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in names:
                raise ValueError(f"unknown score weight {item!r}; known: {', '.join(sorted(names))}")
            try:
                changes[name] = float(value)
            except ValueError:
                raise ValueError(f"score weight {name} must be a number, not {value!r}") from None
            if not math.isfinite(changes[name]) or changes[name] < 0:
                raise ValueError(f"score weight {name} must be a finite number >= 0")
        return replace(cls(), **changes)


@dataclass(frozen=True, slots=True)
class EjectionSettings:
    failures: int = 5
    base_s: float = 30.0
    max_s: float = 300.0
    max_percent: float = 50.0


EWMA_ALPHA = 0.3
RELIABILITY_ALPHA = 0.2
DEFAULT_LOAD_BYTES_PER_S = 1.0e9
"""Assumed weight-loading speed of an agent never seen loading a model (1 GB/s: a SATA SSD)."""
DEFAULT_SERVICE_S = 5.0
"""Assumed request duration for a model never served, for the expected wait of a queued request."""
MIN_COLD_LOAD_S = 5.0
"""A cold load is never expected to take less than this (starting the runtime, warming up), whatever the size."""
UNKNOWN_SIZE_LOAD_S = 15.0
"""Expected cold-load time of a model whose size the backend does not report."""
EVICTION_BASE = 0.5
EVICTION_PER_REQUEST = 0.5
"""The eviction penalty, in units of the slowest cold load: the base, plus this per request in flight on
the agent. The model is cold there, so those requests all use other models: the more of them, the more
likely an eviction takes a model in use, whose next users pay a reload."""
WARM_SHARE = 0.5
"""Share of the ``hot`` weight a model being loaded on an agent earns there."""
PROMPT_FLOOR_TOKENS = 128
"""Prompts shorter than this count as this long for prefill speed: fixed overheads dominate them."""


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
    sizes: dict[str, int] = field(default_factory=dict)
    """Model -> bytes of weights, when the backend says (the expected cold-load time scales with it)."""
    free_vram: int | None = None
    """Bytes of GPU memory free now; None when unknown."""
    gpu_util: float = 0.0
    """0..1, the busiest GPU."""
    load_rate: float | None = None
    """EWMA of bytes of weights loaded per second, learnt from loads the scheduler started (see `Load`)."""
    loading: dict[str, Load] = field(default_factory=dict)
    """Models whose load the scheduler started here and the agent has not reported hot yet."""

    def has_capacity(self) -> bool:
        return self.available and not self.draining and self.in_flight < self.max_concurrency

    def reachable(self, groups: frozenset[str] | None, requester: str | None = None) -> bool:
        """Isolation: a request reaches an agent only through a group both share (and the owner's rules)."""
        if self.own_only and requester != self.owner:
            return False
        return groups is None or self.groups is None or not self.groups.isdisjoint(groups)


@dataclass(frozen=True, slots=True)
class Load:
    """A cold load the scheduler started: requests for the model join it rather than start another."""

    started: float
    expected_s: float

    def remaining(self, now: float) -> float:
        return max(0.0, self.started + self.expected_s - now)

    def stale(self, now: float) -> bool:
        """Past twice its expected time (and 10 s more) without the agent reporting it hot: forget it."""
        return now >= self.started + 2 * self.expected_s + 10.0


@dataclass(slots=True)
class ModelStats:
    """What the hub learnt about one agent serving one model."""

    ttft: float | None = None
    """EWMA of seconds to the first token, from requests on a hot model."""
    prefill: float | None = None
    """EWMA of seconds to the first token per 1,000 prompt tokens, from hot requests whose prompt size is known."""
    decode: float | None = None
    """EWMA of completion tokens per second after the first."""
    service: float | None = None
    """EWMA of the duration of requests that found the model hot, in seconds."""
    reliability: float = 1.0
    """EWMA of success (1) and local-origin failure (0)."""
    failures: int = 0
    """Consecutive local-origin failures."""
    ejections: int = 0
    ejected_until: float = 0.0


class Want(msgspec.Struct, frozen=True, gc=False):
    """What a request needs from the scheduler."""

    models: tuple[str, ...]
    """Concrete model names in order of preference (one, or an alias's list)."""
    exclude: frozenset[str] = frozenset()
    """Agents already tried for this request."""
    groups: frozenset[str] | None = None
    requester: str | None = None
    """The user whose request it is."""
    weight: int = 1
    """Fair-queue quantum (the key's priority)."""
    prefer_own: bool = False
    """The key asks for its owner's own agents first."""
    pinned: str | None = None
    """Only this agent will do: another replica placed the request on it (cluster mode), after checking the
    request's access there, so this replica decides only when the agent has a slot for it."""


class Placement(msgspec.Struct, frozen=True, gc=False):
    agent_id: str
    model: str
    hot: bool


@dataclass(frozen=True, slots=True)
class Candidate:
    agent_id: str
    model: str
    eligible: bool
    reason: str = ""
    """Why layer 1 filtered it out (empty when eligible)."""
    terms: dict[str, float] = field(default_factory=dict)
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class Explanation:
    policy: str
    models: tuple[str, ...]
    weights: dict[str, float]
    candidates: tuple[Candidate, ...]
    choice: Placement | None
    queue_depth: int
    wait: str = ""
    """Why the request would wait although a candidate has a free slot (empty when it would not)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "models": list(self.models),
            "weights": self.weights,
            "choice": None
            if self.choice is None
            else {"agent_id": self.choice.agent_id, "model": self.choice.model, "hot": self.choice.hot},
            "queue_depth": self.queue_depth,
            **({"wait": self.wait} if self.wait else {}),
            "candidates": [
                {
                    "agent_id": c.agent_id,
                    "model": c.model,
                    "eligible": c.eligible,
                    **({"reason": c.reason} if c.reason else {"score": round(c.score, 4), "terms": c.terms}),
                }
                for c in self.candidates
            ],
        }


@dataclass(slots=True)
class _Field:
    """What scores are relative to: the best latencies per model and the slowest expected cold start."""

    best_ttft: dict[str, float] = field(default_factory=dict)
    best_prefill: dict[str, float] = field(default_factory=dict)
    best_decode: dict[str, float] = field(default_factory=dict)
    slowest_load: float = 0.0


def expected_load_s(agent: AgentSlots, model: str) -> float:
    """Seconds to load ``model``'s weights on ``agent`` from its size and learnt load rate (0 when hot)."""
    if model in agent.hot:
        return 0.0
    return agent.sizes.get(model, 0) / (agent.load_rate or DEFAULT_LOAD_BYTES_PER_S)


def cold_wait_s(agent: AgentSlots, model: str, now: float) -> float:
    """Seconds before a request placed on ``agent`` now can start on ``model``: 0 when hot; what is left of
    the load when one is under way; else the expected load time (at least `MIN_COLD_LOAD_S`) after the
    loads already under way there, which share its disk."""
    if model in agent.hot:
        return 0.0
    load = agent.loading.get(model)
    if load is not None:
        return load.remaining(now)
    own = expected_load_s(agent, model) if agent.sizes.get(model) else UNKNOWN_SIZE_LOAD_S
    return max(MIN_COLD_LOAD_S, own) + sum(other.remaining(now) for other in agent.loading.values())


def must_evict(agent: AgentSlots, model: str) -> bool:
    """Loading ``model`` needs more GPU memory than is free (when both are known)."""
    size = agent.sizes.get(model)
    return bool(size) and agent.free_vram is not None and agent.free_vram < (size or 0)


def eviction_cost(agent: AgentSlots, model: str) -> float:
    """0 when the model fits; else `EVICTION_BASE` + `EVICTION_PER_REQUEST` per request in flight on the agent."""
    if model in agent.hot or model in agent.loading or not must_evict(agent, model):
        return 0.0
    return EVICTION_BASE + EVICTION_PER_REQUEST * agent.in_flight


def _survey(cands: list[tuple[AgentSlots, str, int]], stats: dict[tuple[str, str], ModelStats], now: float) -> _Field:
    survey = _Field()
    for agent, model, _ in cands:
        s = stats.get((agent.agent_id, model))
        if s is not None:
            if s.ttft is not None and s.ttft < survey.best_ttft.get(model, math.inf):
                survey.best_ttft[model] = s.ttft
            if s.prefill is not None and s.prefill < survey.best_prefill.get(model, math.inf):
                survey.best_prefill[model] = s.prefill
            if s.decode is not None and s.decode > survey.best_decode.get(model, 0.0):
                survey.best_decode[model] = s.decode
        if model not in agent.hot:
            survey.slowest_load = max(survey.slowest_load, cold_wait_s(agent, model, now))
    return survey


def _slowness(s: ModelStats, model: str, survey: _Field) -> float:
    """0 for the best candidate's prefill speed (or TTFT, where prompt sizes are unknown) and decode rate,
    towards 1 for much slower."""
    slow = 0.0
    if s.prefill is not None and s.prefill > 0:
        slow += 1.0 - survey.best_prefill[model] / s.prefill
    elif s.ttft is not None and s.ttft > 0:
        slow += 1.0 - survey.best_ttft[model] / s.ttft
    if s.decode is not None and s.decode > 0:
        slow += 1.0 - s.decode / survey.best_decode[model]
    return slow / 2


def score_terms(
    cands: list[tuple[AgentSlots, str, int]],
    want: Want,
    *,
    policy: Policy,
    weights: ScoreWeights,
    stats: dict[tuple[str, str], ModelStats],
    now: float,
) -> list[dict[str, float]]:
    """The score terms of each (agent, model, alias rank) candidate; the highest total wins."""
    w = weights
    if policy is Policy.ROUND_ROBIN:
        return [{} for _ in cands]
    if policy is Policy.LEAST_LOADED:
        return [{"load": -w.load * a.in_flight / a.max_concurrency} for a, _, _ in cands]
    survey = _survey(cands, stats, now)
    return [
        _potluck_terms(agent, model, rank, want, w, stats.get((agent.agent_id, model)), survey, now)
        for agent, model, rank in cands
    ]


def _potluck_terms(
    agent: AgentSlots,
    model: str,
    rank: int,
    want: Want,
    w: ScoreWeights,
    s: ModelStats | None,
    survey: _Field,
    now: float,
) -> dict[str, float]:
    terms: dict[str, float] = {}
    if model in agent.hot:
        terms["hot"] = w.hot
    else:
        _cold_terms(terms, agent, model, w, survey, now)
    if rank:
        terms["alias"] = -w.alias * rank
    if want.requester is not None and want.requester == agent.owner and (agent.own_first or want.prefer_own):
        terms["owner"] = w.owner
    if agent.in_flight:
        terms["load"] = -w.load * agent.in_flight / agent.max_concurrency
    if s is not None:
        if slow := _slowness(s, model, survey):
            terms["latency"] = -w.latency * slow
        if s.reliability < 1.0:
            terms["reliability"] = -w.reliability * (1.0 - s.reliability)
    if agent.gpu_util:
        terms["gpu"] = -w.gpu * agent.gpu_util
    return terms


def _cold_terms(
    terms: dict[str, float], agent: AgentSlots, model: str, w: ScoreWeights, survey: _Field, now: float
) -> None:
    if model in agent.loading:
        terms["hot"] = w.hot * WARM_SHARE
    cost = cold_wait_s(agent, model, now) / survey.slowest_load if survey.slowest_load > 0 else 0.0
    if cost := cost + eviction_cost(agent, model):
        terms["cold"] = -w.cold * cost
