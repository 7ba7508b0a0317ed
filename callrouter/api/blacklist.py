"""Runtime blacklist entries: stored in the database, so every router applies them (this one at once)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from callrouter import safejson
from callrouter.api import params
from callrouter.api.context import audit, deps_of, scope_of
from callrouter.api.errors import ApiError
from callrouter.store.blacklist import BlacklistEntry, BlacklistInputError, OutOfScope

log = logging.getLogger(__name__)


class NewEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    caller: str = Field(min_length=1, max_length=40)
    scope: str = Field(default="*", min_length=1, max_length=20)
    reason: str = Field(default="", max_length=200)
    expires_at: str | None = Field(default=None, max_length=40)
    ttl_seconds: int | None = Field(default=None, ge=60, le=10 * 366 * 86400)

    @model_validator(mode="after")
    def _one_expiry(self) -> "NewEntry":
        if self.expires_at is not None and self.ttl_seconds is not None:
            raise ValueError("give expires_at or ttl_seconds, not both")
        return self


def entry_json(entry: BlacklistEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "scope": entry.scope,
        "caller": entry.caller,
        "reason": entry.reason,
        "created_by": entry.created_by,
        "created_at": entry.created_at.isoformat(),
        "expires_at": entry.expires_at.isoformat() if entry.expires_at else None,
    }


async def read_json(request: web.Request) -> Any:
    """The body as JSON; malformed, too deeply nested or with absurd numbers it is a 400, never a 500."""
    if request.content_type != "application/json":
        raise ApiError(415, "send the body as JSON (Content-Type: application/json)")
    try:
        return safejson.loads(await request.read())
    except safejson.JsonRefused as exc:
        raise ApiError(400, str(exc)) from None


def validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


async def list_entries(request: web.Request) -> web.Response:
    deps, _ = deps_of(request)
    allowed = scope_of(request)
    scope = request.query.get("scope")
    if scope is not None and scope != "*":
        params.number(scope, "scope")
    if scope is not None and not (allowed.allows(scope) and (scope != "*" or allowed.numbers is None)):
        raise ApiError(404, f"no number {scope}")
    entries = await deps.blacklist.entries(deps.clock(), scope, numbers=allowed.numbers)
    return web.json_response({"entries": [entry_json(e) for e in entries]})


async def add_entry(request: web.Request) -> web.Response:
    deps, _ = deps_of(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(422, "body: a JSON object like {\"caller\": \"13900001111\", \"scope\": \"*\", \"reason\": \"骚扰\"}")
    try:
        new = NewEntry.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, validation_message(exc)) from None
    now = deps.clock()
    expires: datetime | None = None
    if new.ttl_seconds is not None:
        expires = now + timedelta(seconds=new.ttl_seconds)
    elif new.expires_at is not None:
        expires = params.when(new.expires_at, "expires_at", ZoneInfo(deps.holder.current.service.timezone))
        if expires <= now:
            raise ApiError(422, "expires_at: must be in the future")
    allowed = scope_of(request)
    if allowed.numbers is not None and new.scope == "*":
        raise ApiError(422, "scope: one of your 400 numbers (" + ", ".join(sorted(allowed.numbers)) + ")")
    who = (f"api:{request.remote or '?'}" if allowed.is_provider else f"{allowed.username}@{request.remote or '?'}")[:80]
    try:
        before = await deps.blacklist.find(new.scope, new.caller, numbers=allowed.numbers)
        entry = await deps.blacklist.add(new.scope, new.caller, new.reason, who, expires, now=now, numbers=allowed.numbers)
    except BlacklistInputError as exc:
        raise ApiError(422, str(exc)) from None
    except OutOfScope:
        raise ApiError(404, f"no number {new.scope}") from None
    await audit(request, "blacklist_add", f"{entry.scope}/{entry.caller}",
                before=entry_json(before) if before else None, after=entry_json(entry))
    log.info("blacklist: %s added %s for %s (%r)", who, entry.caller[-4:].rjust(len(entry.caller), "*"), entry.scope, entry.reason[:60])
    await deps.refresh_blacklist()
    return web.json_response(entry_json(entry), status=201)


async def remove_entry(request: web.Request) -> web.Response:
    deps, _ = deps_of(request)
    scope, caller = request.match_info["scope"], request.match_info["caller"]
    if len(scope) > 20 or len(caller) > 40:
        raise ApiError(400, "scope: at most 20 characters; caller: at most 40")
    allowed = scope_of(request)
    try:
        before = await deps.blacklist.find(scope, caller, numbers=allowed.numbers)
        removed = before is not None and await deps.blacklist.remove(scope, caller, numbers=allowed.numbers)
    except BlacklistInputError as exc:
        raise ApiError(400, str(exc)) from None
    except OutOfScope:
        removed = False
    if not removed or before is None:
        raise ApiError(404, "no such blacklist entry")
    await audit(request, "blacklist_remove", f"{before.scope}/{before.caller}", before=entry_json(before))
    log.info("blacklist: api:%s removed an entry for %s", request.remote, scope)  # scope is checked: '*' or digits
    await deps.refresh_blacklist()
    return web.Response(status=204)
