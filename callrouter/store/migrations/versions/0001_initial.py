"""Initial schema: calls, hunt attempts, statistics sums, shared routing state, runtime blacklist.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blacklist_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("caller", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blacklist_entries")),
    )
    with op.batch_alter_table("blacklist_entries", schema=None) as batch_op:
        batch_op.create_index("uq_blacklist_entries_scope_caller", ["scope", "caller"], unique=True)

    op.create_table(
        "call_stats",
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("disposition", sa.String(length=16), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("billable_seconds", sa.BigInteger(), nullable=False),
        sa.Column("rung_calls", sa.Integer(), nullable=False),
        sa.Column("ring_seconds", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "number", "bucket", "disposition", name=op.f("pk_call_stats"),
            postgresql_include=["calls", "billable_seconds", "rung_calls", "ring_seconds"],
        ),
    )
    op.create_table(
        "calls",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("uniqueid", sa.String(length=64), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("caller", sa.String(length=32), nullable=False),
        sa.Column("caller_raw", sa.String(length=80), nullable=False),
        sa.Column("caller_name", sa.String(length=80), nullable=False),
        sa.Column("channel", sa.String(length=128), nullable=False),
        sa.Column("instance", sa.String(length=80), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Integer(), nullable=False),
        sa.Column("billable_seconds", sa.Integer(), nullable=False),
        sa.Column("ring_seconds", sa.Integer(), nullable=False),
        sa.Column("disposition", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("ivr_path", sa.String(length=200), nullable=False),
        sa.Column("hunt_group", sa.String(length=64), nullable=True),
        sa.Column("strategy", sa.String(length=16), nullable=True),
        sa.Column("answered_line", sa.String(length=64), nullable=True),
        sa.Column("recording_file", sa.String(length=255), nullable=True),
        sa.Column("voicemail_file", sa.String(length=255), nullable=True),
        sa.Column("router_ms", sa.Float(), nullable=False),
        sa.Column("trace", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "disposition IN ('answered', 'no_answer', 'busy', 'failed', 'blacklisted', 'after_hours', 'abandoned', 'voicemail', 'played', 'error')",
            name=op.f("ck_calls_disposition"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
        sa.UniqueConstraint("uniqueid", name=op.f("uq_calls_uniqueid")),
    )
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.create_index("ix_calls_caller_started_at", ["caller", "started_at"], unique=False)
        batch_op.create_index("ix_calls_number_started_at", ["number", "started_at"], unique=False)
        batch_op.create_index("ix_calls_started_at", ["started_at"], unique=False)

    op.create_table(
        "line_guards",
        sa.Column("line_key", sa.String(length=160), nullable=False),
        sa.Column("touched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("line_key", name=op.f("pk_line_guards")),
    )
    op.create_table(
        "line_leases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("line_key", sa.String(length=160), nullable=False),
        sa.Column("instance", sa.String(length=120), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_line_leases")),
    )
    with op.batch_alter_table("line_leases", schema=None) as batch_op:
        batch_op.create_index("ix_line_leases_instance", ["instance"], unique=False)
        batch_op.create_index("ix_line_leases_line_key", ["line_key"], unique=False)

    op.create_table(
        "line_stats",
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("ring_seconds", sa.BigInteger(), nullable=False),
        sa.Column("talk_seconds", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "number", "bucket", "line_id", "status", name=op.f("pk_line_stats"),
            postgresql_include=["attempts", "ring_seconds", "talk_seconds"],
        ),
    )
    op.create_table(
        "line_usage",
        sa.Column("line_key", sa.String(length=160), nullable=False),
        sa.Column("last_answered", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("line_key", name=op.f("pk_line_usage")),
    )
    op.create_table(
        "router_instances",
        sa.Column("instance", sa.String(length=120), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("instance", name=op.f("pk_router_instances")),
    )
    op.create_table(
        "rr_turns",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("turn", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rr_turns")),
    )
    op.create_table(
        "call_attempts",
        sa.Column("call_uniqueid", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.SmallInteger(), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ring_seconds", sa.Integer(), nullable=False),
        sa.Column("talk_seconds", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_uniqueid"], ["calls.uniqueid"], name=op.f("fk_call_attempts_call_uniqueid_calls"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("call_uniqueid", "seq", name=op.f("pk_call_attempts")),
    )


def downgrade() -> None:
    op.drop_table("call_attempts")
    op.drop_table("rr_turns")
    op.drop_table("router_instances")
    op.drop_table("line_usage")
    op.drop_table("line_stats")
    with op.batch_alter_table("line_leases", schema=None) as batch_op:
        batch_op.drop_index("ix_line_leases_line_key")
        batch_op.drop_index("ix_line_leases_instance")

    op.drop_table("line_leases")
    op.drop_table("line_guards")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index("ix_calls_started_at")
        batch_op.drop_index("ix_calls_number_started_at")
        batch_op.drop_index("ix_calls_caller_started_at")

    op.drop_table("calls")
    op.drop_table("call_stats")
    with op.batch_alter_table("blacklist_entries", schema=None) as batch_op:
        batch_op.drop_index("uq_blacklist_entries_scope_caller")

    op.drop_table("blacklist_entries")
