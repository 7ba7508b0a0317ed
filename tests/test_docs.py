"""The configuration reference cannot drift from the code: every setting must be documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from callrouter.config.plan import NumberPlan
from callrouter.config.service import ServiceConfig

DOC = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()


def models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in models_in(arg)]


def field_names(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, field in model.model_fields.items():
        if name in ("kind", "target") and model.__name__ == "Action":
            continue
        names.add(name)
        for sub in models_in(field.annotation):
            if sub.__name__ not in ("PromptCheck", "NameCheck"):
                names |= field_names(sub, seen)
    return names


def test_every_setting_is_in_the_reference() -> None:
    seen: set[type[BaseModel]] = set()
    names = field_names(ServiceConfig, seen) | field_names(NumberPlan, seen)
    missing = sorted(n for n in names if f"`{n}`" not in DOC)
    assert not missing, f"document these in docs/configuration.md: {missing}"
