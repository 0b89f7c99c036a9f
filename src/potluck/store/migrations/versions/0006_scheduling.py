"""Scheduling: key priority (fair-queue weight) and own-GPUs-first, per-group model aliases.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("prefer_own", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "model_aliases",
        sa.Column("group_id", sa.String(40), sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("alias", sa.String(200), primary_key=True),
        sa.Column("models", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_aliases")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("prefer_own")
        batch.drop_column("priority")
