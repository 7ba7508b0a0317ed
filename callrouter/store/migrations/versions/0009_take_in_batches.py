"""Shared routing state without lock convoys, in batches (issue 15): `callrouter_take_many`, the hunt
starts of many calls in one function call; the round-robin turn from a sequence per group; a line's lease
serialised by an advisory lock. `callrouter_take` (0008's one-hunt function) becomes a call of it, so the
rules live in one place.

Why the turn: in 0008 the function first incremented the group's `rr_turns` row, which stays locked until
the transaction commits, so every hunt of one group waited for the one before it to finish. `nextval`
takes no lock that outlives the call. A group's sequence is `callrouter_turn_<md5 of the key>`, made on
the group's first hunt (`callrouter_turn_sequence`; two routers making it at the same moment is harmless)
and starting where the group's `rr_turns` row left off, so an upgrade does not restart the rotation.

Why the lock: one line's leases must still be serialised (the count must see every lease taken before
it): `pg_advisory_xact_lock` on (a constant of callrouter's, the key's hash) does that without writing a
guard row version and its WAL per call; two keys that hash alike only share a queue.

Why batches: with 64 calls at once a router's hunts queued for its few state connections (measured in the
router: p50 10.5 / p99 92 ms for a connection, then p50 4 ms for the answer; the turn row's lock was the
smaller part). Every statement costs the database a wake-up, a transaction and a commit; one statement
for all the hunts that queued meanwhile costs them once. `SqlRoutingState` sends a take at once when a
connection is free and otherwise with the others that arrived while the connections were busy.

The function does for each hunt what 0008 did for one, in three passes: every turn and health read first
(no lock kept), then the advisory locks of all the lines the batch leases, taken in one order (ascending
key hash: two batches never wait for each other in a circle), then the counts and the leases in the order
of the hunts. Two hunts of a batch on one line are counted like two routers: the second count sees the
first lease (a transaction sees its own rows; each statement of a volatile function takes a fresh
snapshot, so a count after waiting for the lock sees what the other router committed). A line with a
health record is not leased ahead (the hunt may set it aside; it is leased when dialled).

Arguments: per hunt its round-robin group key (NULL: no turn), where its lines start in `p_keys` (1-based;
the next hunt's start, or the end, closes them), whether to read health, its lease id (NULL: no lease);
then all the hunts' lines and their limits one after the other, this router's instance and the time.
Rows: per hunt (r_hunt) its health records (r_line_key set), then one with r_turn, r_lease_key, r_taken.

Routers use the functions the database holds, so every router changes over at once when this runs.
`rr_turns` and `line_guards` stay: SQLite still uses them, and a downgrade goes back to them (the turns
then continue from where they were at this upgrade).

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

TAKE_MANY = f"""
CREATE OR REPLACE FUNCTION callrouter_take_many(
    p_turn_keys text[], p_firsts integer[], p_health boolean[], p_leases text[],
    p_keys text[], p_limits integer[], p_instance text, p_now timestamptz)
RETURNS TABLE (
    r_hunt integer, r_turn bigint, r_lease_key text, r_taken boolean,
    r_line_key text, r_unavailable integer, r_noanswer integer, r_since double precision,
    r_last_failure double precision, r_last_status text, r_updated_at double precision)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    m integer := coalesce(array_length(p_firsts, 1), 0);
    total integer := coalesce(array_length(p_keys, 1), 0);
    i integer;
    n integer;
    f integer;
    v_seq text;
    v_turn bigint;
    v_turns bigint[] := '{{}}';
    v_lease_keys text[] := '{{}}';
    v_lease_limits integer[] := '{{}}';
    v_key text;
    v_limit integer;
    v_hash integer;
    v_live bigint;
    v_taken boolean;
