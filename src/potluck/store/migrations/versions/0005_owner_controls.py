"""Owner controls per agent (pause, availability windows, own requests only / first), group sharing rule.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("controls", sa.Text, nullable=True))
    with op.batch_alter_table("groups") as batch:
        batch.add_column(sa.Column("members_can_share", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("groups") as batch:
        batch.drop_column("members_can_share")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("controls")
