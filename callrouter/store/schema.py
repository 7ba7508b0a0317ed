"""Tables, as SQLAlchemy Core metadata. Alembic migrations create them; this module names them for queries.

Changing a table here needs a new migration under `migrations/versions`; `tests/test_store_schema.py`
compares the two so they cannot drift.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from callrouter.model.record import DISPOSITIONS

# BIGINT keys on Postgres; SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_dispositions = ", ".join(f"'{d}'" for d in DISPOSITIONS)

calls = Table(
    "calls",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("uniqueid", String(64), nullable=False),  # Asterisk's: unique per Asterisk only
    Column("source", String(80), nullable=False, server_default=""),  # which Asterisk (entity id or address); '' if unknown
    Column("number", String(20), nullable=False),  # the 400 number
    Column("caller", String(32), nullable=False),  # normalised; '' when withheld
    Column("caller_raw", String(80), nullable=False),
    Column("caller_name", String(80), nullable=False),
    Column("channel", String(128), nullable=False),
    Column("instance", String(80), nullable=False),  # the router process that handled it
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("answered_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True), nullable=False),
    Column("duration_seconds", Integer, nullable=False),
    Column("billable_seconds", Integer, nullable=False),  # talk time on the answered line
    Column("ring_seconds", Integer, nullable=False),  # time the caller heard ringing, over all attempts
    Column("disposition", String(16), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("ivr_path", String(200), nullable=False),  # menu choices, e.g. "1>2"
    Column("hunt_group", String(64)),
    Column("strategy", String(16)),
    Column("answered_line", String(64)),
    Column("recording_file", String(255)),
    Column("voicemail_file", String(255)),
    Column("router_ms", Float, nullable=False),
    Column("trace", Text, nullable=False),  # the decision trace, one step per line (`callrouter explain` style)
    Column("recording_purged_at", DateTime(timezone=True)),  # when retention deleted the recording
    CheckConstraint(f"disposition IN ({_dispositions})", name="disposition"),
    # A call is (uniqueid, source): two Asterisks may hand out the same uniqueid, a spool replay is ignored
    # by this key. uniqueid first, so a look-up by uniqueid alone (admin API, test-call) uses the index.
    UniqueConstraint("uniqueid", "source"),
)
Index("ix_calls_number_started_at", calls.c.number, calls.c.started_at)
Index("ix_calls_started_at", calls.c.started_at)
Index("ix_calls_caller_started_at", calls.c.caller, calls.c.started_at)

call_attempts = Table(
    "call_attempts",
    metadata,
    Column("call_uniqueid", String(64), nullable=False),
    Column("call_source", String(80), nullable=False, server_default=""),  # with call_uniqueid: the call
    Column("seq", SmallInteger, nullable=False),  # 1 for the first line rung
    Column("line_id", String(64), nullable=False),
    Column("target", String(128), nullable=False),
    Column("status", String(16), nullable=False),  # DIALSTATUS, or FULL when skipped at its limit
    Column("ring_seconds", Integer, nullable=False),
    Column("talk_seconds", Integer, nullable=False),
    PrimaryKeyConstraint("call_uniqueid", "call_source", "seq"),
    ForeignKeyConstraint(["call_uniqueid", "call_source"], ["calls.uniqueid", "calls.source"], ondelete="CASCADE"),
)

# Statistics are kept as running sums per quarter hour, written in the same transaction as the calls they
# count, so a day or month of statistics reads a few thousand rows instead of millions of calls. Quarter
# hours let a report be cut at local midnight in every time zone (India +5:30, Nepal +5:45). The bucket is
# epoch seconds (UTC) so both databases can shift it to local time with plain integer arithmetic.
call_stats = Table(
    "call_stats",
    metadata,
    Column("number", String(20), nullable=False),
    Column("bucket", BigInteger, nullable=False),  # start of the quarter hour, epoch seconds
    Column("disposition", String(16), nullable=False),
    Column("calls", Integer, nullable=False),
    Column("billable_seconds", BigInteger, nullable=False),
    Column("rung_calls", Integer, nullable=False),  # calls that rang at least one line
    Column("ring_seconds", BigInteger, nullable=False),
    # The sums ride in the key's index (Postgres INCLUDE): a report is an index-only scan.
    PrimaryKeyConstraint("number", "bucket", "disposition", postgresql_include=["calls", "billable_seconds", "rung_calls", "ring_seconds"]),
)

line_stats = Table(
    "line_stats",
    metadata,
    Column("number", String(20), nullable=False),
    Column("bucket", BigInteger, nullable=False),
    Column("line_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("ring_seconds", BigInteger, nullable=False),
    Column("talk_seconds", BigInteger, nullable=False),
    PrimaryKeyConstraint("number", "bucket", "line_id", "status", postgresql_include=["attempts", "ring_seconds", "talk_seconds"]),
)

# Shared routing state: several router processes against one database see the same values.
rr_turns = Table(
    "rr_turns",
    metadata,
    Column("key", String(120), primary_key=True),  # "<400 number>/<hunt group>"
    Column("turn", BigInteger, nullable=False),  # calls that have started a hunt of this group
)

router_instances = Table(
    "router_instances",
    metadata,
    Column("instance", String(120), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),  # pushed forward by the heartbeat
)

line_guards = Table(
    "line_guards",
    metadata,
    Column("line_key", String(160), primary_key=True),  # the dial target
    Column("touched_at", DateTime(timezone=True), nullable=False),  # written to take the row lock
)

line_leases = Table(
    "line_leases",
    metadata,
    Column("id", String(32), primary_key=True),  # made by the router (uuid4), so a late insert can be undone
    Column("line_key", String(160), nullable=False),
    Column("instance", String(120), nullable=False),  # a lease counts while its instance is alive
    Column("acquired_at", DateTime(timezone=True), nullable=False),
)
Index("ix_line_leases_line_key", line_leases.c.line_key)
Index("ix_line_leases_instance", line_leases.c.instance)
# On Postgres the function callrouter_take (migration 0008) takes a round-robin turn, reads line_health
# and takes a lease in one call (store/routing_state.py); it is no table, so it is not declared here.

# Calls in progress now (migration 0006), for the console's live view: each router writes its own calls'
# rows; a row counts only while its router's `router_instances` row is fresh, as a line lease does.
LIVE_STATES = ("ivr", "ringing", "talking")
active_calls = Table(
    "active_calls",
    metadata,
    Column("instance", String(120), nullable=False),  # the router that has the call
    Column("uniqueid", String(64), nullable=False),
    Column("source", String(80), nullable=False),  # with uniqueid: the call (as in `calls`)
    Column("number", String(20), nullable=False),  # the 400 number
    Column("caller", String(32), nullable=False),  # normalised; '' when withheld
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),  # ivr: with the router (menus, prompts, voicemail); ringing/talking: on a line
    Column("line_id", String(200)),  # the line(s) of the Dial in progress, ids joined by ','
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("instance", "uniqueid", "source"),
    CheckConstraint("state IN ('ivr', 'ringing', 'talking')", name="state"),
)
Index("ix_active_calls_number", active_calls.c.number)

line_usage = Table(
    "line_usage",
    metadata,
    Column("line_key", String(160), primary_key=True),
    Column("last_answered", Float, nullable=False),  # epoch seconds the last answered call ended
)

# Line health: counted failures of each line (by dial target) since it last answered, shared by every
# router (routing/health.py decides what they mean). A line that works has no row.
line_health = Table(
    "line_health",
    metadata,
    Column("line_key", String(160), primary_key=True),
    Column("unavailable", Integer, nullable=False),  # CHANUNAVAIL / CONGESTION since the line last answered
    Column("noanswer", Integer, nullable=False),  # NOANSWER since the line last answered
    Column("since", Float),  # epoch seconds of the first of them: the episode
    Column("last_failure", Float),  # epoch seconds; the cool-down runs from here
    Column("last_status", String(16), nullable=False),
    Column("updated_at", Float, nullable=False),
)

blacklist_entries = Table(
    "blacklist_entries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("scope", String(20), nullable=False),  # a 400 number, or '*' for every number
    Column("caller", String(32), nullable=False),  # normalised like callers are
    Column("reason", String(200), nullable=False),
    Column("created_by", String(80), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),  # None: until removed
)
Index("uq_blacklist_entries_scope_caller", blacklist_entries.c.scope, blacklist_entries.c.caller, unique=True)

# Messages to people (missed-call SMS, package alerts): written in the same transaction as what causes
# them, sent by any router's sender; the dedupe key makes each message exist once, whatever replays.
OUTBOX_STATUSES = ("pending", "sent", "failed", "suppressed")
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),  # missed_call, package_alert
    Column("channel", String(16), nullable=False),  # sms, webhook
    Column("recipient", String(64), nullable=False),  # a phone number for sms; '' for the webhook
    Column("number", String(20), nullable=False),  # the 400 number it is about
    Column("caller", String(32), nullable=False),  # the caller it is about ('' if none): the per-caller limit
    Column("payload", Text, nullable=False),  # JSON: text and template fields
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),  # also the lease while a sender holds it
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("last_error", String(300), nullable=False),
    CheckConstraint("status IN ('pending', 'sent', 'failed', 'suppressed')", name="status"),
)
Index("ix_outbox_status_next_attempt_at", outbox.c.status, outbox.c.next_attempt_at)
Index("ix_outbox_recipient_caller_sent_at", outbox.c.recipient, outbox.c.caller, outbox.c.sent_at)

# Tenants and the console (migration 0004). A tenant is a company; a 400 number belongs to at most one.
tenants = Table(
    "tenants",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(120), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

tenant_numbers = Table(
    "tenant_numbers",
    metadata,
    Column("number", String(20), primary_key=True),  # the 400 number: at most one tenant
    Column("tenant_id", BigId, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
)
Index("ix_tenant_numbers_tenant_id", tenant_numbers.c.tenant_id)

USER_ROLES = ("owner", "admin", "viewer", "provider")
users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("tenant_id", BigId, ForeignKey("tenants.id", ondelete="CASCADE")),  # None: the provider's staff
    Column("username", String(80), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),  # argon2id, PHC string
    Column("role", String(16), nullable=False),
    Column("can_listen", Boolean, nullable=False),
    Column("can_download", Boolean, nullable=False),
    Column("disabled_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_login_at", DateTime(timezone=True)),
    CheckConstraint("role IN ('owner', 'admin', 'viewer', 'provider')", name="role"),
    CheckConstraint(
        "(role = 'provider' AND tenant_id IS NULL) OR (role <> 'provider' AND tenant_id IS NOT NULL)",
        name="provider_has_no_tenant",
    ),
)
Index("ix_users_tenant_id", users.c.tenant_id)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 hex of the cookie's token: the table holds no cookie
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE")),  # None: before login (CSRF only)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),  # the idle timeout counts from here
    Column("expires_at", DateTime(timezone=True), nullable=False),  # absolute: never pushed forward
    Column("revoked_at", DateTime(timezone=True)),
    Column("csrf_token", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("user_agent", String(200), nullable=False),
)
Index("ix_web_sessions_user_id", web_sessions.c.user_id)
Index("ix_web_sessions_expires_at", web_sessions.c.expires_at)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("tenant_id", BigId, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(80), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex; the token is shown once
    Column("scope", String(8), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    CheckConstraint("scope IN ('read', 'write')", name="scope"),
    UniqueConstraint("tenant_id", "name"),
)

# Append-only: rows are inserted, never updated or deleted (no code path does). No foreign keys, so a row
# outlives the user and tenant it names.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("tenant_id", BigId),  # None: the provider's own actions, or a tenant not known (failed login)
    Column("user_id", BigId),
    Column("username", String(80), nullable=False),  # as typed for a failed login; 'cli' tools name the OS user
    Column("address", String(64), nullable=False),
    Column("action", String(40), nullable=False),  # login, login_failed, logout, user_add, blacklist_add, ...
    Column("target", String(200), nullable=False),
    Column("before_json", Text),
    Column("after_json", Text),
)
Index("ix_audit_log_tenant_id_at", audit_log.c.tenant_id, audit_log.c.at)
Index("ix_audit_log_at", audit_log.c.at)

# Failed logins, counted per username and per address over a window, in the database so that every
# router behind a load balancer applies the same limit.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("username", String(80), nullable=False),
    Column("address", String(64), nullable=False),
)
Index("ix_login_failures_username_at", login_failures.c.username, login_failures.c.at)
Index("ix_login_failures_address_at", login_failures.c.address, login_failures.c.at)

# Every version of every number's routing plan (issue 14): the YAML text as ops would write it, comments
# included. A number runs its newest version; with none it runs from its file in dialplans/. Rows are only
# inserted; unique (number, version) makes the second of two concurrent saves fail instead of overwriting.
PLAN_ORIGINS = ("file", "console", "api", "restore")
plan_versions = Table(
    "plan_versions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("number", String(32), nullable=False),
    Column("version", Integer, nullable=False),  # 1, 2, ... per number
    Column("text", Text, nullable=False),
    Column("author", String(120), nullable=False),  # console username, or "ops:<os user>@<host>" for the CLI
    Column("origin", String(16), nullable=False),
    Column("summary", Text, nullable=False),  # a short readable list of what changed
    Column("restored_from", Integer),  # the version a restore copied
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("origin IN (" + ", ".join(f"'{o}'" for o in PLAN_ORIGINS) + ")", name="origin"),
    CheckConstraint("version >= 1", name="version_positive"),
    UniqueConstraint("number", "version"),
)
