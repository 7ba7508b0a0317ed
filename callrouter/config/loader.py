"""Loading the whole configuration at once: config.yaml plus every plan in the dialplans folder.

The result is one frozen `RoutingConfig`. Loading either succeeds completely or raises ConfigError with
every problem found, each as `file:line: message`; the caller swaps the new object in whole, so a bad file
never leaves a half-applied configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Iterator, Mapping

from callrouter.config.plan import Action, NumberPlan
from callrouter.config.service import ServiceConfig
from callrouter.config.validation import validate_document
from callrouter.config.yamlsource import ConfigError, ConfigIssue, LocatedDocument, read_yaml


COUNTRY_PREFIXES = ("0086", "86")  # China's, as trunks put it before a national number (plan_for)
DATABASE_SOURCE = "(database)"  # `sources` of a number whose plan exists only as versions in the database


@dataclass(frozen=True)
class RoutingConfig:
    """The service settings and the plan of every number, as one immutable snapshot."""

    service: ServiceConfig
    plans: Mapping[str, NumberPlan]
    sources: Mapping[str, str]  # number -> plan file
    config_path: str
    base_dir: str
    # number -> the database version it runs (docs/plans.md); a number not here runs from its file
    versions: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def plan_for(self, digits: str) -> NumberPlan | None:
        """The plan for dialled digits, also in the international form trunks may send them in: a 400
        number as 4008001234, 864008001234, +864008001234 (the + already gone) or 00864008001234. The
        digits as sent come first, so a plan whose own number starts with 86 is found as it is."""
        plan = self.plans.get(digits)
        if plan is None:
            for prefix in COUNTRY_PREFIXES:
                if digits.startswith(prefix):
                    return self.plans.get(digits[len(prefix):])
        return plan

    def version_of(self, number: str) -> int | None:
        """The plan version `number` runs: None when it runs from its file in dialplans/."""
        return self.versions.get(number)

    def with_versions(self, plans: Mapping[str, tuple[NumberPlan, int]]) -> "RoutingConfig":
        """A new snapshot with these plans (number -> (plan, version)) in place of the ones running; the
        rest unchanged. A number with no file is listed in `sources` as `DATABASE_SOURCE`."""
        if not plans:
            return self
        merged = dict(self.plans) | {number: plan for number, (plan, _) in plans.items()}
        versions = dict(self.versions) | {number: version for number, (_, version) in plans.items()}
        sources = {number: DATABASE_SOURCE for number in plans if number not in self.sources} | dict(self.sources)
        return replace(self, plans=MappingProxyType(merged), versions=MappingProxyType(versions), sources=MappingProxyType(sources))

    def path(self, relative: str) -> str:
        """A path from config.yaml, resolved against the folder config.yaml lives in."""
        return relative if os.path.isabs(relative) else os.path.join(self.base_dir, relative)


def _actions(plan: NumberPlan) -> Iterator[tuple[tuple[Any, ...], Action, bool]]:
    """Every action in a plan with its YAML path and whether it sits directly in a menu's options."""
    yield ("entry",), plan.entry, False
    if plan.after_hours is not None:
        yield ("after_hours",), plan.after_hours, False
    if plan.blacklist.action is not None:
        yield ("blacklist", "action"), plan.blacklist.action, False
    for name, menu in plan.menus.items():
        for key, action in menu.options.items():
            yield ("menus", name, "options", key), action, True
        if menu.on_timeout is not None:
            yield ("menus", name, "on_timeout"), menu.on_timeout, False
        if menu.on_invalid is not None:
            yield ("menus", name, "on_invalid"), menu.on_invalid, False
    for name, group in plan.hunt_groups.items():
        if group.on_failure is not None:
            yield ("hunt_groups", name, "on_failure"), group.on_failure, False


def cross_check(plan: NumberPlan, doc: LocatedDocument) -> list[ConfigIssue]:
    """References between parts of a plan: every named menu, group and voicemail box must exist."""
    issues: list[ConfigIssue] = []
    tables: dict[str, Mapping[str, object]] = {"hunt": plan.hunt_groups, "menu": plan.menus, "voicemail": plan.voicemail}
    for path, action, in_menu in _actions(plan):
        where = ".".join(str(p) for p in path)
        if action.kind in tables and action.target not in tables[action.kind]:
            known = ", ".join(sorted(tables[action.kind])) or "none defined"
            issues.append(ConfigIssue(doc.file, doc.line_of(path), f"{where}: no {action.kind} named {action.target!r} (known: {known})", path))
        if action.kind in ("repeat", "back") and not in_menu:
            issues.append(ConfigIssue(doc.file, doc.line_of(path), f"{where}: '{action.kind}' only works as a menu option", path))
    return issues


def load_plan(path: str, service: ServiceConfig) -> NumberPlan:
    """One plan file, validated and cross-checked, with the service's time zone filled in."""
    return plan_from_document(read_yaml(path), service)


def plan_from_document(doc: LocatedDocument, service: ServiceConfig) -> NumberPlan:
    """A parsed plan document, validated and cross-checked, with the service's time zone filled in."""
    plan = validate_document(NumberPlan, doc)
    issues = cross_check(plan, doc)
    if issues:
        raise ConfigError(issues)
    if plan.timezone is None:
        plan = plan.model_copy(update={"timezone": service.timezone})
    return plan


def plan_files(directory: str) -> list[str]:
    """The plan files of a folder, sorted so errors and loading order are stable."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ConfigError([ConfigIssue(directory, 1, f"cannot list plans folder: {exc}")]) from None
    return [os.path.join(directory, n) for n in names if n.endswith((".yaml", ".yml")) and not n.startswith(".")]


def load_config(config_path: str) -> RoutingConfig:
    """Everything, or ConfigError listing every issue in every file."""
    service = validate_document(ServiceConfig, read_yaml(config_path))
    base_dir = os.path.dirname(os.path.abspath(config_path))
    plans_dir = service.dialplans_dir if os.path.isabs(service.dialplans_dir) else os.path.join(base_dir, service.dialplans_dir)
    issues: list[ConfigIssue] = []
    plans: dict[str, NumberPlan] = {}
    sources: dict[str, str] = {}
    for path in plan_files(plans_dir):
        try:
            plan = load_plan(path, service)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        if plan.number in plans:
            issues.append(ConfigIssue(path, 1, f"number {plan.number} is already routed by {sources[plan.number]}", ("number",)))
            continue
        plans[plan.number] = plan
        sources[plan.number] = path
    if issues:
        raise ConfigError(issues)
    if not plans:
        raise ConfigError([ConfigIssue(plans_dir, 1, "no routing plans (*.yaml) found")])
    return RoutingConfig(
        service=service,
        plans=MappingProxyType(plans),
        sources=MappingProxyType(sources),
        config_path=config_path,
        base_dir=base_dir,
    )
