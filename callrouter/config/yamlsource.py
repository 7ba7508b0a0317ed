"""YAML reading that keeps line numbers and refuses YAML 1.1 surprises.

Ops write phone numbers, times and yes/no flags; YAML 1.1 would turn `010...` into an octal int, `09:00`
into 540 and `no` into False. This loader resolves only `true/false`, `null/~`, plain decimal integers
and decimals; everything else stays a string. Every mapping key and sequence item remembers its line so
a validation error can say `file:line: message`. Duplicate keys are errors, not silent overwrites.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

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


def _scalar(node: yaml.ScalarNode) -> Any:
    if node.style is not None and node.style != "":
        return node.value  # quoted or block scalars are always strings
    text = node.value
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
        return _scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), lines, file, issues) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                issues.append(ConfigIssue(file, key_node.start_mark.line + 1, "mapping keys must be plain values"))
                continue
            key = key_node.value  # keys are always text: "1" stays "1", `no` stays "no"
            if key == "<<":
                issues.append(ConfigIssue(file, key_node.start_mark.line + 1, "merge keys (<<) are not supported"))
                continue
            if key in out:
                issues.append(ConfigIssue(file, key_node.start_mark.line + 1, f"duplicate key {key!r}"))
                continue
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, path + (key,), lines, file, issues)
        return out
    raise TypeError(f"unexpected YAML node {type(node).__name__}")


def parse_yaml(text: str, file: str) -> LocatedDocument:
    """Parse one YAML document; raise ConfigError with file:line for syntax errors and duplicate keys."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([ConfigIssue(file, line, f"YAML syntax error: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, 1, f"YAML error: {exc}")]) from None
    if node is None:
        raise ConfigError([ConfigIssue(file, 1, "file is empty")])
    issues: list[ConfigIssue] = []
    lines: dict[Path_, int] = {}
    data = _build(node, (), lines, file, issues)
    if issues:
        raise ConfigError(issues)
    return LocatedDocument(data=data, lines=lines, file=file)


def read_yaml(path: str) -> LocatedDocument:
    """Read and parse a YAML file; unreadable or non-UTF-8 files are ConfigErrors too."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(path, 1, f"cannot read file: {exc}")]) from None
    return parse_yaml(text, path)
