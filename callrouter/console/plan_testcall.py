"""拨测 Test call from the console: a button that places a real call to the number through AMI, and shows live
what happened (which line rang, who answered, or why not) until the call's CDR is in.

The call is `callrouter test-call`'s own (ami/run.place: Originate into the inbound context, Asterisk's
events followed, the router's CDR read); the page watches the `PlacedCall` that place() fills and polls
`test-call/status` (static/testcall.js; without JavaScript, the page's refresh link) for the fragment. At
most one test call per number at a time in this console process; each is audited (`test_call`).
Owner/admin of the number's tenant and provider staff place calls (PLANS, else 403); another tenant's
number is 404.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable
from zoneinfo import ZoneInfo

from aiohttp import web

from callrouter.ami.client import AmiError
from callrouter.ami.run import line_ids, place, placed_call
from callrouter.ami.testcall import PlacedCall, TestCallReport
from callrouter.config.loader import RoutingConfig
from callrouter.console.context import PREFIX, audit, console_deps, nav_items, render, require, see_other
from callrouter.console.i18n import pick_language, translator
from callrouter.console.plan_access import editor_of, number_of, owner_of
from callrouter.routing.health import masked
from callrouter.store.tenants import PLANS, READ, Scope

log = logging.getLogger(__name__)


@dataclass
class TestCallRun:
    """One test call placed from the console, as it goes (mutated by its task only)."""

    __test__ = False  # not a pytest class

    number: str
    by: str
    caller: str
    started_at: datetime
    call: PlacedCall
    task: asyncio.Task[None] | None = None
    report: TestCallReport | None = None
    error: str = ""  # why it could not be placed (AMI unreachable, login refused, ...)
    error_kind: str = ""  # "ami" or "settings"

    @property
    def done(self) -> bool:
        return self.report is not None or bool(self.error)


@dataclass
class TestCalls:
    """The console process's test calls: the last one per number (one in progress at a time)."""

    runs: dict[str, TestCallRun] = field(default_factory=dict)


TESTCALLS = web.AppKey("test_calls", TestCalls)


def _names(config: RoutingConfig, number: str) -> dict[str, str]:
    """Line id -> the name people know (张伟), and dial string -> the same, for the events before the CDR."""
    plan = config.plans[number]
    names = {line.id: line.name or line.id for group in plan.hunt_groups.values() for line in group.lines}
    return {**names, **{target: names.get(line_id, line_id) for target, line_id in line_ids(config, number).items()}}


async def _run(run: TestCallRun, config: RoutingConfig) -> None:
    try:
        run.report = await place(config, run.number, run.caller, call=run.call)
    except ValueError as exc:
        run.error, run.error_kind = str(exc), "settings"
    except AmiError as exc:
        run.error, run.error_kind = str(exc), "ami"
    log.info("console test call to %s by %s: %s", run.number, run.by,
             run.error or ("answered by " + run.report.answered_line if run.report and run.report.answered else "not answered"))


@dataclass(frozen=True)
class RunView:
    state: str  # running, answered, not_answered, failed
    started: str
    by: str
    steps: tuple[str, ...]
    answered_by: str
    rung: tuple[tuple[str, str], ...]  # name, status in words
    why: str
    report: tuple[str, ...]


def run_view(run: TestCallRun, config: RoutingConfig, lang: str) -> RunView:
    """What the page shows of a run, live: the steps Asterisk's events showed so far, then the result."""
    t = translator(lang)
    names = _names(config, run.number)
    call = run.call
    steps: list[str] = []
    if call.originator:
        steps.append(t("testcall.step.placed"))
    if call.inbound_uniqueid:
        steps.append(t("testcall.step.inbound", uniqueid=call.inbound_uniqueid))
    for seen in call.dials.values():
        who = names.get(seen.target, masked(seen.target))
        steps.append(t("testcall.step.dial_end", line=who, status=_status(seen.status, t)) if seen.status else t("testcall.step.dial", line=who))
    if call.hung_up:
        steps.append(t("testcall.step.hangup"))
        if not run.done:
            steps.append(t("testcall.step.cdr"))
    report = run.report
    if run.error:
        state = "failed"
    elif report is None:
        state = "running"
    else:
        state = "answered" if report.answered else "not_answered"
    zone = ZoneInfo(config.service.timezone)
    why = ""
    if run.error:
        why = t(f"testcall.error.{run.error_kind}", why=masked(run.error))
    elif report is not None and not report.answered:
        why = masked(report.lines[-1])
    return RunView(
        state=state, started=run.started_at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"), by=run.by, steps=tuple(steps),
        answered_by=names.get(report.answered_line, report.answered_line) if report is not None and report.answered_line else "",
        rung=tuple((names.get(line, masked(line)), _status(status, t)) for line, status in (report.rung if report else ())),
        why=why, report=tuple(masked(line) for line in report.lines) if report else (),
    )


def _status(status: str, t: Callable[..., str]) -> str:
    word = t(f"numbers.status.{status}")
    return status if word == f"numbers.status.{status}" else word


def _page_url(number: str) -> str:
    return f"{PREFIX}/numbers/{number}/test-call"


def _context(request: web.Request, scope: Scope, number: str, *, error: str | None = None) -> dict[str, object]:
    config = console_deps(request).holder.current
    lang = pick_language(request)
    run = request.app[TESTCALLS].runs.get(number)
    return {
        "number": number, "plan_name": config.plans[number].name, "can_call": scope.can(PLANS),
        "caller": masked(config.service.ami.test_caller), "error": error,
        "run": run_view(run, config, lang) if run is not None else None,
        "status_url": f"{_page_url(number)}/status", "nav": nav_items(scope, lang, "numbers"),
    }


async def testcall_page(request: web.Request) -> web.StreamResponse:
    scope = require(request, READ)
    number, _ = number_of(request, scope)
    return render(request, "numbers_testcall.html", _context(request, scope, number))


async def testcall_status(request: web.Request) -> web.StreamResponse:
    """The live part of the page (polled while the call runs)."""
    scope = require(request, READ)
    number, _ = number_of(request, scope)
    return render(request, "numbers_testcall_status.html", _context(request, scope, number))


async def testcall_start(request: web.Request) -> web.StreamResponse:
    scope, number, _ = editor_of(request)
    deps = console_deps(request)
    calls = request.app[TESTCALLS]
    running = calls.runs.get(number)
    if running is not None and not running.done:
        t = translator(pick_language(request))
        return render(request, "numbers_testcall.html", _context(request, scope, number, error=t("testcall.busy")), status=409)
    config = deps.holder.current
    caller = config.service.ami.test_caller
    run = TestCallRun(number, scope.username, caller, deps.now(), placed_call(config, number))
    calls.runs[number] = run
    owner = await owner_of(request, scope, number)
    await audit(request, "test_call", number, after={"caller": caller}, for_tenant=owner)
    run.task = asyncio.create_task(_run(run, config), name=f"console-test-call-{number}")
    return see_other(_page_url(number))


async def _stop_calls(app: web.Application) -> None:
    """On shutdown: a test call still running is cancelled (place() hangs it up as it goes)."""
    tasks = [run.task for run in app[TESTCALLS].runs.values() if run.task is not None and not run.task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=5)


def add_routes(app: web.Application) -> None:
    app[TESTCALLS] = TestCalls()
    resource = app.router.add_resource("/numbers/{number}/test-call", name="number_testcall")
    resource.add_route("GET", testcall_page)
    resource.add_route("POST", testcall_start)
    app.router.add_get("/numbers/{number}/test-call/status", testcall_status, name="number_testcall_status")
    app.on_cleanup.append(_stop_calls)
