"""A call is (uniqueid, source): two Asterisk servers can hand out the same uniqueid.

calls.source says which Asterisk a call came from ('' for the calls already stored, and whenever it is not
known); the unique key on calls.uniqueid becomes one on (uniqueid, source), and call_attempts point at
their call by both (call_attempts.call_source). uniqueid leads the new key so that a look-up by uniqueid
alone still uses an index.

The steps are ordered for SQLite, where batch mode rebuilds a table by copying it and dropping the old
one: with foreign keys on, dropping `calls` while attempts still reference it would cascade-delete every
attempt. So the attempts first lose their foreign key, then `calls` is rebuilt, then the attempts get the
new foreign key. Postgres runs the same steps as plain ALTER TABLEs (adding a column with a constant
default rewrites nothing; building the new unique index and checking the new foreign key read each table
once).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_FK = "fk_call_attempts_call_uniqueid_calls"  # the same name before and after (the naming convention's)


def upgrade() -> None:
    with op.batch_alter_table("call_attempts") as batch:
        batch.add_column(sa.Column("call_source", sa.String(length=80), nullable=False, server_default=""))
        batch.drop_constraint(_FK, type_="foreignkey")
        batch.drop_constraint("pk_call_attempts", type_="primary")
        batch.create_primary_key("pk_call_attempts", ["call_uniqueid", "call_source", "seq"])
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("source", sa.String(length=80), nullable=False, server_default=""))
        batch.drop_constraint("uq_calls_uniqueid", type_="unique")
        batch.create_unique_constraint("uq_calls_uniqueid_source", ["uniqueid", "source"])
    with op.batch_alter_table("call_attempts") as batch:
        batch.create_foreign_key(_FK, "calls", ["call_uniqueid", "call_source"], ["uniqueid", "source"], ondelete="CASCADE")


def downgrade() -> None:
    """Only possible while no uniqueid is stored twice (the old unique key refuses it)."""
    with op.batch_alter_table("call_attempts") as batch:
        batch.drop_constraint(_FK, type_="foreignkey")
        batch.drop_constraint("pk_call_attempts", type_="primary")
        batch.create_primary_key("pk_call_attempts", ["call_uniqueid", "seq"])
        batch.drop_column("call_source")
    with op.batch_alter_table("calls") as batch:
        batch.drop_constraint("uq_calls_uniqueid_source", type_="unique")
        batch.create_unique_constraint("uq_calls_uniqueid", ["uniqueid"])
        batch.drop_column("source")
    with op.batch_alter_table("call_attempts") as batch:
        batch.create_foreign_key(_FK, "calls", ["call_uniqueid"], ["uniqueid"], ondelete="CASCADE")
