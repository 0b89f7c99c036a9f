"""Accounting: the double-entry credit ledger, signed receipts, agent prices, group billing settings, and
who paid and who earned on each usage record.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("groups") as batch:
        batch.add_column(sa.Column("billing", sa.String(16), nullable=False, server_default="mutual"))
        batch.add_column(sa.Column("dynamic_pricing", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("min_price_per_mtok", sa.Float, nullable=True))
        batch.add_column(sa.Column("max_price_per_mtok", sa.Float, nullable=True))
        batch.add_column(sa.Column("default_input_per_mtok", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("default_output_per_mtok", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("max_tokens_cap", sa.Integer, nullable=False, server_default="4096"))
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("user_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("group_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("owner_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("tokens_estimated", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("flagged", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("charged", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("earned", sa.BigInteger, nullable=False, server_default="0"))
        batch.create_index("ix_usage_records_user_created", ["user_id", "created_at"])
        batch.create_index("ix_usage_records_owner_created", ["owner_id", "created_at"])
        batch.create_index("ix_usage_records_group_created", ["group_id", "created_at"])
    op.create_table(
        "ledger_txns",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(40), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", "kind", name="uq_ledger_txns_request_kind"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("txn_id", sa.String(40), sa.ForeignKey("ledger_txns.id"), nullable=False),
        sa.Column("account", sa.String(80), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ledger_entries_account", "ledger_entries", ["account"])
    op.create_index("ix_ledger_entries_txn_id", "ledger_entries", ["txn_id"])
    op.create_table(
        "receipts",
        sa.Column("request_id", sa.String(40), primary_key=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("consumer_id", sa.String(40), nullable=False),
        sa.Column("owner_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_receipts_consumer_id", "receipts", ["consumer_id"])
    op.create_index("ix_receipts_owner_id", "receipts", ["owner_id"])
    op.create_table(
        "agent_prices",
        sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("input_per_mtok", sa.Float, nullable=False),
        sa.Column("output_per_mtok", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agent_prices")
    op.drop_index("ix_receipts_owner_id", table_name="receipts")
    op.drop_index("ix_receipts_consumer_id", table_name="receipts")
    op.drop_table("receipts")
    op.drop_index("ix_ledger_entries_txn_id", table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_account", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_txns")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_index("ix_usage_records_group_created")
        batch.drop_index("ix_usage_records_owner_created")
        batch.drop_index("ix_usage_records_user_created")
        for column in ("earned", "charged", "flagged", "tokens_estimated", "owner_id", "group_id", "user_id"):
            batch.drop_column(column)
    with op.batch_alter_table("groups") as batch:
        for column in (
            "max_tokens_cap",
            "default_output_per_mtok",
            "default_input_per_mtok",
            "max_price_per_mtok",
            "min_price_per_mtok",
            "dynamic_pricing",
            "billing",
        ):
            batch.drop_column(column)
