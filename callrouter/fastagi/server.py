"""The FastAGI server: accepts Asterisk's connections and runs one CallSession per call.

Bounded everywhere: only the Asterisk servers in `listen.allow` may connect (anyone else is closed on
before a byte is read or sent); connections still in their AGI header have their own limit
(`max_pending_headers`), so silent sockets cannot take the places of calls; a cap on concurrent calls
(`max_sessions`, beyond it the call is handed straight back to the dialplan's fallback); a timeout for
the AGI header and for each reply, and a bounded drain on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Callable, Sequence, cast

from callrouter.fastagi.channel import AgiChannel, AgiTimeout, ChannelHungUp
from callrouter.agi.errors import AgiProtocolError
from callrouter.config.service import IpNetwork
from callrouter.config.holder import ConfigHolder
from callrouter.fastagi.session import RESULT_VAR, CallSession, SessionDeps
from callrouter.tasks import GOODBYE_BUDGET

log = logging.getLogger(__name__)

SWEEP_SECONDS = 0.1  # how late a timeout may fire; one pass over the sessions each time
REFUSAL_LOG_WINDOW = 60.0  # at most one warning per source (or per reason) this often
REFUSAL_LOG_SOURCES = 4096  # sources remembered for that; a scan of more stays quiet until they age out


def peer_address(peername: Any) -> IPv4Address | IPv6Address | None:
    """The peer's IP from `get_extra_info("peername")`; an IPv4-mapped IPv6 address (dual-stack socket) as IPv4."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return None
    try:
        address = ip_address(peername[0])
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def peer_allowed(peername: Any, allow: Sequence[IpNetwork]) -> bool:
    """Whether `listen.allow` admits this peer; an unknown peer is refused."""
    return peer_verdict(peername, tuple(allow))[1]


def peer_verdict(peername: Any, allow: tuple[IpNetwork, ...]) -> tuple[str, bool]:
    """The peer's address as the session names it ("" when unknown) and whether `listen.allow` admits it."""
    address = peer_address(peername)
    if address is None:
        return "", False
    shown = str(address)
    if isinstance(address, IPv6Address) and address.scope_id:
        address = IPv6Address(shown.split("%", 1)[0])  # fe80::1%eth0 is in fe80::/10
    return shown, any(address.version == net.version and address in net for net in allow)


class PeerGate:
    """`peer_verdict` remembered per peer host: a router sees the same few Asterisks on every call, and
    parsing the address costs more than the rest of the gate. Bounded, so a scan cannot grow it."""

    def __init__(self, max_hosts: int = REFUSAL_LOG_SOURCES) -> None:
        self.max_hosts = max_hosts
        self._known: dict[tuple[str, tuple[IpNetwork, ...]], tuple[str, bool]] = {}

    def verdict(self, peername: Any, allow: tuple[IpNetwork, ...]) -> tuple[str, bool]:
        if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
            return "", False
        key = (peername[0], allow)  # the port plays no part; a reload's new allow list is a new key
        known = self._known.get(key)
        if known is None:
            if len(self._known) >= self.max_hosts:
                self._known.clear()
            known = self._known[key] = peer_verdict(peername, allow)
        return known


class RefusalLog:
    """Decides which refusals get a WARNING: one per source per window, with a bounded table, so a scan
    (or a flood from many addresses) can neither fill the log nor grow the process."""

    def __init__(self, window: float = REFUSAL_LOG_WINDOW, max_sources: int = REFUSAL_LOG_SOURCES) -> None:
        self.window = window
        self.max_sources = max_sources
        self._warned: OrderedDict[str, float] = OrderedDict()  # source -> when it was last warned about; oldest first

    def should_warn(self, source: str, now: float) -> bool:
        while self._warned:
            oldest, when = next(iter(self._warned.items()))
            if now - when < self.window:
                break
            del self._warned[oldest]
        if source in self._warned or len(self._warned) >= self.max_sources:
            return False
        self._warned[source] = now
        return True


