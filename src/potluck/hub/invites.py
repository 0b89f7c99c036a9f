"""Invite codes: a group's owner and admins make them; anyone with the code joins as a member.

A code is shown once and stored hashed. An unknown, expired, revoked or used-up code gets one
answer for all. Redemption is race-safe in the store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from potluck.hub.errors import ConflictError, InvalidInviteError, NotFoundError
from potluck.hub.groups import MANAGERS, Groups
from potluck.store import errors as store_errors
from potluck.store.database import Store
from potluck.store.groups import InvalidInviteError as StoreInvalidInviteError
from potluck.store.groups import Invite
from potluck.store.users import User

__all__ = ["Invite", "Invites"]


class Invites:
    def __init__(self, store: Store, groups: Groups) -> None:
        self._store = store
        self._groups = groups

    async def create(self, user: User, group_id: str, max_uses: int, expires_in_s: int) -> tuple[Invite, str]:
        """A new invite (owner, admin) and its code, shown once; the API bounds both numbers (hub/bounds.py)."""
        await self._groups.require_role(user, group_id, MANAGERS)
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in_s)
        return await self._store.groups.create_invite(group_id, user.id, max_uses, expires_at)

    async def of_group(self, user: User, group_id: str) -> list[Invite]:
        await self._groups.require_role(user, group_id, MANAGERS)
        return await self._store.groups.invites(group_id)

    async def revoke(self, user: User, group_id: str, invite_id: str) -> None:
        await self._groups.require_role(user, group_id, MANAGERS)
        try:
            await self._store.groups.revoke_invite(group_id, invite_id)
        except store_errors.NotFoundError:
            raise NotFoundError(f"No invite {invite_id}") from None

    async def peek(self, code: str) -> str:
        """The name of the group a live invite code leads to; `InvalidInviteError` otherwise (nothing is used)."""
        found = await self._store.groups.live_invite(code)
        if found is None:
            raise InvalidInviteError("This invite code is not valid (unknown, expired, revoked or used up)")
        return found[1]

    async def redeem(self, user: User, code: str) -> str:
        """Join the invite's group; its id."""
        try:
            group_id = await self._store.groups.redeem(code, user.id)
        except StoreInvalidInviteError:
            raise InvalidInviteError("This invite code is not valid (unknown, expired, revoked or used up)") from None
        except store_errors.ConflictError as exc:
            raise ConflictError(str(exc)) from None
        await self._groups.refresh_memberships(user.id)
        return group_id
