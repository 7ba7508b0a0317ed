"""`callrouter serve --workers N`: N router processes on one FastAGI port, and the parent that keeps them.

Each worker is a whole `callrouter serve` (its own event loop, so its own core) listening on the port with
SO_REUSEPORT: the kernel spreads new connections over the workers. What calls must share (round-robin turns,
line limits, line health, calls in progress) is in the database, so the workers route as one router; where
that state would be per process (SQLite, `store.routing_state: local`) the parent refuses to start.

The parent only starts, watches and stops: SIGTERM/SIGINT drain every worker, SIGHUP reloads every worker,
a worker that dies is logged and started again with backoff. Exit status: 0 when every worker drained, 1 when
one cut calls off (or had to be killed), 2 when refused, or when a worker could not start (its own message
is in the log just before).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from callrouter.cli.common import EXIT_BAD_INPUT
from callrouter.config.loader import RoutingConfig

log = logging.getLogger(__name__)

MAX_WORKERS = 64
BACKOFF_FIRST = 1.0  # seconds before a dead worker is started again, doubling up to BACKOFF_CAP
BACKOFF_CAP = 30.0
HEALTHY_AFTER = 60.0  # a worker that ran this long before dying starts again after BACKOFF_FIRST
STOP_MARGIN = 30.0  # beyond the drain and the CDR close timeout, before a stopping worker is killed


class CannotStart(Exception):
    """`--workers` is refused: the message says why and what to do (exit 2)."""


def refusal(config: RoutingConfig, workers: int) -> str | None:
    """Why these workers could not act as one router, or None. Per-process state would give each worker its
    own round-robin turns and its own count against max_calls: lines would get up to N times their limit."""
    from callrouter.app import routing_state_mode
    from callrouter.store.db import resolve_url

    if workers > MAX_WORKERS:
        return f"--workers {workers}: at most {MAX_WORKERS}"
    backend = resolve_url(config.service.store.url, config.base_dir).get_backend_name()
    mode = routing_state_mode(config)
    if backend != "postgresql":
        return (f"--workers {workers} needs the routing state shared through Postgres: on SQLite each worker would keep "
                "its own round-robin turns and max_calls counts (so a line could get up to N times its limit). Set store.url "
                "(or CALLROUTER_DATABASE_URL) to Postgres, or run one process (no --workers)")
    if mode != "shared":
        return (f"--workers {workers} needs store.routing_state auto or shared: with local, each worker would keep its own "
                "round-robin turns and max_calls counts (so a line could get up to N times its limit)")
    return None


def reserve_port(host: str, port: int) -> socket.socket:
    """Check that nobody holds the port, then hold it (bound with SO_REUSEPORT, not listening) for the
    parent's life: the workers join it, a worker started again finds the same port, port 0 becomes one
    port for all, and another router (with or without SO_REUSEPORT) cannot bind it meanwhile."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise CannotStart(f"FastAGI cannot listen on {host}:{port}: no such address")
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as probe:  # without SO_REUSEPORT: fails if anyone has the port
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
            chosen = probe.getsockname()[1]
        held = socket.socket(family, kind, proto)  # no SO_REUSEADDR: with it a plain server could bind beside it
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((address[0], chosen, *address[2:]))
    except OSError as exc:
        raise CannotStart(f"FastAGI cannot listen on {host}:{port}: {exc.strerror or exc} "
                          "(another router running? set listen.port or --port)") from None
    return held


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    ever_ready: bool = False
    status: int | None = None  # the exit status of its last life, once stopping
    lives: int = 0


