"""A group's model claims in the store: policies, approvals, holds and rules, and their cascades."""

from __future__ import annotations

from datetime import UTC, datetime

from potluck.protocol.accounts import ClaimPolicy, HoldKind, UserRole
from potluck.store.claims import ALL_MODELS, Change, ClaimEvent, Hold, ModelRule
from potluck.store.database import Store


async def _setup(store: Store) -> tuple[str, str, str]:
    user = await store.users.create("olga", None, UserRole.USER)
    group = await store.groups.create("market", user.id)
    token = await store.agents.create_token("t")
    agent = await store.agents.enrol(token.token, b"A" * 32, "gpu")
    return user.id, group.id, agent.id


async def test_policies_approvals_holds_and_rules_round_trip(store: Store) -> None:
    user, group, agent = await _setup(store)
    await store.claims.set_policy(group, ClaimPolicy.APPROVED)
    await store.claims.set_policy(group, ClaimPolicy.APPROVED)  # setting it again is no conflict
    assert await store.claims.policies() == {group: ClaimPolicy.APPROVED}

    await store.claims.approve(group, agent, "llama", user)
    await store.claims.approve(group, agent, "llama", user)
    assert [(a.agent_id, a.model, a.approved_by) for a in await store.claims.approvals(group)] == [
        (agent, "llama", user)
    ]
    assert await store.claims.revoke(group, agent, "llama")
    assert not await store.claims.revoke(group, agent, "llama")

    since = datetime(2026, 12, 4, tzinfo=UTC)
    await store.claims.put_hold(Hold(group, agent, "llama", HoldKind.FLAGGED, "disagreed", since))
    await store.claims.put_hold(Hold(group, agent, "llama", HoldKind.PARKED, "slow", since))
    assert {(h.kind, h.reason) for h in await store.claims.holds()} == {
        (HoldKind.FLAGGED, "disagreed"),
        (HoldKind.PARKED, "slow"),
    }
    assert await store.claims.clear_hold(group, agent, "llama", HoldKind.PARKED) == 1
    assert await store.claims.clear_hold(group, agent, "llama") == 1
    assert await store.claims.holds() == []

    await store.claims.put_rule(ModelRule(group, ALL_MODELS, min_tokens_per_s=20.0))
    await store.claims.put_rule(ModelRule(group, "llama", None, "Say ok", "ok"))
    assert await store.claims.rules(group) == [
        ModelRule(group, ALL_MODELS, 20.0, None, None),
        ModelRule(group, "llama", None, "Say ok", "ok"),
    ]
    await store.claims.put_rule(ModelRule(group, "llama"))  # nothing in it: removed
    assert [r.model for r in await store.claims.rules()] == [ALL_MODELS]


async def test_a_deleted_group_takes_its_claims_along(store: Store) -> None:
    user, group, agent = await _setup(store)
    await store.claims.set_policy(group, ClaimPolicy.APPROVED)
    await store.claims.approve(group, agent, "llama", user)
    await store.claims.put_hold(Hold(group, agent, "llama", HoldKind.FLAGGED, "x", datetime.now(UTC)))
    await store.claims.put_rule(ModelRule(group, "llama", min_tokens_per_s=1.0))

    await store.groups.delete(group)

    assert await store.claims.policies() == {}
    assert await store.claims.approvals() == []
    assert await store.claims.holds() == []
    assert await store.claims.rules() == []


async def test_hold_events_are_stored_with_their_change_and_read_newest_first_per_agent(store: Store) -> None:
    _user, group, agent = await _setup(store)
    other = (await store.agents.enrol((await store.agents.create_token("u")).token, b"B" * 32, "gpu2")).id
    at = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)
    held = ClaimEvent(at, Change.HELD, group, agent, "llama", HoldKind.PARKED, "slow")
    await store.claims.put_hold(Hold(group, agent, "llama", HoldKind.PARKED, "slow", at), [held])
    elsewhere = ClaimEvent(at, Change.HELD, group, other, "llama", HoldKind.FLAGGED, "disagreed")
    await store.claims.put_hold(Hold(group, other, "llama", HoldKind.FLAGGED, "disagreed", at), [elsewhere])
    lifted = ClaimEvent(at, Change.LIFTED, group, agent, "llama", HoldKind.PARKED, "slow")
    assert await store.claims.clear_hold(group, agent, "llama", HoldKind.PARKED, [lifted]) == 1

    assert await store.claims.events({agent}, 10) == [lifted, held]  # the same instant, in the order stored
    assert await store.claims.events({agent}, 1) == [lifted]
    assert await store.claims.events({agent, other}, 10) == [lifted, elsewhere, held]
    assert await store.claims.events(set(), 10) == []
    await store.groups.delete(group)
    assert await store.claims.events({agent, other}, 10) == []  # a deleted group takes its events along
