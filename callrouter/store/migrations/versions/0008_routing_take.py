"""Shared routing state in one round trip (issue 15): a hunt's round-robin turn, its lines' health and the
lease on the line it will ring first, in one Postgres function call.

Why a function and not one statement: a lease is taken only while fewer than the line's limit hold it.
Two routers serialise on the line's guard row, and the second must then count the first one's lease. One
statement keeps the snapshot it started with, so after waiting for the lock it would count without that
lease; in a (volatile) function each statement takes a fresh snapshot, so the count after the lock is
right. The function is what `store.routing_state.SqlRoutingState` ran before as a turn statement, a
health query and a two-statement transaction: the same rows, the same rules, one round trip.

Arguments: the round-robin group's key (NULL: no turn), the lines in the order the hunt has them, their
limits, whether to read their health, this router's instance, the new lease's id, the time. The line
leased is the one the turn starts at (rotate_for_turn: turn mod n), or the first without a turn; it is
leased only if it has no health row (a line that failed may be set aside; the router leases it when it
dials it). Rows: one per health record (r_line_key set), then one with r_turn, r_lease_key, r_taken.
SQLite has no such function: there the state runs the statements one after the other, as before.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TAKE = """
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
    v_turn bigint;
    v_key text;
    v_limit integer;
    v_live bigint;
    v_taken boolean;
BEGIN
    IF p_turn_key IS NOT NULL THEN
        INSERT INTO rr_turns AS t (key, turn) VALUES (p_turn_key, 1)
        ON CONFLICT (key) DO UPDATE SET turn = t.turn + 1
        RETURNING t.turn INTO v_turn;
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
        -- the guard row's lock serialises this line; the count after it sees every lease taken before
        INSERT INTO line_guards AS g (line_key, touched_at) VALUES (v_key, p_now)
        ON CONFLICT (line_key) DO UPDATE SET touched_at = excluded.touched_at;
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


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(TAKE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS callrouter_take(text, text[], integer[], boolean, text, text, timestamptz)")
