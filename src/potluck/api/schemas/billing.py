"""Bodies of credits, prices and reports: amounts in credits, with the exact micro-credits beside them (`*_micro`)."""

from __future__ import annotations

from typing import Literal

import msgspec

from potluck.api.schemas.common import Reply
from potluck.hub.bounds import Credits, PricePerMtok

# -- requests -----------------------------------------------------------------------------------------


class Grant(msgspec.Struct):
    """Credits for a user, from the mint (admin only)."""

    user_id: str
    """Who gets them."""
    amount: Credits
    """Credits to add."""
    reason: str
    """Why, for the ledger."""


class ModelPrice(msgspec.Struct):
    """A model's price on an agent, in credits per million tokens."""

    input_per_mtok: PricePerMtok
    """Price of prompt tokens."""
    output_per_mtok: PricePerMtok
    """Price of completion tokens."""


AgentPriceTable = dict[str, ModelPrice]
"""Prices by model name."""


class ReportQuery(msgspec.Struct):
    """Query of the usage, earnings and group usage reports."""

    since: str | None = None
    """First day (UTC), ``YYYY-MM-DD``."""
    until: str | None = None
    """Last day (UTC), inclusive."""
    format: Literal["json", "csv"] = "json"
    """``json`` (``{"data": [...]}``) or ``csv`` (a file with the same columns)."""


# -- answers ------------------------------------------------------------------------------------------


class CreditGrant(Reply):
    """A grant and the user's balance after it."""

    txn_id: str
    """The ledger transaction (``txn_…``)."""
    user_id: str
    """Who got the credits."""
    balance: float
    """Their spendable credits now."""
    balance_micro: int
    """The same in micro-credits."""


class Balance(Reply):
    """Your credits: spendable, and held for requests in flight."""

    balance: float
    """Spendable credits."""
    held: float
    """Credits held for requests in flight."""
    balance_micro: int
    """``balance`` in micro-credits."""
    held_micro: int
    """``held`` in micro-credits."""


class AgentPrices(Reply):
    """An agent's prices."""

    agent_id: str
    """The agent's id."""
    prices: AgentPriceTable
    """Prices by model; a model without one costs its groups' defaults."""


class PriceQuote(Reply):
    """What one model costs on one agent in a group now."""

    model: str
    """The model."""
    agent_id: str
    """The agent serving it."""
    input_per_mtok: float
    """Prompt price, credits per million tokens (within the group's bounds, before the multiplier)."""
    output_per_mtok: float
    """Completion price."""
    multiplier: float
    """Dynamic-pricing multiplier (1.0 without dynamic pricing)."""
    reason: str
    """Why the multiplier is what it is, in words."""


class GroupPrices(Reply):
    """What each model costs in a group now."""

    group_id: str
    """The group's id."""
    billing: str
    """``mutual`` (nothing is charged) or ``credits``."""
    data: list[PriceQuote]
    """One quote per agent and model."""


class UsageRow(Reply):
    """Your usage on one day, through one key, of one model."""

    day: str
    """The day (UTC), ``YYYY-MM-DD``."""
    user_id: str | None
    """You."""
    key_id: str | None
    """The key used."""
    model: str
    """The model."""
    requests: int
    """Requests an agent served (whatever their outcome)."""
    prompt_tokens: int
    """Prompt tokens."""
    completion_tokens: int
    """Completion tokens."""
    spend: float
    """Credits charged."""
    spend_micro: int
    """``spend`` in micro-credits."""
    not_served: int
    """Requests that never reached an agent (no agent served the model, all busy, shutting down): free, 0 tokens."""
    cache_read_tokens: int
    """Of ``prompt_tokens``, those the backends read from their prompt caches (as they reported)."""
    cache_write_tokens: int
    """Of ``prompt_tokens``, those the backends wrote to their prompt caches (as they reported)."""
    reasoning_tokens: int
    """Of ``completion_tokens``, those spent reasoning (as the backends reported)."""


class UsageReport(Reply):
    """Rows, oldest day first."""

    data: list[UsageRow]
    """The rows."""


class EarningsRow(Reply):
    """What one of your agents served of one model on one day."""

    day: str
    """The day (UTC), ``YYYY-MM-DD``."""
    agent_id: str | None
    """The agent."""
    model: str
    """The model."""
    requests: int
    """Requests served."""
    prompt_tokens: int
    """Prompt tokens."""
    completion_tokens: int
    """Completion tokens."""
    earned: float
    """Credits earned."""
    earned_micro: int
    """``earned`` in micro-credits."""


class EarningsReport(Reply):
    """Rows, oldest day first."""

    data: list[EarningsRow]
    """The rows."""


class GroupUsageRow(Reply):
    """One member's traffic of one model on one day in a group."""

    day: str
    """The day (UTC), ``YYYY-MM-DD``."""
    user_id: str | None
    """The member."""
    model: str
    """The model."""
    requests: int
    """Requests."""
    tokens: int
    """Prompt plus completion tokens."""
    spend: float
    """Credits the member paid."""
    earned: float
    """Credits the serving agents' owners earned."""
    spend_micro: int
    """``spend`` in micro-credits."""
    earned_micro: int
    """``earned`` in micro-credits."""


class GroupUsageReport(Reply):
    """Rows, oldest day first."""

    data: list[GroupUsageRow]
    """The rows."""


class HubKey(Reply):
    """The hub's receipt-signing public key."""

    algorithm: Literal["ed25519"]
    """The signature algorithm."""
    public_key: str
    """Base64 of the raw 32-byte public key."""
    fingerprint: str
    """``ed25519:`` and 16 hex digits; receipts name it in their ``hub`` field."""
