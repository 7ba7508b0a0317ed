"""The FastAGI protocol as a state machine with no IO: bytes in, events out; commands in, bytes out.

Everything that affects the connection's state lives in this file. Asterisk first sends the `agi_*`
environment (`key: value` lines, then an empty line). Then we send one command at a time and Asterisk
answers each with a reply: `200 result=<r>[ (<data>)][ endpos=<n>]`, `510 ...`, `511 ...`, or `520`
(one line, or `520-` ... `520 End of proper usage.`). When the caller hangs up, Asterisk sends a line
`HANGUP` on its own: while we wait for a reply (the reply still follows) or while idle. Reading that line
as a reply would put every later reply one step behind, so it is a separate event.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from callrouter.agi.commands import Command
from callrouter.agi.errors import LocalProtocolError, RemoteProtocolError


class State(enum.Enum):
    ENVIRONMENT = "environment"  # reading the agi_* header
    IDLE = "idle"  # ready for a command
    AWAITING_REPLY = "awaiting reply"  # a command was sent
    CLOSED = "closed"  # the peer closed the connection
    ERROR = "error"  # the peer broke the protocol; nothing more is parsed


class NeedData:
    """Sentinel type: more bytes are needed before the next event."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()

_KEY = re.compile(r"agi_[a-z0-9_]+\Z")
_REPLY_200 = re.compile(r"200 result=(?P<result>\S*)(?P<rest>.*)\Z", re.DOTALL)
_ENDPOS = re.compile(r"(?:^| )endpos=(?P<endpos>-?\d+)\Z")


@dataclass(frozen=True)
class Environment:
    """The agi_* header of one session. Values are whatever the caller's network put there: hostile."""

    variables: Mapping[str, str]
    args: tuple[str, ...] = ()

    def get(self, key: str, default: str = "") -> str:
        return self.variables.get(key, default)

    @property
    def script(self) -> str:
        return self.get("agi_network_script")

    @property
    def request(self) -> str:
        return self.get("agi_request")

    @property
    def channel(self) -> str:
        return self.get("agi_channel")

    @property
    def uniqueid(self) -> str:
        return self.get("agi_uniqueid")

    @property
    def callerid(self) -> str:
        return self.get("agi_callerid")

    @property
    def calleridname(self) -> str:
        return self.get("agi_calleridname")

    @property
    def dnid(self) -> str:
        return self.get("agi_dnid")

    @property
    def extension(self) -> str:
        return self.get("agi_extension")

    @property
    def context(self) -> str:
        return self.get("agi_context")

    @property
    def language(self) -> str:
        return self.get("agi_language")


@dataclass(frozen=True)
class Reply:
    """Asterisk's answer to the command in flight."""

    code: int
    result: str | None = None
    data: str | None = None
    endpos: int | None = None
    lines: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def result_int(self) -> int | None:
        try:
            return int(self.result) if self.result is not None else None
        except ValueError:
            return None

    @property
    def timed_out(self) -> bool:
        return self.data == "timeout"