class GatedChannel(AgiChannel):
    """An AgiChannel that asks the server whether to take the connection before anything is read or sent.

    It also keeps the peer's address (`peer`, e.g. "10.0.0.5", or "" when unknown), for the session's use."""

    __slots__ = ("_admit",)

    def __init__(self, *, admit: Callable[["GatedChannel", asyncio.BaseTransport], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._admit = admit
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._admit(self, transport):  # it sets `peer`
            cast(asyncio.Transport, transport).abort()  # at once: nothing read, nothing sent, nothing buffered
            return
        super().connection_made(transport)


class AgiServer:
    def __init__(self, holder: ConfigHolder, deps: SessionDeps) -> None:
        self.holder = holder
        self.deps = deps
        self._server: asyncio.Server | None = None
        self._tasks: dict[asyncio.Task[None], AgiChannel] = {}  # each call's task and its channel
        self._channels: set[AgiChannel] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._active = 0  # calls: sessions whose AGI environment has been read
        self._pending: set[AgiChannel] = set()  # connections still in their AGI header
        self._refusals = RefusalLog()
        self._gate = PeerGate()
        # Read when scraped, not kept up to date by every call: two gauge moves per call less.
        deps.metrics.active_sessions.set_function(lambda: self._active)
        deps.metrics.pending_headers.set_function(lambda: len(self._pending))
        # Bound once, not per connection: every held call would otherwise keep its own copies.
        self._admit_hook, self._observer_hook, self._open_hook = self._admit, self._observe_command, self._accept
        self._when_done = self._task_done

    @property
    def active(self) -> int:
        return self._active

    @property
    def pending(self) -> int:
        """Connections admitted that have not yet sent their whole AGI header."""
        return len(self._pending)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Listen; `reuse_port` (SO_REUSEPORT) lets the workers of `serve --workers` share the port, the
        kernel spreading new connections over them."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_channel, host, port, backlog=1024, reuse_port=reuse_port or None)
        self._sweeper = loop.create_task(self._sweep())
        log.info("FastAGI listening on %s:%d", host, self.port)

    def _new_channel(self) -> AgiChannel:
        return GatedChannel(admit=self._admit_hook, command_timeout=self.holder.current.service.timeouts.command,
                            observer=self._observer_hook, on_open=self._open_hook)

    def _observe_command(self, verb: str, seconds: float, reply: object) -> None:
        self.deps.metrics.observe_command(verb, seconds)

    def _admit(self, channel: GatedChannel, transport: asyncio.BaseTransport) -> bool:
        """At connection time, before any byte: only `listen.allow`, and only while the pending-header limit allows."""
        service = self.holder.current.service
        channel.peer, allowed = self._gate.verdict(transport.get_extra_info("peername"), service.listen.allow)
        if not allowed:
            source = channel.peer or "an unknown address"
            self._refuse("not_allowed", source, "refused a FastAGI connection from %s: not in listen.allow "
                         "(further refusals from it are not logged for %.0f s)", source, REFUSAL_LOG_WINDOW)
            return False
        limit = service.pending_header_limit
        if len(self._pending) >= limit:
            self._refuse("too_many_pending", "too_many_pending", "refused a FastAGI connection from %s: %d connections "
                         "are still sending their AGI header (max_pending_headers; not logged again for %.0f s)",
                         channel.peer, limit, REFUSAL_LOG_WINDOW)
            return False
        self._pending.add(channel)
        return True

    def _refuse(self, reason: str, log_key: str, message: str, *args: object) -> None:
        self.deps.metrics.connections_refused.labels(reason=reason).inc()
        if self._refusals.should_warn(log_key, time.monotonic()):
            log.warning(message, *args)

    def _header_done(self, channel: AgiChannel) -> None:
        """The connection left the header phase (environment read, failed, or task gone); idempotent."""
        self._pending.discard(channel)

    def _accept(self, channel: AgiChannel) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(channel))
        self._tasks[task] = channel
        task.add_done_callback(self._when_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        channel = self._tasks.pop(task, None)
        if channel is not None:
            self._header_done(channel)  # also when cancelled before it ran

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
        metrics.sessions_started.inc()
        counted = False
        outcome = "error"
        try:
            try:
                env = await channel.read_environment(config.service.timeouts.environment)
            finally:
                self._header_done(channel)
            self._active += 1  # a call from here on: only calls count against max_sessions
            counted = True
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
            if counted:
                self._active -= 1
            metrics.count(metrics.sessions_ended, outcome)
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
        await self.background_done(GOODBYE_BUDGET)
        return len(pending)

    async def background_done(self, timeout: float) -> bool:
        """Wait for the work calls left behind (the manager's line-health messages); False if some is still running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.deps.pending:
            left = deadline - loop.time()
            if left <= 0:
                log.warning("%d line-health messages still being queued at shutdown", len(self.deps.pending))
                return False
            await asyncio.wait(set(self.deps.pending), timeout=left)
        return True
