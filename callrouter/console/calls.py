"""The calls page (通话记录): who called us, what happened to each call, and what was said.

* `/console/calls`: search by 400 number (the tenant's own), caller (any written form), local dates and
  result; keyset pages newest first (`?after=` / `?before=` a position), and a CSV export of the filter.
* `/console/calls/{uniqueid}?source=`: one call's story (menu path in words, each line rung, who answered,
  talk time, the decision trace) and its recording, played through `.../recording` (HTTP Range, audited
  as one listen per session) and downloaded through `.../recording/download` (audited each time).

Another tenant's number, call or recording answers 404 like one that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiMapping

from callrouter.config.plan import NumberPlan
from callrouter.console.context import PREFIX, audit, console_deps, nav_items, not_found, render, require, session_of
from callrouter.console.i18n import pick_language, translator
from callrouter.model.phone import normalize_number
from callrouter.model.record import DISPOSITIONS
from callrouter.store.audit import has_entry_since
from callrouter.store.call_export import csv_chunks, filter_json
from callrouter.store.calls import (
    CallDetail,
    CallFilter,
    StoredCall,
    count_calls_upto,
    find_call,
    search_calls,
    search_calls_newer,
)
from callrouter.store.recording_files import RecordingPathError, content_type, download_name, recording_of_call, stored_relative
from callrouter.store.tenants import DOWNLOAD, LISTEN, READ, Scope

log = logging.getLogger(__name__)

PAGE_SIZE = 50
COUNT_CAP = 10_000  # "more than 10000 calls": counting stays cheap on a large table
_NUMBER = re.compile(r"[0-9]{3,20}\Z")
_CALLER = re.compile(r"[0-9+\-\s().]{1,40}\Z")
_POSITION = re.compile(r"([0-9]{1,17})-([0-9]{1,19})\Z")  # a keyset position: started_at in µs since 1970, row id
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_STATUSES = ("ANSWER", "BUSY", "NOANSWER", "CHANUNAVAIL", "CONGESTION", "CANCEL", "FULL")


# -- the search ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Search:
    """The form as the user filled it in (to show it again), the filter it means, and what was wrong."""

    values: Mapping[str, str]
    dispositions: tuple[str, ...]
    filter: CallFilter
    tz: ZoneInfo
    errors: tuple[str, ...]  # word keys


def _zone(plans: Mapping[str, NumberPlan], number: str | None, service_tz: str) -> ZoneInfo:
    """Local dates are the number's plan's time zone when one number is picked, else the service's."""
    plan = plans.get(number) if number else None
    return ZoneInfo(plan.timezone if plan is not None and plan.timezone else service_tz)


def parse_search(query: MultiMapping[str], scope: Scope, plans: Mapping[str, NumberPlan], service_tz: str) -> Search:
    """The filter of `query`; another tenant's number is 404 (web.HTTPNotFound), a badly typed field an error key."""
    values = {name: query.get(name, "").strip()[:60] for name in ("number", "caller", "from", "to")}
    errors: list[str] = []
    number: str | None = values["number"] or None
    if number is not None:
        if not _NUMBER.match(number):
            errors.append("calls.error.number")
            number = None
        elif not scope.allows(number):
            raise not_found()
    caller: str | None = None
    if values["caller"]:
        if _CALLER.match(values["caller"]) and normalize_number(values["caller"]):
            caller = normalize_number(values["caller"])
        else:
            errors.append("calls.error.caller")
    tz = _zone(plans, number, service_tz)
    days: dict[str, date | None] = {}
    for name in ("from", "to"):
        try:
            days[name] = date.fromisoformat(values[name]) if values[name] else None
        except ValueError:
            errors.append("calls.error.date")
            days[name] = None
    since = _local_midnight(days["from"], tz)
    until = _local_midnight(days["to"] + timedelta(days=1), tz) if days["to"] else None  # the end date is included
    if since and until and until <= since:
        errors.append("calls.error.range")
    wanted = tuple(d for value in query.getall("disposition", []) for d in value.split(",") if d.strip())
    if any(d not in DISPOSITIONS for d in wanted):
        errors.append("calls.error.disposition")
        wanted = tuple(d for d in wanted if d in DISPOSITIONS)
    f = CallFilter(number=number, caller=caller, since=since, until=until, dispositions=tuple(dict.fromkeys(wanted)))
    return Search(values, f.dispositions, f, tz, tuple(dict.fromkeys(errors)))


