"""Wiring: the one place that builds the process's parts and connects them."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
from datetime import datetime, timezone

from callrouter.config.loader import RoutingConfig
from callrouter.holder import ConfigHolder
from callrouter.metrics import RouterMetrics
from callrouter.records import JsonlSink, MemorySink, RecordSink
from callrouter.server import AgiServer
from callrouter.session import SessionDeps
from callrouter.state import MemoryRoutingState

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def build_sink(config: RoutingConfig) -> RecordSink:
    path = config.service.records.jsonl_path
    return JsonlSink(config.path(path)) if path else MemorySink()


def build_deps(config: RoutingConfig, metrics: RouterMetrics, sink: RecordSink | None = None) -> SessionDeps:
    return SessionDeps(
        state=MemoryRoutingState(),
        sink=sink if sink is not None else build_sink(config),
        metrics=metrics,
        clock=utc_now,
        rng=random.Random(),
        instance=f"{socket.gethostname()}:{os.getpid()}",
    )


async def serve(config: RoutingConfig, *, host: str | None = None, port: int | None = None) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Returns the process exit code."""
    metrics = RouterMetrics()
    holder = ConfigHolder(config, metrics)
    deps = build_deps(config, metrics)
    server = AgiServer(holder, deps)
    listen = config.service.listen
    await server.start(host or listen.host, listen.port if port is None else port)
    stop = asyncio.Event()
    reloads: set[asyncio.Task[list[str]]] = set()

    def reload() -> None:
        task = asyncio.get_running_loop().create_task(holder.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    log.info("callrouter ready: %d plans (%s)", len(config.plans), ", ".join(sorted(config.plans)))
    await stop.wait()
    log.info("stopping: no new calls accepted")
    cut = await server.drain(holder.current.service.timeouts.drain)
    await deps.sink.close()
    return 0 if cut == 0 else 1
