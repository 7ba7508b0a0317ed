"""The FastAGI protocol as a state machine with no IO: bytes in, events out; commands in, bytes out.

Everything that affects the connection's state lives in this file, and every state change goes through
`_TRANSITIONS`. Asterisk first sends the `agi_*` environment (`key: value` lines, then an empty line).
Then we send one command at a time and Asterisk answers each with a reply:
`200 result=<r>[ (<data>)][ endpos=<n>]`, `510 ...`, `511 ...`, or `520` (one line, or `520-` ...
`520 End of proper usage.`). When the caller hangs up, Asterisk sends a line `HANGUP` on its own: while
we wait for a reply (the reply still follows) or while idle. Reading that line as a reply would put every
later reply one step behind, so it is a separate event.
"""

from __future__ import annotations

import enum
import re
import sys
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from callrouter.agi.commands import Command
from callrouter.agi.errors import LocalProtocolError, RemoteProtocolError

MAX_USAGE_BYTES = 65536  # a 520 usage block is a few KB of help text; more is a peer flooding us
_SHOWN = 100  # characters of an offending line quoted in an error message


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
# The header's lines, all at once: `agi_<name>:` then one optional space, the value, and "\r\n" or "\n".
_ENV_LINE = re.compile(r"(agi_[a-z0-9_]+): ?([^\n]*?)\r?\n")
_ENV_LINES = re.compile(r"(?:agi_[a-z0-9_]+:[^\n]*\n)+")
_INTERNED_VALUE = 24  # environment values up to this length are shared between calls
# The data runs to the last ')' that is followed only by an optional endpos: values may hold '(' ')'.
_REPLY_200 = re.compile(r"200 result=(?P<result>[^ ]*)(?: \((?P<data>.*)\))?(?: endpos=(?P<endpos>-?[0-9]+))?\Z")
_REPLY_REFUSED = re.compile(r"(?:510|511|520)(?: .*)?\Z")
_USAGE_FIRST = "520-"
_USAGE_LAST = "520 End of proper usage."
_REPLY_CODES = frozenset({200, 510, 511, 520})


@dataclass(frozen=True, slots=True)
class Environment:
    """The agi_* header of one session. Values are whatever the caller's network put there: hostile."""

    variables: Mapping[str, str]
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Copy into a read-only mapping, so no one holding the original dict can change an event."""
        object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))
        object.__setattr__(self, "args", tuple(self.args))

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


@dataclass(frozen=True, slots=True)
class Reply:
    """Asterisk's answer to the command in flight."""

    code: int
    result: str | None = None
    data: str | None = None
    endpos: int | None = None
    lines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.code not in _REPLY_CODES:
            raise LocalProtocolError(f"not an AGI reply code: {self.code!r}")

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def result_int(self) -> int | None:
        """The result as a number (STREAM FILE's digit code, EXEC's return), None if it is not one."""
        try:
            return int(self.result) if self.result is not None else None
        except ValueError:
            return None

    @property
    def timed_out(self) -> bool:
        return self.data == "timeout"


@dataclass(frozen=True, slots=True)
class HangupNotice:
    """The out-of-band `HANGUP` line: the caller's channel is gone."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection."""


Event = Environment | Reply | HangupNotice | ConnectionClosed

# (state, what happened) -> next state. What happened is an event parsed from the peer, or a Command we
# send. A pair missing here is a protocol error. The ERROR state is entered on any RemoteProtocolError.
_TRANSITIONS: Mapping[tuple[State, type], State] = MappingProxyType(
    {
        (State.ENVIRONMENT, Environment): State.IDLE,
        (State.IDLE, Command): State.AWAITING_REPLY,
        (State.IDLE, HangupNotice): State.IDLE,
        (State.IDLE, ConnectionClosed): State.CLOSED,
        (State.AWAITING_REPLY, HangupNotice): State.AWAITING_REPLY,  # the reply still follows
        (State.AWAITING_REPLY, Reply): State.IDLE,
        (State.AWAITING_REPLY, ConnectionClosed): State.CLOSED,
    }
)


def parse_reply_line(line: str) -> Reply:
    """A single-line reply; raises RemoteProtocolError for anything Asterisk would not send."""
    m = _REPLY_200.match(line)
    if m:
        endpos = m.group("endpos")
        return Reply(200, m.group("result"), m.group("data"), None if endpos is None else int(endpos), (line,))
    if _REPLY_REFUSED.match(line):
        return Reply(int(line[:3]), lines=(line,))
    raise RemoteProtocolError(f"unexpected line from Asterisk: {line[:_SHOWN]!r}")


