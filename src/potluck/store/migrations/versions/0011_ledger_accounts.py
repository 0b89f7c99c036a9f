"""Ledger account balances as rows: the sum of each account's entries, kept in the same transaction as the
entries, so hub replicas sharing one PostgreSQL can place a credit hold with one conditional UPDATE; and
the replica that placed each hold, so the holds of a replica that died can be found and released.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
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
        "SELECT account, SUM(amount) FROM ledger_entries WHERE account NOT IN ('mint', 'platform') GROUP BY account"
    )
    # A plain ALTER on both backends: SQLite's batch mode would rebuild ledger_txns, which ledger_entries
    # references, and foreign keys are on.
    op.add_column("ledger_txns", sa.Column("replica_id", sa.String(64), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE ledger_txns DROP COLUMN replica_id")  # SQLite >= 3.35 and PostgreSQL alike
    op.drop_table("ledger_accounts")