@dataclass(frozen=True)
class HangupNotice:
    """The out-of-band `HANGUP` line: the caller's channel is gone."""


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the connection."""


Event = Environment | Reply | HangupNotice | ConnectionClosed


def parse_reply_line(line: str) -> Reply:
    """A single-line reply; raises RemoteProtocolError for anything Asterisk would not send."""
    m = _REPLY_200.match(line)
    if m:
        rest = m.group("rest")
        endpos = None
        e = _ENDPOS.search(rest)
        if e:
            endpos = int(e.group("endpos"))
            rest = rest[: e.start()]
        data = None
        rest = rest.strip(" ")
        if rest:
            if not (rest.startswith("(") and rest.endswith(")")):
                raise RemoteProtocolError(f"malformed 200 reply: {line[:100]!r}")
            data = rest[1:-1]
        return Reply(200, m.group("result"), data, endpos, (line,))
    for code in (510, 511, 520):
        if line.startswith(f"{code} ") or line == str(code):
            return Reply(code, lines=(line,))
    raise RemoteProtocolError(f"unexpected line from Asterisk: {line[:100]!r}")


class AgiConnection:
    """One FastAGI session's protocol state. Feed it bytes; take events; give it commands."""

    def __init__(self, *, max_environment_bytes: int = 16384, max_line_bytes: int = 8192) -> None:
        self._max_env = max_environment_bytes
        self._max_line = max_line_bytes
        self._buffer = bytearray()
        self._eof = False
        self._state = State.ENVIRONMENT
        self._env_vars: dict[str, str] = {}
        self._env_bytes = 0
        self._env_lines = 0
        self._usage: list[str] | None = None  # lines of a multi-line 520 in progress
        self._pending: Command | None = None
        self._hung_up = False
        self._closed_reported = False
        self._error: RemoteProtocolError | None = None
        self._environment: Environment | None = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def hung_up(self) -> bool:
        return self._hung_up

    @property
    def pending(self) -> Command | None:
        return self._pending

    @property
    def environment(self) -> Environment | None:
        return self._environment

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not parsed yet: the transport stops reading when this grows."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; b"" means the peer closed its side."""
        if not data:
            self._eof = True
        else:
            self._buffer += data

    def send(self, command: Command) -> bytes:
        """The bytes of one command. Only one command may be in flight."""
        if self._state is not State.IDLE:
            raise LocalProtocolError(f"cannot send {command.verb} in state {self._state.value}")
        data = command.to_line()
        self._pending = command
        self._state = State.AWAITING_REPLY
        return data

    def next_event(self) -> Event | NeedData:
        if self._state is State.ERROR:
            assert self._error is not None
            raise self._error
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._state = State.ERROR
            self._error = exc
            raise

    # -- internals ------------------------------------------------------------------------------

    def _take_line(self) -> str | None:
        idx = self._buffer.find(b"\n")
        if idx < 0:
            if len(self._buffer) > self._max_line:
                raise RemoteProtocolError(f"line longer than {self._max_line} bytes")
            if self._state is State.ENVIRONMENT and self._env_bytes + len(self._buffer) > self._max_env:
                raise RemoteProtocolError(f"AGI environment larger than {self._max_env} bytes")
            return None
        if idx > self._max_line:
            raise RemoteProtocolError(f"line longer than {self._max_line} bytes")
        raw = bytes(self._buffer[:idx])
        del self._buffer[: idx + 1]
        if self._state is State.ENVIRONMENT:
            self._env_bytes += idx + 1
            if self._env_bytes > self._max_env:
                raise RemoteProtocolError(f"AGI environment larger than {self._max_env} bytes")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return raw.decode("utf-8", errors="replace")

    def _next(self) -> Event | NeedData:
        if self._state is State.ENVIRONMENT:
            env = self._environment_block()
            if env is not None:
                return env
        while True:
            if not self._buffer and not self._eof:
                return NEED_DATA
            if self._state is State.CLOSED:
                if not self._closed_reported:
                    self._closed_reported = True
                    return ConnectionClosed()
                return NEED_DATA
            line = self._take_line()
            if line is None:
                return self._at_end_of_buffer()
            event = self._on_line(line)
            if event is not None:
                return event

    def _at_end_of_buffer(self) -> Event | NeedData:
        if not self._eof:
            return NEED_DATA
        if self._state is State.ENVIRONMENT:
            raise RemoteProtocolError("connection closed inside the AGI environment")
        if self._buffer:
            raise RemoteProtocolError("connection closed in the middle of a line")
        if self._usage is not None:
            raise RemoteProtocolError("connection closed inside a 520 usage message")
        self._state = State.CLOSED
        self._closed_reported = True
        return ConnectionClosed()

    def _on_line(self, line: str) -> Event | None:
        if self._state is State.ENVIRONMENT:
            return self._environment_line(line)
        if self._usage is not None:
            self._usage.append(line)
            if line.startswith("520 "):
                lines, self._usage = tuple(self._usage), None
                return self._reply(Reply(520, lines=lines))
            return None
        if line == "HANGUP":
            self._hung_up = True
            return HangupNotice()
        if self._state is not State.AWAITING_REPLY:
            raise RemoteProtocolError(f"reply with no command pending: {line[:100]!r}")
        if line.startswith("520-"):
            self._usage = [line]
            return None
        return self._reply(parse_reply_line(line))

    def _reply(self, reply: Reply) -> Reply:
        self._pending = None
        self._state = State.IDLE
        return reply

    def _environment_block(self) -> Environment | None:
        """Fast path: the whole header is buffered, so take it in one split instead of line by line."""
        end = self._buffer.find(b"\n\n")
        if end < 0 or end + 2 > self._max_env or self._buffer[:1] == b"\n" or b"\r" in self._buffer[:end]:
            return None  # not complete yet, or unusual: the line-by-line path decides
        block = bytes(self._buffer[: end + 2])
        for raw in block[:-1].split(b"\n"):
            if len(raw) > self._max_line:
                return None
        del self._buffer[: end + 2]
        self._env_bytes += end + 2
        event: Environment | None = None
        for raw in block[:-1].split(b"\n"):
            event = self._environment_line(raw.decode("utf-8", errors="replace"))
        return event  # the last line of the block is the empty one that ends the header

    def _environment_line(self, line: str) -> Environment | None:
        self._env_lines += 1
        if line == "":
            args = []
            n = 1
            while f"agi_arg_{n}" in self._env_vars:
                args.append(self._env_vars[f"agi_arg_{n}"])
                n += 1
            self._environment = Environment(MappingProxyType(dict(self._env_vars)), tuple(args))
            self._state = State.IDLE
            return self._environment
        key, sep, value = line.partition(":")
        if not sep or not _KEY.match(key):
            raise RemoteProtocolError(f"AGI environment line {self._env_lines} is not 'agi_<name>: value': {line[:100]!r}")
        if key in self._env_vars:
            raise RemoteProtocolError(f"AGI environment line {self._env_lines}: {key} given twice")
        self._env_vars[key] = value[1:] if value.startswith(" ") else value
        return None
