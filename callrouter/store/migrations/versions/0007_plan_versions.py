"""Plan versions (issue 14): every version of every number's routing plan, as the YAML text ops write.

A number runs its newest version here; a number with none runs from its file in dialplans/. The unique
(number, version) is what stops two concurrent saves from both becoming version N+1.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plan_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=120), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("restored_from", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("origin IN ('file', 'console', 'api', 'restore')", name=op.f("ck_plan_versions_origin")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_plan_versions_version_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_versions")),
        sa.UniqueConstraint("number", "version", name=op.f("uq_plan_versions_number_version")),
    )


def downgrade() -> None:
    op.drop_table("plan_versions")
