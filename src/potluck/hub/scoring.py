"""Layer 2 of the scheduler: what it knows about each candidate, and the score terms that rank them.

See the scheduler module's docstring for the terms and their weights; `score_terms` is the one place
they are computed, for routing and for route-explain alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any


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
    """EWMA of bytes of weights loaded per second, learnt from cold requests' TTFT."""

    def has_capacity(self) -> bool:
        return self.available and not self.draining and self.in_flight < self.max_concurrency

    def reachable(self, groups: frozenset[str] | None, requester: str | None = None) -> bool:
        """Isolation: a request reaches an agent only through a group both share (and the owner's rules)."""
        if self.own_only and requester != self.owner:
            return False
        return groups is None or self.groups is None or not self.groups.isdisjoint(groups)


@dataclass(slots=True)
class ModelStats:
    """What the hub learnt about one agent serving one model."""

    ttft: float | None = None
    """EWMA of seconds to the first token, from requests on a hot model."""
    decode: float | None = None
    """EWMA of completion tokens per second after the first."""
    reliability: float = 1.0
    """EWMA of success (1) and local-origin failure (0)."""
    failures: int = 0
    """Consecutive local-origin failures."""
    ejections: int = 0
    ejected_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Want:
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


@dataclass(frozen=True, slots=True)
class Placement:
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "models": list(self.models),
            "weights": self.weights,
            "choice": None
            if self.choice is None
            else {"agent_id": self.choice.agent_id, "model": self.choice.model, "hot": self.choice.hot},
            "queue_depth": self.queue_depth,
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
    """What scores are relative to: the best latencies per model and the slowest expected cold load."""

    best_ttft: dict[str, float] = field(default_factory=dict)
    best_decode: dict[str, float] = field(default_factory=dict)
    slowest_load: float = 0.0


def expected_load_s(agent: AgentSlots, model: str) -> float:
    """Seconds to load ``model``'s weights on ``agent`` (0 when hot)."""
    if model in agent.hot:
        return 0.0
    return agent.sizes.get(model, 0) / (agent.load_rate or DEFAULT_LOAD_BYTES_PER_S)


def _survey(cands: list[tuple[AgentSlots, str, int]], stats: dict[tuple[str, str], ModelStats]) -> _Field:
    survey = _Field()
    for agent, model, _ in cands:
        s = stats.get((agent.agent_id, model))
        if s is not None:
            if s.ttft is not None and s.ttft < survey.best_ttft.get(model, math.inf):
                survey.best_ttft[model] = s.ttft
            if s.decode is not None and s.decode > survey.best_decode.get(model, 0.0):
                survey.best_decode[model] = s.decode
        survey.slowest_load = max(survey.slowest_load, expected_load_s(agent, model))
    return survey


def _slowness(s: ModelStats, model: str, survey: _Field) -> float:
    """0 for the best candidate's TTFT and decode rate, towards 1 for much slower."""
    slow = 0.0
    if s.ttft is not None and s.ttft > 0:
        slow += 1.0 - survey.best_ttft[model] / s.ttft
    if s.decode is not None and s.decode > 0:
        slow += 1.0 - s.decode / survey.best_decode[model]
    return slow / 2


def _cold_cost(agent: AgentSlots, model: str, survey: _Field) -> float:
    cost = expected_load_s(agent, model) / survey.slowest_load if survey.slowest_load > 0 else 0.0
    size = agent.sizes.get(model)
    if size and agent.free_vram is not None and agent.free_vram < size:
        cost += 0.5  # something must be evicted first, and its users will pay to reload it
    return cost


def score_terms(
    cands: list[tuple[AgentSlots, str, int]],
    want: Want,
    *,
    policy: Policy,
    weights: ScoreWeights,
    stats: dict[tuple[str, str], ModelStats],
) -> list[dict[str, float]]:
    """The score terms of each (agent, model, alias rank) candidate; the highest total wins."""
    w = weights
    if policy is Policy.ROUND_ROBIN:
        return [{} for _ in cands]
    if policy is Policy.LEAST_LOADED:
        return [{"load": -w.load * a.in_flight / a.max_concurrency} for a, _, _ in cands]
    survey = _survey(cands, stats)
    return [
        _potluck_terms(agent, model, rank, want, w, stats.get((agent.agent_id, model)), survey)
        for agent, model, rank in cands
    ]


def _potluck_terms(
    agent: AgentSlots, model: str, rank: int, want: Want, w: ScoreWeights, s: ModelStats | None, survey: _Field
) -> dict[str, float]:
    terms: dict[str, float] = {}
    if model in agent.hot:
        terms["hot"] = w.hot
    elif cost := _cold_cost(agent, model, survey):
        terms["cold"] = -w.cold * cost
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
