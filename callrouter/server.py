"""The FastAGI server: accepts Asterisk's connections and runs one CallSession per call.

Bounded everywhere: a cap on concurrent sessions (beyond it the call is handed straight back to the
dialplan's fallback), a timeout for the AGI header and for each reply, and a bounded drain on shutdown.
"""

from __future__ import annotations

import asyncio
import logging

from callrouter.agi.channel import AgiChannel, AgiTimeout, ChannelHungUp
from callrouter.agi.errors import AgiProtocolError
from callrouter.holder import ConfigHolder
from callrouter.session import RESULT_VAR, CallSession, SessionDeps

log = logging.getLogger(__name__)

SWEEP_SECONDS = 0.1  # how late a timeout may fire; one pass over the sessions each time


class AgiServer:
    def __init__(self, holder: ConfigHolder, deps: SessionDeps) -> None:
        self.holder = holder
        self.deps = deps
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._channels: set[AgiChannel] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_channel, host, port, backlog=1024)
        self._sweeper = loop.create_task(self._sweep())
        log.info("FastAGI listening on %s:%d", host, self.port)

    def _new_channel(self) -> AgiChannel:
        config = self.holder.current
        metrics = self.deps.metrics
        return AgiChannel(
            command_timeout=config.service.timeouts.command,
            observer=lambda verb, secs, reply: metrics.observe_command(verb, secs),
            on_open=self._accept,
        )

    def _accept(self, channel: AgiChannel) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        """One periodic check of every session's deadline instead of a timer per AGI command."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = loop.time()
            for channel in list(self._channels):
                channel.expire(now)

    async def _handle(self, channel: AgiChannel) -> None:
        config = self.holder.current
        metrics = self.deps.metrics
        self._channels.add(channel)
        self._active += 1
        metrics.sessions_started.inc()
        metrics.active_sessions.inc()
        outcome = "error"
        try:
            env = await channel.read_environment(config.service.timeouts.environment)
            if self._active > config.service.max_sessions:
                log.warning("session cap of %d reached: handing the call back to the dialplan", config.service.max_sessions)
                await channel.set_variable(RESULT_VAR, "BUSY")
                outcome = "rejected_busy"
            else:
                outcome = await CallSession(channel, env, config, self.deps).run()
        except AgiTimeout as exc:
            log.warning("FastAGI peer went silent: %s", exc)
            metrics.protocol_errors.labels(kind="timeout").inc()
            outcome = "timeout"
        except AgiProtocolError as exc:
            if channel.received_bytes == 0:
                log.debug("connection closed before sending anything (a port check?)")
                outcome = "closed_early"
            else:
                log.warning("FastAGI protocol error: %s", exc)
                metrics.protocol_errors.labels(kind=type(exc).__name__).inc()
                outcome = "protocol_error"
        except ChannelHungUp:
            outcome = "error"
        except asyncio.CancelledError:
            outcome = "error"
            raise
        except Exception:
            log.exception("FastAGI session crashed")
            outcome = "error"
        finally:
            self._channels.discard(channel)
            self._active -= 1
            metrics.active_sessions.dec()
            metrics.sessions_ended.labels(outcome=outcome).inc()
            channel.close()

    async def drain(self, timeout: float) -> int:
        """Stop accepting, let calls in progress finish for up to `timeout` s; returns calls cut off."""
        if self._server is not None:
            self._server.close()
        pending = set(self._tasks)
        if pending:
            log.info("draining %d calls (up to %.0fs)", len(pending), timeout)
            _, pending = await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
            log.warning("drain timeout: %d calls cut off", len(pending))
        if self._sweeper is not None:  # sessions still needed their deadlines while draining
            self._sweeper.cancel()
            self._sweeper = None
        return len(pending)
