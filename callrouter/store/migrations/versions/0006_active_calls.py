"""Calls in progress (the console's live view): one row per call a router has now, written by that router.

A row counts only while its router's `router_instances` row is fresh, as a line lease does; a router
that stops removes its rows, and those of one that crashed are swept by the others.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "active_calls",
        sa.Column("instance", sa.String(length=120), nullable=False),
        sa.Column("uniqueid", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=80), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("caller", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("line_id", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('ivr', 'ringing', 'talking')", name=op.f("ck_active_calls_state")),
        sa.PrimaryKeyConstraint("instance", "uniqueid", "source", name=op.f("pk_active_calls")),
    )
    op.create_index(op.f("ix_active_calls_number"), "active_calls", ["number"])


def downgrade() -> None:
    op.drop_index("ix_active_calls_number", table_name="active_calls")
    op.drop_table("active_calls")
