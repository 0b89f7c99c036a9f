"""Bodies of groups, members and invites (``/api/groups/...``, ``/api/invites/redeem``)."""

from __future__ import annotations

from typing import Literal

import msgspec

from potluck.api.schemas.common import Reply, Timestamp
from potluck.hub.bounds import InviteLifetime, InviteUses, PricePerMtok, TokensCap
from potluck.protocol.accounts import BillingMode, GroupRole

# -- requests -----------------------------------------------------------------------------------------


class NewInvite(msgspec.Struct):
    """An invite code's limits."""

    max_uses: InviteUses = 1
    """How many users may redeem it."""
    expires_in_s: InviteLifetime = 7 * 86400
    """Seconds until it expires."""


class MemberRole(msgspec.Struct):
    """A member's new role."""

    role: GroupRole
    """``admin`` or ``member``."""


class Redeem(msgspec.Struct):
    """An invite code to redeem."""

    code: str
    """The code, as its group's owner or admin received it."""


class GroupSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Any of the group's settings; absent ones are left as they are (``null`` clears a price bound)."""

    members_can_share: bool | msgspec.UnsetType = msgspec.UNSET
    """Plain members may share their agents into the group (else only the owner and admins)."""
    billing: BillingMode | msgspec.UnsetType = msgspec.UNSET
    """``mutual``: usage is recorded, nothing charged; ``credits``: consumers pay, agent owners earn."""
    dynamic_pricing: bool | msgspec.UnsetType = msgspec.UNSET
    """Prices follow supply and demand (a bounded multiplier)."""
    min_price_per_mtok: PricePerMtok | msgspec.UnsetType | None = msgspec.UNSET
    """Lowest price an owner may set, credits per million tokens; null: no bound."""
    max_price_per_mtok: PricePerMtok | msgspec.UnsetType | None = msgspec.UNSET
    """Highest price an owner may set; null: no bound."""
    default_input_per_mtok: PricePerMtok | msgspec.UnsetType = msgspec.UNSET
    """Prompt price of an agent whose owner set none."""
    default_output_per_mtok: PricePerMtok | msgspec.UnsetType = msgspec.UNSET
    """Completion price of an agent whose owner set none."""
    max_tokens_cap: TokensCap | msgspec.UnsetType = msgspec.UNSET
    """Completion tokens a credit hold assumes when a request sets no ``max_tokens``."""
    bill_backend_errors: bool | msgspec.UnsetType = msgspec.UNSET
    """Charge the tokens a backend reported for an error answer (by default an error answer costs nothing)."""


# -- answers ------------------------------------------------------------------------------------------


class GroupName(Reply):
    """A new group; you own it."""

    id: str
    """The group's id (``grp_…``)."""
    name: str
    """Its name."""


class Membership(Reply):
    """A group you are in."""

    id: str
    """The group's id."""
    name: str
    """Its name."""
    role: str
    """Your role: ``owner``, ``admin`` or ``member``."""


class MembershipList(Reply):
    """Your groups."""

    groups: list[Membership]
    """The groups and your role in each."""


class GroupDeleted(Reply):
    """A deleted group."""

    id: str
    """The group's id."""
    deleted: Literal[True] = True
    """Always true."""


class GroupLeft(Reply):
    """A group you left."""

    id: str
    """The group's id."""
    left: Literal[True] = True
    """Always true."""


class Member(Reply):
    """A member of a group."""

    user_id: str
    """The member's user id."""
    username: str
    """Their username."""
    role: str
    """``owner``, ``admin`` or ``member``."""


class MemberList(Reply):
    """A group's members."""

    members: list[Member]
    """The members and their roles."""


class MemberRemoved(Reply):
    """A member removed from a group."""

    group_id: str
    """The group's id."""
    user_id: str
    """The former member's user id."""
    removed: Literal[True] = True
    """Always true."""


class MemberRoleSet(Reply):
    """A member's role after the change."""

    group_id: str
    """The group's id."""
    user_id: str
    """The member's user id."""
    role: GroupRole
    """``admin`` or ``member``."""


class CreatedInvite(Reply):
    """An invite code; ``code`` is shown only here (the hub keeps its hash)."""

    id: str
    """The invite's id (``inv_…``), to revoke it with."""
    code: str
    """The code to hand to whoever should join."""
    max_uses: int
    """How many users may redeem it."""
    expires_at: Timestamp
    """When it expires."""


class InviteInfo(Reply):
    """An invite as listings show it: never the code."""

    id: str
    """The invite's id."""
    max_uses: int
    """How many users may redeem it."""
    uses: int
    """How many did."""
    expires_at: Timestamp
    """When it expires."""
    revoked: bool
    """Revoked by an owner or admin."""


class InviteList(Reply):
    """A group's invites."""

    invites: list[InviteInfo]
    """The invites."""


class Joined(Reply):
    """The group an invite let you join."""

    group_id: str
    """The group's id."""


class GroupView(Reply):
    """A group's settings."""

    id: str
    """The group's id."""
    name: str
    """Its name."""
    members_can_share: bool
    """Plain members may share their agents into it."""
    billing: str
    """``mutual`` or ``credits``."""
    dynamic_pricing: bool
    """Prices follow supply and demand."""
    min_price_per_mtok: float | None
    """Lowest price an owner may set, credits per million tokens; null: no bound."""
    max_price_per_mtok: float | None
    """Highest price an owner may set; null: no bound."""
    default_input_per_mtok: float
    """Prompt price of an agent whose owner set none."""
    default_output_per_mtok: float
    """Completion price of an agent whose owner set none."""
    max_tokens_cap: int
    """Completion tokens a credit hold assumes when a request sets no ``max_tokens``."""
    bill_backend_errors: bool
    """Error answers are charged the tokens the backend reported (off: an error answer costs nothing)."""


class GroupWithRole(GroupView):
    """A group you are in, with your role."""

    role: str
    """Your role: ``owner``, ``admin`` or ``member``."""
