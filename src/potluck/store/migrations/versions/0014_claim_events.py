"""Claim events in the database: an agent's owner reads why it was taken out of routing, or put back, after a
restart and from any replica (they were kept in each hub's memory).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from potluck.store.tables import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claim_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("group_id", sa.String(40), sa.ForeignKey("groups.id", ondelete="CASCADE"), nullable=False),
        sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_claim_events_agent", "claim_events", ["agent_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_claim_events_agent", table_name="claim_events")
    op.drop_table("claim_events")
