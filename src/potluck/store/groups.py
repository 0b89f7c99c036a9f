"""Groups, their members (owner / admin / member) and invite codes.

Invite redemption is race-safe: a conditional UPDATE takes one use only while uses < max_uses
(and the code is live), in the same transaction that adds the member, so 20 concurrent
redemptions of a one-use code admit exactly one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from potluck._shared.ids import hash_secret, new_id, new_secret
from potluck.protocol.accounts import BillingMode, GroupRole
from potluck.store.engine import uncut_write
from potluck.store.errors import ConflictError, NotFoundError, StoreError
from potluck.store.tables import (
    agent_groups,
    groups,
    invite_redemptions,
    invites,
    key_groups,
    memberships,
    users,
)

INVITE_PREFIX = "pinv-"


class InvalidInviteError(StoreError):
    """The code is unknown, expired, revoked or used up (deliberately not told apart)."""


@dataclass(frozen=True, slots=True)
class Group:
    id: str
    name: str
    owner_id: str
    created_at: datetime
    members_can_share: bool = False
    """Plain members may share their agents into the group (by default only owner and admins)."""
    billing: BillingMode = BillingMode.MUTUAL
    """``mutual`` (usage tracked, nothing charged) or ``credits`` (consumers pay, GPU owners earn)."""
    dynamic_pricing: bool = False
    """Agent owners set their own prices (within the bounds below); otherwise the group defaults apply."""
    min_price_per_mtok: float | None = None
    """Lowest price an owner may set, in credits per million tokens (None: no floor)."""
    max_price_per_mtok: float | None = None
    """Highest price an owner may set, in credits per million tokens (None: no ceiling)."""
    default_input_per_mtok: float = 0.0
    """Price of prompt tokens, in credits per million, where the agent set none."""
    default_output_per_mtok: float = 0.0
    """Price of completion tokens, in credits per million, where the agent set none."""
    max_tokens_cap: int = 4096
    """Completion tokens a credit hold covers when the request sets no ``max_tokens``."""
    bill_backend_errors: bool = False
    """Charge the tokens a backend reported for an error answer (by default an error answer costs nothing)."""


BILLING_FIELDS = frozenset(
    {
        "billing",
        "dynamic_pricing",
        "min_price_per_mtok",
        "max_price_per_mtok",
        "default_input_per_mtok",
        "default_output_per_mtok",
        "max_tokens_cap",
        "bill_backend_errors",
    }
)


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    username: str
    role: GroupRole


@dataclass(frozen=True, slots=True)
class Invite:
    id: str
    group_id: str
    max_uses: int
    uses: int
    expires_at: datetime
    revoked: bool


class GroupRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @uncut_write
    async def create(self, name: str, owner_id: str) -> Group:
        group = Group(new_id("grp"), name, owner_id, datetime.now(UTC))
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(groups).values(id=group.id, name=name, owner_id=owner_id, created_at=group.created_at)
            )
            await conn.execute(
                insert(memberships).values(
                    group_id=group.id, user_id=owner_id, role=GroupRole.OWNER, joined_at=group.created_at
                )
            )
        return group

    async def for_user(self, user_id: str) -> list[tuple[Group, GroupRole]]:
        """The user's groups and the user's role in each."""
        query = (
            select(groups, memberships.c.role)
            .join(memberships, memberships.c.group_id == groups.c.id)
            .where(memberships.c.user_id == user_id)
            .order_by(groups.c.created_at)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [(_group(r), GroupRole(r["role"])) for r in rows]

    async def role_of(self, group_id: str, user_id: str) -> GroupRole | None:
        query = select(memberships.c.role).where(memberships.c.group_id == group_id, memberships.c.user_id == user_id)
        async with self._engine.connect() as conn:
            role = (await conn.execute(query)).scalar_one_or_none()
        return None if role is None else GroupRole(role)

    async def members(self, group_id: str) -> list[Member]:
        query = (
            select(memberships.c.user_id, users.c.username, memberships.c.role)
            .join(users, users.c.id == memberships.c.user_id)
            .where(memberships.c.group_id == group_id)
            .order_by(memberships.c.joined_at)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Member(str(r[0]), str(r[1]), GroupRole(r[2])) for r in rows]

    @uncut_write
    async def set_role(self, group_id: str, user_id: str, role: GroupRole) -> bool:
        """Make a member an admin or a plain member (never touches the owner)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(memberships)
                .where(
                    memberships.c.group_id == group_id,
                    memberships.c.user_id == user_id,
                    memberships.c.role != GroupRole.OWNER,
                )
                .values(role=role)
            )
        return bool(result.rowcount)

    @uncut_write
    async def remove_member(self, group_id: str, user_id: str) -> bool:
        """Remove a member (never the owner: transfer or delete the group instead)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(memberships).where(
                    memberships.c.group_id == group_id,
                    memberships.c.user_id == user_id,
                    memberships.c.role != GroupRole.OWNER,
                )
            )
        return bool(result.rowcount)

    async def memberships(self, user_id: str | None = None) -> dict[str, set[str]]:
        return await memberships_by_user(self._engine, user_id)

    async def find(self, owner_id: str, name: str) -> Group | None:
        query = select(groups).where(groups.c.owner_id == owner_id, groups.c.name == name).order_by(groups.c.created_at)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _group(row) if row else None

    async def all(self) -> list[Group]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(groups).order_by(groups.c.created_at))).mappings().all()
        return [_group(row) for row in rows]

    async def get(self, group_id: str) -> Group | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(groups).where(groups.c.id == group_id))).mappings().first()
        return _group(row) if row else None

    @uncut_write
    async def set_members_can_share(self, group_id: str, allowed: bool) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(update(groups).where(groups.c.id == group_id).values(members_can_share=allowed))

    @uncut_write
    async def update_billing(self, group_id: str, **changes: Any) -> Group:
        """Change the group's billing settings (only the `BILLING_FIELDS` given); the updated group.

        ValueError for an unknown field or an invalid value, NotFoundError if there is no such group.
        """
        _check_billing(changes)
        async with self._engine.begin() as conn:
            if changes:
                result = await conn.execute(update(groups).where(groups.c.id == group_id).values(**changes))
                if not result.rowcount:
                    raise NotFoundError(f"no group {group_id}")
            row = (await conn.execute(select(groups).where(groups.c.id == group_id))).mappings().first()
        if row is None:
            raise NotFoundError(f"no group {group_id}")
        return _group(row)

    @uncut_write
    async def delete(self, group_id: str) -> bool:
        async with self._engine.begin() as conn:
            # Explicit, so it holds on databases where cascades are off.
            await conn.execute(
                delete(invite_redemptions).where(
                    invite_redemptions.c.invite_id.in_(select(invites.c.id).where(invites.c.group_id == group_id))
                )
            )
            await conn.execute(delete(invites).where(invites.c.group_id == group_id))
            await conn.execute(delete(agent_groups).where(agent_groups.c.group_id == group_id))
            await conn.execute(delete(key_groups).where(key_groups.c.group_id == group_id))
            await conn.execute(delete(memberships).where(memberships.c.group_id == group_id))
            result = await conn.execute(delete(groups).where(groups.c.id == group_id))
        return bool(result.rowcount)

    # -- invites ----------------------------------------------------------------------------------

    @uncut_write
    async def create_invite(
        self, group_id: str, created_by: str, max_uses: int, expires_at: datetime
    ) -> tuple[Invite, str]:
        """A new invite; the code is returned once and only its hash is kept."""
        code = new_secret(INVITE_PREFIX)
        invite = Invite(new_id("inv"), group_id, max_uses, 0, expires_at, revoked=False)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(invites).values(
                    id=invite.id,
                    group_id=group_id,
                    secret_hash=hash_secret(code),
                    created_by=created_by,
                    max_uses=max_uses,
                    uses=0,
                    expires_at=expires_at,
                    created_at=datetime.now(UTC),
                )
            )
        return invite, code

    async def invites(self, group_id: str) -> list[Invite]:
        query = select(invites).where(invites.c.group_id == group_id).order_by(invites.c.created_at)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Invite(r["id"], r["group_id"], r["max_uses"], r["uses"], r["expires_at"], r["revoked_at"] is not None)
            for r in rows
        ]

    @uncut_write
    async def revoke_invite(self, group_id: str, invite_id: str) -> None:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(invites)
                .where(invites.c.id == invite_id, invites.c.group_id == group_id)
                .values(revoked_at=datetime.now(UTC))
            )
        if not result.rowcount:
            raise NotFoundError(f"no invite {invite_id}")

    async def live_invite(self, code: str) -> tuple[Invite, str] | None:
        """The invite with this code and its group's name, while it can still be redeemed; None otherwise."""
        query = (
            select(invites, groups.c.name.label("group_name"))
            .join(groups, groups.c.id == invites.c.group_id)
            .where(
                invites.c.secret_hash == hash_secret(code),
                invites.c.uses < invites.c.max_uses,
                invites.c.revoked_at.is_(None),
                invites.c.expires_at > datetime.now(UTC),
            )
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        invite = Invite(row["id"], row["group_id"], row["max_uses"], row["uses"], row["expires_at"], revoked=False)
        return invite, str(row["group_name"])

    @uncut_write
    async def redeem(self, code: str, user_id: str) -> str:
        """Join the invite's group; its id. InvalidInviteError, or ConflictError if already in it."""
        now = datetime.now(UTC)
        secret_hash = hash_secret(code)
        try:
            async with self._engine.begin() as conn:
                row = (
                    await conn.execute(
                        select(invites.c.id, invites.c.group_id).where(invites.c.secret_hash == secret_hash)
                    )
                ).first()
                if row is None:
                    raise InvalidInviteError("invalid invite")
                invite_id, group_id = str(row[0]), str(row[1])
                if await _is_member(conn, group_id, user_id):
                    raise ConflictError("already a member of this group")
                taken = await conn.execute(
                    update(invites)
                    .where(
                        invites.c.id == invite_id,
                        invites.c.uses < invites.c.max_uses,
                        invites.c.revoked_at.is_(None),
                        invites.c.expires_at > now,
                    )
                    .values(uses=invites.c.uses + 1)
                )
                if taken.rowcount != 1:
                    raise InvalidInviteError("invalid invite")
                await conn.execute(
                    insert(invite_redemptions).values(invite_id=invite_id, user_id=user_id, redeemed_at=now)
                )
                await conn.execute(
                    insert(memberships).values(group_id=group_id, user_id=user_id, role=GroupRole.MEMBER, joined_at=now)
                )
        except IntegrityError as exc:
            # A second redemption of the same code by the same user (after leaving), or a join race.
            raise ConflictError("this invite was already used by this user") from exc
        return group_id


def _group(row: Any) -> Group:
    return Group(
        row["id"],
        row["name"],
        row["owner_id"],
        row["created_at"],
        members_can_share=bool(row["members_can_share"]),
        billing=BillingMode(row["billing"]),
        dynamic_pricing=bool(row["dynamic_pricing"]),
        min_price_per_mtok=row["min_price_per_mtok"],
        max_price_per_mtok=row["max_price_per_mtok"],
        default_input_per_mtok=float(row["default_input_per_mtok"]),
        default_output_per_mtok=float(row["default_output_per_mtok"]),
        max_tokens_cap=int(row["max_tokens_cap"]),
        bill_backend_errors=bool(row["bill_backend_errors"]),
    )


def _check_billing(changes: dict[str, Any]) -> None:
    unknown = set(changes) - BILLING_FIELDS
    if unknown:
        raise ValueError(f"not a billing setting: {', '.join(sorted(unknown))}")
    if "billing" in changes and changes["billing"] not in set(BillingMode):
        raise ValueError(f"billing must be one of {', '.join(BillingMode)}")
    for name in ("min_price_per_mtok", "max_price_per_mtok", "default_input_per_mtok", "default_output_per_mtok"):
        value = changes.get(name)
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative")
    for name in (
        "billing",
        "dynamic_pricing",
        "default_input_per_mtok",
        "default_output_per_mtok",
        "max_tokens_cap",
        "bill_backend_errors",
    ):
        if name in changes and changes[name] is None:
            raise ValueError(f"{name} cannot be unset")
    if "max_tokens_cap" in changes and changes["max_tokens_cap"] < 1:
        raise ValueError("max_tokens_cap must be at least 1")


async def _is_member(conn: AsyncConnection, group_id: str, user_id: str) -> bool:
    query = select(memberships.c.user_id).where(memberships.c.group_id == group_id, memberships.c.user_id == user_id)
    return (await conn.execute(query)).first() is not None


async def memberships_by_user(engine: AsyncEngine, user_id: str | None = None) -> dict[str, set[str]]:
    """User id -> the groups the user is in (for one user, or everyone)."""
    query = select(memberships.c.user_id, memberships.c.group_id)
    if user_id is not None:
        query = query.where(memberships.c.user_id == user_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    result: dict[str, set[str]] = {}
    for uid, gid in rows:
        result.setdefault(str(uid), set()).add(str(gid))
    return result