def _local_midnight(day: date | None, tz: ZoneInfo) -> datetime | None:
    return None if day is None else datetime.combine(day, time(0), tz).astimezone(timezone.utc)


def encode_position(call: StoredCall) -> str:
    delta = call.started_at.astimezone(timezone.utc) - _EPOCH
    return f"{(delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds}-{call.id}"


def decode_position(value: str) -> tuple[datetime, int] | None:
    """A position from a page link; anything else is no position (the first page), never an error page."""
    m = _POSITION.match(value)
    if m is None:
        return None
    return _EPOCH + timedelta(microseconds=int(m.group(1))), int(m.group(2))


def _query_string(search: Search, **extra: str) -> str:
    pairs = [(k, v) for k, v in search.values.items() if v] + [("disposition", d) for d in search.dispositions]
    pairs += [(k, v) for k, v in extra.items() if v]
    return urlencode(pairs)


def _numbers_to_pick(scope: Scope, plans: Mapping[str, NumberPlan]) -> list[str]:
    return sorted(scope.numbers) if scope.numbers is not None else sorted(plans)


# -- what a call looks like on the page ------------------------------------------------------------

def spoken_duration(seconds: int, t: Callable[..., str]) -> str:
    if seconds < 60:
        return t("calls.seconds", s=seconds)
    if seconds < 3600:
        return t("calls.minutes", m=seconds // 60, s=seconds % 60)
    return t("calls.hours", h=seconds // 3600, m=seconds % 3600 // 60)


def line_name(plan: NumberPlan | None, group: str | None, line_id: str) -> str:
    """The agent's name from the plan (the group's line first, then any line with that id), else the id."""
    if plan is not None:
        groups = [plan.hunt_groups[group]] if group in plan.hunt_groups else []
        for hunt in groups + list(plan.hunt_groups.values()):
            for line in hunt.lines:
                if line.id == line_id:
                    return line.name or line.id
    return line_id


def menu_path(call: StoredCall, t: Callable[..., str]) -> str:
    """The IVR path in words: "主菜单按 2 → after_sales 菜单按 1 → after_sales 组"."""
    steps: list[str] = []
    for step in (s for s in call.ivr_path.split(">") if s):
        name, _, digits = step.partition(":")
        menu = t("calls.ivr.main") if name == "main" else t("calls.ivr.menu", name=name)
        steps.append(t("calls.ivr.silent", menu=menu) if digits in ("", "-") else t("calls.ivr.pressed", menu=menu, digits=digits))
    if call.hunt_group:
        steps.append(t("calls.ivr.group", name=call.hunt_group))
    elif call.disposition == "voicemail":
        steps.append(t("calls.ivr.voicemail"))
    return " → ".join(steps) if steps else t("calls.ivr.none")


def _local(at: datetime, plans: Mapping[str, NumberPlan], number: str, service_tz: str) -> datetime:
    return at.astimezone(_zone(plans, number, service_tz))


def recording_state(call: StoredCall, root: str) -> str:
    """"ready" (a file with sound to play), "purged" (retention deleted it), "missing" (an answered call's file is
    not there), or "none". Blocking file checks: call it off the event loop."""
    if not call.recording_file:
        return "none"
    if call.recording_purged_at is not None:
        return "purged"
    try:
        size = recording_of_call(call.recording_file, root).stat().st_size
    except (RecordingPathError, OSError):  # refused, or not there (yet, or any more)
        size = 0
    if size > 0:
        return "ready"
    # MixMonitor records only while connected: a call nobody answered leaves no file, and that is no fault
    return "missing" if call.answered_line else "none"


def recording_states(calls: list[StoredCall], root: str) -> dict[int, str]:
    return {call.id: recording_state(call, root) for call in calls}


def call_view(call: StoredCall, plans: Mapping[str, NumberPlan], service_tz: str, t: Callable[..., str],
              recording: str = "none") -> dict[str, Any]:
    """One call as the templates show it (words and local times worked out here, not in the template)."""
    plan = plans.get(call.number)
    local = _local(call.started_at, plans, call.number, service_tz)
    return {
        "href": f"{PREFIX}/calls/{call.uniqueid}?" + urlencode({"source": call.source}),
        "time": f"{local:%Y-%m-%d %H:%M:%S}",
        "caller": call.caller or t("calls.anonymous"),
        "caller_raw": call.caller_raw if call.caller_raw and call.caller_raw != call.caller else "",
        "caller_name": call.caller_name,
        "number": call.number,
        "plan_name": plan.name if plan is not None else "",
        "disposition": call.disposition,
        "result": t(f"calls.d.{call.disposition}") if call.disposition in DISPOSITIONS else call.disposition,
        "answered_by": line_name(plan, call.hunt_group, call.answered_line) if call.answered_line else "",
        "talk": spoken_duration(call.billable_seconds, t) if call.answered_line else "",
        "ring": spoken_duration(call.ring_seconds, t),
        "duration": spoken_duration(call.duration_seconds, t),
        "recorded": recording == "ready",
        "voicemail": bool(call.voicemail_file),
        "ivr": menu_path(call, t),
    }


# -- the list and the export -----------------------------------------------------------------------

async def calls_page(request: web.Request) -> web.StreamResponse:
    scope = require(request, READ)
    deps = console_deps(request)
    current = deps.holder.current
    search = parse_search(request.query, scope, current.plans, current.service.timezone)
    t = translator(pick_language(request))
    rows: list[StoredCall] = []
    newer = older = ""
    count = 0
    if not search.errors:
        after = decode_position(request.query.get("after", ""))
        before = None if after else decode_position(request.query.get("before", ""))
        if before is not None:
            rows = await search_calls_newer(deps.engine, search.filter, PAGE_SIZE + 1, before, numbers=scope.numbers)
            has_newer, rows = len(rows) > PAGE_SIZE, rows[-PAGE_SIZE:]
            has_older = True  # the call at `before` is older than these
        else:
            rows = await search_calls(deps.engine, search.filter, PAGE_SIZE + 1, after, numbers=scope.numbers)
            has_older, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
            has_newer = after is not None
        if rows and has_newer:
            newer = f"{PREFIX}/calls?" + _query_string(search, before=encode_position(rows[0]))
        if rows and has_older:
            older = f"{PREFIX}/calls?" + _query_string(search, after=encode_position(rows[-1]))
        count = await count_calls_upto(deps.engine, search.filter, COUNT_CAP + 1, numbers=scope.numbers)
    states = await asyncio.to_thread(recording_states, rows, current.service.recordings_dir)
    tz = str(search.tz)
    return render(request, "calls.html", {
        "form": search.values,
        "chosen": search.dispositions,
        "errors": search.errors,
        "numbers": _numbers_to_pick(scope, current.plans),
        "dispositions": DISPOSITIONS,
        "calls": [call_view(c, current.plans, current.service.timezone, t, states[c.id]) for c in rows],
        "count": count,
        "count_cap": COUNT_CAP,
        "newer": newer,
        "older": older,
        "export_href": f"{PREFIX}/calls.csv?" + _query_string(search),
        "tz_name": t("calls.f.tz_beijing") if tz == "Asia/Shanghai" else tz,
    }, status=400 if search.errors else 200)


async def calls_export(request: web.Request) -> web.StreamResponse:
    """The current search as CSV (the API's columns, store/call_export.py), audited with its filter and size."""
    scope = require(request, READ)
    deps = console_deps(request)
    current = deps.holder.current
    search = parse_search(request.query, scope, current.plans, current.service.timezone)
    if search.errors:
        raise web.HTTPBadRequest()
    limit = current.service.admin.export_max_rows
    count = await count_calls_upto(deps.engine, search.filter, limit + 1, numbers=scope.numbers)
    if count > limit:
        t = translator(pick_language(request))
        return render(request, "error.html", {"status": 413, "message": t("calls.error.too_many", limit=limit),
                                              "detail": None, "csrf_failed": False}, status=413)
    await audit(request, "calls_export", "calls.csv", after={"filter": filter_json(search.filter), "rows": count})
    stamp = f"{deps.now().astimezone(search.tz):%Y%m%d-%H%M}"
    response = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                           "Content-Disposition": f'attachment; filename="calls-{stamp}.csv"'})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await response.write(b"\xef\xbb\xbf")  # a BOM, so Excel reads the Chinese names as UTF-8
        async for chunk in csv_chunks(deps.engine, search.filter, numbers=scope.numbers):
            await response.write(chunk)
    except ConnectionResetError:
        log.info("console: CSV export abandoned by the client")
        return response
    await response.write_eof()
    return response


