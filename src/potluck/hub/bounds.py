"""The largest amounts, limits and durations the hub accepts from a client, defined once.

The API's request types carry these as msgspec constraints, so a value outside them is a 400
``invalid_request_error`` naming the field, before any service sees it; docs/api.md lists them
(a test keeps the two equal). They are far above any real use and far below what would overflow
a 64-bit integer in the database or the ledger, or a date: a grant of the largest amount is
10^15 micro-credits, and a hold at the dearest price over the largest token cap is under 10^14.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from msgspec import Meta

MAX_CREDITS_PER_GRANT = 1_000_000_000
"""Credits one ``POST /admin/credits`` may grant."""
MAX_RATE = 1_000_000_000
"""Requests or tokens per minute (``rpm``, ``tpm``)."""
MAX_CONCURRENCY = 1_000_000
"""Requests in flight per key (``max_concurrency``)."""
MAX_PRIORITY = 100
"""A key's weight in the fair queue."""
MAX_KEY_LIFETIME_S = 3650 * 86_400
"""Ten years, in seconds (a key's ``expires_in_s``)."""
MAX_INVITE_LIFETIME_S = 366 * 86_400
"""A year, in seconds (an invite's ``expires_in_s``)."""
MAX_INVITE_USES = 10_000
MAX_PRICE_PER_MTOK = 1_000_000
"""Credits per million tokens (one credit a token): agent prices, group defaults and bounds."""
MAX_TOKENS_CAP = 10_000_000
"""Completion tokens a credit hold may assume for a request without ``max_tokens``."""
MAX_ALIAS_MODELS = 16
MAX_SCHEDULE_WINDOWS = 64
LAST_DAY = date(8999, 12, 31)
"""The last day a report's ``since`` or ``until`` may name."""

Credits = Annotated[float, Meta(gt=0, le=MAX_CREDITS_PER_GRANT, description="Credits, at most 10^9.")]
Rate = Annotated[int, Meta(ge=1, le=MAX_RATE, description="Per minute, 1 to 10^9.")]
Concurrency = Annotated[int, Meta(ge=1, le=MAX_CONCURRENCY, description="1 to 10^6.")]
Priority = Annotated[int, Meta(ge=1, le=MAX_PRIORITY, description="1 to 100.")]
KeyLifetime = Annotated[int, Meta(ge=1, le=MAX_KEY_LIFETIME_S, description="Seconds, 1 to ten years.")]
InviteLifetime = Annotated[int, Meta(ge=1, le=MAX_INVITE_LIFETIME_S, description="Seconds, 1 to 366 days.")]
InviteUses = Annotated[int, Meta(ge=1, le=MAX_INVITE_USES, description="1 to 10,000.")]
PricePerMtok = Annotated[float, Meta(ge=0, le=MAX_PRICE_PER_MTOK, description="Credits per million tokens, 0 to 10^6.")]
TokensCap = Annotated[int, Meta(ge=1, le=MAX_TOKENS_CAP, description="Tokens, 1 to 10^7.")]
AliasModels = Annotated[
    list[str], Meta(min_length=1, max_length=MAX_ALIAS_MODELS, description="1 to 16 models, most preferred first.")
]
MAX_SPOT_CHECK_ROUNDS = 1000
"""Spot checks one ``POST /api/groups/{group_id}/spot-checks`` may run."""
MAX_TOKENS_PER_S = 1_000_000
MAX_REFERENCE_CHARS = 10_000
"""A pinned reference prompt or answer."""
SpotCheckRounds = Annotated[int, Meta(ge=1, le=MAX_SPOT_CHECK_ROUNDS, description="1 to 1,000.")]
TokensPerSecond = Annotated[
    float, Meta(gt=0, le=MAX_TOKENS_PER_S, description="Tokens per second, above 0, at most 10^6.")
]
ReferenceText = Annotated[
    str, Meta(min_length=1, max_length=MAX_REFERENCE_CHARS, description="1 to 10,000 characters.")
]
