"""Ledger account balances as rows: the sum of each account's entries, kept in the same transaction as the
entries, so hub replicas sharing one PostgreSQL can place a credit hold with one conditional UPDATE.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("account", sa.String(80), primary_key=True),
        sa.Column("balance", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO ledger_accounts (account, balance) "
        "SELECT account, SUM(amount) FROM ledger_entries GROUP BY account"
    )


def downgrade() -> None:
    op.drop_table("ledger_accounts")
