"""AGI commands rendered to bytes. All quoting lives in `quote_arg`, and nothing else builds a line.

Asterisk splits a command line on spaces; a double quote toggles quoting and a backslash makes the next
character literal (`parse_args` in res_agi.c). So every argument is wrapped in quotes with `\\` and `"`
escaped, and any value with CR, LF or NUL is refused: there is no escape for a newline, which would end
the command and start another. A Command validates itself when built, so one that exists can be sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from callrouter.agi.errors import LocalProtocolError

AGI_BUF_LEN = 8192  # res_agi.c reads each command with fgets() into a buffer of this size
# fgets keeps one byte for the NUL: a longer line is cut, and its tail read as a second command.
MAX_LINE_BYTES = AGI_BUF_LEN - 1  # the newline included
MAX_ARGS = 128  # MAX_ARGS in res_agi.c: the argv array, which also holds a NULL terminator
# parse_args() only truncates unquoted words; quoted ones past 127 would write beyond argv.
MAX_WORDS = MAX_ARGS - 1  # the verb's words included
MAX_INT = 2**31 - 1  # Asterisk reads numbers with sscanf("%30d") into a C int

_VERB = re.compile(r"[A-Z]+(?: [A-Z]+){0,2}\Z")
_APP = re.compile(r"[A-Za-z0-9_]+\Z")
_ESCAPE_DIGITS = re.compile(r"[0-9*#]*\Z")
_FORBIDDEN = {"\n": "a newline (LF)", "\r": "a carriage return (CR)", "\0": "a NUL character"}
_UNSAFE = re.compile("[\n\r\0]")


def quote_arg(value: str) -> str:
    """One AGI argument, exactly as Asterisk's parse_args() will read it back.

    The error names the character and where it is, never the value: values are often a caller's data.
    """
    if _UNSAFE.search(value):  # rare: then say which character, and where
        for ch, name in _FORBIDDEN.items():
            index = value.find(ch)
            if index >= 0:
                raise LocalProtocolError(f"an AGI argument cannot contain {name} (at index {index} of {len(value)})")
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


def _plain_strings(verb: str, args: tuple[object, ...]) -> tuple[str, ...]:
    """Arguments as plain str: a str subclass could change what replace() or formatting give back."""
    out = []
    for arg in args:
        if not isinstance(arg, str):
            raise TypeError(f"{verb}: arguments must be str, not {type(arg).__name__}")
        out.append(str.__str__(arg))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Command:
    """One AGI command: a verb of fixed words and arguments that are always quoted."""

    verb: str
    args: tuple[str, ...] = ()
    _line: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Render once, here: a bad verb, value or size fails where the command is built, not at send()."""
        verb = self.verb
        if not isinstance(verb, str) or not _VERB.match(verb):
            raise LocalProtocolError(f"not an AGI verb (1-3 words of A-Z): {str(verb)[:40]!r}")
        args = self.args if type(self.args) is tuple else tuple(self.args)
        for arg in args:
            if type(arg) is not str:
                args = _plain_strings(verb, args)
                break
        words = verb.count(" ") + 1 + len(args)
        if words > MAX_WORDS:
            raise LocalProtocolError(f"{verb}: {words} words, Asterisk reads at most {MAX_WORDS}")
        text = " ".join([verb, *map(quote_arg, args)]) + "\n"
        try:
            line = text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a surrogateescape decode
            raise LocalProtocolError(f"{self.verb}: argument not encodable as UTF-8 at index {exc.start}") from None
        if len(line) > MAX_LINE_BYTES:
            raise LocalProtocolError(f"{self.verb}: line of {len(line)} bytes is over Asterisk's {MAX_LINE_BYTES}")
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "_line", line)

    def to_line(self) -> bytes:
        """The command as one UTF-8 line ending in '\\n'."""
        return self._line


