"""Daily rollups of the usage records for the dashboard: one row per UTC day, consumer, key, group, serving
agent (and its owner) and model, with the sums the usage reports take. Written in the same transaction as
the usage records they sum, so they always agree; filled here from the records already kept.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_DIMENSIONS = ("user_id", "key_id", "group_id", "owner_id", "agent_id")
_SUMS = (
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


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.String(10), nullable=False),
        *(sa.Column(name, sa.String(40), nullable=False) for name in _DIMENSIONS),
        sa.Column("model", sa.String(200), nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in _SUMS),
        sa.PrimaryKeyConstraint("day", *_DIMENSIONS, "model", name="pk_usage_daily"),
    )
    op.create_index("ix_usage_daily_user_day", "usage_daily", ["user_id", "day"])
    op.create_index("ix_usage_daily_owner_day", "usage_daily", ["owner_id", "day"])
    op.create_index("ix_usage_daily_group_day", "usage_daily", ["group_id", "day"])
    bind = op.get_bind()
    day = (
        "to_char(timezone('UTC', created_at), 'YYYY-MM-DD')"
        if bind.dialect.name == "postgresql"
        else "date(created_at)"
    )
    dims = ", ".join(f"coalesce({name}, '')" for name in _DIMENSIONS)
    op.execute(
        f"INSERT INTO usage_daily (day, {', '.join(_DIMENSIONS)}, model, {', '.join(_SUMS)}) "  # noqa: S608 - constants
        f"SELECT {day}, {dims}, model, count(agent_id), "
        "sum(CASE WHEN agent_id IS NULL THEN 1 ELSE 0 END), sum(prompt_tokens), sum(completion_tokens), "
        "sum(charged), sum(earned), sum(cache_read_tokens), sum(cache_write_tokens), sum(reasoning_tokens) "
        f"FROM usage_records GROUP BY {day}, {dims}, model"
    )


def downgrade() -> None:
    op.drop_table("usage_daily")