BEGIN
    FOR i IN 1..m LOOP
        f := p_firsts[i];
        n := (CASE WHEN i < m THEN p_firsts[i + 1] ELSE total + 1 END) - f;
        v_turn := NULL;
        v_key := NULL;
        v_limit := NULL;
        IF p_turn_keys[i] IS NOT NULL THEN
            v_seq := 'callrouter_turn_' || md5(p_turn_keys[i]);
            IF to_regclass(v_seq) IS NULL THEN
                PERFORM callrouter_turn_sequence(p_turn_keys[i], v_seq);
            END IF;
            v_turn := nextval(v_seq);
        END IF;
        IF n > 0 THEN
            IF v_turn IS NOT NULL THEN
                v_key := p_keys[f + ((v_turn - 1) % n)::integer];
                v_limit := p_limits[f + ((v_turn - 1) % n)::integer];
            ELSE
                v_key := p_keys[f];
                v_limit := p_limits[f];
            END IF;
            IF p_health[i] THEN
                RETURN QUERY
                    SELECT i, NULL::bigint, NULL::text, NULL::boolean, h.line_key::text, h.unavailable, h.noanswer, h.since,
                           h.last_failure, h.last_status::text, h.updated_at
                    FROM line_health h WHERE h.line_key = ANY (p_keys[f:f + n - 1]);
                IF EXISTS (SELECT 1 FROM line_health h WHERE h.line_key = v_key) THEN
                    v_limit := NULL;
                END IF;
            END IF;
        END IF;
        IF v_limit IS NULL OR p_leases[i] IS NULL THEN
            v_key := NULL;
            v_limit := NULL;
        END IF;
        v_turns[i] := v_turn;
        v_lease_keys[i] := v_key;
        v_lease_limits[i] := v_limit;
    END LOOP;
    -- every line's lock, in one order, held until commit
    FOR v_hash IN SELECT DISTINCT hashtext(k) FROM unnest(v_lease_keys) AS k WHERE k IS NOT NULL ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock({LINE_LOCKS}, v_hash);
    END LOOP;
    FOR i IN 1..m LOOP
        v_key := v_lease_keys[i];
        v_taken := NULL;
        IF v_key IS NOT NULL THEN
            SELECT count(*) INTO v_live
            FROM line_leases l JOIN router_instances r ON r.instance = l.instance
            WHERE l.line_key = v_key AND r.expires_at >= p_now;
            v_taken := v_live < v_lease_limits[i];
            IF v_taken THEN
                INSERT INTO line_leases (id, line_key, instance, acquired_at) VALUES (p_leases[i], v_key, p_instance, p_now);
            END IF;
        END IF;
        RETURN QUERY SELECT i, v_turns[i], v_key, v_taken, NULL::text, NULL::integer, NULL::integer, NULL::double precision,
                            NULL::double precision, NULL::text, NULL::double precision;
    END LOOP;
END
$$
"""

# 0008's signature and rows, for what still calls it (a router of the release before, during an upgrade)
TAKE = """
CREATE OR REPLACE FUNCTION callrouter_take(
    p_turn_key text, p_keys text[], p_limits integer[], p_health boolean,
    p_instance text, p_lease text, p_now timestamptz)
RETURNS TABLE (
    r_turn bigint, r_lease_key text, r_taken boolean,
    r_line_key text, r_unavailable integer, r_noanswer integer, r_since double precision,
    r_last_failure double precision, r_last_status text, r_updated_at double precision)
LANGUAGE sql VOLATILE AS $$
    SELECT t.r_turn, t.r_lease_key, t.r_taken, t.r_line_key, t.r_unavailable, t.r_noanswer, t.r_since,
           t.r_last_failure, t.r_last_status, t.r_updated_at
    FROM callrouter_take_many(ARRAY[p_turn_key], ARRAY[1], ARRAY[p_health], ARRAY[p_lease],
                              coalesce(p_keys, '{}'), coalesce(p_limits, '{}'), p_instance, p_now) AS t
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
        op.execute(TAKE_MANY)
        op.execute(TAKE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        spec = importlib.util.spec_from_file_location("take_0008", Path(__file__).with_name("0008_routing_take.py"))
        assert spec is not None and spec.loader is not None
        previous = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(previous)
        op.execute(previous.TAKE)
        op.execute("DROP FUNCTION IF EXISTS callrouter_take_many(text[], integer[], boolean[], text[], text[], integer[], text, timestamptz)")
        op.execute("DROP FUNCTION IF EXISTS callrouter_turn_sequence(text, text)")
        op.execute(DROP_SEQUENCES)
