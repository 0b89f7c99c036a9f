"""Pricing math for accounting: costs, holds, fees, the dynamic multiplier, token plausibility. No I/O.

Amounts are integers in micro-credits (µcr; 1 credit = 1_000_000 µcr). Prices are credits per
million tokens, so ``tokens * price_per_mtok`` is µcr. Arithmetic is done in `decimal.Decimal` on
the prices as written (``str(float)``), so ``0.15`` credits/Mtok times 3 tokens is exactly 0.45 µcr
before rounding, not 0.44999….
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

import msgspec

from potluck.store.billing import Price

MICRO = 1_000_000
"""µcr per credit."""

TEMPLATE_ALLOWANCE_TOKENS = 1024
"""Prompt tokens a backend may add to a request's own text (chat template, system prompt, tool schema)."""

COMPLETION_SLACK_TOKENS = 16
"""Completion tokens that may produce no output bytes (end-of-sequence and other special tokens)."""

BYTES_PER_TOKEN_ESTIMATE = 4


def _dec(value: float) -> Decimal:
    return Decimal(str(value))


def _half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def cost(prompt_tokens: int, completion_tokens: int, price: Price, multiplier: float = 1.0) -> int:
    """µcr for a request: ``(prompt * input + completion * output) * multiplier``, rounded half up."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError(f"token counts cannot be negative ({prompt_tokens}, {completion_tokens})")
    if multiplier < 0 or not math.isfinite(multiplier):
        raise ValueError(f"the multiplier must be a finite number >= 0, not {multiplier}")
    _check_price(price, "price")
    total = prompt_tokens * _dec(price.input_per_mtok) + completion_tokens * _dec(price.output_per_mtok)
    return _half_up(total * _dec(multiplier))


def _check_price(price: Price, what: str) -> None:
    for name, value in (("input", price.input_per_mtok), ("output", price.output_per_mtok)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{what}: the {name} price must be a finite number >= 0 credits per million tokens")


def _check_bounds(minimum: float | None, maximum: float | None) -> None:
    for name, bound in (("minimum", minimum), ("maximum", maximum)):
        if bound is not None and (not math.isfinite(bound) or bound < 0):
            raise ValueError(f"the group's {name} price must be a finite number >= 0, not {bound}")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ValueError(f"the group's minimum price {minimum} is above its maximum {maximum}")


def clamp_price(price: Price, minimum: float | None, maximum: float | None) -> Price:
    """``price`` with each component held inside the group's bounds (credits/Mtok; None: unbounded).

    Negative components become the minimum, or 0 without one. Use it when a group's bounds change
    after owners set their prices.
    """
    _check_bounds(minimum, maximum)

    def clamp(value: float) -> float:
        value = max(value, minimum if minimum is not None else 0.0)
        return min(value, maximum) if maximum is not None else value

    return Price(clamp(price.input_per_mtok), clamp(price.output_per_mtok))


def validate_prices(prices: Mapping[str, Price], minimum: float | None, maximum: float | None) -> None:
    """Check an owner's prices (model -> price) against the group's bounds (credits/Mtok; None: unbounded).

    Raises `ValueError` naming the model and the bound for a negative or non-finite price, or one
    outside ``[minimum, maximum]`` (the bounds themselves are allowed).
    """
    _check_bounds(minimum, maximum)
    for model, price in prices.items():
        _check_price(price, model)
        for name, value in (("input", price.input_per_mtok), ("output", price.output_per_mtok)):
            if minimum is not None and value < minimum:
                raise ValueError(
                    f"{model}: the {name} price {value} is below this group's minimum of {minimum} credits per "
                    "million tokens"
                )
            if maximum is not None and value > maximum:
                raise ValueError(
                    f"{model}: the {name} price {value} is above this group's maximum of {maximum} credits per "
                    "million tokens"
                )


def split(charge: int, fee_percent: float) -> tuple[int, int]:
    """``(fee, earned)`` of a charge: the fee is ``fee_percent`` of it rounded down, the rest is earned."""
    if charge < 0:
        raise ValueError(f"a charge cannot be negative ({charge})")
    if not 0 <= fee_percent <= 100:
        raise ValueError(f"the fee must be between 0 and 100 percent, not {fee_percent}")
    fee = int((charge * _dec(fee_percent) / 100).to_integral_value(rounding=ROUND_FLOOR))
    return fee, charge - fee


def hold_amount(body_bytes: int, max_tokens: int | None, cap: int, price: Price, multiplier: float) -> int:
    """µcr to hold before a request runs: the most it can cost.

    Prompt tokens are bounded by the body's size in bytes, because a token covers at least one byte
    of text and the JSON around the text only adds bytes, plus `TEMPLATE_ALLOWANCE_TOKENS` for the
    backend's chat template: the same bound `implausible` accepts, so no charge it lets through
    exceeds the hold. Completion tokens are ``max_tokens`` when the client gave it, even above
    ``cap``, else ``cap`` (the group's ``max_tokens_cap``).
    """
    if body_bytes < 0 or cap < 0:
        raise ValueError(f"body size and cap cannot be negative ({body_bytes}, {cap})")
    completion = max_tokens if max_tokens is not None and max_tokens >= 0 else cap
    return cost(body_bytes + TEMPLATE_ALLOWANCE_TOKENS, completion, price, multiplier)


class _Limits(msgspec.Struct):
    # `object`, not `int`: a malformed value must not fail the whole decode. The rest of the body is
    # skipped by the decoder without building Python objects.
    max_tokens: Any = None
    max_completion_tokens: Any = None
    max_output_tokens: Any = None


_limits_decoder = msgspec.json.Decoder(_Limits)


def max_tokens_of(body: bytes) -> int | None:
    """The completion limit a request body asks for, or None.

    Reads ``max_tokens``, ``max_completion_tokens`` (OpenAI chat) and ``max_output_tokens``
    (Responses API); values that are not non-negative integers are ignored. With more than one, the
    largest (a backend may honour any of them). A body that is not a JSON object gives None.
    """
    try:
        limits = _limits_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    values = [
        value
        for value in (limits.max_tokens, limits.max_completion_tokens, limits.max_output_tokens)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0
    ]
    return max(values) if values else None


def dynamic_multiplier(
    queue_depth: int, in_flight: int, capacity: int, *, floor: float = 0.5, ceiling: float = 3.0
) -> tuple[float, str]:
    """A bounded supply/demand price multiplier for one model, and why, in words.

    With ``u = in_flight / capacity`` (clamped to [0, 1]) and ``d = queue_depth / capacity``:

    - no capacity (no agent serves the model): 1.0;
    - a queue (``d > 0``): ``min(ceiling, 1 + d)``; a queue as long as the capacity doubles the price;
    - no queue, ``u < 0.5``: ``floor + (1 - floor) * u / 0.5``; from ``floor`` when idle up to 1.0;
    - no queue, ``u >= 0.5``: 1.0.

    The result is rounded to 2 decimals and lies in ``[floor, ceiling]``. It never decreases as
    ``queue_depth`` or ``in_flight`` grows (for a fixed capacity).
    """
    if queue_depth < 0 or in_flight < 0 or capacity < 0:
        raise ValueError(f"counts cannot be negative ({queue_depth}, {in_flight}, {capacity})")
    if not 0 < floor <= 1 <= ceiling or not math.isfinite(ceiling):
        raise ValueError(f"need 0 < floor <= 1 <= ceiling, got floor={floor}, ceiling={ceiling}")
    if capacity == 0:
        return 1.0, "no agents serve this model"
    busy = f"{min(in_flight, capacity)} of {capacity} slots busy"
    if queue_depth > 0:
        multiplier = min(ceiling, round(1 + queue_depth / capacity, 2))
        at_ceiling = " (the ceiling)" if multiplier >= ceiling else ""
        return multiplier, f"{queue_depth} waiting, {busy}: price raised x{multiplier}{at_ceiling}"
    utilization = min(in_flight / capacity, 1.0)
    if utilization < 0.5:
        multiplier = max(floor, round(floor + (1 - floor) * utilization / 0.5, 2))
        return multiplier, f"{busy}, none waiting: price lowered x{multiplier}"
    return 1.0, f"{busy}, none waiting: normal price"


def estimate_tokens(text_bytes: int) -> int:
    """Roughly how many tokens ``text_bytes`` bytes of text are (4 bytes a token); at least 1 unless empty."""
    if text_bytes <= 0:
        return 0
    return -(-text_bytes // BYTES_PER_TOKEN_ESTIMATE)


def implausible(prompt_reported: int, completion_reported: int, request_bytes: int, response_bytes: int) -> str | None:
    """Why an agent's reported token counts cannot be true, or None when they can be.

    Each completion token is at least one byte of the output the hub relayed, give or take
    `COMPLETION_SLACK_TOKENS` special tokens; each prompt token is at least one byte of the request
    body, plus `TEMPLATE_ALLOWANCE_TOKENS` for what the backend's chat template adds. (A prompt that
    fetches images by URL can exceed this; such a request is flagged, not refused.)
    """
    if prompt_reported < 0 or completion_reported < 0:
        return f"negative token counts reported ({prompt_reported} prompt, {completion_reported} completion)"
    if completion_reported > response_bytes + COMPLETION_SLACK_TOKENS:
        return (
            f"{completion_reported} completion tokens reported, but only {response_bytes} bytes of output were "
            "relayed (a token is at least one byte)"
        )
    if prompt_reported > request_bytes + TEMPLATE_ALLOWANCE_TOKENS:
        return (
            f"{prompt_reported} prompt tokens reported for a {request_bytes}-byte request "
            f"(at most {request_bytes + TEMPLATE_ALLOWANCE_TOKENS} with the chat template)"
        )
    return None
