"""What browser sign-up and password change need from the store: a peek at a live invite that uses
nothing, a new password hash, and ending a user's other login sessions (never their personal tokens)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from potluck.protocol.accounts import UserRole
from potluck.store.database import Store


async def test_a_live_invite_is_seen_without_using_it_and_a_dead_one_is_not(store: Store) -> None:
    owner = await store.users.create("owner", "hash", UserRole.USER)
    group = await store.groups.create("lab", owner.id)
    later = datetime.now(UTC) + timedelta(hours=1)
    invite, code = await store.groups.create_invite(group.id, owner.id, 1, later)

    for _ in range(3):
        found = await store.groups.live_invite(code)
        assert found is not None
        assert found[0].id == invite.id
        assert found[1] == "lab"
    assert (await store.groups.invites(group.id))[0].uses == 0
    assert await store.groups.live_invite("pinv-unknown") is None

    joiner = await store.users.create("joiner", "hash", UserRole.USER)
    await store.groups.redeem(code, joiner.id)
    assert await store.groups.live_invite(code) is None

    revoked, revoked_code = await store.groups.create_invite(group.id, owner.id, 5, later)
    await store.groups.revoke_invite(group.id, revoked.id)
    assert await store.groups.live_invite(revoked_code) is None
    _, expired_code = await store.groups.create_invite(group.id, owner.id, 5, datetime.now(UTC) - timedelta(seconds=1))
    assert await store.groups.live_invite(expired_code) is None


async def test_revoking_sessions_keeps_the_current_one_and_personal_tokens(store: Store) -> None:
    user = await store.users.create("alice", "old-hash", UserRole.USER)
    other = await store.users.create("bob", "hash", UserRole.USER)
    _, current = await store.users.create_token(user.id, "session", "login", timedelta(days=1))
    _, stale = await store.users.create_token(user.id, "session", "login", timedelta(days=1))
    _, pat = await store.users.create_token(user.id, "pat", "ci", None)
    _, bobs = await store.users.create_token(other.id, "session", "login", timedelta(days=1))

    await store.users.set_password(user.id, "new-hash")
    assert await store.users.revoke_sessions(user.id, keep_secret=current) == 1

    assert await store.users.user_for_token(current) is not None
    assert await store.users.user_for_token(stale) is None
    assert await store.users.user_for_token(pat) is not None
    assert await store.users.user_for_token(bobs) is not None
    refreshed = await store.users.by_username("alice")
    assert refreshed is not None
    assert refreshed.password_hash == "new-hash"
