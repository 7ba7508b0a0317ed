"""`callrouter_take_many`: the hunt starts of many calls in one function call (issue 15).

Why: with 64 calls at once a router's hunts queued for its few state connections, not for the database's
locks: measured in the router (4,000 calls through `bench/run.py --routing-state shared`), a take waited
p50 10.5 ms / p99 92 ms for a connection and then p50 4 ms for its query (the backend waiting for a CPU
on two cores shared with the router and the client). Every statement costs the database a wake-up, a
parse of the call, a transaction and a commit; one statement for all the hunts that queued meanwhile costs
them once. `SqlRoutingState` sends a take at once when a connection is free and otherwise with the others
that arrived while the connections were busy (group commit), so a call still waits for one round trip.

The function does for each hunt what `callrouter_take` (0009) does for one, in three passes: every turn
and health read first (no lock kept), then the advisory locks of all the lines the batch leases, taken in
one order (ascending key hash: two batches never wait for each other in a circle, and a single
`callrouter_take` holds one lock and waits for none while holding it), then the counts and the leases in
the order of the hunts. Two hunts of a batch on one line are counted like two routers: the second count
sees the first lease (a transaction sees its own rows). A line with a health record is not leased ahead,
as before.

Arguments: per hunt its round-robin group key (NULL: no turn), where its lines start in `p_keys` (1-based;
the next hunt's start, or the end, closes them), whether to read health, its lease id (NULL: no lease);
then all the hunts' lines and their limits one after the other, this router's instance and the time.
Rows: per hunt (r_hunt) its health records (r_line_key set), then one with r_turn, r_lease_key, r_taken.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LINE_LOCKS = 741_052_315  # the advisory-lock class of line leases, as in 0009

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


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(TAKE_MANY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS callrouter_take_many(text[], integer[], boolean[], text[], text[], integer[], text, timestamptz)")
