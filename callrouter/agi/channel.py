"""An AGI channel: the protocol state machine wired to an asyncio stream, with typed call-control methods.

This is the only place AGI bytes meet a socket. Each method sends one command and waits for its reply;
an out-of-band `HANGUP` line is noted and the reply still awaited, so replies never fall out of step.
A dead channel surfaces as ChannelHungUp, whichever way Asterisk says it (511, result -1, EOF).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

from callrouter.agi import commands
from callrouter.agi.commands import Command
from callrouter.agi.errors import AgiProtocolError
from callrouter.agi.protocol import NEED_DATA, AgiConnection, ConnectionClosed, Environment, HangupNotice, Reply

READ_SIZE = 65536


class ChannelHungUp(Exception):
    """The caller's channel is gone; only dead-safe commands may follow."""


class AgiCommandError(Exception):
    """Asterisk refused a command (510 unknown, 520 usage): a bug on our side or a missing module."""


class AgiTimeout(Exception):
    """The peer said nothing for longer than allowed."""


@dataclass(frozen=True)
class DialResult:
    status: str  # DIALSTATUS
    answered_target: str  # DIALEDPEERNUMBER ("" when nobody answered)
    dialed_seconds: int  # DIALEDTIME: ringing plus talk
    answered_seconds: int  # ANSWEREDTIME: talk
    elapsed: float  # our own measure of how long Dial took


CommandObserver = Callable[[str, float, Reply | None], None]


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or "0"))
    except ValueError:
        return 0


class AgiChannel:
    """One FastAGI session seen from our side."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        command_timeout: float,
        observer: CommandObserver | None = None,
        max_environment_bytes: int = 16384,
    ) -> None:
        self._reader, self._writer = reader, writer
        self._conn = AgiConnection(max_environment_bytes=max_environment_bytes)
        self._command_timeout = command_timeout
        self._observer = observer
        self.environment: Environment | None = None
        self.hangup_notified = False  # Asterisk sent HANGUP
        self.dead = False  # the channel is known to be gone (notice, 511, or a -1 that means hangup)
        self.waiting_seconds = 0.0  # time spent waiting for Asterisk; the rest of a session is ours

    async def _next_event(self, timeout: float | None) -> object:
        event = self._conn.next_event()
        if event is not NEED_DATA:
            return event
        started = time.perf_counter()
        try:
            # asyncio.timeout, not wait_for: wait_for makes a task per read on 3.11, which shows per call.
            async with asyncio.timeout(timeout):
                while (event := self._conn.next_event()) is NEED_DATA:
                    try:
                        data = await self._reader.read(READ_SIZE)
                    except ConnectionError:
                        data = b""
                    self._conn.receive_data(data)
        except TimeoutError:
            raise AgiTimeout(f"no data from Asterisk for {timeout:.1f}s") from None
        finally:
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
        data = self._conn.send(command)
        self._writer.write(data)
        started = time.monotonic()
        reply: Reply | None = None
        try:
            await self._writer.drain()
            while reply is None:
                event = await self._next_event(timeout)
                if isinstance(event, HangupNotice):
                    self.hangup_notified = self.dead = True
                elif isinstance(event, ConnectionClosed):
                    self.dead = True
                    raise ChannelHungUp("Asterisk closed the connection")
                elif isinstance(event, Reply):
                    reply = event
        except ConnectionError:
            self.dead = True
            raise ChannelHungUp("connection lost") from None
        finally:
            if self._observer is not None:
                self._observer(command.verb, time.monotonic() - started, reply)
        if reply.code == 511:
            self.dead = True
            raise ChannelHungUp(f"{command.verb}: channel is dead (511)")
        if reply.code != 200:
            raise AgiCommandError(f"{command.verb}: {reply.lines[0] if reply.lines else reply.code}")
        return reply

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
            if self.hangup_notified:
                raise self._failed("STREAM FILE")
            return None  # missing or unplayable file: Asterisk logged it; the call goes on
        return chr(code) if code else None

    async def get_data(self, name: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """Play a prompt and read digits; (digits, timed_out)."""
        reply = await self.command(commands.get_data(name, timeout_ms, max_digits), timeout=self._command_timeout + timeout_ms / 1000)
        if reply.result == "-1":
            raise self._failed("GET DATA")
        return (reply.result or ""), reply.timed_out

    async def get_variable(self, name: str) -> str | None:
        reply = await self.command(commands.get_variable(name))
        return reply.data if reply.result == "1" else None

    async def get_full_variable(self, expression: str) -> str | None:
        reply = await self.command(commands.get_full_variable(expression))
        return reply.data if reply.result == "1" else None

    async def set_variable(self, name: str, value: str) -> None:
        await self.command(commands.set_variable(name, value))

    async def exec(self, app: str, options: str, timeout: float | None = -1.0) -> int:
        reply = await self.command(commands.exec_app(app, options), timeout=timeout)
        return reply.result_int if reply.result_int is not None else -1

    async def dial(self, targets: list[str], ring_timeout: int, options: str, reply_timeout: float | None) -> DialResult:
        """EXEC Dial, then read what happened in one dead-safe round trip."""
        started = time.monotonic()
        await self.exec("Dial", f"{'&'.join(targets)},{ring_timeout},{options}", timeout=reply_timeout)
        elapsed = time.monotonic() - started
        summary = await self.get_full_variable("${DIALSTATUS}|${ANSWEREDTIME}|${DIALEDTIME}|${DIALEDPEERNUMBER}") or ""
        status, answered, dialed, peer = (summary.split("|") + ["", "", "", ""])[:4]
        return DialResult(status, peer, _int(dialed), _int(answered), elapsed)

    async def record_file(self, path: str, fmt: str, max_seconds: int, silence_s: int | None, beep: bool) -> int:
        """Record until '#', silence or the limit; returns the samples recorded (endpos)."""
        cmd = commands.record_file(path, fmt, "#", max_seconds * 1000, beep=beep, silence_s=silence_s)
        reply = await self.command(cmd, timeout=self._command_timeout + max_seconds)
        if reply.result_int == -1 and reply.endpos is None:
            raise self._failed("RECORD FILE")
        return reply.endpos or 0

    async def hangup(self) -> None:
        await self.command(commands.hangup())
        self.dead = True

    async def close(self) -> None:
        """Close our side; Asterisk then continues its dialplan after AGI()."""
        if not self._writer.is_closing():
            self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            self.dead = True
