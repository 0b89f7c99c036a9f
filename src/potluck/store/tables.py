"""Table definitions (SQLAlchemy Core). Schema changes go through Alembic migrations only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("user_id", String(40), nullable=True),
    Column("all_groups", Boolean, nullable=False, server_default=true()),
    Column("models", Text, nullable=True),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    Column("priority", Integer, nullable=False, server_default="1"),
    Column("prefer_own", Boolean, nullable=False, server_default=false()),
    Column("last_used_at", UTCDateTime(), nullable=True),
)

agents = Table(
    "agents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("public_key", LargeBinary(32), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=True),
    Column("drained", Boolean, nullable=False, server_default=false()),
    Column("owner_id", String(40), nullable=True),
    Column("controls", Text, nullable=True),
    Column("served_models", Text, nullable=True),
)

agent_tokens = Table(
    "agent_tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime(), nullable=True),
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    Column("owner_id", String(40), nullable=True),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("key_id", String(40), nullable=True),
    Column("agent_id", String(40), nullable=True),
    Column("model", String(200), nullable=False),
    Column("path", String(64), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("status", Integer, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("queue_ms", Integer, nullable=False),
    Column("ttft_ms", Integer, nullable=True),
    Column("total_ms", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("user_id", String(40), nullable=True),
    Column("group_id", String(40), nullable=True),
    Column("owner_id", String(40), nullable=True),
    Column("tokens_estimated", Boolean, nullable=False, server_default=false()),
    Column("flagged", Boolean, nullable=False, server_default=false()),
    Column("charged", BigInteger, nullable=False, server_default="0"),
    Column("earned", BigInteger, nullable=False, server_default="0"),
    Column("cache_read_tokens", Integer, nullable=False, server_default="0"),
    Column("cache_write_tokens", Integer, nullable=False, server_default="0"),
    Column("reasoning_tokens", Integer, nullable=False, server_default="0"),
    Index("ix_usage_records_created_at", "created_at"),
    Index("ix_usage_records_user_created", "user_id", "created_at"),
    Index("ix_usage_records_owner_created", "owner_id", "created_at"),
    Index("ix_usage_records_group_created", "group_id", "created_at"),
)

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
)

user_tokens = Table(
    "user_tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
)

groups = Table(
    "groups",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("members_can_share", Boolean, nullable=False, server_default=false()),
    Column("billing", String(16), nullable=False, server_default="mutual"),
    Column("dynamic_pricing", Boolean, nullable=False, server_default=false()),
    Column("min_price_per_mtok", Float, nullable=True),
    Column("max_price_per_mtok", Float, nullable=True),
    Column("default_input_per_mtok", Float, nullable=False, server_default="0"),
    Column("default_output_per_mtok", Float, nullable=False, server_default="0"),
    Column("max_tokens_cap", Integer, nullable=False, server_default="4096"),
    Column("bill_backend_errors", Boolean, nullable=False, server_default=false()),
)

memberships = Table(
    "memberships",
    metadata,
    Column("group_id", String(40), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("joined_at", UTCDateTime(), nullable=False),
)

invites = Table(
    "invites",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("group_id", String(40), ForeignKey("groups.id", ondelete="CASCADE"), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_by", String(40), nullable=False),
    Column("max_uses", Integer, nullable=False),
    Column("uses", Integer, nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

invite_redemptions = Table(
    "invite_redemptions",
    metadata,
    Column("invite_id", String(40), ForeignKey("invites.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("redeemed_at", UTCDateTime(), nullable=False),
)

key_groups = Table(
    "key_groups",
    metadata,
    Column("key_id", String(40), ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", String(40), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)

agent_groups = Table(
    "agent_groups",
    metadata,
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", String(40), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("group_id", String(40), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("alias", String(200), primary_key=True),
    Column("models", Text, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# -- accounting (amounts are signed integers in micro-credits) -------------------------------------

ledger_txns = Table(
    "ledger_txns",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("request_id", String(40), nullable=True),
    Column("reason", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    # The hub replica that placed a hold (NULL for a single hub): a dead replica's holds are found by it.
    Column("replica_id", String(64), nullable=True),
    # The last line of defence against charging a request twice (NULL request ids do not collide).
    UniqueConstraint("request_id", "kind", name="uq_ledger_txns_request_kind"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("txn_id", String(40), ForeignKey("ledger_txns.id"), nullable=False),
    Column("account", String(80), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Index("ix_ledger_entries_account", "account"),
    Index("ix_ledger_entries_txn_id", "txn_id"),
)

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    # The sum of the account's entries, written in the same transaction as them (see store/holds.py).
    Column("account", String(80), primary_key=True),
    Column("balance", BigInteger, nullable=False),
)

receipts = Table(
    "receipts",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("payload", Text, nullable=False),
    Column("signature", String(128), nullable=False),
    Column("consumer_id", String(40), nullable=False),
    Column("owner_id", String(40), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_receipts_consumer_id", "consumer_id"),
    Index("ix_receipts_owner_id", "owner_id"),
)

agent_prices = Table(
    "agent_prices",
    metadata,
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("input_per_mtok", Float, nullable=False),
    Column("output_per_mtok", Float, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# -- model claims: who may serve which name in a group, and who is out of routing for one ------------

claim_policies = Table(
    "claim_policies",
    metadata,
    Column("group_id", String(40), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("policy", String(16), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

claim_approvals = Table(
    "claim_approvals",
    metadata,
    Column("group_id", String(40), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("approved_by", String(40), nullable=False),
    Column("approved_at", UTCDateTime(), nullable=False),
)

claim_holds = Table(
    "claim_holds",
    metadata,
    Column("group_id", String(40), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("since", UTCDateTime(), nullable=False),
)

claim_events = Table(
    "claim_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("change", String(16), nullable=False),
    Column("group_id", String(40), ForeignKey("groups.id", ondelete="CASCADE"), nullable=False),
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_claim_events_agent", "agent_id", "id"),
)
"""Holds taken and lifted, in order: what each agent's owner reads (`GET /api/claim-events`)."""

claim_rules = Table(
    "claim_rules",
    metadata,
    Column("group_id", String(40), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("min_tokens_per_s", Float, nullable=True),
    Column("reference_prompt", Text, nullable=True),
    Column("reference_answer", Text, nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
)

ROLLUP_DIMENSIONS = ("user_id", "key_id", "group_id", "owner_id", "agent_id")
"""The nullable ids of a usage record, kept as ``''`` for None in ``usage_daily`` (NULLs would defeat its key)."""
ROLLUP_SUMS = (
    "requests",
    "not_served",
    "prompt_tokens",
    "completion_tokens",
    "charged",
    "earned",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", String(10), nullable=False),
    *(Column(name, String(40), nullable=False) for name in ROLLUP_DIMENSIONS),
    Column("model", String(200), nullable=False),
    *(Column(name, BigInteger, nullable=False, server_default="0") for name in ROLLUP_SUMS),
    PrimaryKeyConstraint("day", *ROLLUP_DIMENSIONS, "model", name="pk_usage_daily"),
    Index("ix_usage_daily_user_day", "user_id", "day"),
    Index("ix_usage_daily_owner_day", "owner_id", "day"),
    Index("ix_usage_daily_group_day", "group_id", "day"),
)
