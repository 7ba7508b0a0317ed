"""审计 Audit log: who did what in our console, and when?

The tenant's rows of the append-only audit log (store/audit.py), newest first, filtered by action, user and
date, paged by id; provider staff see every tenant's rows, with a tenant filter. Actions and the recorded
values before and after are shown in the page's language as key: value lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Callable
from zoneinfo import ZoneInfo

from aiohttp import web

from callrouter.console.context import console_deps, render, require
from callrouter.console.i18n import pick_language, translator
from callrouter.store.audit import ACTIONS, AuditEntry, audit_entries
from callrouter.store.tenants import READ, Scope, list_tenants

T = Callable[..., str]
PAGE_SIZE = 50


@dataclass(frozen=True)
class Fact:
    key: str
    value: str


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: str
    user: str
    tenant: str
    action: str
    action_code: str
    target: str
    address: str
    before: tuple[Fact, ...]
    after: tuple[Fact, ...]


@dataclass(frozen=True)
class Filters:
    action: str
    user: str
    since: str
    until: str
    tenant: str  # '' (every tenant) or a tenant id: the provider's filter only

    def query(self, before: int | None = None) -> dict[str, str]:
        q = {k: v for k, v in (("action", self.action), ("user", self.user), ("from", self.since), ("to", self.until),
                               ("tenant", self.tenant)) if v}
        if before is not None:
            q["before"] = str(before)
        return q


def word(t: T, key: str, fallback: str) -> str:
    """The translation, or `fallback` for a key the words do not have (an action added later)."""
    text = t(key)
    return fallback if text == key else text


def value_text(value: Any, t: T) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return t("audit.yes") if value else t("audit.no")
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


# The order facts are listed in (what a reader looks for first); other keys follow by name. Row ids are left out.
KEY_ORDER = ("username", "name", "tenant", "role", "can_listen", "can_download", "disabled", "caller", "scope", "number",
             "reason", "expires_at", "created_by", "created_at", "sessions_ended", "filter", "rows", "file")
HIDDEN_KEYS = frozenset({"id"})


def _local(text: str, zone: ZoneInfo) -> str:
    """An ISO time as recorded (UTC) in the page's zone, to the minute; anything else as it is."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return text
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M") if when.tzinfo is not None else text


def facts(value: Any, t: T, zone: ZoneInfo) -> tuple[Fact, ...]:
    """A recorded JSON value as key: value pairs (roles, prefixes and times readable); anything else as one line."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        return (Fact("", value_text(value, t)),)
    keys = [k for k in KEY_ORDER if k in value] + sorted(k for k in value if k not in KEY_ORDER and k not in HIDDEN_KEYS)
    out = []
    for key in keys:
        shown = value[key]
        if key == "role" and isinstance(shown, str):
            shown = word(t, f"role.{shown}", shown)
        elif key in ("created_at", "expires_at") and isinstance(shown, str):
            shown = _local(shown, zone)
        elif key == "expires_at" and shown is None:
            shown = t("blacklist.forever")
        elif key == "caller" and isinstance(shown, str) and shown.endswith("*"):
            shown = t("blacklist.prefix_of", prefix=shown[:-1])
        elif key == "scope" and shown == "*":
            shown = t("blacklist.every_number")
        out.append(Fact(word(t, f"audit.key.{key}", key), value_text(shown, t)))
    return tuple(out)


def who(username: str, t: T) -> str:
    """Who acted, as a company's manager would say it: the provider's command line and tokens by their role."""
    if username.startswith("cli:"):
        return t("audit.by_cli", name=username.removeprefix("cli:"))
    if username == "admin-token":
        return t("audit.by_admin_token")
    if username.startswith("token:"):
        return t("audit.by_token", name=username.removeprefix("token:"))
    return username


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _filters(request: web.Request, scope: Scope) -> Filters:
    q = request.query
    action = q.get("action", "")
    tenant = q.get("tenant", "") if scope.is_provider else ""
    if not tenant.isdigit():
        tenant = ""
    return Filters(action=action if action in ACTIONS else "", user=q.get("user", "").strip()[:80],
                   since=q.get("from", "").strip()[:10], until=q.get("to", "").strip()[:10], tenant=tenant[:20])


async def audit_page(request: web.Request) -> web.StreamResponse:
    scope = require(request, READ)
    deps = console_deps(request)
    t = translator(pick_language(request))
    zone = ZoneInfo(deps.holder.current.service.timezone)
    filters = _filters(request, scope)
    since, until = _date(filters.since), _date(filters.until)
    error = None
    if (filters.since and since is None) or (filters.until and until is None):
        error = t("audit.bad_date")
    before_text = request.query.get("before", "")
    before = int(before_text) if before_text.isdigit() and len(before_text) < 19 else None
    tenant_names: dict[int, str] = {}
    if scope.is_provider:
        tenant_names = {tenant.id: tenant.name for tenant in await list_tenants(deps.engine)}
    entries: list[AuditEntry] = []
    if error is None:
        entries = await _entries(deps.engine, scope, filters, before, since, until, zone)
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    rows = [_row(e, t, zone, tenant_names) for e in entries]
    return render(request, "audit.html", {
        "rows": rows, "filters": filters, "error": error,
        "actions": [(code, word(t, f"audit.action.{code}", code)) for code in ACTIONS],
        "tenants": sorted(tenant_names.items(), key=lambda kv: kv[1]),
        "older": filters.query(entries[-1].id) if more and entries else None,
        "paged": before is not None,
        "newest": filters.query(),
        "page_size": PAGE_SIZE,
    }, status=422 if error else 200)


async def _entries(engine: Any, scope: Scope, filters: Filters, before: int | None, since: date | None, until: date | None,
                   zone: ZoneInfo) -> list[AuditEntry]:
    """One page and one row more (to know whether there is an older page)."""
    tenant_id = scope.tenant_id
    if scope.is_provider and filters.tenant.isdigit():
        tenant_id = int(filters.tenant)
    start = datetime.combine(since, time(0), zone) if since else None
    end = datetime.combine(until + timedelta(days=1), time(0), zone) if until else None
    return await audit_entries(engine, tenant_id=tenant_id, limit=PAGE_SIZE + 1, before_id=before,
                               action=filters.action or None, username=filters.user or None, since=start, until=end)


def target_text(action: str, target: str, t: T) -> str:
    """What an action was done to; a blacklist entry's "number/caller" as "4008001234 · 0755 开头的号码"."""
    if action.startswith("blacklist_") and "/" in target:
        scope, _, caller = target.partition("/")
        shown = t("blacklist.prefix_of", prefix=caller[:-1]) if caller.endswith("*") else caller
        return f"{t('blacklist.every_number') if scope == '*' else scope} · {shown}"
    return target


def _row(e: AuditEntry, t: T, zone: ZoneInfo, tenant_names: dict[int, str]) -> AuditRow:
    tenant = tenant_names.get(e.tenant_id, str(e.tenant_id)) if e.tenant_id is not None else t("audit.provider")
    return AuditRow(
        id=e.id, at=e.at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"), user=who(e.username, t), tenant=tenant,
        action=word(t, f"audit.action.{e.action}", e.action), action_code=e.action, target=target_text(e.action, e.target, t),
        address="—" if e.address == "cli" else e.address, before=facts(e.before, t, zone), after=facts(e.after, t, zone),
    )