# -- one call --------------------------------------------------------------------------------------

async def _the_call(request: web.Request, scope: Scope) -> CallDetail:
    uniqueid = request.match_info["uniqueid"]
    source = request.query.get("source")
    if len(uniqueid) > 64 or (source is not None and len(source) > 80):
        raise not_found()
    found = await find_call(console_deps(request).engine, uniqueid, source, numbers=scope.numbers)
    if found is None:
        raise not_found()
    return found


def retention_words(call: StoredCall, now: datetime, days: int | None, tz: ZoneInfo, t: Callable[..., str]) -> str:
    """How long the recording is kept: days left before the retention purge deletes it."""
    if days is None:
        return t("calls.rec.kept")
    deadline = call.started_at + timedelta(days=days)
    left = math.ceil((deadline - now).total_seconds() / 86_400)
    if left <= 0:
        return t("calls.rec.due")
    return t("calls.rec.days_left", days=left, date=f"{deadline.astimezone(tz):%Y-%m-%d}")


async def call_page(request: web.Request) -> web.StreamResponse:
    scope = require(request, READ)
    deps = console_deps(request)
    current = deps.holder.current
    found = await _the_call(request, scope)
    call = found.call
    t = translator(pick_language(request))
    plan = current.plans.get(call.number)
    tz = _zone(current.plans, call.number, current.service.timezone)
    recording = await asyncio.to_thread(recording_state, call, current.service.recordings_dir)
    retention = current.service.retention
    base = f"{PREFIX}/calls/{call.uniqueid}/recording"
    source = urlencode({"source": call.source})
    return render(request, "call.html", {
        "nav": nav_items(scope, pick_language(request), "calls"),  # one call is part of 通话记录 in the menu
        "call": call_view(call, current.plans, current.service.timezone, t, recording),
        "attempts": [
            {"seq": a.seq, "line": line_name(plan, call.hunt_group, a.line_id),
             "status": t(f"calls.s.{a.status}") if a.status in _STATUSES else a.status, "answered": a.status == "ANSWER",
             "ring": spoken_duration(a.ring_seconds, t), "talk": spoken_duration(a.talk_seconds, t) if a.status == "ANSWER" else ""}
            for a in found.attempts
        ],
        "trace": [line for line in found.trace.split("\n") if line],
        "recording": recording,
        "may_listen": scope.can(LISTEN),
        "may_download": scope.can(DOWNLOAD),
        "listen_href": f"{base}?{source}",
        "download_href": f"{base}/download?{source}",
        "retention": retention_words(call, deps.now(), retention.recordings_days if retention.enabled else None, tz, t),
    })


