"""Saving a plan version: the one function the console, the admin API and the command line all call.

A save validates the text with the code `callrouter check` runs (`PlanRejected` with every issue located,
nothing stored), stores it as the number's next version with optimistic concurrency (`StaleVersion`
when someone saved since the editor started), tells every router (Postgres NOTIFY in the same
transaction; the others' poll otherwise), applies it to this process at once and writes the audit log.

The rule (docs/plans.md): a number runs its newest version in the database; a number with no version
there runs from its file in dialplans/.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.config.holder import ConfigHolder
from callrouter.config.loader import DATABASE_SOURCE, RoutingConfig, plan_from_document
from callrouter.config.plan import NumberPlan
from callrouter.config.yamlsource import MAX_FILE_BYTES, ConfigError, ConfigIssue, normalise_newlines, parse_text
from callrouter.store import plan_versions
from callrouter.store.plan_versions import PlanVersion, VersionTaken
from callrouter.store.schema import PLAN_ORIGINS

log = logging.getLogger(__name__)

# action, target, before, after: appends to the audit log as whoever is saving (bound per request)
Audit = Callable[[str, str, Mapping[str, Any] | None, Mapping[str, Any] | None], Awaitable[None]]
ORIGINS = PLAN_ORIGINS  # 'file' | 'console' | 'api' | 'restore'


@dataclass(frozen=True)
class PlanDeps:
    """What a save needs. `audit` is bound to who is saving (the console and the API make one per
    request with `dataclasses.replace`); None writes no audit row (tests; the CLI passes its own)."""

    engine: AsyncEngine
    holder: ConfigHolder  # this process's running configuration: validated against, applied to at once
    clock: Callable[[], datetime]
    audit: Audit | None = None


class StaleVersion(Exception):
    """The second of two concurrent saves: someone stored a version since the editor started from
    `expected`. `current` is what is there now (None: no version any more, the number runs from its file)."""

    def __init__(self, number: str, expected: int | None, current: PlanVersion | None) -> None:
        now = f"version {current.version} by {current.author}" if current else "its file (no version)"
        started = f"version {expected}" if expected is not None else "its file"
        super().__init__(f"plan {number} was changed meanwhile: you started from {started}, it is now {now}")
        self.number, self.expected, self.current = number, expected, current


class PlanRejected(Exception):
    """The text does not validate; nothing was stored. Each issue has its line and its YAML `path`."""

    def __init__(self, issues: tuple[ConfigIssue, ...] | list[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class UnknownPlan(LookupError):
    """No version in the database and no file for this number."""


def _label(number: str, config: RoutingConfig) -> str:
    """What issues name as their file: the number's plan file, else the number."""
    source = config.sources.get(number)
    return source if source and source != DATABASE_SOURCE else f"plan {number}"


def check_plan_text(text: str, number: str, config: RoutingConfig) -> NumberPlan:
    """The text as a validated plan of `number` (the service's time zone filled in, as a file's is), or
    PlanRejected with every issue located: the same parsing, caps, validation and cross-checks as
    `callrouter check`, plus "this text is the plan of that number"."""
    label = _label(number, config)
    try:
        plan = plan_from_document(parse_text(text, label), config.service)
    except ConfigError as exc:
        raise PlanRejected(exc.issues) from None
    if plan.number != number:
        raise PlanRejected([ConfigIssue(label, _line_of_number(text), f"number: this is the plan of {number}, not {plan.number}", ("number",))])
    return plan


