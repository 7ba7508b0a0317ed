"""An AGI channel: the protocol state machine wired to an asyncio stream, with typed call-control methods.

This is the only place AGI bytes meet a socket. Each method sends one command and waits for its reply;
an out-of-band `HANGUP` line is noted and the reply still awaited, so replies never fall out of step.
A dead channel surfaces as ChannelHungUp, whichever way Asterisk says it (511, result -1, EOF).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, cast

from callrouter.agi import commands
from callrouter.agi.commands import Command
from callrouter.agi.dialtiming import SUMMARY_EXPRESSION, DialTiming, hook_options, parse_summary
from callrouter.agi.errors import AgiError, AgiProtocolError
from callrouter.agi.protocol import NEED_DATA, AgiConnection, ConnectionClosed, Environment, HangupNotice, Reply, State

log = logging.getLogger(__name__)

INTER_DIGIT_MS = 3000  # between digits when collecting without a prompt
_SUMMARY = commands.get_full_variable(SUMMARY_EXPRESSION)  # sent after every Dial: built once
PAUSE_READING_AT = 65536  # unparsed bytes beyond which we stop reading from a flooding peer


class ChannelHungUp(AgiError):
    """The caller's channel is gone; only dead-safe commands may follow."""


class AgiCommandError(AgiError):
    """Asterisk refused a command (510 unknown, 520 usage): a bug on our side or a missing module."""


class AgiTimeout(AgiError):
    """The peer said nothing for longer than allowed."""


@dataclass(frozen=True, slots=True)
class DialResult:
    status: str  # DIALSTATUS as Asterisk set it
    answered_target: str  # the dialled target that answered ("" when nobody answered)
    timing: DialTiming  # ring and talk time of the bound line (agi/dialtiming.py)
    elapsed: float  # our own measure of how long Dial took


CommandObserver = Callable[[str, float, Reply | None], None]


def _value_of(reply: Reply) -> str | None:
    """GET (FULL) VARIABLE's value: `200 result=1 (<value>)`, or None when it is not set (`result=0`)."""
    return reply.data if reply.result == "1" else None


