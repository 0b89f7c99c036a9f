"""Users, groups and invites in the store: hashing at rest and race-safe redemption."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from potluck.protocol.accounts import UserRole
from potluck.store.database import Store
from potluck.store.errors import ConflictError
from potluck.store.groups import InvalidInviteError


async def test_twenty_concurrent_redemptions_of_a_one_use_code_admit_exactly_one(store: Store) -> None:
    owner = await store.users.create("owner", "hash", UserRole.USER)
    group = await store.groups.create("lab", owner.id)
    _invite, code = await store.groups.create_invite(group.id, owner.id, 1, datetime.now(UTC) + timedelta(hours=1))
    joiners = [await store.users.create(f"user{i:02d}", "hash", UserRole.USER) for i in range(20)]

    results = await asyncio.gather(*(store.groups.redeem(code, u.id) for u in joiners), return_exceptions=True)

    admitted = [r for r in results if r == group.id]
    refused = [r for r in results if isinstance(r, InvalidInviteError)]
    assert len(admitted) == 1, results
    assert len(refused) == 19, results
    assert len(await store.groups.members(group.id)) == 2
    assert (await store.groups.invites(group.id))[0].uses == 1


async def test_a_code_is_used_once_per_user_and_a_member_spends_no_use(store: Store) -> None:
    owner = await store.users.create("owner", "hash", UserRole.USER)
    joiner = await store.users.create("joiner", "hash", UserRole.USER)
    group = await store.groups.create("lab", owner.id)
    _invite, code = await store.groups.create_invite(group.id, owner.id, 5, datetime.now(UTC) + timedelta(hours=1))

    assert await store.groups.redeem(code, joiner.id) == group.id
    with pytest.raises(ConflictError):
        await store.groups.redeem(code, joiner.id)  # already a member
    assert await store.groups.remove_member(group.id, joiner.id)
    with pytest.raises(ConflictError):
        await store.groups.redeem(code, joiner.id)  # left, but this code was already theirs once
    assert (await store.groups.invites(group.id))[0].uses == 1


async def test_expired_and_revoked_codes_are_refused(store: Store) -> None:
    owner = await store.users.create("owner", "hash", UserRole.USER)
    joiner = await store.users.create("joiner", "hash", UserRole.USER)
    group = await store.groups.create("lab", owner.id)
    _old, expired = await store.groups.create_invite(group.id, owner.id, 5, datetime.now(UTC) - timedelta(seconds=1))
    revoked_invite, revoked = await store.groups.create_invite(
        group.id, owner.id, 5, datetime.now(UTC) + timedelta(hours=1)
    )
    await store.groups.revoke_invite(group.id, revoked_invite.id)

    for code in (expired, revoked, "pinv-not-a-code"):
        with pytest.raises(InvalidInviteError):
            await store.groups.redeem(code, joiner.id)
    assert [m.username for m in await store.groups.members(group.id)] == ["owner"]


async def test_deleting_a_group_removes_members_and_invites(store: Store) -> None:
    owner = await store.users.create("owner", "hash", UserRole.USER)
    group = await store.groups.create("lab", owner.id)
    _invite, code = await store.groups.create_invite(group.id, owner.id, 5, datetime.now(UTC) + timedelta(hours=1))
    assert await store.groups.delete(group.id)
    assert await store.groups.for_user(owner.id) == []
    with pytest.raises(InvalidInviteError):
        await store.groups.redeem(code, owner.id)
