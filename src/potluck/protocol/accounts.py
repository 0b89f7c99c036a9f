"""The words of the accounts API: user roles, group roles and billing modes.

Defined once here, below `store`, so the database rows, the hub's rules, the HTTP API and the CLI
all use the same values. They are `StrEnum`s: JSON and the database hold the plain strings.
"""

from __future__ import annotations

from enum import StrEnum


class UserRole(StrEnum):
    """A user's role on the hub."""

    ADMIN = "admin"
    """May use the admin API (``/admin/...``) with their own token."""
    USER = "user"


class GroupRole(StrEnum):
    """A member's role in a group."""

    OWNER = "owner"
    """Created the group: the only one who changes its settings, roles, or deletes it."""
    ADMIN = "admin"
    """Invites and removes members, shares agents in, sets aliases."""
    MEMBER = "member"

    @property
    def manages(self) -> bool:
        """Owners and admins manage a group's members, invites, aliases and sharing."""
        return self in (GroupRole.OWNER, GroupRole.ADMIN)


class BillingMode(StrEnum):
    """How a group pays for what its members use."""

    MUTUAL = "mutual"
    """Usage is recorded, nothing is charged."""
    CREDITS = "credits"
    """Consumers pay in credits, agent owners earn them."""


class ClaimPolicy(StrEnum):
    """Who may serve a model name in a group."""

    OPEN = "open"
    """Any agent shared into the group serves whatever names it lists (a circle of friends)."""
    APPROVED = "approved"
    """An agent serves a name there only once a group owner or admin approved that (agent, model) pair."""


class HoldKind(StrEnum):
    """Why an agent is out of routing for a model in a group."""

    FLAGGED = "flagged"
    """Its spot-check answers disagreed with the other agents' (or the group's pinned reference)."""
    PARKED = "parked"
    """It served below the group's minimum tokens per second repeatedly."""
