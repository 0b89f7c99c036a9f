"""Pricing math: costs, bounds, fees, holds, the dynamic multiplier, plausibility of reported tokens."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from potluck.hub.pricing import (
    COMPLETION_SLACK_TOKENS,
    MICRO,
    TEMPLATE_ALLOWANCE_TOKENS,
    clamp_price,
    cost,
    dynamic_multiplier,
    estimate_tokens,
    hold_amount,
    implausible,
    max_tokens_of,
    split,
    validate_prices,
)
from potluck.store.billing import Price

# -- cost -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "completion", "price", "multiplier", "expected"),
    [
        (0, 0, Price(1.0, 2.0), 1.0, 0),
        (1_000_000, 0, Price(1.0, 2.0), 1.0, MICRO),  # a million tokens at 1 credit/Mtok: one credit
        (0, 1_000_000, Price(1.0, 2.0), 1.0, 2 * MICRO),
        (1000, 500, Price(0.15, 0.6), 1.0, 450),  # 150 + 300
        (3, 0, Price(0.15, 0.0), 1.0, 0),  # 0.45 rounds down
        (10, 0, Price(0.15, 0.0), 1.0, 2),  # 1.5 rounds half up (not to even)
        (5, 0, Price(0.5, 0.0), 1.0, 3),  # 2.5 rounds half up (not to even)
        (1, 0, Price(0.5, 0.0), 1.0, 1),  # 0.5 rounds up
        (1, 0, Price(0.49, 0.0), 1.0, 0),
        (1000, 500, Price(0.15, 0.6), 1.5, 675),
        (1000, 500, Price(0.15, 0.6), 0.5, 225),
        (1000, 500, Price(0.15, 0.6), 0.0, 0),
        (7, 3, Price(0.1, 0.7), 1.0, 3),  # 0.7 + 2.1 = 2.8, exact in decimal
        (123_456, 7_890, Price(3.0, 15.0), 1.0, 488_718),
    ],
)
def test_cost_is_tokens_times_price_in_micro_credits_rounded_half_up(
    prompt: int, completion: int, price: Price, multiplier: float, expected: int
) -> None:
    assert cost(prompt, completion, price, multiplier) == expected


@pytest.mark.parametrize(
    ("prompt", "completion", "price", "multiplier"),
    [
        (-1, 0, Price(1.0, 1.0), 1.0),
        (0, -1, Price(1.0, 1.0), 1.0),
        (1, 1, Price(-1.0, 1.0), 1.0),
        (1, 1, Price(1.0, math.inf), 1.0),
        (1, 1, Price(1.0, 1.0), -0.5),
        (1, 1, Price(1.0, 1.0), math.nan),
    ],
)
def test_cost_refuses_negative_or_non_finite_inputs(
    prompt: int, completion: int, price: Price, multiplier: float
) -> None:
    with pytest.raises(ValueError, match=r"negative|finite"):
        cost(prompt, completion, price, multiplier)


# -- bounds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "minimum", "maximum", "expected"),
    [
        (Price(1.0, 2.0), None, None, Price(1.0, 2.0)),
        (Price(1.0, 2.0), 1.5, None, Price(1.5, 2.0)),
        (Price(1.0, 2.0), None, 1.5, Price(1.0, 1.5)),
        (Price(0.1, 9.0), 0.5, 3.0, Price(0.5, 3.0)),
        (Price(-1.0, 2.0), None, None, Price(0.0, 2.0)),
        (Price(-1.0, 2.0), 0.25, None, Price(0.25, 2.0)),
        (Price(2.0, 2.0), 2.0, 2.0, Price(2.0, 2.0)),
    ],
)
def test_clamp_price_holds_each_component_inside_the_group_bounds(
    price: Price, minimum: float | None, maximum: float | None, expected: Price
) -> None:
    assert clamp_price(price, minimum, maximum) == expected


@pytest.mark.parametrize(
    ("prices", "minimum", "maximum"),
    [
        ({"m": Price(1.0, 2.0)}, None, None),
        ({"m": Price(0.0, 0.0)}, None, None),
        ({"m": Price(1.0, 2.0)}, 1.0, 2.0),  # the bounds themselves are allowed
        ({"a": Price(0.5, 0.5), "b": Price(3.0, 3.0)}, 0.5, 3.0),
        ({}, 1.0, 2.0),
    ],
)
def test_prices_inside_the_bounds_are_accepted(
    prices: dict[str, Price], minimum: float | None, maximum: float | None
) -> None:
    validate_prices(prices, minimum, maximum)


@pytest.mark.parametrize(
    ("prices", "minimum", "maximum", "message"),
    [
        ({"llama": Price(0.4, 2.0)}, 0.5, None, "llama: the input price 0.4 is below this group's minimum of 0.5"),
        ({"llama": Price(1.0, 2.5)}, None, 2.0, "llama: the output price 2.5 is above this group's maximum of 2.0"),
        ({"ok": Price(1.0, 1.0), "qwen": Price(1.0, 9.0)}, 0.0, 5.0, "qwen: the output price 9.0 is above"),
        ({"llama": Price(-0.1, 1.0)}, None, None, "llama: the input price must be a finite number >= 0"),
        ({"llama": Price(1.0, math.nan)}, None, None, "llama: the output price must be a finite number >= 0"),
        ({"llama": Price(1.0, 1.0)}, 2.0, 1.0, "minimum price 2.0 is above its maximum 1.0"),
        ({"llama": Price(1.0, 1.0)}, -1.0, None, "minimum price must be a finite number >= 0"),
    ],
)
def test_prices_outside_the_bounds_or_negative_are_refused_with_a_reason(
    prices: dict[str, Price], minimum: float | None, maximum: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        validate_prices(prices, minimum, maximum)


# -- fee split --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charge", "fee_percent", "expected"),
    [
        (1000, 0, (0, 1000)),
        (1000, 100, (1000, 0)),
        (1000, 5, (50, 950)),
        (999, 5, (49, 950)),  # 49.95 rounds down
        (1, 99.9, (0, 1)),
        (0, 50, (0, 0)),
        (333, 33.3, (110, 223)),  # 110.889 rounds down
        (10**15, 2.5, (25 * 10**12, 975 * 10**12)),  # no float error on large amounts
    ],
)
def test_split_rounds_the_fee_down_and_the_owner_earns_the_rest(
    charge: int, fee_percent: float, expected: tuple[int, int]
) -> None:
    fee, earned = split(charge, fee_percent)
    assert (fee, earned) == expected
    assert fee + earned == charge


@pytest.mark.parametrize(("charge", "fee_percent"), [(-1, 5), (100, -0.1), (100, 100.1)])
def test_split_refuses_a_negative_charge_or_a_fee_outside_0_to_100(charge: int, fee_percent: float) -> None:
    with pytest.raises(ValueError, match=r"negative|between 0 and 100"):
        split(charge, fee_percent)


# -- holds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body_bytes", "max_tokens", "cap", "multiplier", "prompt_tokens", "completion_tokens"),
    [
        (2000, 100, 4096, 1.0, 2000 + TEMPLATE_ALLOWANCE_TOKENS, 100),
        (2000, None, 4096, 1.0, 2000 + TEMPLATE_ALLOWANCE_TOKENS, 4096),  # no max_tokens: the cap
        (2000, 10_000, 4096, 1.0, 2000 + TEMPLATE_ALLOWANCE_TOKENS, 10_000),  # above the cap: still held
        (2000, 0, 4096, 1.0, 2000 + TEMPLATE_ALLOWANCE_TOKENS, 0),
        (0, None, 0, 2.0, TEMPLATE_ALLOWANCE_TOKENS, 0),
        (500, 256, 4096, 2.5, 500 + TEMPLATE_ALLOWANCE_TOKENS, 256),
    ],
)
def test_hold_is_the_worst_case_cost(
    body_bytes: int, max_tokens: int | None, cap: int, multiplier: float, prompt_tokens: int, completion_tokens: int
) -> None:
    price = Price(0.3, 1.2)
    held = hold_amount(body_bytes, max_tokens, cap, price, multiplier)
    assert held == cost(prompt_tokens, completion_tokens, price, multiplier)
    assert held > 0 or multiplier == 0


def test_hold_covers_every_charge_that_is_not_implausible() -> None:
    price = Price(0.3, 1.2)
    body_bytes, max_tokens = 3000, 500
    held = hold_amount(body_bytes, max_tokens, 4096, price, 1.5)
    worst_prompt = body_bytes + TEMPLATE_ALLOWANCE_TOKENS
    assert implausible(worst_prompt, max_tokens, body_bytes, 10**6) is None
    assert implausible(worst_prompt + 1, max_tokens, body_bytes, 10**6) is not None
    assert cost(worst_prompt, max_tokens, price, 1.5) <= held


def test_hold_refuses_negative_sizes() -> None:
    with pytest.raises(ValueError, match="negative"):
        hold_amount(-1, None, 10, Price(1.0, 1.0), 1.0)


# -- max_tokens_of ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model": "m", "max_tokens": 128, "messages": []}', 128),
        (b'{"model": "m", "max_completion_tokens": 64}', 64),
        (b'{"model": "m", "max_output_tokens": 32, "input": "hi"}', 32),
        (b'{"max_tokens": 0}', 0),
        (b'{"max_tokens": 10, "max_completion_tokens": 300}', 300),  # several: the largest
        (b'{"max_tokens": 500, "max_output_tokens": 20}', 500),
        (b'{"model": "m", "messages": [{"role": "user", "content": "max_tokens: 99"}]}', None),
        (b'{"max_tokens": null}', None),
        (b'{"max_tokens": "128"}', None),
        (b'{"max_tokens": -5}', None),
        (b'{"max_tokens": 12.5}', None),
        (b'{"max_tokens": true}', None),
        (b'{"max_tokens": [1], "max_completion_tokens": 7}', 7),  # junk beside a good one: the good one
        (b'{"max_tokens": {"n": 1}}', None),
        (b"[1, 2]", None),
        (b"not json", None),
        (b"", None),
        (b'{"max_tokens": 100', None),
    ],
)
def test_max_tokens_of_reads_the_completion_limit_and_ignores_junk(body: bytes, expected: int | None) -> None:
    assert max_tokens_of(body) == expected


# -- dynamic multiplier -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queue_depth", "in_flight", "capacity", "expected", "reason"),
    [
        (0, 0, 0, 1.0, "no agents serve this model"),
        (5, 0, 0, 1.0, "no agents serve this model"),
        (0, 0, 8, 0.5, "0 of 8 slots busy, none waiting: price lowered x0.5"),
        (0, 2, 8, 0.75, "2 of 8 slots busy, none waiting: price lowered x0.75"),
        (0, 4, 8, 1.0, "4 of 8 slots busy, none waiting: normal price"),
        (0, 8, 8, 1.0, "8 of 8 slots busy, none waiting: normal price"),
        (4, 8, 8, 1.5, "4 waiting, 8 of 8 slots busy: price raised x1.5"),
        (8, 8, 8, 2.0, "8 waiting, 8 of 8 slots busy: price raised x2.0"),
        (100, 8, 8, 3.0, "100 waiting, 8 of 8 slots busy: price raised x3.0 (the ceiling)"),
    ],
)
def test_dynamic_multiplier_follows_supply_and_demand_with_a_reason(
    queue_depth: int, in_flight: int, capacity: int, expected: float, reason: str
) -> None:
    assert dynamic_multiplier(queue_depth, in_flight, capacity) == (expected, reason)


@pytest.mark.parametrize(("floor", "ceiling"), [(0.5, 3.0), (0.8, 1.2), (1.0, 1.0), (0.1, 10.0)])
def test_dynamic_multiplier_stays_within_floor_and_ceiling_and_never_falls_as_demand_grows(
    floor: float, ceiling: float
) -> None:
    capacity = 6
    grid = {
        (q, f): dynamic_multiplier(q, f, capacity, floor=floor, ceiling=ceiling)[0]
        for q, f in itertools.product(range(80), range(capacity + 3))
    }
    assert all(floor <= m <= ceiling for m in grid.values())
    for (q, f), m in grid.items():
        if (q + 1, f) in grid:
            assert grid[q + 1, f] >= m, f"more queue, lower price at {(q, f)}"
        if (q, f + 1) in grid:
            assert grid[q, f + 1] >= m, f"more in flight, lower price at {(q, f)}"
    assert min(grid.values()) == floor
    assert max(grid.values()) == ceiling


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((-1, 0, 4), {}),
        ((0, -1, 4), {}),
        ((0, 0, -4), {}),
        ((0, 0, 4), {"floor": 0.0}),
        ((0, 0, 4), {"floor": 1.5}),
        ((0, 0, 4), {"ceiling": 0.9}),
        ((0, 0, 4), {"ceiling": math.inf}),
    ],
)
def test_dynamic_multiplier_refuses_nonsense(args: tuple[int, int, int], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"negative|floor"):
        dynamic_multiplier(*args, **kwargs)


# -- estimates and plausibility ---------------------------------------------------------------------


@pytest.mark.parametrize(("text_bytes", "expected"), [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (400, 100), (401, 101)])
def test_estimate_tokens_is_a_quarter_of_the_bytes_and_at_least_one(text_bytes: int, expected: int) -> None:
    assert estimate_tokens(text_bytes) == expected


@pytest.mark.parametrize(
    ("prompt", "completion", "request_bytes", "response_bytes", "reason"),
    [
        (100, 50, 400, 200, None),
        (400 + TEMPLATE_ALLOWANCE_TOKENS, 200 + COMPLETION_SLACK_TOKENS, 400, 200, None),  # at the limits
        (0, 0, 0, 0, None),
        (0, COMPLETION_SLACK_TOKENS, 10, 0, None),  # only special tokens
        (100, 200 + COMPLETION_SLACK_TOKENS + 1, 400, 200, "completion tokens reported, but only 200 bytes"),
        (100, 10_000, 400, 200, "10000 completion tokens reported"),
        (400 + TEMPLATE_ALLOWANCE_TOKENS + 1, 50, 400, 200, "prompt tokens reported for a 400-byte request"),
        (-1, 5, 400, 200, "negative"),
        (5, -1, 400, 200, "negative"),
    ],
)
def test_implausible_names_token_counts_that_cannot_be_true(
    prompt: int, completion: int, request_bytes: int, response_bytes: int, reason: str | None
) -> None:
    found = implausible(prompt, completion, request_bytes, response_bytes)
    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert reason in found
