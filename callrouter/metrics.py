"""The router process's own metrics, on an explicit registry (never the global default).

Label values are bounded: outcomes, dispositions, configured 400 numbers, AGI verbs. Never a caller's
number or anything else a caller controls.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SESSION_OUTCOMES = (
    "routed", "health", "unknown_script", "no_plan", "rejected_busy", "closed_early", "protocol_error", "timeout", "error"
)

CONNECTION_REFUSALS = ("not_allowed", "too_many_pending")

# Every `operation` of callrouter_store_errors_total, created at 0 when the process starts: a series that
# first appears at 1 is a step `rate()` never sees, so the alert on store errors would miss a first burst.
STORE_OPERATIONS = ("cdr_write", "state", "blacklist", "line_alerts", "live_calls", "plans")


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge("callrouter_active_sessions", "FastAGI sessions in progress", registry=r)
        self.sessions_started = Counter("callrouter_sessions_started_total", "FastAGI sessions accepted", registry=r)
        self.sessions_ended = Counter(
            "callrouter_sessions_ended_total", "FastAGI sessions ended, by outcome", ["outcome"], registry=r
        )
        self.calls = Counter(
            "callrouter_calls_total", "Routed calls by 400 number and disposition", ["number", "disposition"], registry=r
        )
        self.dial_attempts = Counter(
            "callrouter_dial_attempts_total", "Hunt attempts by resulting DIALSTATUS", ["status"], registry=r
        )
        self.dial_timing = Counter(
            "callrouter_dial_timing_total",
            "Dials by whose clock timed them: asterisk (the dialplan's b()/U() stamps) or router (stamps missing)",
            ["clock"],
            registry=r,
        )
        self.pending_headers = Gauge(
            "callrouter_agi_pending_headers", "FastAGI connections still sending their AGI header (not yet calls)", registry=r
        )
        self.connections_refused = Counter(
            "callrouter_agi_connections_refused",
            "FastAGI connections closed before a byte was read: not_allowed (not in listen.allow), "
            "too_many_pending (max_pending_headers reached)",
            ["reason"],
            registry=r,
        )
        self.protocol_errors = Counter(
            "callrouter_protocol_errors_total", "AGI protocol errors by kind", ["kind"], registry=r
        )
        self.command_seconds = Histogram(
            "callrouter_agi_command_seconds",
            "Time from sending an AGI command to its reply (excluding Dial and recording)",
            ["command"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.loop_lag = Histogram(
            "callrouter_event_loop_lag_seconds",
            "How late the event loop ran a timer (sampled every 50 ms): what every non-Asterisk wait of a call is longer by",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.state_wait = Histogram(
            "callrouter_state_wait_seconds",
            "How long a call waited for the shared routing state's answer at a hunt's start (turn, health, lease; "
            "asked while Asterisk starts the recording, so often less than a round trip)",
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.sink_errors = Counter("callrouter_record_sink_errors_total", "Call records the sink failed to take", registry=r)
        self.store_errors = Counter(
            "callrouter_store_errors_total", "Database operations that failed, by operation", ["operation"], registry=r
        )
        self.state_fallbacks = Counter(
            "callrouter_state_fallbacks_total",
            "Routing-state operations answered from process memory because the store failed or was too slow",
            registry=r,
        )
        self.cdr_backlog = Gauge("callrouter_cdr_backlog_records", "Call records spooled on disk, not yet in the database", registry=r)
        self.cdr_spool_bytes = Gauge("callrouter_cdr_spool_bytes", "Size of the CDR spool on disk", registry=r)
        self.cdr_stored = Counter("callrouter_cdr_stored_total", "Call records written to the database", registry=r)
        self.cdr_duplicates = Counter(
            "callrouter_cdr_duplicates_total", "Spooled call records the database already had (replays)", registry=r
        )
        self.cdr_rejected = Counter(
            "callrouter_cdr_rejected_total", "Spooled call records set aside as invalid (see rejected.jsonl)", registry=r
        )
        self.cdr_spool_write_errors = Counter(
            "callrouter_cdr_spool_write_errors",
            "CDR spool appends that failed (disk full, I/O error); their records are held in memory and retried",
            registry=r,
        )
        self.cdr_held = Gauge(
            "callrouter_cdr_held_records", "Call records not yet durable: their spool write failed, held in memory until spooled or stored", registry=r
        )
        self.cdr_log_only = Counter(
            "callrouter_cdr_log_only",
            "Call records neither spooled nor stored (memory cap, or still held at stop): written only to the log, at ERROR",
            registry=r,
        )
        self.cdr_task_restarts = Counter(
            "callrouter_cdr_task_restarts", "CDR writer tasks that died on a bug and were restarted, by task", ["task"], registry=r
        )
        self.blacklist_entries = Gauge("callrouter_runtime_blacklist_entries", "Runtime blacklist entries loaded", registry=r)
        self.config_reloads = Counter(
            "callrouter_config_reloads_total", "Configuration reloads by result", ["result"], registry=r
        )
        self.config_last_success = Gauge(
            "callrouter_config_last_reload_success_timestamp_seconds", "When the configuration last loaded", registry=r
        )
        self.plan_versions_applied = Counter(
            "callrouter_plan_versions_applied_total",
            "Plan versions from the database this router ran (applied) or refused as invalid (its running plan stayed)",
            ["result"], registry=r,
        )
        self.crm_lookups = Counter(
            "callrouter_crm_lookups", "CRM caller-name lookups by result (over_budget: the call went on without waiting)", ["result"], registry=r
        )
        self.crm_seconds = Histogram(
            "callrouter_crm_lookup_seconds", "CRM answer time", buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5), registry=r
        )
        self._command_children: dict[str, Histogram] = {}
        self._counter_children: dict[tuple[int, tuple[str, ...]], Counter] = {}
        for outcome in SESSION_OUTCOMES:
            self.sessions_ended.labels(outcome=outcome)
        for operation in STORE_OPERATIONS:
            self.store_errors.labels(operation=operation)
        for task in ("cdr-spool", "cdr-db"):
            self.cdr_task_restarts.labels(task=task)
        for result in ("success", "failure"):
            self.config_reloads.labels(result=result)
        for reason in CONNECTION_REFUSALS:
            self.connections_refused.labels(reason=reason)
        for result in ("applied", "refused"):
            self.plan_versions_applied.labels(result=result)

    def count(self, counter: Counter, *values: str) -> None:
        """`counter.labels(*values).inc()` with the labelled child cached (values in the counter's label
        order): this runs several times a call, and `labels()` costs three times the lookup."""
        key = (id(counter), values)
        child = self._counter_children.get(key)
        if child is None:
            child = self._counter_children[key] = counter.labels(*values)
        child.inc()

    def observe_command(self, verb: str, seconds: float) -> None:
        """Per-command reply time; the labelled child is cached, this runs for every AGI command."""
        if verb in ("EXEC", "RECORD FILE", "GET DATA"):
            return
        child = self._command_children.get(verb)
        if child is None:
            child = self._command_children[verb] = self.command_seconds.labels(command=verb)
        child.observe(seconds)
