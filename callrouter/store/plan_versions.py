"""Every version of every number's routing plan, as the YAML text ops write (issue 14). Insert-only.

A number runs its newest version here; with none it runs from its file in dialplans/. Two saves that
both started from version N race for N+1: the unique (number, version) lets one commit and makes the
other fail (`VersionTaken`), on SQLite and Postgres alike, so neither overwrites the other.

On Postgres a save also sends `NOTIFY callrouter_plans, '<number>:<version>'` inside its transaction
(delivered at commit, never for a save that rolled back), so every router hears of it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callrouter.store.schema import PLAN_ORIGINS, plan_versions
from callrouter.store.tenants import utc

CHANNEL = "callrouter_plans"  # the Postgres LISTEN/NOTIFY channel


@dataclass(frozen=True)
class PlanVersion:
    """One stored version of one number's plan."""

    number: str
    version: int
    text: str
    author: str
    origin: str  # 'file' | 'console' | 'api' | 'restore'
    summary: str
    restored_from: int | None
    created_at: datetime


class VersionTaken(Exception):
    """Another save stored this (number, version) first: the caller's view of the plan is stale."""

    def __init__(self, number: str, version: int) -> None:
        super().__init__(f"version {version} of {number} was stored by another save meanwhile")
        self.number, self.version = number, version


def _version(m: object) -> PlanVersion:
    row = m._mapping  # type: ignore[attr-defined]
    return PlanVersion(
        number=str(row["number"]), version=int(row["version"]), text=str(row["text"]), author=str(row["author"]),
        origin=str(row["origin"]), summary=str(row["summary"]),
        restored_from=None if row["restored_from"] is None else int(row["restored_from"]), created_at=utc(row["created_at"]),
    )


async def newest(conn: AsyncConnection, number: str) -> PlanVersion | None:
    """The version `number` runs, or None (it runs from its file)."""
    q = select(plan_versions).where(plan_versions.c.number == number).order_by(plan_versions.c.version.desc()).limit(1)
    row = (await conn.execute(q)).first()
    return None if row is None else _version(row)


async def newest_of_each(conn: AsyncConnection) -> dict[str, PlanVersion]:
    """number -> its newest version, for every number that has one (what routers overlay on the files)."""
    latest = (
        select(plan_versions.c.number, func.max(plan_versions.c.version).label("version"))
        .group_by(plan_versions.c.number)
        .subquery()
    )
    q = select(plan_versions).join(
        latest, (plan_versions.c.number == latest.c.number) & (plan_versions.c.version == latest.c.version)
    )
    return {v.number: v for v in (_version(r) for r in (await conn.execute(q)).all())}


async def history(conn: AsyncConnection, number: str, *, limit: int = 200) -> list[PlanVersion]:
    """The versions of `number`, newest first."""
    q = select(plan_versions).where(plan_versions.c.number == number).order_by(plan_versions.c.version.desc()).limit(limit)
    return [_version(r) for r in (await conn.execute(q)).all()]


async def get(conn: AsyncConnection, number: str, version: int) -> PlanVersion | None:
    q = select(plan_versions).where(plan_versions.c.number == number, plan_versions.c.version == version)
    row = (await conn.execute(q)).first()
    return None if row is None else _version(row)


async def last_id(engine: AsyncEngine) -> int:
    """The id of the newest row of any number (0: none): a cheap "has anything been saved?" for the poll."""
    async with engine.connect() as conn:
        value = (await conn.execute(select(func.max(plan_versions.c.id)))).scalar()
    return int(value or 0)


async def insert(conn: AsyncConnection, version: PlanVersion) -> PlanVersion:
    """Store `version` inside the caller's transaction; VersionTaken when another save has that number
    first. On Postgres the routers are told at commit. The caller decides the version number (newest + 1)."""
    if version.origin not in PLAN_ORIGINS:
        raise ValueError(f"origin must be one of {', '.join(PLAN_ORIGINS)}, not {version.origin!r}")
    row = {
        "number": version.number, "version": version.version, "text": version.text, "author": version.author[:120],
        "origin": version.origin, "summary": version.summary, "restored_from": version.restored_from,
        "created_at": version.created_at,
    }
    try:  # the caller's transaction is lost with it: the caller re-reads what is there now
        await conn.execute(plan_versions.insert().values(**row))
    except IntegrityError:
        raise VersionTaken(version.number, version.version) from None
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": f"{version.number}:{version.version}"})
    return version