class AgiChannel(asyncio.Protocol):
    """One FastAGI session seen from our side: an asyncio Protocol feeding the state machine directly.

    Bytes go from `data_received` straight into AgiConnection (no StreamReader copy or future per read).
    Timeouts are deadlines checked by the server's periodic sweep (`expire`), not a timer per command.
    Slotted, as the other per-call objects: thousands are held at once (docs/benchmarks.md, held calls).
    """

    __slots__ = (
        "_conn", "_command_timeout", "_observer", "_on_open", "_transport", "_waiter", "_paused", "_closed", "deadline",
        "environment", "hangup_notified", "dead", "waiting_seconds", "received_bytes", "peer", "_dials", "_last_sent",
    )

    def __init__(
        self,
        *,
        command_timeout: float,
        observer: CommandObserver | None = None,
        max_environment_bytes: int = 16384,
        on_open: Callable[["AgiChannel"], None] | None = None,
    ) -> None:
        self._conn = AgiConnection(max_environment_bytes=max_environment_bytes)
        self._command_timeout = command_timeout
        self._observer = observer
        self._on_open = on_open
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._closed = False  # the peer's EOF was already taken as an event
        self.deadline: float | None = None  # loop time by which Asterisk must have said something
        self.environment: Environment | None = None
        self.hangup_notified = False  # Asterisk sent HANGUP
        self.dead = False  # the channel is known to be gone (notice, 511, or a -1 that means hangup)
        self.waiting_seconds = 0.0  # time spent waiting for Asterisk; the rest of a session is ours
        self.received_bytes = 0  # 0 at the end: a port check that connected and left, not a broken peer
        self.peer = ""  # the Asterisk's address; the server's gate fills it in (server.GatedChannel)
        self._dials = 0  # Dials sent in this session: tags the timing stamps of each (agi/dialtiming.py)
        self._last_sent = 0.0  # monotonic time the last command was written

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses. TCP_NODELAY is not set here: asyncio and uvloop both set
        # it on every accepted TCP socket already (tests/test_server.py checks), and a second setsockopt
        # and socket wrapper per call showed in the bench's profile (issue 15).
        self._transport = cast(asyncio.Transport, transport)
        if self._on_open is not None:
            self._on_open(self)

    def data_received(self, data: bytes) -> None:
        self.received_bytes += len(data)
        self._conn.receive_data(data)
        if self._conn.buffered_bytes > PAUSE_READING_AT and not self._paused:
            self._paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._conn.receive_data(b"")
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn.receive_data(b"")
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def expire(self, now: float) -> bool:
        """Called by the server's sweep: fail the wait in progress if its deadline has passed."""
        waiter = self._waiter
        if waiter is None or waiter.done() or self.deadline is None or now < self.deadline:
            return False
        waiter.set_exception(AgiTimeout("Asterisk went silent past the deadline"))
        return True

    # -- events -------------------------------------------------------------------------------

    async def _next_event(self, timeout: float | None) -> object:
        event = self._conn.next_event()
        if event is not NEED_DATA:
            return event
        loop = asyncio.get_running_loop()
        started = time.perf_counter()  # not loop.time(): uvloop caches that per loop iteration
        self.deadline = None if timeout is None else loop.time() + timeout
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        try:
            while (event := self._conn.next_event()) is NEED_DATA:
                self._waiter = loop.create_future()
                await self._waiter
        finally:
            self._waiter = None
            self.deadline = None
            self.waiting_seconds += time.perf_counter() - started
        return event

    async def read_environment(self, timeout: float) -> Environment:
        """The agi_* header Asterisk sends first; raises AgiProtocolError or AgiTimeout."""
        event = await self._next_event(timeout)
        if isinstance(event, ConnectionClosed):
            raise AgiProtocolError("connection closed before the AGI environment")
        if not isinstance(event, Environment):
            raise AgiProtocolError(f"expected the AGI environment, got {type(event).__name__}")
        self.environment = event
        return event

    async def command(self, command: Command, timeout: float | None = -1.0) -> Reply:
        """Send one command, return its reply. `timeout` -1 means the channel's default, None no limit."""
        if timeout is not None and timeout < 0:
            timeout = self._command_timeout
        if self._closed or self._transport is None or self._transport.is_closing():
            self.dead = True
            raise ChannelHungUp("connection already closed")
        self._transport.write(self._conn.send(command))
        started = self._last_sent = time.monotonic()
        reply: Reply | None = None
        try:
            while reply is None:
                event = await self._next_event(timeout)
                if isinstance(event, HangupNotice):
                    self.hangup_notified = self.dead = True
                elif isinstance(event, ConnectionClosed):
                    self.dead = True
                    raise ChannelHungUp("Asterisk closed the connection")
                elif isinstance(event, Reply):
                    reply = event
        finally:
            if self._observer is not None:
                self._observer(command.verb, time.monotonic() - started, reply)
        self._take_buffered_notices()
        if reply.code == 511:
            self.dead = True
            raise ChannelHungUp(f"{command.verb}: channel is dead (511)")
        if reply.code != 200:
            raise AgiCommandError(f"{command.verb}: {reply.lines[0] if reply.lines else reply.code}")
        return reply

    def _take_buffered_notices(self) -> None:
        """A HANGUP already received right behind a reply (Asterisk 22 sends it just after a failing
        command's reply) is taken now, so a `result=-1` is read knowing the caller is gone."""
        while self._conn.state is State.IDLE:
            event = self._conn.next_event()
            if isinstance(event, HangupNotice):
                self.hangup_notified = self.dead = True
            elif isinstance(event, ConnectionClosed):
                self.dead = True
                self._closed = True
            else:
                return

    async def _still_there(self, what: str) -> None:
        """After a `result=-1` that means either "caller gone" or "file missing": find out which.

        Asterisk 22 writes the reply and its `HANGUP` line separately, so the notice may not have come
        yet. CHANNEL STATUS is not dead-safe: 511 (or the notice) means the caller hung up, and that is
        an abandoned call, not a missing prompt. Raises ChannelHungUp then.
        """
        if self.hangup_notified:
            raise self._failed(what)
        try:
            await self.command(commands.channel_status())
        except ChannelHungUp:
            raise self._failed(what) from None
        if self.hangup_notified:
            raise self._failed(what)

    def _failed(self, what: str) -> ChannelHungUp:
        self.dead = True
        return ChannelHungUp(f"{what} failed: the caller hung up")

    async def answer(self) -> None:
        reply = await self.command(commands.answer())
        if reply.result_int == -1:
            raise self._failed("ANSWER")

    async def stream_file(self, name: str, escape_digits: str = "") -> str | None:
        """Play a file; returns the escape digit pressed, or None. A missing file is not fatal."""
        reply = await self.command(commands.stream_file(name, escape_digits))
        code = reply.result_int
        if code == -1:
            await self._still_there("STREAM FILE")
            log.warning("prompt %s could not be played; the call goes on", name)
            return None  # missing or unplayable file: Asterisk logged it too
        return chr(code) if code else None

    async def get_data(self, name: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """Play a prompt and read digits; (digits, timed_out).

        Asterisk answers `result=-1` both when the caller hung up and when the prompt cannot be played
        (seen on Asterisk 22: a missing file). Without a HANGUP notice the caller may still be there, so
        the digits are then collected without the prompt rather than dropping the call.
        """
        reply = await self.command(commands.get_data(name, timeout_ms, max_digits), timeout=self._command_timeout + timeout_ms / 1000)
        if reply.result != "-1":
            return (reply.result or ""), reply.timed_out
        await self._still_there("GET DATA")
        log.warning("prompt %s could not be played; collecting digits without it", name)
        digits = ""
        while len(digits) < max_digits:
            wait_ms = timeout_ms if not digits else INTER_DIGIT_MS
            reply = await self.command(commands.wait_for_digit(wait_ms), timeout=self._command_timeout + wait_ms / 1000)
            code = reply.result_int
            if code is None or code < 0:
                raise self._failed("WAIT FOR DIGIT")
            if code == 0:
                return digits, True
            if chr(code) == "#":
                return digits, False
            digits += chr(code)
        return digits, False

    async def get_variable(self, name: str) -> str | None:
        return _value_of(await self.command(commands.get_variable(name)))

    async def get_full_variable(self, expression: str) -> str | None:
        return _value_of(await self.command(commands.get_full_variable(expression)))

    async def set_variable(self, name: str, value: str) -> None:
        await self.command(commands.set_variable(name, value))

    async def exec(self, app: str, options: str, timeout: float | None = -1.0) -> int:
        reply = await self.command(commands.exec_app(app, options), timeout=timeout)
        return reply.result_int if reply.result_int is not None else -1

    async def dial(
        self, targets: list[str], ring_timeout: int, options: str, reply_timeout: float | None, *, timing_hooks: bool = True
    ) -> DialResult:
        """EXEC Dial, then read what happened, and when, in one dead-safe round trip.

        With `timing_hooks` the Dial carries the b()/U() options that stamp Asterisk's clock when each
        line is called and when one answers (agi/dialtiming.py says why Dial's own variables cannot).
        """
        self._dials += 1
        caller = self.environment.channel if self.environment is not None else ""
        hooks = hook_options(caller, self._dials) if timing_hooks else ""
        started = time.monotonic()
        await self.exec("Dial", f"{'&'.join(targets)},{ring_timeout},{options}{hooks}", timeout=reply_timeout)
        replied = time.monotonic()
        summary = _value_of(await self.command(_SUMMARY)) or ""
        timing = parse_summary(summary, self._dials, replied - started, self._last_sent - replied)
        # DIALEDPEERNUMBER is the dial string without its technology: "138...@ctx/n" for "Local/138...@ctx/n".
        peer = timing.peer
        target = next((t for t in targets if t == peer or t.split("/", 1)[-1] == peer), "")
        return DialResult(timing.status, target, timing, replied - started)

    async def record_file(self, path: str, fmt: str, max_seconds: int, silence_s: int | None, beep: bool) -> int:
        """Record until '#', silence or the limit; returns the samples recorded (endpos)."""
        cmd = commands.record_file(path, fmt, "#", max_seconds * 1000, beep=beep, silence_s=silence_s)
        reply = await self.command(cmd, timeout=self._command_timeout + max_seconds)
        if reply.data == "hangup":
            # `result=-1 (hangup) endpos=N`: the caller hung up after speaking, the usual end of a message.
            self.dead = True
            return reply.endpos or 0
        if reply.data in ("timeout", "dtmf"):
            return reply.endpos or 0
        if self.hangup_notified:
            raise self._failed("RECORD FILE")
        # "(writefile)": the file could not be created; "(randomerror)": e.g. no beep sound; "(waitfor)".
        log.error("RECORD FILE %s failed: %s", path, reply.lines[0] if reply.lines else reply.data)
        return 0

    async def hangup(self) -> None:
        await self.command(commands.hangup())
        self.dead = True

    def close(self) -> None:
        """Close our side (pending bytes are still sent); Asterisk then continues its dialplan after AGI()."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
