"""Groups may opt in to charging the tokens a backend reported for an error answer (off by default);
agents keep the models they served while connected, so a restarted hub answers 503, not 404, until they return.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("groups") as batch:
        batch.add_column(sa.Column("bill_backend_errors", sa.Boolean, nullable=False, server_default=sa.false()))
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("served_models", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("served_models")
    with op.batch_alter_table("groups") as batch:
        batch.drop_column("bill_backend_errors")
