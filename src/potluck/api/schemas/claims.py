"""Bodies of a group's model claims: its serving policy, approvals, holds, per-model rules and spot checks."""

from __future__ import annotations

from typing import Literal

import msgspec

from potluck.api.schemas.common import Reply, Timestamp
from potluck.hub.bounds import ReferenceText, SpotCheckRounds, TokensPerSecond
from potluck.hub.claims import Change, ClaimEvent, Hold
from potluck.hub.spotcheck import Mode
from potluck.protocol.accounts import ClaimPolicy, HoldKind

# -- requests -----------------------------------------------------------------------------------------


class PolicyBody(msgspec.Struct):
    """Who may serve which model name in the group."""

    policy: ClaimPolicy
    """``open`` (any agent shared into the group) or ``approved`` (approved (agent, model) pairs only)."""


class RuleBody(msgspec.Struct, omit_defaults=True):
    """A model's rule in the group; absent fields are cleared. Model ``*``: every model (a floor only)."""

    min_tokens_per_s: TokensPerSecond | None = None
    """The throughput floor: agents serving below it repeatedly are parked for the model."""
    reference_prompt: ReferenceText | None = None
    """A prompt whose greedy answer the group pins; spot checks then compare each agent with it."""
    reference_answer: ReferenceText | None = None
    """The pinned answer (with ``reference_prompt``)."""


class SpotCheckBody(msgspec.Struct):
    """Spot checks to run now."""

    model: str
    """The model to check."""
    rounds: SpotCheckRounds = 1
    """How many checks, one after another."""


# -- answers ------------------------------------------------------------------------------------------


class ApprovalView(Reply):
    """An agent approved to serve a model name in the group."""

    agent_id: str
    """The agent."""
    model: str
    """The model name."""
    approved_by: str
    """The user who approved it."""
    approved_at: Timestamp
    """When."""


class HoldView(Reply):
    """An agent out of routing for a model in a group, and why."""

    group_id: str
    """The group."""
    agent_id: str
    """The agent."""
    model: str
    """The model."""
    kind: HoldKind
    """``flagged`` (spot checks) or ``parked`` (throughput floor)."""
    reason: str
    """Why, in words."""
    since: Timestamp
    """When it was taken out."""

    @classmethod
    def of(cls, hold: Hold) -> HoldView:
        return cls(
            group_id=hold.group_id,
            agent_id=hold.agent_id,
            model=hold.model,
            kind=hold.kind,
            reason=hold.reason,
            since=hold.since.isoformat(),
        )


class RuleView(Reply):
    """A model's rule in the group."""

    model: str
    """The model, or ``*`` for every model."""
    min_tokens_per_s: float | None
    """The throughput floor; null: none."""
    reference_prompt: str | None
    """The pinned reference prompt; null: spot checks compare agents with each other."""
    reference_answer: str | None
    """The pinned answer."""


class GroupClaimsView(Reply):
    """Who may serve which model name in the group, and who is held out."""

    policy: ClaimPolicy
    """``open`` or ``approved``."""
    approvals: list[ApprovalView]
    """Approved (agent, model) pairs, oldest first (they count only under ``approved``)."""
    holds: list[HoldView]
    """Agents flagged or parked for a model."""
    rules: list[RuleView]
    """Per-model floors and references."""


class PolicyView(Reply):
    """The group's serving policy now."""

    group_id: str
    """The group."""
    policy: ClaimPolicy
    """``open`` or ``approved``."""


class Revocation(Reply):
    """A withdrawn approval or lifted hold."""

    agent_id: str
    """The agent."""
    model: str
    """The model."""
    removed: Literal[True] = True
    """Always true."""


class CheckAnswer(Reply):
    """One agent's answer to a spot check."""

    agent_id: str
    """The agent."""
    text: str | None
    """The first words of its answer; null when it did not answer."""
    agrees: bool | None
    """Whether it agreed; null when not judged (no answer, or no majority)."""
    error: str | None
    """Why there is no answer."""


class CheckRoundView(Reply):
    """One spot check."""

    mode: Mode
    """``majority``, ``reference`` or ``undecided``."""
    answers: list[CheckAnswer]
    """Each agent's answer."""
    flagged: list[str]
    """Agents this check flagged."""


class SpotCheckReport(Reply):
    """Spot checks run now."""

    model: str
    """The model checked."""
    rounds: list[CheckRoundView]
    """The checks, in order."""
    flagged: list[str]
    """Every agent they flagged."""


class ClaimEventView(Reply):
    """One of your agents taken out of routing for a model in a group, or put back."""

    at: Timestamp
    """When."""
    change: Change
    """``held`` or ``lifted``."""
    group_id: str
    """The group."""
    agent_id: str
    """Your agent."""
    model: str
    """The model."""
    kind: HoldKind
    """``flagged`` (spot checks) or ``parked`` (throughput floor)."""
    reason: str
    """Why it was held."""

    @classmethod
    def of(cls, event: ClaimEvent) -> ClaimEventView:
        return cls(
            at=event.at.isoformat(),
            change=event.change,
            group_id=event.group_id,
            agent_id=event.agent_id,
            model=event.model,
            kind=event.kind,
            reason=event.reason,
        )


class ClaimEventList(Reply):
    """The latest hold events of your agents, newest first (the latest 1,000, from the database)."""

    events: list[ClaimEventView]
    """Newest first."""