def _line_of_number(text: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("number:"):
            return i
    return 1


def read_file_text(path: str) -> str | None:
    """A plan file's text as `plans apply` stores it (UTF-8, line ends as text mode reads them); None if
    it cannot be read (the loader has reported that already)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
        return normalise_newlines(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def file_text(number: str, config: RoutingConfig) -> str | None:
    """The text of `number`'s file in dialplans/, if it has one."""
    source = config.sources.get(number)
    if source is None or source == DATABASE_SOURCE:
        return None
    return read_file_text(source)


async def current_text(deps: PlanDeps, number: str) -> tuple[str, int | None]:
    """The text an editor starts from and its version: the newest version's, else the file's with None
    (pass it back as `expected_version`). UnknownPlan when there is neither."""
    async with deps.engine.connect() as conn:
        newest = await plan_versions.newest(conn, number)
    if newest is not None:
        return newest.text, newest.version
    text = file_text(number, deps.holder.current)
    if text is None:
        raise UnknownPlan(number)
    return text, None


def version_json(v: PlanVersion, *, with_text: bool = False) -> dict[str, Any]:
    """A version as the API shows it and the audit log records it."""
    out: dict[str, Any] = {
        "number": v.number, "version": v.version, "author": v.author, "origin": v.origin, "summary": v.summary,
        "restored_from": v.restored_from, "created_at": v.created_at.isoformat(),
    }
    if with_text:
        out["text"] = v.text
    return out


async def save_plan(deps: PlanDeps, number: str, text: str, *, author: str, origin: str,
                    expected_version: int | None, summary: str, restored_from: int | None = None) -> PlanVersion:
    """Store `text` as the next version of `number` and run it here at once; every other router within 2 s.

    `expected_version` is the version the editor started from (None: the file, no version yet); when the
    newest is another, StaleVersion and nothing is stored. The first change of a number that runs from its
    file stores the file's text as version 1 (origin 'file') and the change as version 2, in one
    transaction, so a restore can go back to the file."""
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {', '.join(ORIGINS)}")
    text = normalise_newlines(text)
    config = deps.holder.current
    plan = check_plan_text(text, number, config)
    now = deps.clock()
    try:
        async with deps.engine.begin() as conn:
            newest = await plan_versions.newest(conn, number)
            at = newest.version if newest is not None else None
            if at != expected_version:
                raise StaleVersion(number, expected_version, newest)
            before: PlanVersion | None = newest
            if newest is None and origin != "file":
                original = file_text(number, config)
                if original is not None:
                    before = await plan_versions.insert(conn, PlanVersion(
                        number, 1, original, "file", "file", f"the file {os.path.basename(config.sources[number])} before the first change", None, now))
            version = PlanVersion(number, (before.version if before else 0) + 1, text, author, origin, summary, restored_from, now)
            await plan_versions.insert(conn, version)
    except VersionTaken:
        async with deps.engine.connect() as conn:
            raise StaleVersion(number, expected_version, await plan_versions.newest(conn, number)) from None
    await deps.holder.apply({number: (plan, version.version)})
    log.info("plan %s: version %d saved by %s (%s): %s", number, version.version, author, origin, summary[:200])
    if deps.audit is not None:
        action = "plan_restore" if origin == "restore" else "plan_save"
        await deps.audit(action, number, version_json(before) if before else None, version_json(version))
    return version


async def restore_plan(deps: PlanDeps, number: str, version: int, *, author: str, expected_version: int | None) -> PlanVersion:
    """Store an old version's text again as the newest (origin 'restore'); LookupError if there is no such
    version; StaleVersion / PlanRejected as save_plan (a version that no longer validates, e.g. after a
    change of config.yaml, is refused)."""
    async with deps.engine.connect() as conn:
        old = await plan_versions.get(conn, number, version)
    if old is None:
        raise LookupError(f"plan {number} has no version {version}")
    return await save_plan(deps, number, old.text, author=author, origin="restore", expected_version=expected_version,
                           summary=f"restored version {version}", restored_from=version)


@dataclass(frozen=True)
class FileChange:
    """What `plans apply` does for one plan file."""

    number: str
    file: str
    before: int | None  # the newest version before (None: none)
    stored: PlanVersion | None  # the version stored (None: unchanged, behind, or a dry run)
    differs: bool  # the file's text is not the newest version's
    behind: int | None = None  # the file is this older version, not an edit: not applied unless named


async def apply_files(deps: PlanDeps, *, author: str, dry_run: bool = False, numbers: set[str] | None = None) -> list[FileChange]:
    """`callrouter plans apply`: every plan file of the holder's configuration (loaded, so validated
    whole, by the caller) whose text differs from its number's newest version becomes a new version
    (origin 'file'); all in one transaction, or none. A file whose text is an older version of its number
    (a console edit not exported yet, not a file edit) is left alone unless `numbers` names it: applying
    it would silently undo that edit. Applied to the holder and audited as save_plan."""
    config = deps.holder.current
    now = deps.clock()
    changes: list[FileChange] = []
    stored: dict[str, tuple[NumberPlan, int]] = {}
    try:
        async with deps.engine.begin() as conn:
            newest = await plan_versions.newest_of_each(conn)
            for number in sorted(config.plans):
                if numbers is not None and number not in numbers:
                    continue
                path = config.sources[number]
                text = file_text(number, config)
                if text is None:
                    continue  # a number that lives only in the database
                was = newest.get(number)
                before = was.version if was else None
                if was is not None and was.text == text:
                    changes.append(FileChange(number, path, before, None, False))
                    continue
                older = next((v.version for v in await plan_versions.history(conn, number) if v.text == text), None) if was else None
                if older is not None and numbers is None:
                    changes.append(FileChange(number, path, before, None, True, behind=older))
                    continue
                version: PlanVersion | None = None
                if not dry_run:
                    plan = check_plan_text(text, number, config)
                    version = await plan_versions.insert(conn, PlanVersion(
                        number, (before or 0) + 1, text, author, "file", f"plans apply: {os.path.basename(path)}", None, now))
                    stored[number] = (plan, version.version)
                changes.append(FileChange(number, path, before, version, True))
    except VersionTaken as exc:
        async with deps.engine.connect() as conn:
            raise StaleVersion(exc.number, exc.version - 1, await plan_versions.newest(conn, exc.number)) from None
    if stored:
        await deps.holder.apply(stored)
    for change in changes:
        if change.stored is not None and deps.audit is not None:
            await deps.audit("plan_apply", change.number, {"version": change.before} if change.before else None, version_json(change.stored))
    return changes


@dataclass(frozen=True)
class Drift:
    """A number whose file in dialplans/ is not what it runs: the newest database version differs."""

    number: str
    file: str
    version: PlanVersion
    behind: int | None  # the file is this older version (a change not exported yet); None: the file was edited

    def advice(self) -> str:
        """One line for `callrouter check` and serve's start log: which copy runs, and what to run."""
        who = f"version {self.version.version} ({self.version.origin}, {self.version.author}, {self.version.created_at:%Y-%m-%d %H:%M} UTC)"
        runs = f"{self.file}: differs from the database's {who}, which is what number {self.number} runs"
        if self.behind is None:
            return f"{runs}: the file was edited; `callrouter plans apply` makes it live (or `callrouter plans export` overwrites it)"
        return (f"{runs}: the file is version {self.behind}; `callrouter plans export --number {self.number}` "
                "writes the newest to the file")


async def file_drift(conn: AsyncConnection, config: RoutingConfig) -> list[Drift]:
    """Every number whose file's text differs from its newest database version, by number."""
    out: list[Drift] = []
    for number, version in sorted((await plan_versions.newest_of_each(conn)).items()):
        text = file_text(number, config)
        if text is None or text == version.text:
            continue
        behind = next((v.version for v in await plan_versions.history(conn, number) if v.text == text), None)
        out.append(Drift(number, config.sources[number], version, behind))
    return out
