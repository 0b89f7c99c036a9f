"""Groups and their members: the rules, over the store.

The creator owns a group; owners and admins remove members; only the owner changes roles and
settings, or deletes the group, and the owner cannot leave it. To anyone outside a group it does
not exist (404). Membership changes reach the key access map at once, so keys follow their
owner's memberships from the next request on.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from potluck.hub.access import AccessMap
from potluck.hub.accounting import Accounting, GroupBilling
from potluck.hub.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from potluck.hub.pricing import validate_prices
from potluck.hub.registry import Registry
from potluck.protocol.accounts import GroupRole
from potluck.store.database import Store
from potluck.store.groups import Group, Member
from potluck.store.users import User

__all__ = ["Group", "Groups", "Member"]

OWNER_ONLY = frozenset({GroupRole.OWNER})
MANAGERS = frozenset(role for role in GroupRole if role.manages)


class Groups:
    def __init__(self, store: Store, access: AccessMap, registry: Registry, accounting: Accounting) -> None:
        self._store = store
        self._access = access
        self._registry = registry
        self._accounting = accounting

    async def refresh_memberships(self, user_id: str) -> None:
        """Keys follow their owner's memberships from the next request on."""
        groups = (await self._store.groups.memberships(user_id)).get(user_id, set())
        self._access.set_user_groups(user_id, groups)

    async def require_role(self, user: User, group_id: str, allowed: frozenset[GroupRole] | None = None) -> GroupRole:
        """The user's role in the group: `NotFoundError` for a non-member, `PermissionDeniedError` for
        a member whose role is not ``allowed`` (None: any member)."""
        role = await self._store.groups.role_of(group_id, user.id)
        if role is None:
            raise NotFoundError(f"No group {group_id}")
        if allowed is not None and role not in allowed:
            raise PermissionDeniedError(f"Your role in this group ({role}) does not allow this")
        return role

    async def create(self, user: User, name: str) -> Group:
        """A group owned by ``user``."""
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise InvalidRequestError("`name` must be 1 to 200 characters", param="name")
        group = await self._store.groups.create(name, user.id)
        await self.refresh_memberships(user.id)
        return group

    async def of_user(self, user: User) -> list[tuple[Group, GroupRole]]:
        """The user's groups, with the user's role in each."""
        return await self._store.groups.for_user(user.id)

    async def get(self, user: User, group_id: str) -> tuple[Group, GroupRole]:
        """A group the user is in, with the user's role."""
        role = await self.require_role(user, group_id)
        group = await self._store.groups.get(group_id)
        if group is None:
            raise NotFoundError(f"No group {group_id}")
        return group, role

    async def update(self, user: User, group_id: str, changes: dict[str, Any]) -> Group:
        """Group settings (owner): who may share agents, and billing (mode, prices, bounds, hold cap)."""
        await self.require_role(user, group_id, OWNER_ONLY)
        sharing = changes.pop("members_can_share", None)
        current = await self._store.groups.get(group_id)
        if current is None:
            raise NotFoundError(f"No group {group_id}")
        low = changes.get("min_price_per_mtok", current.min_price_per_mtok)
        high = changes.get("max_price_per_mtok", current.max_price_per_mtok)
        try:
            validate_prices({}, low, high)
            group = await self._store.groups.update_billing(group_id, **changes)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        if sharing is not None:
            await self._store.groups.set_members_can_share(group_id, sharing)
            group = dataclasses.replace(group, members_can_share=sharing)
        self._accounting.set_billing(group_id, GroupBilling.of(group))
        return group

    async def delete(self, user: User, group_id: str) -> None:
        """Delete the group (owner): its keys stop reaching anything through it at once."""
        await self.require_role(user, group_id, OWNER_ONLY)
        await self._store.groups.delete(group_id)
        # Its keys stop reaching anything through it, and its agents stop being routed for it.
        self._registry.resync(self._access.forget_group(group_id))
        self._accounting.set_billing(group_id, None)

    async def members(self, user: User, group_id: str) -> list[Member]:
        await self.require_role(user, group_id)
        return await self._store.groups.members(group_id)

    async def leave(self, user: User, group_id: str) -> None:
        if await self.require_role(user, group_id) == GroupRole.OWNER:
            raise InvalidRequestError("The owner cannot leave the group; delete it instead")
        await self._store.groups.remove_member(group_id, user.id)
        await self.refresh_memberships(user.id)

    async def remove_member(self, user: User, group_id: str, member_id: str) -> None:
        """Owners and admins remove anyone but the owner."""
        await self.require_role(user, group_id, MANAGERS)
        await self._member_not_owner(group_id, member_id, "The owner cannot be removed from the group")
        await self._store.groups.remove_member(group_id, member_id)
        await self.refresh_memberships(member_id)

    async def set_member_role(self, user: User, group_id: str, member_id: str, role: GroupRole) -> None:
        """The owner makes a member an admin (who may invite and remove members) or a member again."""
        await self.require_role(user, group_id, OWNER_ONLY)
        if role == GroupRole.OWNER:
            raise InvalidRequestError("`role` must be admin or member", param="role")
        await self._member_not_owner(group_id, member_id, "The owner's role cannot change")
        await self._store.groups.set_role(group_id, member_id, role)

    async def _member_not_owner(self, group_id: str, member_id: str, refusal: str) -> None:
        target = await self._store.groups.role_of(group_id, member_id)
        if target is None:
            raise NotFoundError(f"No member {member_id} in this group")
        if target == GroupRole.OWNER:
            raise InvalidRequestError(refusal)
