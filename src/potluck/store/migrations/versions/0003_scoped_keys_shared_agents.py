"""Keys and agents belong to users; keys are scoped to groups; agents are shared into groups.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("user_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("all_groups", sa.Boolean, nullable=False, server_default=sa.true()))
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("owner_id", sa.String(40), nullable=True))
    with op.batch_alter_table("agent_tokens") as batch:
        batch.add_column(sa.Column("owner_id", sa.String(40), nullable=True))
    op.create_table(
        "key_groups",
        sa.Column("key_id", sa.String(40), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("group_id", sa.String(40), sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_table(
        "agent_groups",
        sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("group_id", sa.String(40), sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("agent_groups")
    op.drop_table("key_groups")
    with op.batch_alter_table("agent_tokens") as batch:
        batch.drop_column("owner_id")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("owner_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("all_groups")
        batch.drop_column("user_id")
