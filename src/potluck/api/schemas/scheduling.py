"""Bodies of model aliases and of the scheduler's explanation of a routing decision."""

from __future__ import annotations

from typing import Literal

import msgspec

from potluck.api.schemas.common import Reply, Timestamp
from potluck.hub.bounds import AliasModels

# -- requests -----------------------------------------------------------------------------------------


class AliasBody(msgspec.Struct):
    """What an alias stands for."""

    models: AliasModels
    """Concrete models, most preferred first (1 to 16, distinct)."""


class ExplainQuery(msgspec.Struct):
    """Query of ``GET /admin/route-explain``."""

    model: str
    """The model or alias to explain."""
    key_id: str | None = None
    """Explain as a request with this key would be routed (its groups, owner, aliases); absent: no group limit."""


# -- answers ------------------------------------------------------------------------------------------


class Alias(Reply):
    """A group's name for a list of models."""

    alias: str
    """The name keys may ask for."""
    group_id: str
    """The group it belongs to."""
    models: list[str]
    """The models it stands for, most preferred first."""
    updated_at: Timestamp
    """When it was last set."""


class AliasList(Reply):
    """A group's aliases."""

    data: list[Alias]
    """The aliases by name."""


class AliasDeleted(Reply):
    """A removed alias."""

    alias: str
    """Its name."""
    deleted: Literal[True] = True
    """Always true."""


class Placement(Reply):
    """Where the scheduler would send the request."""

    agent_id: str
    """The agent."""
    model: str
    """The concrete model."""
    hot: bool
    """The agent has it loaded."""


class Candidate(Reply):
    """An agent that lists the model: its filter reason, or its score."""

    agent_id: str
    """The agent."""
    model: str
    """The concrete model."""
    eligible: bool
    """It passed the filter (group access, health, not draining, a free slot)."""
    reason: str | msgspec.UnsetType = msgspec.UNSET
    """Why the filter dropped it; only when not eligible."""
    score: float | msgspec.UnsetType = msgspec.UNSET
    """Its score, higher is better; only when eligible."""
    terms: dict[str, float] | msgspec.UnsetType = msgspec.UNSET
    """The score's terms (``hot``, ``load``, latency, reliability...); only when eligible."""


class RouteExplanation(Reply, kw_only=True):
    """Why the scheduler would pick an agent for a model now."""

    model: str
    """The model or alias asked for."""
    key_id: str | None
    """The key the request was explained as; null: none."""
    policy: str
    """The scheduler policy (``--scheduler-policy``)."""
    models: list[str]
    """Concrete models tried, in order of preference."""
    weights: dict[str, float]
    """The score weights in force."""
    choice: Placement | None
    """The pick; null when no candidate can take it now."""
    queue_depth: int
    """Requests waiting in the queue."""
    wait: str | msgspec.UnsetType = msgspec.UNSET
    """Why the request would wait although a candidate has a free slot; only then."""
    candidates: list[Candidate]
    """Eligible ones first, best first."""
