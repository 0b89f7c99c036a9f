"""The one usage record: the cache reads and writes inside the prompt tokens, and the reasoning inside the
completion tokens, as the backend reported them (OpenAI counts cached tokens in the prompt, Anthropic apart).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        for name in _COLUMNS:
            batch.drop_column(name)