async def _recording(request: web.Request, scope: Scope) -> tuple[StoredCall, Path, str]:
    """The call's recording file, confined to the folder; 404 when there is none, 410 once the purge took it."""
    call = (await _the_call(request, scope)).call
    if not call.recording_file:
        raise not_found()
    if call.recording_purged_at is not None:
        raise web.HTTPGone()
    root = console_deps(request).holder.current.service.recordings_dir
    try:
        path = await asyncio.to_thread(recording_of_call, call.recording_file, root)
    except RecordingPathError as exc:
        log.warning("console: recording of call %s refused: %s", call.uniqueid, exc.message)
        raise not_found() from None
    return call, path, stored_relative(call.recording_file, root) or ""


async def recording_listen(request: web.Request) -> web.StreamResponse:
    """The player's source. Audited as one listen: a GET without Range, or the first ranged one this session."""
    scope = require(request, LISTEN)
    call, path, relative = await _recording(request, scope)
    if request.method == "GET":
        ranged = request.headers.get("Range")
        live = session_of(request)
        since = live.session.created_at if live is not None else _EPOCH
        if ranged is None or not await has_entry_since(console_deps(request).engine, tenant_id=scope.tenant_id, user_id=scope.user_id,
                                                       action="recording_listen", target=call.uniqueid, since=since):
            await audit(request, "recording_listen", call.uniqueid, after={"source": call.source, "file": relative})
    return web.FileResponse(path, headers={"Content-Type": content_type(path), "Content-Disposition": "inline"})


async def recording_download(request: web.Request) -> web.StreamResponse:
    """The recording as a file to keep (a dispute, a complaint); every download is audited."""
    scope = require(request, DOWNLOAD)
    call, path, relative = await _recording(request, scope)
    if request.method == "GET":
        await audit(request, "recording_download", call.uniqueid, after={"source": call.source, "file": relative})
    current = console_deps(request).holder.current
    tz = _zone(current.plans, call.number, current.service.timezone)
    name = download_name(f"{call.number}_{call.started_at.astimezone(tz):%Y%m%d_%H%M%S}_{path.name}")
    return web.FileResponse(path, headers={"Content-Type": content_type(path), "Content-Disposition": f'attachment; filename="{name}"'})
