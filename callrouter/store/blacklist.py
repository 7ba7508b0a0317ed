"""Runtime blacklist entries: added by ops while the service runs (CLI, admin API), kept in the database,
merged with the YAML blacklists, and seen by every router within `store.blacklist_refresh` seconds.

Each router reads all live entries into one frozen snapshot per refresh and swaps it in whole; a call
reads the snapshot it started with. If the database is away, the last good snapshot stays in force.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Callable, Mapping

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.routing.blacklist import PREFIX_MARK, RuntimeBlacklist
from callrouter.metrics import RouterMetrics
from callrouter.tasks import Backoff, Periodic, PeriodicPart, within
from callrouter.model.phone import ascii_digits, normalize_number
from callrouter.store.dialect import upsert_set
from callrouter.store.schema import blacklist_entries

log = logging.getLogger(__name__)
_NUMBER = re.compile(r"\+?[0-9][0-9 \-]{0,30}\Z")
_SCOPE = re.compile(r"(\*|[0-9]{3,20})\Z")


class BlacklistInputError(ValueError):
    """An entry that cannot be stored as given; the message says why."""


class OutOfScope(LookupError):
    """The entry's 400 number is not one the caller may see: answered as if it did not exist."""


def _check_scope(scope: str, numbers: frozenset[str] | None) -> None:
    """A tenant (numbers not None) works on its own numbers' entries only, never the global '*' ones."""
    if numbers is not None and scope not in numbers:
        raise OutOfScope(scope)


@dataclass(frozen=True)
class BlacklistEntry:
    id: int
    scope: str
    caller: str
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None

    @property
    def is_prefix(self) -> bool:
        return self.caller.endswith(PREFIX_MARK)




def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive times; everything stored is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def normalize_prefix(raw: str) -> str:
    """A prefix as callers' numbers start once normalised: '+852' is '00852', '+86 755' is '0755', '+86 139' is '139'."""
    text = raw.strip()
    digits = ascii_digits(text)
    if text.startswith("+"):
        digits = "00" + digits
    if digits.startswith("0086") and len(digits) > 4:
        rest = digits[4:]
        digits = rest if rest.startswith("1") else "0" + rest.lstrip("0")
    return digits


def check_entry(scope: str, caller: str, reason: str, created_by: str) -> tuple[str, str]:
    """(scope, normalised caller), or BlacklistInputError with a message fit for an API response.

    A caller ending in '*' is a prefix ('0755*': every number starting 0755), stored with its '*'."""
    if not _SCOPE.match(scope):
        raise BlacklistInputError(f"scope must be a 400 number (digits) or '*' for all numbers, not {scope[:40]!r}")
    if caller.endswith(PREFIX_MARK):
        if not _NUMBER.match(caller[:-1]):
            raise BlacklistInputError(f"a prefix is digits (optional leading +) followed by '*', not {caller[:40]!r}")
        prefix = normalize_prefix(caller[:-1])
        if not 2 <= len(prefix) <= 20:
            raise BlacklistInputError("a prefix has 2 to 20 digits")
        normalised = prefix + PREFIX_MARK
    elif not _NUMBER.match(caller):
        raise BlacklistInputError(f"caller must be a phone number (digits, optional leading +), not {caller[:40]!r}")
    else:
        normalised = normalize_number(caller)
    if not normalised:
        raise BlacklistInputError("caller has no digits")
    if len(reason) > 200 or len(created_by) > 80:
        raise BlacklistInputError("reason is limited to 200 characters and created_by to 80")
    return scope, normalised


class BlacklistStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._upsert = upsert_set(blacklist_entries, engine.dialect.name, ["scope", "caller"], ["reason", "created_by", "created_at", "expires_at"])

    async def add(
        self, scope: str, caller: str, reason: str = "", created_by: str = "", expires_at: datetime | None = None, *,
        now: datetime, numbers: frozenset[str] | None,
    ) -> BlacklistEntry:
        """Add (or update) an entry; returns it as stored. `numbers`: the caller's (None: any scope, '*' too);
        OutOfScope for a scope outside them."""
        scope, normalised = check_entry(scope, caller, reason, created_by)
        _check_scope(scope, numbers)
        if expires_at is not None and expires_at.tzinfo is None:
            raise BlacklistInputError("expires_at needs a time zone")
        row = {
            "scope": scope,
            "caller": normalised,
            "reason": reason,
            "created_by": created_by,
            "created_at": now.astimezone(timezone.utc),
            "expires_at": expires_at.astimezone(timezone.utc) if expires_at else None,
        }
        async with self.engine.begin() as conn:
            await conn.execute(self._upsert, row)
            stored = (
                await conn.execute(
                    select(blacklist_entries).where(blacklist_entries.c.scope == scope, blacklist_entries.c.caller == normalised)
                )
            ).one()
        return _entry(stored._mapping)

    async def remove(self, scope: str, caller: str, *, numbers: frozenset[str] | None) -> bool:
        """False when there was no such entry; OutOfScope when `scope` is not among `numbers`."""
        scope, normalised = check_entry(scope, caller, "", "")
        _check_scope(scope, numbers)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(blacklist_entries).where(blacklist_entries.c.scope == scope, blacklist_entries.c.caller == normalised)
            )
        return bool(result.rowcount)

    async def find(self, scope: str, caller: str, *, numbers: frozenset[str] | None) -> BlacklistEntry | None:
        """The entry as stored (expired or not), for the audit's "before"; None outside `numbers`."""
        scope, normalised = check_entry(scope, caller, "", "")
        if numbers is not None and scope not in numbers:
            return None
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(blacklist_entries).where(blacklist_entries.c.scope == scope, blacklist_entries.c.caller == normalised)
            )).first()
        return None if row is None else _entry(row._mapping)

    async def entries(self, now: datetime, scope: str | None = None, *, numbers: frozenset[str] | None) -> list[BlacklistEntry]:
        """Live entries (not expired), oldest first; only those of `numbers` (None: all, '*' included)."""
        query = select(blacklist_entries).where(
            or_(blacklist_entries.c.expires_at.is_(None), blacklist_entries.c.expires_at > now.astimezone(timezone.utc))
        )
        if numbers is not None:
            query = query.where(blacklist_entries.c.scope.in_(sorted(numbers)))
        if scope is not None:
            query = query.where(blacklist_entries.c.scope == scope)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(blacklist_entries.c.id))).all()
        return [_entry(r._mapping) for r in rows]

    async def snapshot(self, now: datetime) -> RuntimeBlacklist:
        by_scope: dict[str, set[str]] = {}
        for entry in await self.entries(now, numbers=None):
            by_scope.setdefault(entry.scope, set()).add(entry.caller)
        return RuntimeBlacklist(MappingProxyType({k: frozenset(v) for k, v in by_scope.items()}))


def _entry(m: Mapping[Any, Any]) -> BlacklistEntry:
    created = _utc(m["created_at"])
    assert created is not None
    return BlacklistEntry(
        id=int(m["id"]),
        scope=str(m["scope"]),
        caller=str(m["caller"]),
        reason=str(m["reason"]),
        created_by=str(m["created_by"]),
        created_at=created,
        expires_at=_utc(m["expires_at"]),
    )


class BlacklistFollower(PeriodicPart):
    """Keeps the current snapshot fresh; `current` is what new calls use."""

    def __init__(self, store: BlacklistStore, metrics: RouterMetrics, clock: Callable[[], datetime], every: float) -> None:
        self.store, self.metrics, self.clock, self.every = store, metrics, clock, every
        self.current = RuntimeBlacklist()
        self._late: set[asyncio.Future[Any]] = set()  # a refresh abandoned because the database hangs
        # A failed refresh keeps the last good snapshot (until then, the YAML blacklists alone apply).
        self.periodic = Periodic(
            "blacklist-follower", self._step, lambda: self.every,
            backoff=Backoff(first=self.every, cap=max(self.every, 30.0)),
            on_error=lambda _: self.metrics.store_errors.labels(operation="blacklist").inc(),
        )

    async def refresh(self) -> None:
        self.current = await self.store.snapshot(self.clock())
        self.metrics.blacklist_entries.set(len(self.current))

    async def start(self) -> None:
        """The first refresh before calls are taken, then one every `every` seconds."""
        await self.periodic.run_once()
        self.periodic.start(delay=self.every)

    async def _step(self) -> bool:
        """Within a budget: a hung database must delay neither the start, nor calls, nor a stop."""
        recovering = self.periodic.failures > 0
        budget = max(self.every, 5.0) if self.periodic.running else 5.0  # not running yet: the start waits
        await within(self.refresh(), budget, self._late)
        if recovering:
            log.info("runtime blacklist refreshed again (%d entries)", len(self.current))
        return False
