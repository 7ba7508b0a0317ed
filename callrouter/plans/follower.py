"""Every router runs the newest plan versions: told by Postgres NOTIFY at once, a poll as the safety net.

`PlanFollower` applies the newest version of each number when it is newer than the one running: each is
validated (an invalid one is refused, logged and counted, and the running plan stays), then all are
swapped into the holder together as one new RoutingConfig, so a call sees a change whole or not at all.
It wakes on each notification `PlanListener` hears (one LISTEN connection, reconnecting with backoff;
a (re)connection wakes it too, for what was missed meanwhile) and every `every` seconds looks at
max(plan_versions.id), which also catches a version the CLI stored in SQLite from another process.

`overlay` is what a reload (SIGHUP, POST /api/reload) does after reading the files: the database versions
are laid over them (docs/plans.md: the database wins); with the database away the versions running stay.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Callable

import asyncpg
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.holder import ConfigHolder
from callrouter.config.loader import RoutingConfig
from callrouter.config.plan import NumberPlan
from callrouter.metrics import RouterMetrics
from callrouter.plans.service import PlanRejected, check_plan_text
from callrouter.store import plan_versions
from callrouter.store.plan_versions import CHANNEL, PlanVersion
from callrouter.tasks import EXPECTED_FAILURES, Backoff, Periodic, PeriodicPart, cancel_and_wait, within

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0  # the safety net; a notification is applied at once
BUDGET_SECONDS = 5.0  # a database that hangs delays neither calls, nor a reload, nor a stop
KEEPALIVE_SECONDS = 10.0  # a LISTEN connection without traffic would not notice its peer is gone
RECONNECT = Backoff(first=0.5, cap=30.0)


class PlanFollower(PeriodicPart):
    def __init__(self, engine: AsyncEngine, holder: ConfigHolder, metrics: RouterMetrics, *, every: float = POLL_SECONDS,
                 listen: bool | None = None) -> None:
        self.engine, self.holder, self.metrics, self.every = engine, holder, metrics, every
        self.newest: dict[str, PlanVersion] = {}  # as last read: for serve's start log (file drift)
        self._seen_id = -1
        self._refused: set[tuple[str, int]] = set()  # counted and logged once, not at every poll
        self._lock = asyncio.Lock()
        self._late: set[asyncio.Future[Any]] = set()
        self._wake = asyncio.Event()
        self._woken: asyncio.Task[None] | None = None
        self._why = "poll"
        self.periodic = Periodic(
            "plan-follower", self._step, lambda: self.every, backoff=Backoff(first=1.0, cap=max(self.every, 30.0)),
            on_error=lambda _: self.metrics.store_errors.labels(operation="plans").inc(),
        )
        on_postgres = engine.dialect.name == "postgresql"
        self.listener = PlanListener(engine.url, self.wake) if (on_postgres if listen is None else listen) else None

    async def start(self) -> None:
        """The first sync before calls are taken (a router starts on the database's versions), then the loop."""
        await self.periodic.run_once()
        self.periodic.start(delay=self.every)
        self._woken = asyncio.get_running_loop().create_task(self._on_wake(), name="plan-follower-wake")
        if self.listener is not None:
            self.listener.start()

    async def close(self) -> None:
        if self.listener is not None:
            await self.listener.close()
        await cancel_and_wait(self._woken)
        self._woken = None
        await self.periodic.close()

    def wake(self, why: str = "notify") -> None:
        """Look now (a notification, or the LISTEN connection (re)made)."""
        self._why = why
        self._wake.set()

    async def _on_wake(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.periodic.run_once()

    async def _step(self) -> bool:
        why, self._why = self._why, "poll"
        last = await within(plan_versions.last_id(self.engine), BUDGET_SECONDS, self._late)
        if last != self._seen_id:
            await within(self.sync(why), BUDGET_SECONDS, self._late)
            self._seen_id = last
        return False

    async def sync(self, why: str = "poll") -> int:
        """Apply every newest version newer than the one running, together; the number applied."""
        async with self._lock:
            async with self.engine.connect() as conn:
                newest = await plan_versions.newest_of_each(conn)
            self.newest = newest
            running = self.holder.current
            todo = [v for n, v in newest.items() if v.version > (running.version_of(n) or 0) and (n, v.version) not in self._refused]
            valid = self._validated(todo, running)
            if valid:
                await self.holder.apply(valid)
                self.metrics.plan_versions_applied.labels(result="applied").inc(len(valid))
                log.info("plan versions from the database (%s): %s", why, ", ".join(f"{n} v{v}" for n, (_, v) in sorted(valid.items())))
            return len(valid)

    def _validated(self, versions: list[PlanVersion], config: RoutingConfig) -> dict[str, tuple[NumberPlan, int]]:
        out: dict[str, tuple[NumberPlan, int]] = {}
        for v in versions:
            try:
                out[v.number] = (check_plan_text(v.text, v.number, config), v.version)
            except PlanRejected as exc:
                if (v.number, v.version) not in self._refused:
                    self._refused.add((v.number, v.version))
                    self.metrics.plan_versions_applied.labels(result="refused").inc()
                    log.error("plan %s version %d refused, the running plan stays: %s", v.number, v.version,
                              "; ".join(str(i) for i in exc.issues)[:1000])
        return out

    async def overlay(self, fresh: RoutingConfig, running: RoutingConfig) -> RoutingConfig:
        """After a reload read the files: the newest database versions over them. A version that does not
        validate against the fresh configuration keeps the plan running for that number; with the database
        away, every version running stays (a reload never falls back to files the database overrides)."""
        try:
            async def read() -> dict[str, PlanVersion]:
                async with self.engine.connect() as conn:
                    return await plan_versions.newest_of_each(conn)

            newest = await within(read(), BUDGET_SECONDS, self._late)
        except EXPECTED_FAILURES as exc:
            log.warning("reload: cannot read plan versions (%s: %s); the versions running stay", type(exc).__name__, exc)
            return fresh.with_versions({n: (running.plans[n], v) for n, v in running.versions.items() if n in running.plans})
        self.newest = newest
        self._refused.clear()  # the configuration changed: a version refused before may now be valid
        valid = self._validated(list(newest.values()), fresh)
        kept = {n: (running.plans[n], running.versions[n]) for n in newest if n not in valid and n in running.versions}
        changed = sum(1 for n, (_, v) in valid.items() if running.version_of(n) != v)
        if changed:
            self.metrics.plan_versions_applied.labels(result="applied").inc(changed)
        return fresh.with_versions(kept | valid)


class PlanListener:
    """One LISTEN connection to Postgres (asyncpg, outside the pool: it is held for as long as the router
    runs), remade with backoff when it breaks; `wake` is called for every notification and every
    (re)connection. `heard` counts notifications (tests, logs)."""

    def __init__(self, url: URL, wake: Callable[[str], None], *, backoff: Backoff = RECONNECT,
                 rng: random.Random | None = None) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._ssl: bool | None = False if url.host in (None, "", "localhost", "127.0.0.1", "::1") and "ssl" not in url.query and "sslmode" not in url.query else None
        self._wake, self._backoff, self._rng = wake, backoff, rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.heard = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="plan-listener")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.heard += 1
        log.debug("plan change notified: %s", payload[:80])
        self._wake("notify")

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen_once()
                failures = 0  # it was connected, then lost: retry soon
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                failures += 1
                log.warning("plan listener: %s: %s (attempt %d; the poll covers meanwhile)", type(exc).__name__, exc, failures)
            except Exception:  # a bug: seen with its traceback; the loop goes on
                failures += 1
                log.exception("plan listener failed")
            await asyncio.sleep(self._backoff.delay(max(failures, 1), self._rng))

    async def _listen_once(self) -> None:
        kwargs: dict[str, Any] = {"timeout": 5, "server_settings": {"application_name": "callrouter-plans"}}
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        conn = await asyncpg.connect(self._dsn, **kwargs)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        try:
            await conn.add_listener(CHANNEL, self._notified)
            self.connected = True
            log.info("plan listener: listening on %s", CHANNEL)
            self._wake("listen")  # whatever was saved while not listening
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await conn.execute("SELECT 1", timeout=5)
            log.warning("plan listener: connection lost")
        finally:
            self.connected = False
            conn.terminate()
