"""The bounds are one contract: the constants, the request types that carry them, and docs/api.md agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from potluck.hub import bounds

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def limits_table() -> dict[str, str]:
    """The rows of the table under ``## Limits`` in docs/api.md, keyed by their first cell."""
    text = API_MD.read_text()
    match = re.search(r"^## Limits$(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match is not None, "docs/api.md has no '## Limits' section"
    rows = {}
    for line in match.group(1).splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[-1]
    return rows


DOCUMENTED = [
    ("`amount`", f"{bounds.MAX_CREDITS_PER_GRANT:,}"),
    ("`rpm`, `tpm`", f"{bounds.MAX_RATE:,}"),
    ("`max_concurrency`", f"{bounds.MAX_CONCURRENCY:,}"),
    ("`priority`", f"{bounds.MAX_PRIORITY:,}"),
    ("`expires_in_s` of a key", f"{bounds.MAX_KEY_LIFETIME_S:,} s ({bounds.MAX_KEY_LIFETIME_S // 86_400:,} days)"),
    (
        "`expires_in_s` of an invite",
        f"{bounds.MAX_INVITE_LIFETIME_S:,} s ({bounds.MAX_INVITE_LIFETIME_S // 86_400:,} days)",
    ),
    ("`max_uses`", f"{bounds.MAX_INVITE_USES:,}"),
    ("prices (`*_per_mtok`)", f"{bounds.MAX_PRICE_PER_MTOK:,}"),
    ("`max_tokens_cap`", f"{bounds.MAX_TOKENS_CAP:,}"),
    ("alias `models`", f"{bounds.MAX_ALIAS_MODELS:,} models"),
    ("`schedule`", f"{bounds.MAX_SCHEDULE_WINDOWS:,} windows"),
    ("`since`, `until`", bounds.LAST_DAY.isoformat()),
    ("`rounds`", f"{bounds.MAX_SPOT_CHECK_ROUNDS:,}"),
    ("`min_tokens_per_s`", f"{bounds.MAX_TOKENS_PER_S:,}"),
    ("`reference_prompt`, `reference_answer`", f"{bounds.MAX_REFERENCE_CHARS:,} characters"),
]


@pytest.mark.parametrize(("field", "maximum"), DOCUMENTED)
def test_each_bound_is_documented_with_its_value(field: str, maximum: str) -> None:
    rows = limits_table()
    assert field in rows, f"{field} is missing from the Limits table of docs/api.md"
    assert maximum in rows[field], f"{field}: the code allows up to {maximum}, docs/api.md says {rows[field]!r}"


def test_the_limits_table_lists_nothing_else() -> None:
    assert set(limits_table()) - {"field"} == {field for field, _ in DOCUMENTED}


# (the annotated type, its largest value, the smallest refused above it, the smallest allowed)
TYPES: list[tuple[Any, Any, Any, Any]] = [
    (bounds.Credits, float(bounds.MAX_CREDITS_PER_GRANT), bounds.MAX_CREDITS_PER_GRANT * 1.000001, 1e-6),
    (bounds.Rate, bounds.MAX_RATE, bounds.MAX_RATE + 1, 1),
    (bounds.Concurrency, bounds.MAX_CONCURRENCY, bounds.MAX_CONCURRENCY + 1, 1),
    (bounds.Priority, bounds.MAX_PRIORITY, bounds.MAX_PRIORITY + 1, 1),
    (bounds.KeyLifetime, bounds.MAX_KEY_LIFETIME_S, bounds.MAX_KEY_LIFETIME_S + 1, 1),
    (bounds.InviteLifetime, bounds.MAX_INVITE_LIFETIME_S, bounds.MAX_INVITE_LIFETIME_S + 1, 1),
    (bounds.InviteUses, bounds.MAX_INVITE_USES, bounds.MAX_INVITE_USES + 1, 1),
    (bounds.PricePerMtok, float(bounds.MAX_PRICE_PER_MTOK), bounds.MAX_PRICE_PER_MTOK + 0.5, 0.0),
    (bounds.TokensCap, bounds.MAX_TOKENS_CAP, bounds.MAX_TOKENS_CAP + 1, 1),
]


@pytest.mark.parametrize(("kind", "largest", "too_big", "smallest"), TYPES)
def test_each_type_takes_its_range_and_refuses_past_it(kind: Any, largest: Any, too_big: Any, smallest: Any) -> None:
    assert msgspec.convert(largest, kind) == largest
    assert msgspec.convert(smallest, kind) == smallest
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(too_big, kind)


def test_the_largest_amounts_stay_far_inside_64_bit_integers() -> None:
    """A grant in micro-credits, and a hold at the dearest price over the largest cap (and a body's worth
    of prompt), are orders of magnitude under 2**63: sums of many of them still fit."""
    micro = 10**6
    assert bounds.MAX_CREDITS_PER_GRANT * micro * 1000 < 2**63
    prompt_tokens = 100 * 2**20  # far more than any body the hub accepts
    assert bounds.MAX_PRICE_PER_MTOK * (bounds.MAX_TOKENS_CAP + prompt_tokens) * 1000 < 2**63
    assert bounds.MAX_RATE * 1000 < 2**63
