"""Model claims a consumer can trust: a group's policy for who may serve which model name (open or
approved), the approved (agent, model) pairs, agents held out of routing for a model (flagged by spot
checks, parked below a throughput floor), and per-model rules (minimum tokens/s, a pinned reference).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from potluck.store.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _group() -> sa.Column[str]:
    return sa.Column("group_id", sa.String(40), sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)


def _agent() -> sa.Column[str]:
    return sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "claim_policies",
        _group(),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "claim_approvals",
        _group(),
        _agent(),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("approved_by", sa.String(40), nullable=False),
        sa.Column("approved_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "claim_holds",
        _group(),
        _agent(),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "claim_rules",
        _group(),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("min_tokens_per_s", sa.Float, nullable=True),
        sa.Column("reference_prompt", sa.Text, nullable=True),
        sa.Column("reference_answer", sa.Text, nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in ("claim_rules", "claim_holds", "claim_approvals", "claim_policies"):
        op.drop_table(table)
