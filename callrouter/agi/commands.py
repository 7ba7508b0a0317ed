"""AGI commands rendered to bytes. All quoting lives in `quote_arg`, and nothing else builds a line.

Asterisk splits a command line on spaces; a double quote toggles quoting and a backslash makes the next
character literal (`parse_args` in res_agi.c). So every argument is wrapped in quotes with `\\` and `"`
escaped, and any value with CR, LF or NUL is refused: there is no escape for a newline, which would end
the command and start another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callrouter.agi.errors import LocalProtocolError

MAX_LINE_BYTES = 8192  # AGI_BUF_LEN: Asterisk reads commands into a buffer of this size
MAX_ARGS = 128  # MAX_ARGS in res_agi.c, the verb's words included
_VERB = re.compile(r"[A-Z]+( [A-Z]+){0,2}\Z")
_APP = re.compile(r"[A-Za-z0-9_]{1,64}\Z")
_ESCAPE_DIGITS = re.compile(r"[0-9*#]*\Z")
_FORBIDDEN = ("\n", "\r", "\0")


def quote_arg(value: str) -> str:
    """One AGI argument, exactly as Asterisk's parse_args() will read it back."""
    for ch in _FORBIDDEN:
        if ch in value:
            raise LocalProtocolError(f"an AGI argument cannot contain {ch!r} (value starts {value[:32]!r})")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Command:
    """One AGI command: a verb of fixed words and arguments that are always quoted."""

    verb: str
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _VERB.match(self.verb):
            raise LocalProtocolError(f"not an AGI verb: {self.verb[:40]!r}")
        if len(self.verb.split()) + len(self.args) > MAX_ARGS:
            raise LocalProtocolError(f"{self.verb}: more than {MAX_ARGS} words")

    def to_line(self) -> bytes:
        text = " ".join([self.verb, *(quote_arg(a) for a in self.args)]) + "\n"
        data = text.encode("utf-8", errors="strict")
        if len(data) > MAX_LINE_BYTES:
            raise LocalProtocolError(f"{self.verb}: line of {len(data)} bytes is over Asterisk's {MAX_LINE_BYTES}")
        return data


def _count(name: str, value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LocalProtocolError(f"{name} must be a non-negative whole number, not {value!r}")
    return str(value)


def _escape(digits: str) -> str:
    if not _ESCAPE_DIGITS.match(digits):
        raise LocalProtocolError(f"escape digits may only be 0-9, * and #: {digits[:20]!r}")
    return digits


def answer() -> Command:
    return Command("ANSWER")


def hangup(channel: str | None = None) -> Command:
    return Command("HANGUP", () if channel is None else (channel,))


def stream_file(name: str, escape_digits: str = "", offset: int | None = None) -> Command:
    args = (name, _escape(escape_digits)) + (() if offset is None else (_count("offset", offset),))
    return Command("STREAM FILE", args)


def get_data(name: str, timeout_ms: int, max_digits: int) -> Command:
    return Command("GET DATA", (name, _count("timeout", timeout_ms), _count("max_digits", max_digits)))


def wait_for_digit(timeout_ms: int) -> Command:
    return Command("WAIT FOR DIGIT", (_count("timeout", timeout_ms),))


def get_variable(name: str) -> Command:
    return Command("GET VARIABLE", (name,))


def get_full_variable(expr: str, channel: str | None = None) -> Command:
    return Command("GET FULL VARIABLE", (expr,) if channel is None else (expr, channel))


def set_variable(name: str, value: str) -> Command:
    return Command("SET VARIABLE", (name, value))


def exec_app(app: str, options: str) -> Command:
    """EXEC passes exactly one options argument to the application: keep it one quoted argument."""
    if not _APP.match(app):
        raise LocalProtocolError(f"not an application name: {app[:40]!r}")
    return Command("EXEC", (app, options))


def record_file(
    path: str, fmt: str, escape_digits: str, timeout_ms: int, *, beep: bool = True, silence_s: int | None = None
) -> Command:
    """RECORD FILE <file> <format> <escape digits> <timeout> [offset] [BEEP] [s=<silence>]; offset omitted."""
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
