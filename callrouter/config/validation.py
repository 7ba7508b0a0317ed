"""Turning pydantic validation errors into `file:line: message` issues."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from callrouter.config.yamlsource import ConfigError, ConfigIssue, LocatedDocument

M = TypeVar("M", bound=BaseModel)


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def issues_from(exc: ValidationError, doc: LocatedDocument, prefix: tuple[Any, ...] = ()) -> list[ConfigIssue]:
    """One issue per pydantic error, located at the deepest YAML key the error path reaches."""
    out: list[ConfigIssue] = []
    errors = exc.errors(include_url=False)
    # Drop pydantic's union/function tags so the path matches the YAML keys.
    locs = [prefix + tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))) for e in errors]
    for err, loc in zip(errors, locs):
        kind = err["type"]
        if kind == "too_short" and any(len(o) > len(loc) and o[: len(loc)] == loc for o in locs):
            continue  # "at least 1 item after validation": only because an item itself was invalid
        if kind == "extra_forbidden":
            message = f"{_dotted(loc)}: unknown key"
        elif kind == "missing":
            message = f"{_dotted(loc)}: required key is missing"
        else:
            msg = err["msg"]
            msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
            message = f"{_dotted(loc)}: {msg}"
        params = tuple((k, str(v)) for k, v in (err.get("ctx") or {}).items() if k != "error")
        out.append(ConfigIssue(doc.file, doc.line_of(loc), message, tuple(p for p in loc if isinstance(p, (str, int))), kind, params))
    return sorted(out, key=lambda issue: issue.line)


def validate_document(model: type[M], doc: LocatedDocument, context: dict[str, Any] | None = None) -> M:
    """Validate a whole document into `model`, raising ConfigError with every issue located."""
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue(doc.file, 1, "the top level must be a mapping of keys")])
    try:
        return model.model_validate(doc.data, context=context)
    except ValidationError as exc:
        raise ConfigError(issues_from(exc, doc)) from None
