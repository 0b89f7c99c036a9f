"""Agent prices and group billing settings in the store."""

from __future__ import annotations

import math

import pytest

from potluck.protocol.accounts import UserRole
from potluck.store.billing import Price
from potluck.store.database import Store
from potluck.store.errors import NotFoundError


async def enrol(store: Store, key: bytes) -> str:
    token = await store.agents.create_token("t")
    return (await store.agents.enrol(token.token, key * 32, "gpu")).id


async def test_set_prices_replaces_all_of_that_agents_prices_and_no_other(store: Store) -> None:
    first, second = await enrol(store, b"A"), await enrol(store, b"B")
    await store.billing.set_prices(first, {"llama": (0.5, 1.5), "qwen": (0.1, 0.2)})
    await store.billing.set_prices(second, {"llama": (9.0, 9.0)})

    await store.billing.set_prices(first, {"qwen": (0.3, 0.4)})

    assert await store.billing.prices_of(first) == {"qwen": Price(0.3, 0.4)}
    assert await store.billing.prices() == {first: {"qwen": Price(0.3, 0.4)}, second: {"llama": Price(9.0, 9.0)}}


async def test_empty_prices_clear_the_agent_and_unknown_agents_have_none(store: Store) -> None:
    agent = await enrol(store, b"A")
    await store.billing.set_prices(agent, {"llama": (1.0, 2.0)})
    await store.billing.set_prices(agent, {})
    assert await store.billing.prices_of(agent) == {}
    assert await store.billing.prices_of("agt_missing") == {}


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan])
async def test_negative_or_non_finite_prices_are_refused(store: Store, bad: float) -> None:
    agent = await enrol(store, b"A")
    await store.billing.set_prices(agent, {"llama": (1.0, 2.0)})
    with pytest.raises(ValueError, match="price"):
        await store.billing.set_prices(agent, {"llama": (1.0, bad)})
    assert await store.billing.prices_of(agent) == {"llama": Price(1.0, 2.0)}


async def test_group_billing_settings_default_to_mutual_and_update_only_what_is_given(store: Store) -> None:
    owner = await store.users.create("owner", "hash", UserRole.USER)
    group = await store.groups.create("lab", owner.id)
    assert (group.billing, group.max_tokens_cap) == ("mutual", 4096)

    updated = await store.groups.update_billing(
        group.id, billing="credits", default_input_per_mtok=0.25, default_output_per_mtok=1.0, max_price_per_mtok=5.0
    )
    again = await store.groups.update_billing(group.id, dynamic_pricing=True, max_tokens_cap=1024)

    assert (updated.billing, updated.default_input_per_mtok, updated.max_price_per_mtok) == ("credits", 0.25, 5.0)
    assert again == await store.groups.get(group.id)
    assert (again.billing, again.dynamic_pricing, again.max_tokens_cap, again.min_price_per_mtok) == (
        "credits",
        True,
        1024,
        None,
    )
    [(listed, _role)] = await store.groups.for_user(owner.id)
    assert listed == again
    assert await store.groups.find(owner.id, "lab") == again


async def test_group_billing_bounds_can_be_unset_again(store: Store) -> None:
    owner = await store.users.create("owner", "hash", UserRole.USER)
    group = await store.groups.create("lab", owner.id)
    await store.groups.update_billing(group.id, min_price_per_mtok=0.5)
    assert (await store.groups.update_billing(group.id, min_price_per_mtok=None)).min_price_per_mtok is None


@pytest.mark.parametrize(
    "changes",
    [
        {"billing": "free"},
        {"name": "renamed"},
        {"default_input_per_mtok": -1.0},
        {"max_tokens_cap": 0},
        {"billing": None},
    ],
)
async def test_invalid_billing_changes_are_refused(store: Store, changes: dict[str, object]) -> None:
    owner = await store.users.create("owner", "hash", UserRole.USER)
    group = await store.groups.create("lab", owner.id)
    with pytest.raises(ValueError, match=r"billing|setting|negative|max_tokens_cap|unset"):
        await store.groups.update_billing(group.id, **changes)
    assert await store.groups.get(group.id) == group


async def test_updating_billing_of_a_missing_group_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.groups.update_billing("grp_missing", billing="credits")
    with pytest.raises(NotFoundError):
        await store.groups.update_billing("grp_missing")
