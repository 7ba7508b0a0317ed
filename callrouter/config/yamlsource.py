"""YAML reading that keeps line numbers and refuses YAML 1.1 surprises.

Ops write phone numbers, times and yes/no flags; YAML 1.1 would turn `010...` into an octal int, `09:00`
into 540 and `no` into False. This loader resolves only `true/false`, `null/~`, plain decimal integers
and decimals; everything else stays a string. Every mapping key and sequence item remembers its line so
a validation error can say `file:line: message`. Duplicate keys are errors, not silent overwrites.

Files may be hostile (or just broken), and a reload must refuse them, not crash or run out of memory:
a file is at most MAX_FILE_BYTES, nesting at most MAX_DEPTH, numbers at most MAX_NUMBER_CHARS long, and
anchors/aliases are refused outright (an alias bomb expands 300 bytes into gigabytes; a recursive alias
never ends). Every such refusal is a ConfigIssue with its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

MAX_FILE_BYTES = 1024 * 1024  # a plan is a few kilobytes; this leaves room for any real one
MAX_DEPTH = 64  # mappings and lists inside one another; plans need about 8
MAX_NUMBER_CHARS = 50  # a plain number longer than this is a mistake (int() refuses 4,300 digits anyway)

_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"[-+]?(0|[1-9][0-9]*)\.[0-9]+\Z")
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_NULL = {"", "~", "null", "Null", "NULL"}


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a config file, located for the operator."""

    file: str
    line: int
    message: str
    # Where in the YAML document (keys and item indexes), so a form can show the issue next to its field;
    # () when it is about the file as a whole. Not compared: two issues are the same whatever path found them.
    path: Path_ = field(default=(), compare=False)
    # What kind of problem, where the validator says (pydantic's error type, e.g. "less_than_equal", with
    # its limits as text): lets the console say it in Chinese; the message stays the operators' words.
    kind: str = field(default="", compare=False)
    params: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ConfigError(Exception):
    """A config file (or set of files) that cannot be used; carries every issue found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class LocatedDocument:
    """A parsed YAML document plus the line of every key/item in it (1-based)."""

    data: Any
    lines: dict[Path_, int]
    file: str

    def line_of(self, path: tuple[Any, ...]) -> int:
        """Line of the deepest known prefix of `path` (pydantic locations may go deeper than YAML)."""
        for end in range(len(path), -1, -1):
            hit = self.lines.get(tuple(path[:end]))
            if hit is not None:
                return hit
        return 1


class _Refused(Exception):
    """Something in the file we will not read further, at a place in it."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else 1
        self.message = message


class _BoundedLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    """SafeLoader's composer with anchors, aliases and nesting beyond MAX_DEPTH refused as they are met,
    so the node graph is a tree no larger than the text: nothing to expand, nothing to loop on, no deep
    recursion in the composer or in _build."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(event.start_mark, f"aliases (*{event.anchor}) are not supported: write the value out in full")
        if event.anchor is not None:
            raise _Refused(event.start_mark, f"anchors (&{event.anchor}) and aliases are not supported: write the value out in full")
        nested = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if nested:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _Refused(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1


def _scalar(node: yaml.ScalarNode) -> Any:
    if node.style is not None and node.style != "":
        return node.value  # quoted or block scalars are always strings
    text = node.value
    if len(text) > MAX_NUMBER_CHARS and (_INT.match(text) or _FLOAT.match(text)):
        raise _Refused(node.start_mark, f"a number of {len(text)} digits is too long (at most {MAX_NUMBER_CHARS}); quote it if it is text")
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def _build(node: yaml.Node, path: Path_, lines: dict[Path_, int], file: str, issues: list[ConfigIssue]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode):
        try:
            return _scalar(node)
        except _Refused as exc:
            issues.append(ConfigIssue(file, exc.line, exc.message, path))
            return None
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), lines, file, issues) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                issues.append(ConfigIssue(file, key_node.start_mark.line + 1, "mapping keys must be plain values", path))
                continue
            key = key_node.value  # keys are always text: "1" stays "1", `no` stays "no"
            if key == "<<":
                issues.append(ConfigIssue(file, key_node.start_mark.line + 1, "merge keys (<<) are not supported", path))
                continue
            if key in out:
                issues.append(ConfigIssue(file, key_node.start_mark.line + 1, f"duplicate key {key!r}", path + (key,)))
                continue
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, path + (key,), lines, file, issues)
        return out
    raise TypeError(f"unexpected YAML node {type(node).__name__}")


def parse_yaml(text: str, file: str) -> LocatedDocument:
    """Parse one YAML document; raise ConfigError with file:line for syntax errors, duplicate keys and
    anything refused as hostile (size, depth, aliases, numbers)."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError([ConfigIssue(file, 1, _too_large(len(text)))])
    issues: list[ConfigIssue] = []
    lines: dict[Path_, int] = {}
    try:
        loader = _BoundedLoader(text)  # the reader checks every character here
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        if node is None:
            raise ConfigError([ConfigIssue(file, 1, "file is empty")])
        data = _build(node, (), lines, file, issues)
    except _Refused as exc:
        raise ConfigError([ConfigIssue(file, exc.line, exc.message)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([ConfigIssue(file, line, f"YAML syntax error: {exc.problem or exc}")]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        what = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise ConfigError([ConfigIssue(file, line, f"unacceptable character {what}: control characters are not allowed")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, 1, f"YAML error: {exc}")]) from None
    except (RecursionError, ValueError) as exc:  # the limits above should make these impossible; never a crash
        raise ConfigError([ConfigIssue(file, 1, f"cannot read this file: {type(exc).__name__}")]) from None
    if issues:
        raise ConfigError(issues)
    return LocatedDocument(data=data, lines=lines, file=file)


def _too_large(size: int) -> str:
    return f"file is larger than {MAX_FILE_BYTES // 1024} KiB ({size} bytes or more): this is not a routing file"


def parse_text(text: str, file: str) -> LocatedDocument:
    """YAML text that comes from no file (the database, a console form, the API), with a file's caps: its
    size counted in UTF-8 bytes as read_yaml counts a file's, its line ends read as text mode reads them."""
    size = len(text.encode("utf-8", "replace"))
    if size > MAX_FILE_BYTES:
        raise ConfigError([ConfigIssue(file, 1, _too_large(size))])
    return parse_yaml(normalise_newlines(text), file)


def normalise_newlines(text: str) -> str:
    """CR LF and lone CR as LF: what a file read in text mode gives, and what a browser's form sends as CR LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_yaml(path: str) -> LocatedDocument:
    """Read and parse a YAML file; unreadable, oversized or non-UTF-8 files are ConfigErrors too."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # never more than the cap in memory, whatever the file is
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, 1, f"cannot read file: {exc}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([ConfigIssue(path, 1, _too_large(len(raw)))])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([ConfigIssue(path, line, f"not UTF-8 text (byte {exc.start}): save the file as UTF-8")]) from None
    return parse_yaml(normalise_newlines(text), path)  # as text mode reads it
