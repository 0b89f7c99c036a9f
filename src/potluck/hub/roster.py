"""The agents the scheduler knows, indexed by the models they list; and layer 1, which of them may take a request.

Pure bookkeeping for `potluck.hub.scheduler.Scheduler`: no I/O, times come in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from potluck.hub.scoring import AgentSlots, Want

FULL = "no free slot"
"""Layer 1's reason for an agent that would qualify but for its slots."""


class ClaimCheck(Protocol):
    """Whether an agent may serve a model name to a request through these groups (`potluck.hub.claims`)."""

    def refusal(
        self, agent_id: str, agent_groups: frozenset[str] | None, model: str, groups: frozenset[str] | None
    ) -> str:
        """Why not ('' when it may): not approved for the name, flagged by spot checks, or parked."""
        ...


@dataclass(slots=True)
class _ModelIndex:
    agents: list[AgentSlots] = field(default_factory=list)
    rr: int = 0


class Roster:
    def __init__(self, ejected: Callable[[str, str, float], bool], claims: ClaimCheck | None = None) -> None:
        """``ejected(agent_id, model, now)``: the agent is out of rotation for that model. ``claims``: the
        groups' serving policies and holds (None: every agent may serve every name it lists)."""
        self._claims = claims
        self.agents: dict[str, AgentSlots] = {}
        self._by_model: dict[str, _ModelIndex] = {}
        self._ejected = ejected
        self._order = itertools.count()

    def upsert(self, agent_id: str, models: frozenset[str], max_concurrency: int) -> AgentSlots:
        """Add an agent (its models all hot until it says otherwise) or re-index the one known."""
        agent = self.agents.get(agent_id)
        if agent is None:
            agent = AgentSlots(agent_id, models, max(1, max_concurrency), order=next(self._order), hot=models)
            self.agents[agent_id] = agent
            for model in models:
                self._by_model.setdefault(model, _ModelIndex()).agents.append(agent)
            return agent
        for model in agent.models - models:
            self._unindex(model, agent)
        for model in models - agent.models:
            self._by_model.setdefault(model, _ModelIndex()).agents.append(agent)
        agent.models = models
        agent.max_concurrency = max(1, max_concurrency)
        return agent

    def remove(self, agent_id: str) -> None:
        agent = self.agents.pop(agent_id, None)
        if agent is None:
            return
        for model in agent.models:
            self._unindex(model, agent)

    def _unindex(self, model: str, agent: AgentSlots) -> None:
        index = self._by_model.get(model)
        if index is None:
            return
        index.agents = [a for a in index.agents if a is not agent]
        if not index.agents:
            del self._by_model[model]

    def listing(self, model: str) -> list[AgentSlots]:
        index = self._by_model.get(model)
        return index.agents if index is not None else []

    def _homes_of(self, model: str, pinned: str | None) -> list[AgentSlots]:
        """The agents listing ``model``; only the pinned one when there is one (not a scan of a large fleet)."""
        if pinned is None:
            return self.listing(model)
        agent = self.agents.get(pinned)
        return [agent] if agent is not None and model in agent.models else []

    def models(self) -> dict[str, int]:
        """Model -> number of agents listing it."""
        return {model: len(index.agents) for model, index in self._by_model.items()}

    def serves(self, models: tuple[str, ...], groups: frozenset[str] | None, requester: str | None) -> bool:
        # Plain loops: this runs on every request, and nested generators cost more than the check.
        for model in models:
            index = self._by_model.get(model)
            if index is None:
                continue
            if groups is None:
                return True
            for agent in index.agents:
                if agent.reachable(groups, requester) and not self.unclaimed(agent, model, groups):
                    return True
        return False

    def unclaimed(self, agent: AgentSlots, model: str, groups: frozenset[str] | None) -> str:
        """Why the agent may not serve this name through these groups ('' when it may)."""
        claims = self._claims
        return "" if claims is None else claims.refusal(agent.agent_id, agent.groups, model, groups)

    def routable(
        self,
        models: tuple[str, ...],
        exclude: frozenset[str],
        groups: frozenset[str] | None,
        requester: str | None,
        now: float,
        pinned: str | None = None,
    ) -> bool:
        return any(
            a.available
            and not a.draining
            and a.agent_id not in exclude
            and (
                a.agent_id == pinned
                if pinned is not None
                else a.reachable(groups, requester) and not self.unclaimed(a, m, groups)
            )
            and not self._ejected(a.agent_id, m, now)
            for m in models
            for a in self._homes_of(m, pinned)
        )

    def capacity(self, model: str) -> tuple[int, int]:
        """(slots in use, slots in total) over the agents taking new work for ``model``."""
        busy = total = 0
        for agent in self.listing(model):
            if agent.available and not agent.draining:
                busy += agent.in_flight
                total += agent.max_concurrency
        return busy, total

    def filter(self, agent: AgentSlots, model: str, want: Want, now: float) -> str:
        """Why layer 1 drops this agent for this request ('' when it is a candidate)."""
        if agent.agent_id in want.exclude:
            return "already tried for this request"
        if want.pinned is not None:
            if agent.agent_id != want.pinned:
                return "another replica placed the request on another agent"
        elif not agent.reachable(want.groups, want.requester):
            return "not shared with the request's groups" if not agent.own_only else "serves only its owner"
        elif self._claims is not None and (unclaimed := self.unclaimed(agent, model, want.groups)):
            return unclaimed
        if not agent.available:
            return "paused or outside its hours"
        if agent.draining:
            return "draining"
        if self._ejected(agent.agent_id, model, now):
            return "ejected after consecutive failures"
        if agent.in_flight >= agent.max_concurrency:
            return FULL
        return ""

    def servable(self, agent: AgentSlots, model: str, want: Want, now: float) -> bool:
        return model in agent.models and not self.filter(agent, model, want, now)

    def candidates(self, want: Want, now: float) -> list[tuple[AgentSlots, str, int]]:
        """(agent, model, alias rank) for every agent with a free slot that may serve the request."""
        return [
            (agent, model, rank)
            for rank, model in enumerate(want.models)
            for agent in self._homes_of(model, want.pinned)
            if not self.filter(agent, model, want, now)
        ]

    def homes(self, want: Want, now: float) -> Iterator[tuple[AgentSlots, str]]:
        """(agent, model) for every agent that may serve the request, free slot or not."""
        for model in want.models:
            for agent in self._homes_of(model, want.pinned):
                if self.filter(agent, model, want, now) in ("", FULL):
                    yield agent, model

    def rotate(self, want: Want, ties: list[tuple[AgentSlots, str]]) -> tuple[AgentSlots, str]:
        """Round robin among equally good candidates, per requested model."""
        first = want.models[0]
        index = self._by_model[first] if first in self._by_model else self._by_model[ties[0][1]]
        index.rr += 1
        return ties[(index.rr - 1) % len(ties)]
