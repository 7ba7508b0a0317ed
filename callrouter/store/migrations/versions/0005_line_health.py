"""Line health: counted failures of each line (by dial target) since it last answered, shared by every router.

A line that works has no row; one that fails gets one, and loses it when it answers again. What the
counts mean (suspended, half-open) is decided by each plan's `line_health` thresholds at read time
(`routing/health.py`), so a change of thresholds needs no migration.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "line_health",
        sa.Column("line_key", sa.String(length=160), nullable=False),
        sa.Column("unavailable", sa.Integer(), nullable=False),
        sa.Column("noanswer", sa.Integer(), nullable=False),
        sa.Column("since", sa.Float(), nullable=True),
        sa.Column("last_failure", sa.Float(), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("line_key", name="pk_line_health"),
    )


def downgrade() -> None:
    op.drop_table("line_health")
