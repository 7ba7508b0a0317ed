"""Wiring: the one place that builds the process's parts and connects them."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.api.app import AdminServer, build_admin_app
from callrouter.api.auth import AdminConfigError, admin_token
from callrouter.api.context import AdminDeps
from callrouter.config.loader import RoutingConfig
from callrouter.console.app import build_console_app
from callrouter.exporter.http import registry_text
from callrouter.exporter.service import CdrExporter
from callrouter.crm.client import CrmClient
from callrouter.config.holder import ConfigHolder
from callrouter.config.yamlsource import ConfigIssue
from callrouter.notify.line_health import LineHealthAlerts, LineHealthMonitor
from callrouter.notify.rules import OutboxMessage, missed_call_messages
from callrouter.notify.sender import OutboxSender
from callrouter.packages.watcher import PackageWatcher
from callrouter.plans.follower import PlanFollower
from callrouter.plans.service import Drift, file_drift
from callrouter.retention.purge import RetentionPurger
from callrouter.loop_lag import LoopLagSampler
from callrouter.metrics import RouterMetrics
from callrouter.fastagi.server import AgiServer
from callrouter.fastagi.session import SessionDeps
from callrouter.store.memory import MemoryRoutingState
from callrouter.fastagi.ports import LiveCalls, RoutingState
from callrouter.store.blacklist import BlacklistFollower, BlacklistStore
from callrouter.store.cdr_store import CdrStore
from callrouter.store.tenants import count_users
from callrouter.store.cdr_writer import CdrWriter, WriterSettings
from callrouter.store.live_calls import SqlLiveCalls
from callrouter.store.db import StoreError, StoreUnreachable, open_engine, require_current_schema, resolve_url, shown
from callrouter.store.routing_state import SqlRoutingState, new_instance_id
from callrouter.store.spool import Spool, SpoolInUse
from callrouter.tasks import within

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Store:
    """The database-backed parts of a running router."""

    engine: AsyncEngine
    writer: CdrWriter
    state: RoutingState
    blacklist: BlacklistFollower
    instance: str
    live: LiveCalls | None = None  # the calls in progress, for the console's live view


class CannotListen(Exception):
    """The FastAGI server cannot bind its address: `serve` stops with this message, exit 2."""


@dataclass(frozen=True)
class WorkerRole:
    """This process is worker `index` of `count` under `serve --workers` (cli/workers.py, the parent): it
    shares the FastAGI port with the others (SO_REUSEPORT), has its own CDR spool and admin port, and only
    worker 0 runs the parts that act for the whole host (outbox, package watcher, retention, line-state
    gauges, the exporter). `tell_parent` sends the parent one word: "ready", or "reload" (the admin API
    reloaded this worker: the parent reloads the others)."""

    index: int
    count: int
    tell_parent: Callable[[str], None]

    @property
    def runs_host_parts(self) -> bool:
        return self.index == 0


def routing_state_mode(config: RoutingConfig) -> str:
    """`store.routing_state` with auto resolved: shared on Postgres, local (this process's memory) on SQLite."""
    mode = config.service.store.routing_state
    if mode == "auto":
        url = resolve_url(config.service.store.url, config.base_dir)
        mode = "shared" if url.get_backend_name() == "postgresql" else "local"
    return mode


def worker_spool_dir(spool_dir: str, worker: WorkerRole | None) -> str:
    """Each worker its own spool (two writers on one would delete each other's records); worker 0 keeps
    cdr.spool_dir itself, so going back to one process replays what it left."""
    if worker is None or worker.index == 0:
        return spool_dir
    return os.path.join(spool_dir, f"worker-{worker.index}")


class WorkerConfigHolder(ConfigHolder):
    """A worker's configuration: a reload through the admin API reaches the other workers too (the parent
    sends them SIGHUP); one from SIGHUP stays in this worker (`reload_here`)."""

    def __init__(self, config: RoutingConfig, metrics: RouterMetrics, worker: WorkerRole) -> None:
        super().__init__(config, metrics)
        self._worker = worker

    async def reload_issues(self) -> list[ConfigIssue]:
        issues = await super().reload_issues()
        if not issues:
            self._worker.tell_parent("reload")
        return issues

    async def reload_here(self) -> list[str]:
        return [str(issue) for issue in await super().reload_issues()]


async def dispose_within(engine: AsyncEngine, seconds: float) -> None:
    """Close the pool on stop, but never hang the stop on a database that does not answer."""
    try:
        await within(engine.dispose(), seconds, set())
    except TimeoutError:
        log.warning("database connections did not close within %g s; leaving them", seconds)


async def check_schema_at_start(engine: AsyncEngine, config: RoutingConfig) -> bool:
    """Refuse an outdated schema (StoreError). A database that is down does not stop calls: the router
    starts on memory state with CDRs spooled, and the writer checks the schema once it connects."""
    try:
        async with asyncio.timeout(10):
            await require_current_schema(engine, engine.url)
        return True
    except (StoreUnreachable, TimeoutError) as exc:
        log.error("%s; routing goes on, CDRs are spooled until it is back", exc or "database unreachable at start")
        return False


async def open_store(holder: ConfigHolder, metrics: RouterMetrics, stack: AsyncExitStack, worker: WorkerRole | None = None) -> Store:
    config = holder.current
    svc = config.service
    url = resolve_url(svc.store.url, config.base_dir)
    engine = open_engine(url)
    stack.push_async_callback(dispose_within, engine, 5.0)
    schema_checked = await check_schema_at_start(engine, config)
    instance = new_instance_id()
    try:
        spool = Spool(worker_spool_dir(config.path(svc.cdr.spool_dir), worker), segment_bytes=svc.cdr.segment_bytes, fsync=svc.cdr.fsync)
    except SpoolInUse as exc:
        raise StoreError(str(exc)) from None
    settings = WriterSettings(batch_size=svc.cdr.batch_size, batch_age=svc.cdr.batch_age, memory_records=svc.cdr.memory_records)
    def messages(rows: Sequence[Mapping[str, Any]]) -> Sequence[OutboxMessage]:
        current = holder.current  # the plans as they are when the CDR is stored
        return missed_call_messages(rows, current.plans, current.service)

    writer = CdrWriter(spool, CdrStore(engine, schema_checked=schema_checked, messages=messages), metrics, settings)
    await writer.start()
    stack.push_async_callback(writer.close, svc.cdr.close_timeout)
    state: RoutingState
    mode = routing_state_mode(config)
    if mode == "shared":
        shared = SqlRoutingState(engine, metrics, instance=instance, timeout=svc.store.timeout, lease_ttl=svc.store.lease_ttl)
        await shared.start()
        stack.push_async_callback(shared.close)
        state = shared
    else:
        state = MemoryRoutingState()
    # Calls in progress, shared through the database (its rows count while this router beats: the shared
    # routing state beats for it, else it beats itself).
    live = SqlLiveCalls(engine, metrics, instance=instance, lease_ttl=svc.store.lease_ttl, heartbeat=mode != "shared")
    await live.start()
    stack.push_async_callback(live.close)
    follower = BlacklistFollower(BlacklistStore(engine), metrics, utc_now, svc.store.blacklist_refresh)
    await follower.start()
    stack.push_async_callback(follower.close)
    await follow_plans(engine, holder, metrics, stack)
    log.info("store: %s (routing state %s), CDR spool %s", shown(url), mode, spool.directory)
    return Store(engine, writer, state, follower, instance, live)


async def follow_plans(engine: AsyncEngine, holder: ConfigHolder, metrics: RouterMetrics, stack: AsyncExitStack) -> PlanFollower:
    """The plan versions in the database over the files (docs/plans.md: the database wins), now, at every
    reload, and whenever one is saved anywhere; each file that differs from what its number runs is said."""
    plans = PlanFollower(engine, holder, metrics)
    await plans.start()
    stack.push_async_callback(plans.close)
    holder.overlay = plans.overlay
    if plans.newest:  # versions were read just now; none (or the database away): every number runs from its file
        async def compare() -> list[Drift]:
            async with engine.connect() as conn:
                return await file_drift(conn, holder.current)

        try:
            for differs in await within(compare(), 5.0, set()):
                log.warning("%s", differs.advice())
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.warning("plan files not compared with the database: %s", exc)
    return plans


async def start_crm(config: RoutingConfig, metrics: RouterMetrics, stack: AsyncExitStack) -> CrmClient | None:
    """The CRM client, when a URL is configured (a change of `crm` takes effect at the next start)."""
    if config.service.crm.url is None:
        return None
    client = CrmClient(config.service.crm, metrics)
    await client.start()
    stack.push_async_callback(client.close)
    return client


def build_deps(
    config: RoutingConfig, metrics: RouterMetrics, store: Store, crm: CrmClient | None = None, alerts: LineHealthAlerts | None = None
) -> SessionDeps:
    return SessionDeps(
        state=store.state,
        sink=store.writer,
        metrics=metrics,
        clock=utc_now,
        rng=random.Random(),
        instance=store.instance,
        runtime_blacklist=lambda: store.blacklist.current,
        crm=crm,
        line_alerts=alerts.changed if alerts is not None else None,
        live=store.live,
    )


async def start_exporter(holder: ConfigHolder, store: Store, stack: AsyncExitStack) -> CdrExporter | None:
    if not holder.current.service.exporter.in_serve:
        return None
    exporter = CdrExporter(store.engine, lambda: holder.current, utc_now)
    await exporter.start()
    stack.push_async_callback(exporter.close)
    return exporter


async def start_admin(
    holder: ConfigHolder, metrics: RouterMetrics, store: Store, exporter: CdrExporter | None, stack: AsyncExitStack, port: int | None,
    worker: WorkerRole | None = None,
) -> AdminServer | None:
    settings = holder.current.service.admin
    if port is not None:
        settings = settings.model_copy(update={"port": port})
    if worker is not None and settings.port:  # worker i on admin.port + i: each worker's /metrics, the console on any
        settings = settings.model_copy(update={"port": settings.port + worker.index})
    if not settings.enabled:
        return None
    token = admin_token(settings, os.environ)
    deps = AdminDeps(
        holder=holder,
        engine=store.engine,
        blacklist=BlacklistStore(store.engine),
        refresh_blacklist=store.blacklist.refresh,
        metrics=[registry_text(metrics.registry)] + ([exporter.exposition] if exporter else []),
        clock=utc_now,
        extra_ready=exporter.not_ready_reason if exporter else (lambda: None),
        line_health=store.state.line_health,
    )
    console = holder.current.service.console  # a change takes effect at the next start
    mounts = {"/console/": build_console_app(deps, console)} if console.enabled else {}
    server = AdminServer(build_admin_app(deps, settings, token, mounts))
    try:
        await server.start(settings.host, settings.port, token)
    except OSError as exc:
        raise AdminConfigError(f"admin API cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    stack.push_async_callback(server.close)
    log.info("admin API listening on %s:%d", settings.host, server.port)
    if console.enabled:
        await _say_how_to_log_in(store.engine, f"http://{settings.host}:{server.port}/console/")
    return server


async def _say_how_to_log_in(engine: AsyncEngine, url: str) -> None:
    """The first start has no account yet: say how to make one, so `make run` leads to a console that opens."""
    try:
        users = await count_users(engine)
    except SQLAlchemyError as exc:  # the database is away: serve starts anyway, and says nothing of accounts
        log.debug("could not count console users: %s", exc)
        return
    if users:
        log.info("console (管理后台) at %s", url)
    else:
        log.warning("console (管理后台) at %s has no account yet: make the first one with "
                    "`callrouter users add --provider admin` (docs/console.md)", url)


async def serve(
    config: RoutingConfig, *, host: str | None = None, port: int | None = None, admin_port: int | None = None, worker: WorkerRole | None = None
) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Returns the process exit code. `worker`: one of the
    processes of `serve --workers` (see WorkerRole)."""
    metrics = RouterMetrics()
    holder = ConfigHolder(config, metrics) if worker is None else WorkerConfigHolder(config, metrics, worker)
    admin_token(config.service.admin, os.environ)  # a bad token stops the start before anything opens
    host_parts = worker is None or worker.runs_host_parts
    async with AsyncExitStack() as stack:
        store = await open_store(holder, metrics, stack, worker)
        exporter = await start_exporter(holder, store, stack) if host_parts else None
        current = lambda: holder.current  # noqa: E731 - each background part reads the configuration as it is now
        for part in (
            OutboxSender(store.engine, current, metrics.registry, utc_now, random.Random()),  # missed-call SMS, package warnings
            PackageWatcher(store.engine, current, metrics.registry, utc_now),
            RetentionPurger(store.engine, current, metrics.registry, utc_now),
            LineHealthMonitor(store.state.line_health, current, metrics.registry, utc_now),  # callrouter_line_state
        ) if host_parts else ():
            await part.start()
            stack.push_async_callback(part.close)
        lag = LoopLagSampler(metrics.loop_lag)
        lag.start()
        stack.push_async_callback(lag.close)
        await start_admin(holder, metrics, store, exporter, stack, admin_port, worker)
        crm = await start_crm(config, metrics, stack)
        alerts = LineHealthAlerts(store.engine, current, store.state.line_health)  # the manager told of lines that fail
        server = AgiServer(holder, build_deps(config, metrics, store, crm, alerts))
        listen = config.service.listen
        bind_host, bind_port = host or listen.host, listen.port if port is None else port
        try:
            await server.start(bind_host, bind_port, reuse_port=worker is not None)
        except OSError as exc:  # the port is taken (another router?) or the address is not this host's
            raise CannotListen(f"FastAGI cannot listen on {bind_host}:{bind_port}: {exc.strerror or exc} "
                               "(another router running? set listen.port or --port)") from None
        stop = asyncio.Event()
        reloads: set[asyncio.Task[list[str]]] = set()

        def reload() -> None:
            again = holder.reload_here() if isinstance(holder, WorkerConfigHolder) else holder.reload()
            task = asyncio.get_running_loop().create_task(again)
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload)
        if worker is None:
            log.info("callrouter ready: %d plans (%s)", len(config.plans), ", ".join(sorted(config.plans)))
        else:
            log.info("worker %d of %d ready (pid %d, instance %s): %d plans", worker.index, worker.count, os.getpid(), store.instance, len(config.plans))
            worker.tell_parent("ready")
        await stop.wait()
        log.info("stopping: no new calls accepted")
        cut = await server.drain(holder.current.service.timeouts.drain)
    return 0 if cut == 0 else 1