class AgiConnection:
    """One FastAGI session's protocol state. Feed it bytes; take events; give it commands."""

    __slots__ = (
        "_max_env", "_max_line", "_state", "_buffer", "_scanned", "_eof", "_error", "_pending", "_hung_up", "_environment",
        "_env_vars", "_env_bytes", "_env_lines", "_usage", "_usage_bytes",
    )

    def __init__(self, *, max_environment_bytes: int = 16384, max_line_bytes: int = 8192) -> None:
        self._max_env = max_environment_bytes
        self._max_line = max_line_bytes
        self._state = State.ENVIRONMENT
        self._buffer = bytearray()
        self._scanned = 0  # bytes at the start of the buffer known to hold no newline
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._pending: Command | None = None
        self._hung_up = False
        self._environment: Environment | None = None
        self._env_vars: dict[str, str] = {}
        self._env_bytes = 0  # environment bytes consumed so far, newlines included
        self._env_lines = 0
        self._usage: list[str] | None = None  # lines of a multi-line 520 in progress
        self._usage_bytes = 0

    @property
    def state(self) -> State:
        return self._state

    @property
    def hung_up(self) -> bool:
        """True once a HANGUP line was parsed: only dead-safe commands will work from now on."""
        return self._hung_up

    @property
    def pending(self) -> Command | None:
        """The command whose reply we wait for; None unless the state is AWAITING_REPLY."""
        return self._pending

    @property
    def environment(self) -> Environment | None:
        return self._environment

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not parsed yet: the transport stops reading when this grows."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; b"" means the peer closed its side (repeating it is harmless)."""
        if not data:
            self._eof = True
        elif self._eof:
            raise LocalProtocolError("data received after EOF")
        elif self._state is not State.ERROR:  # nothing more is parsed: don't hold the bytes
            self._buffer += data

    def send(self, command: Command) -> bytes:
        """The bytes of one command. Only one command may be in flight, and only after the environment."""
        new_state = _TRANSITIONS.get((self._state, Command))
        if new_state is None:
            waiting = f" (no reply yet to {self._pending.verb})" if self._pending is not None else ""
            raise LocalProtocolError(f"cannot send {command.verb} in state {self._state.value}{waiting}")
        data = command.to_line()
        self._state = new_state
        self._pending = command
        return data

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA. A RemoteProtocolError moves to ERROR, and is raised again after."""
        if self._state is State.ERROR:
            raise RemoteProtocolError(f"connection is in ERROR state after: {self._error}")
        if not self._buffer and not self._eof:  # nothing to parse: the usual case before a reply has come
            return NEED_DATA
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._state = State.ERROR
            self._error = exc
            self._pending = None
            self._buffer.clear()
            raise

    # -- internals ------------------------------------------------------------------------------

    def _emit(self, event: Event) -> Event:
        """Apply the transition for an event from the peer; the table decides whether it may happen."""
        new_state = _TRANSITIONS.get((self._state, type(event)))
        if new_state is None:
            raise RemoteProtocolError(f"{type(event).__name__} not expected in state {self._state.value}")
        self._state = new_state
        if new_state is not State.AWAITING_REPLY:
            self._pending = None
        if isinstance(event, HangupNotice):
            self._hung_up = True
        elif isinstance(event, Environment):
            self._environment = event
            self._env_vars = {}
        return event

    def _next_event(self) -> Event | NeedData:
        if self._state is State.CLOSED:
            return NEED_DATA  # ConnectionClosed was given once
        if self._state is State.ENVIRONMENT and (event := self._environment_block()) is not None:
            return event
        while True:
            line = self._take_line()
            if line is None:
                return self._at_eof() if self._eof else NEED_DATA
            event = self._on_line(line)
            if event is not None:
                return event

    def _take_line(self) -> str | None:
        """One complete line without its '\\n' (and a '\\r' before it), or None; bounded while it arrives."""
        end = self._buffer.find(b"\n", self._scanned)
        length = len(self._buffer) if end < 0 else end
        if length > self._max_line:
            raise RemoteProtocolError(f"line longer than {self._max_line} bytes")
        if self._state is State.ENVIRONMENT and self._env_bytes + length + (end >= 0) > self._max_env:
            raise RemoteProtocolError(f"AGI environment larger than {self._max_env} bytes")
        if end < 0:
            self._scanned = length
            return None
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        if self._state is State.ENVIRONMENT:
            self._env_bytes += end + 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return raw.decode("utf-8", errors="replace")

    def _at_eof(self) -> Event:
        if self._state is State.ENVIRONMENT:
            raise RemoteProtocolError("connection closed inside the AGI environment")
        if self._buffer:
            raise RemoteProtocolError("connection closed in the middle of a line")
        if self._usage is not None:
            raise RemoteProtocolError("connection closed inside a 520 usage message")
        return self._emit(ConnectionClosed())

    def _on_line(self, line: str) -> Event | None:
        if self._state is State.ENVIRONMENT:
            return self._environment_line(line)
        if self._usage is not None:
            return self._usage_line(line)
        if line == "HANGUP":
            return self._emit(HangupNotice())
        if (self._state, Reply) not in _TRANSITIONS:
            raise RemoteProtocolError(f"reply with no command pending: {line[:_SHOWN]!r}")
        if line.startswith(_USAGE_FIRST):
            self._usage = []
            self._usage_bytes = 0
            return self._usage_line(line)
        return self._emit(parse_reply_line(line))

    def _usage_line(self, line: str) -> Event | None:
        """Inside `520-` ... `520 End of proper usage.` every line is usage text, even `HANGUP`."""
        assert self._usage is not None
        self._usage.append(line)
        self._usage_bytes += len(line) + 1
        if self._usage_bytes > MAX_USAGE_BYTES:
            raise RemoteProtocolError(f"520 usage message longer than {MAX_USAGE_BYTES} bytes")
        if line != _USAGE_LAST:
            return None
        lines, self._usage = tuple(self._usage), None
        return self._emit(Reply(520, lines=lines))

    def _environment_block(self) -> Event | None:
        """The whole header at once when its blank line has arrived and every line of it is well formed:
        one pass over the buffer instead of the line-at-a-time path, which costs several times as much
        per call (issue 15). Anything unusual (a limit reached, a bad or repeated name, a blank line
        first) returns None with nothing consumed, and the line-at-a-time path says what is wrong."""
        buf = self._buffer
        if buf[:1] == b"\n" or buf[:2] == b"\r\n":
            return None
        stop = buf.find(b"\n\n")
        stop_cr = buf.find(b"\n\r\n")
        if stop_cr >= 0 and (stop < 0 or stop_cr < stop):
            stop, size = stop_cr, stop_cr + 3
        elif stop >= 0:
            size = stop + 2
        else:
            return None
        if self._env_bytes + size > self._max_env or size > self._max_line:  # then no line can be too long
            return None
        text = bytes(buf[: stop + 1]).decode("utf-8", errors="replace")  # "\n" never sits inside a UTF-8 sequence
        if not _ENV_LINES.fullmatch(text):
            return None
        pairs = _ENV_LINE.findall(text)
        intern, short = sys.intern, _INTERNED_VALUE
        found = dict(self._env_vars)
        found.update({intern(key): intern(value) if len(value) <= short else value for key, value in pairs})
        if len(found) != len(self._env_vars) + len(pairs):  # a name given twice
            return None
        del buf[:size]
        self._scanned = 0
        self._env_bytes += size
        self._env_lines += len(pairs) + 1
        self._env_vars = found
        return self._environment_done()

    def _environment_done(self) -> Event:
        args: list[str] = []
        while (value := self._env_vars.get(f"agi_arg_{len(args) + 1}")) is not None:
            args.append(value)
        variables, self._env_vars = self._env_vars, {}  # the Environment keeps its own copy: not two per call
        return self._emit(Environment(variables, tuple(args)))

    def _environment_line(self, line: str) -> Event | None:
        self._env_lines += 1
        if line == "":
            return self._environment_done()
        key, colon, value = line.partition(":")
        if not colon or not _KEY.match(key):
            raise RemoteProtocolError(f"AGI environment line {self._env_lines} is not 'agi_<name>: value': {line[:_SHOWN]!r}")
        if key in self._env_vars:
            raise RemoteProtocolError(f"AGI environment line {self._env_lines}: {key} given twice")
        value = value[1:] if value.startswith(" ") else value
        # One copy of each name (and of short values: "unknown", "0", "en"...) for all calls, not one per
        # call held open: CPython's interned strings are freed once no call uses them.
        self._env_vars[sys.intern(key)] = sys.intern(value) if len(value) <= _INTERNED_VALUE else value
        return None
