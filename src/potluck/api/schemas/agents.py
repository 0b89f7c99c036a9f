"""Bodies of your agents: enrolment tokens, listings, owner controls and sharing into groups (``/api/agents...``)."""

from __future__ import annotations

import msgspec

from potluck.api.schemas.claims import HoldView
from potluck.api.schemas.common import AgentState, Reply
from potluck.hub.controls import Schedule

# -- requests -----------------------------------------------------------------------------------------


class AgentControls(msgspec.Struct, omit_defaults=True):
    """Any of an agent's owner controls; absent ones are left as they are."""

    paused: bool | msgspec.UnsetType = msgspec.UNSET
    """No new work until unpaused (what it runs finishes)."""
    own_requests_only: bool | msgspec.UnsetType = msgspec.UNSET
    """Serve only requests made with the owner's own keys."""
    own_requests_first: bool | msgspec.UnsetType = msgspec.UNSET
    """Prefer the owner's requests over everyone else's."""
    schedule: Schedule | msgspec.UnsetType | None = msgspec.UNSET
    """Available only inside these windows; null: always."""


class GroupRef(msgspec.Struct):
    """A group to share an agent into."""

    group_id: str
    """The group's id (you own or administer it)."""


# -- answers ------------------------------------------------------------------------------------------


class ModelState(Reply):
    """A model one of your agents serves."""

    id: str
    """The model name."""
    hot: bool
    """Loaded now."""


class OwnAgent(Reply):
    """One of your agents."""

    id: str
    """The agent's id (``agt_…``)."""
    name: str
    """Its name."""
    state: AgentState
    """``online``, ``draining`` or ``offline``."""
    groups: list[str]
    """Groups it is shared into."""
    models: list[ModelState]
    """What it serves; empty while offline."""
    holds: list[HoldView] = msgspec.field(default_factory=list)
    """Models it is out of routing for in a group, and why: flagged by spot checks, or parked below the
    group's throughput floor."""


class OwnAgentList(Reply):
    """Your agents."""

    agents: list[OwnAgent]
    """The agents, oldest enrolment first."""


class ControlsView(Reply, omit_defaults=True):
    """An agent's owner controls now; controls at their default are left out."""

    id: str
    """The agent's id."""
    paused: bool = False
    """Takes no new work."""
    own_requests_only: bool = False
    """Serves only the owner's requests."""
    own_requests_first: bool = False
    """Prefers the owner's requests."""
    schedule: Schedule | None = None
    """Available only inside these windows; absent: always."""


class Sharing(Reply):
    """Whether an agent is shared into a group now."""

    agent_id: str
    """The agent's id."""
    group_id: str
    """The group's id."""
    shared: bool
    """True after sharing, false after unsharing."""
