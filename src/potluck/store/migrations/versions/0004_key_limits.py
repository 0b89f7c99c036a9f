"""Key options (model allow-list, expiry, RPM/TPM/concurrency limits) and per-user RPM/TPM.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from potluck.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("models", sa.Text, nullable=True))
        batch.add_column(sa.Column("expires_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("rpm", sa.Integer, nullable=True))
        batch.add_column(sa.Column("tpm", sa.Integer, nullable=True))
        batch.add_column(sa.Column("max_concurrency", sa.Integer, nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("rpm", sa.Integer, nullable=True))
        batch.add_column(sa.Column("tpm", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tpm")
        batch.drop_column("rpm")
    with op.batch_alter_table("api_keys") as batch:
        for column in ("max_concurrency", "tpm", "rpm", "expires_at", "models"):
            batch.drop_column(column)
