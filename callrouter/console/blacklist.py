"""黑名单 Blacklist: who is blocked from calling us, and why.

The tenant's runtime entries (the database's, `store/blacklist.py`), with add and remove for users with the
BLACKLIST permission, and the plans' own YAML blacklists read only (the provider writes those). A change is
applied to this router at once (as the API's add path does) and reaches the others within
`store.blacklist_refresh` seconds; each change is audited with the entry before and after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable
from zoneinfo import ZoneInfo

from aiohttp import web

from callrouter.api.blacklist import entry_json
from callrouter.config.plan import Blacklist, NumberPlan
from callrouter.console.context import PREFIX, audit, console_deps, not_found, render, require, see_other
from callrouter.console.i18n import pick_language, translator
from callrouter.console.numbers import describe_action
from callrouter.model.phone import ascii_digits
from callrouter.routing.blacklist import GLOBAL_SCOPE, PREFIX_MARK
from callrouter.store.blacklist import BlacklistEntry, BlacklistInputError, OutOfScope, check_entry
from callrouter.store.tenants import BLACKLIST, READ, Scope, number_owner

log = logging.getLogger(__name__)
PAGE = f"{PREFIX}/blacklist"
EXPIRY_CHOICES: tuple[tuple[str, timedelta | None], ...] = (
    ("never", None), ("1d", timedelta(days=1)), ("7d", timedelta(days=7)), ("30d", timedelta(days=30)),
    ("90d", timedelta(days=90)), ("365d", timedelta(days=365)),
)
ALL_OURS = "all"  # the form's scope for "every number of this tenant"
MAX_FIELD = 200


@dataclass(frozen=True)
class EntryRow:
    """One runtime entry as the page shows it."""

    scope: str
    caller: str  # as stored: digits, or digits and '*' for a prefix
    shown: str  # the number, or the prefix without its '*'
    is_prefix: bool
    scope_label: str
    reason: str
    created_by: str
    created_at: str
    expires_at: str | None


@dataclass(frozen=True)
class ConfigRules:
    """A plan's (or the service's) YAML blacklist, read only."""

    label: str
    numbers: tuple[str, ...]
    prefixes: tuple[str, ...]
    anonymous: bool
    action: str


def _zone(request: web.Request) -> ZoneInfo:
    return ZoneInfo(console_deps(request).holder.current.service.timezone)


def _clock(value: datetime, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _rows(entries: list[BlacklistEntry], zone: ZoneInfo, t: Callable[..., str]) -> list[EntryRow]:
    rows = []
    for e in sorted(entries, key=lambda e: e.created_at, reverse=True):  # the newest block first
        rows.append(EntryRow(
            scope=e.scope, caller=e.caller, shown=e.caller.removesuffix(PREFIX_MARK), is_prefix=e.is_prefix,
            scope_label=t("blacklist.every_number") if e.scope == GLOBAL_SCOPE else e.scope,
            reason=e.reason, created_by=e.created_by, created_at=_clock(e.created_at, zone),
            expires_at=_clock(e.expires_at, zone) if e.expires_at else None,
        ))
    return rows


def _config_rules(request: web.Request, scope: Scope, t: Callable[..., str]) -> list[ConfigRules]:
    """The plans' blacklists of the scope's numbers; the provider also sees the service-wide one."""
    config = console_deps(request).holder.current
    found: list[ConfigRules] = []

    def add(label: str, rules: Blacklist, plan: NumberPlan | None) -> None:
        if rules.numbers or rules.prefixes or rules.anonymous:
            action = describe_action(rules.action, t, plan)
            prefixes = tuple(t("blacklist.prefix_of", prefix=p) for p in rules.prefixes)
            found.append(ConfigRules(label, tuple(sorted(rules.numbers)), prefixes, rules.anonymous, action))

    if scope.is_provider:
        add(t("blacklist.config.global"), config.service.blacklist, None)
    for number in sorted(config.plans):
        if scope.allows(number):
            plan = config.plans[number]
            add(f"{number} · {plan.name}", plan.blacklist, plan)
    return found


def _scope_choices(request: web.Request, scope: Scope, t: Callable[..., str]) -> list[tuple[str, str]]:
    """(value, label) of the form's scope select: all of ours first, then each number."""
    if scope.numbers is None:
        numbers = sorted(console_deps(request).holder.current.plans)
        return [(GLOBAL_SCOPE, t("blacklist.scope.everyone"))] + [(n, n) for n in numbers]
    numbers = sorted(scope.numbers)
    choices = [(n, n) for n in numbers]
    return ([(ALL_OURS, t("blacklist.scope.all_ours"))] + choices) if len(numbers) > 1 else choices