def _count(name: str, value: int) -> str:
    """A non-negative whole number that fits Asterisk's C int."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise LocalProtocolError(f"{name} must be a whole number from 0 to {MAX_INT}, not {value!r}")
    return str(value)


def _escape(digits: str) -> str:
    """Escape digits: the DTMF keys that interrupt playback."""
    if not isinstance(digits, str) or not _ESCAPE_DIGITS.match(digits):
        raise LocalProtocolError(f"escape digits may only be 0-9, * and #: {str(digits)[:20]!r}")
    return digits


# Commands are values: the ones without arguments are built once, and the prompts' (a plan's own file
# names, never a caller's data) are remembered, a few hundred at most. Each call sends them; building
# and checking one again costs more than the rest of sending it.
_ANSWER = Command("ANSWER")
_HANGUP = Command("HANGUP")
_CHANNEL_STATUS = Command("CHANNEL STATUS")
PROMPT_COMMANDS_KEPT = 1024


def answer() -> Command:
    return _ANSWER


def hangup(channel: str | None = None) -> Command:
    """HANGUP [channel]: without a channel, the one running this AGI."""
    return _HANGUP if channel is None else Command("HANGUP", (channel,))


def stream_file(name: str, escape_digits: str = "", offset: int | None = None) -> Command:
    """STREAM FILE <file> <escape digits> [offset]: the digit pressed comes back as its ASCII code."""
    return _stream_file(name, escape_digits, offset)


def get_data(name: str, timeout_ms: int, max_digits: int) -> Command:
    return _get_data(name, timeout_ms, max_digits)


@lru_cache(maxsize=PROMPT_COMMANDS_KEPT, typed=True)  # typed: True is not taken for a cached 1
def _stream_file(name: str, escape_digits: str, offset: int | None) -> Command:
    args = (name, _escape(escape_digits)) + (() if offset is None else (_count("offset", offset),))
    return Command("STREAM FILE", args)


@lru_cache(maxsize=PROMPT_COMMANDS_KEPT, typed=True)
def _get_data(name: str, timeout_ms: int, max_digits: int) -> Command:
    return Command("GET DATA", (name, _count("timeout", timeout_ms), _count("max_digits", max_digits)))


def wait_for_digit(timeout_ms: int) -> Command:
    """WAIT FOR DIGIT <timeout>: collects digits when a prompt cannot be played."""
    return Command("WAIT FOR DIGIT", (_count("timeout", timeout_ms),))


def channel_status() -> Command:
    """CHANNEL STATUS: `200 result=<state>` on a live channel and, not being dead-safe, 511 once it hung up."""
    return _CHANNEL_STATUS


def get_variable(name: str) -> Command:
    return Command("GET VARIABLE", (name,))


def get_full_variable(expr: str, channel: str | None = None) -> Command:
    """GET FULL VARIABLE evaluates `${...}` in expr: build expr from our own names, never a caller's data."""
    return Command("GET FULL VARIABLE", (expr,) if channel is None else (expr, channel))


def set_variable(name: str, value: str) -> Command:
    return Command("SET VARIABLE", (name, value))


def exec_app(app: str, options: str) -> Command:
    """EXEC passes exactly one options argument to the application: keep it one quoted argument.

    Quoting keeps the words apart, but `,` `&` `)` inside options still mean something to the application,
    and `${...}` is evaluated if AGIEXECFULL is set: validate what goes into options before this.
    """
    if not isinstance(app, str) or not _APP.match(app):
        raise LocalProtocolError(f"not an application name ([A-Za-z0-9_]+): {str(app)[:40]!r}")
    return Command("EXEC", (app, options))


def record_file(
    path: str, fmt: str, escape_digits: str, timeout_ms: int, *, beep: bool = True, silence_s: int | None = None
) -> Command:
    """RECORD FILE <file> <format> <escape digits> <timeout> [offset] [BEEP] [s=<silence>].

    The offset is omitted: handle_recordfile tells an offset (a number) from BEEP and s=<n> by content.
    """
    args = [path, fmt, _escape(escape_digits), _count("timeout", timeout_ms)]
    if beep:
        args.append("BEEP")
    if silence_s is not None:
        args.append(f"s={_count('silence', silence_s)}")
    return Command("RECORD FILE", tuple(args))


def verbose(message: str, level: int = 1) -> Command:
    return Command("VERBOSE", (message, _count("level", level)))


def noop(text: str = "") -> Command:
    return Command("NOOP", (text,) if text else ())