@dataclass
class Supervisor:
    """Keeps `count` workers running `command(index, ready_fd)` until told to stop."""

    count: int
    command: list[str]
    stop_timeout: float
    workers: list[Worker] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    start_failed: int | None = None  # a worker's status when its first life ended before it was ready
    all_ready: asyncio.Event = field(default_factory=asyncio.Event)

    def argv(self, index: int, ready_fd: int) -> list[str]:
        return [*self.command, "--worker", str(index), "--ready-fd", str(ready_fd)]

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.workers = [Worker(i) for i in range(self.count)]
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        keepers = [loop.create_task(self.keep(w)) for w in self.workers]
        await asyncio.gather(*keepers)
        if self.start_failed is not None:
            return self.start_failed
        return 0 if all(w.status == 0 for w in self.workers) else 1

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        log.info("stopping: draining %d workers", self.count)
        self.stopping.set()
        for w in self.workers:
            self.signal(w, signal.SIGTERM)

    def reload(self, *, besides: Worker | None = None) -> None:
        targets = [w for w in self.workers if w.ready and w is not besides]
        log.info("reload: telling %d worker(s)", len(targets))
        for w in targets:
            self.signal(w, signal.SIGHUP)

    def signal(self, worker: Worker, sig: int) -> None:
        if worker.proc is not None and worker.proc.returncode is None:
            try:
                worker.proc.send_signal(sig)
            except ProcessLookupError:  # it has just exited; keep() sees that
                log.debug("worker %d already gone", worker.index)

    async def keep(self, worker: Worker) -> None:
        delay = BACKOFF_FIRST
        while not self.stopping.is_set():
            began = time.monotonic()
            status = await self.life(worker)
            if self.stopping.is_set():
                worker.status = status
                return
            if not worker.ever_ready:  # it never started: the configuration, the database, a port... say so and stop
                log.error("worker %d could not start (%s): stopping the others", worker.index, described(status))
                self.start_failed = status if status > 0 else 1
                self.stop()
                worker.status = status
                return
            if time.monotonic() - began >= HEALTHY_AFTER:
                delay = BACKOFF_FIRST
            log.error("worker %d (pid %s) died (%s); starting it again in %.0f s",
                      worker.index, worker.proc.pid if worker.proc else "?", described(status), delay)
            worker.status = status  # dead when the stop comes during the backoff: calls were cut off
            await asyncio.wait([asyncio.ensure_future(self.stopping.wait())], timeout=delay)
            delay = min(delay * 2, BACKOFF_CAP)

    async def life(self, worker: Worker) -> int:
        """One run of the worker's process: start it, follow what it tells (ready, reload), its exit status."""
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        try:
            worker.proc = await asyncio.create_subprocess_exec(*self.argv(worker.index, write_fd), pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        worker.lives += 1
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0))
        stopper = loop.create_task(self.kill_when_late(worker))
        try:
            while word := (await reader.readline()).strip():
                if word == b"ready":
                    worker.ready = worker.ever_ready = True
                    if self.stopping.is_set():  # it came up while the others drain: it drains too
                        self.signal(worker, signal.SIGTERM)
                    elif worker.lives == 1 and all(w.ever_ready for w in self.workers):
                        self.all_ready.set()
                    elif worker.lives > 1:
                        log.info("worker %d started again (pid %d)", worker.index, worker.proc.pid)
                elif word == b"reload":  # the admin API reloaded this one: the others follow
                    self.reload(besides=worker)
            return await worker.proc.wait()
        finally:
            worker.ready = False
            transport.close()
            stopper.cancel()

    async def kill_when_late(self, worker: Worker) -> None:
        """A worker that has not left `stop_timeout` after the stop began is killed (the parent never hangs)."""
        await self.stopping.wait()
        await asyncio.sleep(self.stop_timeout)
        if worker.proc is not None and worker.proc.returncode is None:
            log.error("worker %d (pid %d) still running %.0f s after the stop: killing it", worker.index, worker.proc.pid, self.stop_timeout)
            worker.proc.kill()


def described(status: int) -> str:
    if status < 0:
        return f"signal {signal.Signals(-status).name}"
    return f"exit status {status}"


def worker_command(args: argparse.Namespace, host: str, port: int) -> list[str]:
    """The `callrouter serve` each worker runs: the parent's own flags, with the one port for all."""
    command = [sys.executable, "-m", "callrouter", "serve", "--config", args.config, "--host", host, "--port", str(port),
               "--event-loop", args.event_loop, "--workers", str(args.workers)]
    for flag, value in (("--admin-port", args.admin_port), ("--log-level", args.log_level), ("--log-format", args.log_format)):
        if value is not None:
            command += [flag, str(value)]
    return command


def serve_workers(args: argparse.Namespace, config: RoutingConfig) -> int:
    """The parent of `serve --workers N`."""
    reason = refusal(config, args.workers)
    if reason is not None:
        print(f"callrouter: {reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    listen = config.service.listen
    host = args.host or listen.host
    try:
        held = reserve_port(host, listen.port if args.port is None else args.port)
    except CannotStart as exc:
        print(f"callrouter: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        port = held.getsockname()[1]
        timeouts = config.service
        supervisor = Supervisor(args.workers, worker_command(args, host, port),
                                timeouts.timeouts.drain + timeouts.cdr.close_timeout + STOP_MARGIN)

        async def main() -> int:
            ready = asyncio.get_running_loop().create_task(announce(supervisor, host, port))
            try:
                return await supervisor.run()
            finally:
                ready.cancel()

        return asyncio.run(main())
    finally:
        held.close()


async def announce(supervisor: Supervisor, host: str, port: int) -> None:
    await supervisor.all_ready.wait()
    pids = ", ".join(str(w.proc.pid) for w in supervisor.workers if w.proc is not None)
    log.info("callrouter ready: %d workers on FastAGI %s:%d (pids %s)", supervisor.count, host, port, pids)