async def _page(request: web.Request, scope: Scope, *, form: dict[str, str] | None = None, error: str | None = None,
                done: str | None = None, status: int = 200) -> web.Response:
    deps = console_deps(request)
    t = translator(pick_language(request))
    zone = _zone(request)
    entries = await deps.admin.blacklist.entries(deps.now(), numbers=scope.numbers)
    return render(request, "blacklist.html", {
        "rows": _rows(entries, zone, t),
        "rules": _config_rules(request, scope, t),
        "can_change": scope.can(BLACKLIST),
        "scope_choices": _scope_choices(request, scope, t),
        "expiry_choices": [key for key, _ in EXPIRY_CHOICES],
        "form": form or {"caller": "", "kind": "exact", "reason": "", "expires": "never", "scope": ""},
        "error": error,
        "done": done,
    }, status=status)


async def blacklist_page(request: web.Request) -> web.StreamResponse:
    scope = require(request, READ)
    done = request.query.get("done")
    return await _page(request, scope, done=done if done in ("added", "removed") else None)


def _field(post: Any, name: str) -> str:
    value = post.get(name, "")
    return value.strip()[:MAX_FIELD + 1] if isinstance(value, str) else ""


def _checked(form: dict[str, str], scope: Scope, choices: list[tuple[str, str]]) -> tuple[str | None, tuple[str, ...], timedelta | None]:
    """(error key, the scopes to write, the expiry) from the form, checked before the store sees it."""
    caller = form["caller"].removesuffix(PREFIX_MARK)
    digits = ascii_digits(caller)
    if not digits or any(not ("0" <= ch <= "9" or ch in " -") for ch in caller.removeprefix("+")):
        return "blacklist.error.caller", (), None
    if form["kind"] == "prefix" and not 2 <= len(digits) <= 20:
        return "blacklist.error.prefix", (), None
    if len(form["reason"]) > MAX_FIELD:
        return "blacklist.error.reason", (), None
    expiry = dict(EXPIRY_CHOICES)
    if form["expires"] not in expiry:
        return "blacklist.error.expires", (), None
    allowed = {value for value, _ in choices}
    if form["scope"] not in allowed:
        return "blacklist.error.scope", (), None
    scopes = tuple(sorted(scope.numbers or ())) if form["scope"] == ALL_OURS else (form["scope"],)
    return None, scopes, expiry[form["expires"]]


async def _tenant_of(request: web.Request, scope: Scope, number: str) -> int | None:
    """The tenant an entry belongs to, for the audit log (the provider acting for a company)."""
    if not scope.is_provider or number == GLOBAL_SCOPE:
        return None
    return await number_owner(console_deps(request).engine, number)


async def blacklist_add(request: web.Request) -> web.StreamResponse:
    scope = require(request, BLACKLIST)
    deps = console_deps(request)
    t = translator(pick_language(request))
    post = await request.post()
    form = {name: _field(post, name) for name in ("caller", "kind", "reason", "expires", "scope")}
    if form["kind"] not in ("exact", "prefix"):
        form["kind"] = "exact"
    if form["caller"].endswith(PREFIX_MARK):  # "0755*" is a prefix, whichever box was ticked
        form["kind"] = "prefix"
    error, scopes, expiry = _checked(form, scope, _scope_choices(request, scope, t))
    if error is not None:
        return await _page(request, scope, form=form, error=t(error), status=422)
    caller = form["caller"].removesuffix(PREFIX_MARK) + (PREFIX_MARK if form["kind"] == "prefix" else "")
    now = deps.now()
    expires = now + expiry if expiry is not None else None
    store = deps.admin.blacklist
    try:
        for number in scopes:
            before = await store.find(number, caller, numbers=scope.numbers)
            entry = await store.add(number, caller, form["reason"], scope.username, expires, now=now, numbers=scope.numbers)
            await audit(request, "blacklist_add", f"{entry.scope}/{entry.caller}", before=entry_json(before) if before else None,
                        after=entry_json(entry), for_tenant=await _tenant_of(request, scope, entry.scope))
    except BlacklistInputError as exc:
        return await _page(request, scope, form=form, error=str(exc), status=422)
    except OutOfScope:  # the number was taken from the tenant since the page was drawn
        raise not_found() from None
    log.info("blacklist: %s blocked a caller on %d number(s) from the console", scope.username, len(scopes))
    await deps.admin.refresh_blacklist()  # this router at once; the others at their next refresh
    return see_other(f"{PAGE}?done=added")


async def blacklist_remove(request: web.Request) -> web.StreamResponse:
    scope = require(request, BLACKLIST)
    deps = console_deps(request)
    post = await request.post()
    number, caller = _field(post, "scope"), _field(post, "caller")
    try:
        check_entry(number, caller, "", "")
    except BlacklistInputError:
        raise not_found() from None
    store = deps.admin.blacklist
    before = await store.find(number, caller, numbers=scope.numbers)  # None for another tenant's entry
    if before is None or (number == GLOBAL_SCOPE and not scope.is_provider):
        raise not_found()
    try:
        removed = await store.remove(number, caller, numbers=scope.numbers)
    except OutOfScope:
        raise not_found() from None
    if not removed:
        raise not_found()
    await audit(request, "blacklist_remove", f"{before.scope}/{before.caller}", before=entry_json(before),
                for_tenant=await _tenant_of(request, scope, before.scope))
    await deps.admin.refresh_blacklist()
    return see_other(f"{PAGE}?done=removed")
