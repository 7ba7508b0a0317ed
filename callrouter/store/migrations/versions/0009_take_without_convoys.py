"""`callrouter_take` without lock convoys (issue 15): the round-robin turn from a sequence per group, the
line's lease serialised by an advisory lock instead of a row lock on a written guard row.

Why: in 0008 the function first incremented the group's `rr_turns` row. That row stays locked until the
function's transaction commits, so every hunt of one group waited for the one before it to finish all
of its work (the health read, the line's guard, the count, the lease, the commit). (Measured after the
change: at 64 calls at once that wait was the smaller part of a hunt's; most of it was waiting for one
of the router's few state connections, which 0010 addresses. docs/benchmarks.md has both.)
`nextval` takes no lock that outlives the call, so hunts of one group now overlap; what is still
serialised is one line's lease (the count must see every lease taken before it), and only for the count
and the insert at the end of the function. The lock there is `pg_advisory_xact_lock` on (a constant for
callrouter, the line key's hash): the same serialisation as the guard row without writing a row version
and its WAL per call. Two keys that hash alike only share a queue. Routers use the function the
database holds, so every router changes over at once when this migration runs.

A group's sequence is `callrouter_turn_<md5 of the key>`, made on the group's first hunt (by
`callrouter_turn_sequence`; two routers making it at the same moment is harmless) and starting where
the group's `rr_turns` row left off, so an upgrade does not restart the rotation. `rr_turns` and
`line_guards` stay: SQLite still uses them, and a downgrade goes back to them (the turns then continue
from where they were at this upgrade).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

LINE_LOCKS = 741_052_315  # the advisory-lock class of line leases: any constant of callrouter's own

TURN_SEQUENCE = """
CREATE OR REPLACE FUNCTION callrouter_turn_sequence(p_key text, p_seq text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_start bigint;
BEGIN
    SELECT t.turn + 1 INTO v_start FROM rr_turns t WHERE t.key = p_key;
    BEGIN
        EXECUTE format('CREATE SEQUENCE IF NOT EXISTS %I START WITH %s', p_seq, coalesce(v_start, 1));
    EXCEPTION WHEN unique_violation OR duplicate_table THEN
        -- another router made it at the same moment: its sequence serves both
        RAISE DEBUG 'turn sequence % made by another router', p_seq;
    END;
END
$$
"""

TAKE = f"""
CREATE OR REPLACE FUNCTION callrouter_take(
    p_turn_key text, p_keys text[], p_limits integer[], p_health boolean,
    p_instance text, p_lease text, p_now timestamptz)
RETURNS TABLE (
    r_turn bigint, r_lease_key text, r_taken boolean,
    r_line_key text, r_unavailable integer, r_noanswer integer, r_since double precision,
    r_last_failure double precision, r_last_status text, r_updated_at double precision)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n integer := coalesce(array_length(p_keys, 1), 0);
    i integer := 1;
    v_seq text;
    v_turn bigint;
    v_key text;
    v_limit integer;
    v_live bigint;
    v_taken boolean;
BEGIN
    IF p_turn_key IS NOT NULL THEN
        v_seq := 'callrouter_turn_' || md5(p_turn_key);
        IF to_regclass(v_seq) IS NULL THEN
            PERFORM callrouter_turn_sequence(p_turn_key, v_seq);
        END IF;
        v_turn := nextval(v_seq);
        IF n > 0 THEN
            i := ((v_turn - 1) % n)::integer + 1;
        END IF;
    END IF;
    IF n > 0 THEN
        v_key := p_keys[i];
        v_limit := p_limits[i];
    END IF;
    IF p_health AND n > 0 THEN
        RETURN QUERY
            SELECT NULL::bigint, NULL::text, NULL::boolean, h.line_key::text, h.unavailable, h.noanswer, h.since,
                   h.last_failure, h.last_status::text, h.updated_at
            FROM line_health h WHERE h.line_key = ANY (p_keys);
        IF EXISTS (SELECT 1 FROM line_health h WHERE h.line_key = v_key) THEN
            v_limit := NULL;
        END IF;
    END IF;
    IF v_limit IS NOT NULL AND p_lease IS NOT NULL THEN
        -- held until commit: the count after it sees every lease taken before (each statement of a
        -- volatile function takes a fresh snapshot)
        PERFORM pg_advisory_xact_lock({LINE_LOCKS}, hashtext(v_key));
        SELECT count(*) INTO v_live
        FROM line_leases l JOIN router_instances r ON r.instance = l.instance
        WHERE l.line_key = v_key AND r.expires_at >= p_now;
        v_taken := v_live < v_limit;
        IF v_taken THEN
            INSERT INTO line_leases (id, line_key, instance, acquired_at) VALUES (p_lease, v_key, p_instance, p_now);
        END IF;
    ELSE
        v_key := NULL;
    END IF;
    RETURN QUERY SELECT v_turn, v_key, v_taken, NULL::text, NULL::integer, NULL::integer, NULL::double precision,
                        NULL::double precision, NULL::text, NULL::double precision;
END
$$
"""

DROP_SEQUENCES = """
DO $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT c.relname FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
             WHERE c.relkind = 'S' AND c.relname LIKE 'callrouter\\_turn\\_%' AND ns.nspname = current_schema() LOOP
        EXECUTE format('DROP SEQUENCE %I', s.relname);
    END LOOP;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(TURN_SEQUENCE)
        op.execute(TAKE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        spec = importlib.util.spec_from_file_location("take_0008", Path(__file__).with_name("0008_routing_take.py"))
        assert spec is not None and spec.loader is not None
        previous = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(previous)
        op.execute(previous.TAKE)
        op.execute("DROP FUNCTION IF EXISTS callrouter_turn_sequence(text, text)")
        op.execute(DROP_SEQUENCES)
