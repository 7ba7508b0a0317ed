"""The overview's figures and its live view, on SQLite and Postgres: the missed-calls query, today's figures
and the package against the CDRs, and the Server-Sent Events stream over real HTTP (a call appears when it
starts and goes when it ends; another tenant's stream never shows it; a stream ends with its session)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from callrouter.console import live
from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript
from callrouter.model.record import CallRecord
from callrouter.store.cdr_rows import rows_from_spooled, spool_entry
from callrouter.store.cdr_store import CdrStore
from callrouter.store.db import open_engine
from callrouter.store.live_calls import SqlLiveCalls, leased_lines, live_calls
from callrouter.store.memory import MemoryLiveCalls
from callrouter.store.overview import day_totals, missed_callers
from callrouter.store.web_sessions import revoke_user_sessions
from callrouter.store.tenants import add_number, add_tenant, find_user
from tests.cdrs import T0, record
from tests.consoles import NUMBER_A, NUMBER_B, Site, running_site
from tests.harness import arun, call_held_in_dial, running_router
from tests.planning import NOW as PLAN_NOW

NOW = T0 + timedelta(hours=2)  # the consoles' clock: 11:00 in Shanghai on 2026-11-24
ZHAO = "Local/01088886666@callrouter-lines"  # the sample plan's complaints group (3) rings 赵强 first


def call(i: int, caller: str, at: datetime, disposition: str = "no_answer", *, number: str = NUMBER_A, ring: int = 8,
         talk: int = 0, voicemail: bool = False) -> CallRecord:
    base = record(i, number=number, caller=caller, start=at, answered=disposition == "answered")
    return dataclasses.replace(
        base, started_at=at, ended_at=at + timedelta(seconds=50), disposition=disposition, ring_seconds=ring,
        talk_seconds=talk if disposition == "answered" else 0, voicemail_file="vm.wav" if voicemail else None,
    )


async def store(url: str, records: list[CallRecord]) -> None:
    engine = open_engine(make_url(url))
    try:
        await CdrStore(engine).write([rows_from_spooled(spool_entry(r)[0]) for r in records])
    finally:
        await engine.dispose()


# Calls of the last week (NOW is 2026-11-24 11:00 Shanghai):
RECORDS = [
    call(1, "13900000001", T0, "no_answer"),                                   # later answered: not listed
    call(2, "13900000001", T0 + timedelta(minutes=10), "answered", talk=125),
    call(3, "13900000002", T0 + timedelta(minutes=5), "no_answer"),            # listed
    call(4, "13900000002", T0 - timedelta(days=1), "busy"),                    # the same caller: listed once, twice
    call(5, "13900000003", T0 + timedelta(minutes=1), "busy"),                 # answered later by another company: listed
    call(6, "13900000003", T0 + timedelta(minutes=20), "answered", number=NUMBER_B, talk=60),
    call(7, "13900000004", T0 + timedelta(minutes=2), "abandoned", ring=0),    # hung up in the menu: not missed
    call(8, "13900000005", T0 + timedelta(minutes=3), "abandoned", ring=12),   # hung up while ringing: listed
    call(9, "", T0 + timedelta(minutes=4), "no_answer"),                       # withheld: cannot be called back
    call(10, "13900000006", T0 - timedelta(days=8), "no_answer"),              # older than a week
    call(11, "13900000007", T0 + timedelta(minutes=6), "no_answer", number=NUMBER_B),  # tenant B's
    call(12, "13900000008", T0 + timedelta(minutes=7), "after_hours", voicemail=True),
    call(13, "13900000009", T0 + timedelta(minutes=8), "answered", talk=3600),
    call(14, "13900000009", T0 + timedelta(minutes=9), "blacklisted"),          # refused on purpose: not missed
]


def test_missed_callers_are_those_no_later_answered_call_reached_within_the_scope(db_url: str) -> None:
    async def body() -> None:
        await store(db_url, RECORDS)
        engine = open_engine(make_url(db_url))
        try:
            since = NOW - timedelta(days=7)
            a = await missed_callers(engine, since, NOW, numbers=frozenset({NUMBER_A}))
            assert [(m.caller, m.times, m.last.uniqueid) for m in a] == [
                ("13900000008", 1, "1764000000.12"),
                ("13900000002", 2, "1764000000.3"),
                ("13900000005", 1, "1764000000.8"),
                ("13900000003", 1, "1764000000.5"),
            ]
            assert a[0].last.left_voicemail and a[0].last.disposition == "after_hours"
            assert all(m.numbers == (NUMBER_A,) for m in a)
            b = await missed_callers(engine, since, NOW, numbers=frozenset({NUMBER_B}))
            assert [m.caller for m in b] == ["13900000007"]
            assert await missed_callers(engine, since, NOW, numbers=frozenset()) == []
            # one company with both numbers: the answered call to B reaches 13900000003
            both = await missed_callers(engine, since, NOW, numbers=frozenset({NUMBER_A, NUMBER_B}))
            assert [m.caller for m in both] == ["13900000008", "13900000007", "13900000002", "13900000005"]
            # the provider: each number's own company (here: no tenants, so each number alone)
            everyone = await missed_callers(engine, since, NOW, numbers=None)
            assert [m.caller for m in everyone] == ["13900000008", "13900000007", "13900000002", "13900000005", "13900000003"]
            assert len(await missed_callers(engine, since, NOW, numbers=None, limit=2)) == 2
            # ... and once one tenant owns both numbers, the answered call to B reaches 13900000003 for the provider too
            tenant = await add_tenant(engine, "丙公司", now=NOW)
            for number in (NUMBER_A, NUMBER_B):
                await add_number(engine, tenant.id, number, now=NOW)
            everyone = await missed_callers(engine, since, NOW, numbers=None)
            assert [m.caller for m in everyone] == ["13900000008", "13900000007", "13900000002", "13900000005"]
        finally:
            await engine.dispose()

    arun(body())


def test_day_totals_add_up_the_numbers_calls_of_the_day(db_url: str) -> None:
    async def body() -> None:
        await store(db_url, RECORDS)
        engine = open_engine(make_url(db_url))
        try:
            lo = int(datetime(2026, 11, 23, 16, 0, tzinfo=T0.tzinfo).timestamp())  # 2026-11-24 00:00 in Shanghai
            got = await day_totals(engine, lo, lo + 86_400, numbers=frozenset({NUMBER_A}))
            assert list(got) == [NUMBER_A]
            today_a = [r for r in RECORDS if r.number == NUMBER_A and r.started_at >= T0 - timedelta(hours=1)]
            assert got[NUMBER_A].calls == len(today_a) == 10
            assert got[NUMBER_A].answered == 2 and got[NUMBER_A].talk_seconds == 125 + 3600
            assert (await day_totals(engine, lo, lo + 86_400, numbers=None)).keys() == {NUMBER_A, NUMBER_B}
            assert await day_totals(engine, lo, lo + 86_400, numbers=frozenset()) == {}
        finally:
            await engine.dispose()

    arun(body())


def test_live_calls_count_while_their_router_beats_and_are_swept_after(db_url: str) -> None:
    async def body() -> None:
        engine = open_engine(make_url(db_url))
        clock = [NOW]
        try:
            a = SqlLiveCalls(engine, instance="router-a", lease_ttl=30, heartbeat=True, clock=lambda: clock[0])
            b = SqlLiveCalls(engine, instance="router-b", lease_ttl=30, heartbeat=True, clock=lambda: clock[0])
            a.call_started("1.1", "eid:a", NUMBER_A, "13900000001", NOW - timedelta(seconds=30))
            a.call_changed("1.1", "eid:a", "ringing", "zhang,li", talking_after=NOW + timedelta(seconds=21))
            b.call_started("2.1", "eid:b", NUMBER_B, "13900000002", NOW)
            b.call_started("2.2", "eid:b", NUMBER_A, "", NOW)
            await a.step()
            await b.step()
            rows = await live_calls(engine, numbers=frozenset({NUMBER_A}), now=NOW)
            assert [(c.instance, c.uniqueid, c.state, c.line_ids) for c in rows] == [
                ("router-a", "1.1", "ringing", ("zhang", "li")), ("router-b", "2.2", "ivr", ())]
            assert [c.uniqueid for c in await live_calls(engine, numbers=frozenset({NUMBER_B}), now=NOW)] == ["2.1"]
            assert len(await live_calls(engine, numbers=None, now=NOW)) == 3
            assert await live_calls(engine, numbers=frozenset(), now=NOW) == []

            clock[0] = NOW + timedelta(seconds=25)  # past the Dial's ring timeout: answered
            await a.step()
            [talking] = [c for c in await live_calls(engine, numbers=None, now=clock[0]) if c.uniqueid == "1.1"]
            assert talking.state == "talking"

            # router b stops beating (crashed): its calls stop counting after lease_ttl, and a's sweep removes them
            for _ in range(3):
                clock[0] += timedelta(seconds=11)
                a._next_beat = 0
                await a.step()
            assert [c.uniqueid for c in await live_calls(engine, numbers=None, now=clock[0])] == ["1.1"]
            assert len(await live_calls(engine, numbers=None, now=clock[0] - timedelta(days=1))) == 1  # swept, not only hidden

            a.call_ended("1.1", "eid:a")
            await a.step()
            assert await live_calls(engine, numbers=None, now=clock[0]) == []
            assert await leased_lines(engine, ["Local/13800138001@callrouter-lines"], now=clock[0]) == {}
            await a.close()
            await b.close()
        finally:
            await engine.dispose()

    arun(body())


def test_rows_that_could_not_be_written_land_whole_once_the_database_answers(db_url: str) -> None:
    """The port's methods never raise or wait; what the loop could not write is written whole later."""
    async def body() -> None:
        engine = open_engine(make_url(db_url))
        try:
            router = SqlLiveCalls(engine, instance="x", heartbeat=True, clock=lambda: NOW)
            real_write = router._write

            async def refused(*args: object) -> None:
                raise OSError("connection refused")

            router._write = refused  # type: ignore[method-assign]
            router.call_started("1.1", "s", NUMBER_A, "139", NOW)  # returns at once: nothing is awaited
            router.call_started("1.2", "s", NUMBER_A, "138", NOW)
            with pytest.raises(OSError):
                await router.step()
            router.call_ended("1.2", "s")
            assert await live_calls(engine, numbers=None, now=NOW) == []
            router._write = real_write  # type: ignore[method-assign]
            await router.step()
            assert [c.uniqueid for c in await live_calls(engine, numbers=None, now=NOW)] == ["1.1"]
            await router.close()
            assert await live_calls(engine, numbers=None, now=NOW) == []  # a router that stops takes its rows along
        finally:
            await engine.dispose()

    arun(body())


def test_only_rows_in_the_table_are_deleted_and_a_call_over_between_two_rounds_costs_no_statement(db_url: str) -> None:
    """The copy writes what changed: a new call's row is a bare INSERT, a change DELETEs and INSERTs that
    call's row, and a call that started and ended between two rounds never reaches the table."""
    async def body() -> None:
        engine = open_engine(make_url(db_url))
        statements: list[tuple[str, int]] = []

        def seen(conn: object, cursor: object, statement: str, parameters: object, context: object, executemany: bool) -> None:
            verb = statement.split(None, 1)[0].upper()
            if "active_calls" in statement and verb in ("INSERT", "DELETE"):
                statements.append((verb, len(parameters) if executemany else 1))  # type: ignore[arg-type]

        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        try:
            router = SqlLiveCalls(engine, instance="x", heartbeat=True, clock=lambda: NOW)
            await router.beat(NOW)  # registered (rows count while their router beats), then the rounds alone:
            router._next_beat = float("inf")  # no heartbeat, sweep or whole rewrite of its own in this test
            router.call_started("1.1", "s", NUMBER_A, "139", NOW)
            router.call_started("1.2", "s", NUMBER_A, "138", NOW)
            await router.step()
            assert statements == [("INSERT", 2)]  # nothing to delete: neither row was in the table
            assert sorted(c.uniqueid for c in await live_calls(engine, numbers=None, now=NOW)) == ["1.1", "1.2"]

            statements.clear()
            router.call_started("1.3", "s", NUMBER_A, "137", NOW)  # over before the next round
            router.call_ended("1.3", "s")
            await router.step()
            assert statements == []

            router.call_changed("1.1", "s", "ringing", "zhang")
            router.call_started("1.4", "s", NUMBER_A, "136", NOW)
            router.call_ended("1.2", "s")
            await router.step()
            # 1.1 changed and 1.2 ended: their rows are deleted; 1.1's new row and 1.4's first one inserted
            assert statements == [("DELETE", 2), ("INSERT", 2)]
            rows = await live_calls(engine, numbers=None, now=NOW)
            assert [(c.uniqueid, c.state) for c in rows] == [("1.1", "ringing"), ("1.4", "ivr")]

            statements.clear()
            router._whole = True  # after a failure, an overflow or every lease_ttl: all rows again, whatever was known
            await router.step()
            assert statements == [("DELETE", 1), ("INSERT", 2)]
            router.call_ended("1.1", "s")
            router.call_ended("1.4", "s")
            await router.step()
            assert await live_calls(engine, numbers=None, now=NOW) == []
            await router.close()
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", seen)
            await engine.dispose()

    arun(body())


def test_memory_live_calls_follow_a_call() -> None:
    calls = MemoryLiveCalls("r", clock=lambda: NOW)
    calls.call_changed("9.9", "s", "ringing", "a")  # unknown call: ignored
    calls.call_started("1.1", "s", NUMBER_A, "139", NOW)
    calls.call_changed("1.1", "s", "ringing", ",".join(f"line{i:03d}x" for i in range(40)), talking_after=NOW + timedelta(seconds=20))
    [c] = calls.calls(NOW)
    assert c.state == "ringing" and len(c.line_id or "") <= 200 and c.line_ids[0] == "line000x"
    assert calls.calls(NOW + timedelta(seconds=20))[0].state == "talking"
    calls.call_changed("1.1", "s", "ivr")
    assert calls.calls(NOW + timedelta(seconds=60))[0].state == "ivr"
    calls.call_ended("1.1", "s")
    assert calls.calls() == []


class BrokenLive:
    """A live view that fails every time it is told anything."""

    def call_started(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("live view down")

    call_changed = call_ended = call_started


def test_the_session_tells_the_live_view_and_a_broken_one_costs_the_call_nothing() -> None:
    async def body() -> None:
        board = MemoryLiveCalls("test", clock=lambda: PLAN_NOW)
        async with running_router(live=board) as router:
            task, hold = await call_held_in_dial(router, ZHAO, "3", uniqueid="1700000000.5")
            [held] = board.calls(PLAN_NOW)
            assert (held.uniqueid, held.number, held.caller, held.state, held.line_ids) == (
                "1700000000.5", "4008001234", "13912345678", "ringing", ("zhao",))
            assert board.calls(PLAN_NOW + timedelta(seconds=30))[0].state == "talking"  # still in Dial past its 25 s
            hold.set()
            assert (await task).variables["CALLROUTER_RESULT"] == "ROUTED"
            await router.settle(1)
            assert board.calls() == []
        async with running_router(live=BrokenLive()) as router:  # type: ignore[arg-type]
            t = await run_call("127.0.0.1", router.port, CallScript(uniqueid="1700000000.6", dtmf=("3",), default_dial=DialScript("ANSWER", 1, 5)))
            assert t.variables["CALLROUTER_RESULT"] == "ROUTED"
            await router.settle(1)
            assert router.sink.records[0].disposition == "answered"

    arun(body())


# -- the page over HTTP ----------------------------------------------------------------------------


def figures(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="(\w+)">([^<]*)<', html))


def test_overview_shows_today_the_missed_callers_and_the_package_of_its_own_tenant_only(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            # 2400 of the package's 3000 minutes used this month (3 + 60 of them today): the 80% warning is due
            await store(db_url, [*RECORDS, call(20, "13900000010", T0 - timedelta(days=3), "answered", talk=2337 * 60)])
            assert (await site.login("a-owner"))[0] == 303
            status, html, _ = await site.get("/console/")
            assert status == 200
            # today in Shanghai: 10 calls to A, 2 answered (2 min 5 s + 1 h), the other number's call not counted
            assert figures(html) == {"calls": "10", "answered": "2", "rate": "20%", "talk": "1 小时 02 分"}
            assert "8 通未接听" in html
            missed = re.findall(r'class="live-missed-row" data-caller="(\d+)"', html)
            assert missed == ["13900000008", "13900000002", "13900000005", "13900000003"]
            assert 'href="/console/calls/1764000000.3?source=' in html and "2 次" in html and "等待 12 秒后挂断" in html
            assert "非工作时间来电，已留言" in html
            assert "13900000007" not in html and NUMBER_B not in html  # tenant B's caller and number
            # the package: used, allowance, bar class, warning
            assert "2,400 / 3,000 分钟（80%）" in html and "live-w80" in html and "live-bar-warn" in html
            assert "本月分钟数已用 80%" in html and "还剩 218 天" in html
            assert "style=" not in html

            status, html_en, _ = await site.get("/console/?lang=en")
            assert figures(html_en)["talk"] == "1 h 02 min" and "Missed calls to call back" in html_en

            assert (await site.login("b-owner"))[0] == 303
            status, html, _ = await site.get("/console/")
            assert re.findall(r'class="live-missed-row" data-caller="(\d+)"', html) == ["13900000007"]
            assert figures(html)["calls"] == "2" and "13900000008" not in html and "live-package" not in html  # B's number has no plan

            assert (await site.login("boss"))[0] == 303  # the provider: every tenant's
            status, html, _ = await site.get("/console/")
            assert re.findall(r'class="live-missed-row" data-caller="(\d+)"', html) == [
                "13900000008", "13900000007", "13900000002", "13900000005", "13900000003"]

    arun(body())


# -- the live stream over HTTP ---------------------------------------------------------------------


async def events(site: Site, cookie: str) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of the live stream as the browser of the session `cookie` gets them."""
    headers = {"Cookie": f"callrouter_session={cookie}", "Accept": "text/event-stream"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http, \
            http.get(site.base + "/console/live/events", headers=headers) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["Cache-Control"] == "no-store" and "default-src 'self'" in r.headers["Content-Security-Policy"]
        name, data = "message", []
        async for raw in r.content:
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                yield name, "\n".join(data)
                name, data = "message", []


async def until(stream: AsyncIterator[tuple[str, str]], want: str, seen: list[str], timeout: float = 10) -> str:
    async def find() -> str:
        async for name, data in stream:
            seen.append(data)
            if name == want or want in data:
                return data
        raise AssertionError(f"the stream ended before {want!r}")

    return await asyncio.wait_for(find(), timeout)


async def login_cookie(site: Site, username: str) -> str:
    assert (await site.login(username))[0] == 303
    cookie = site.cookie()
    assert cookie
    return cookie


def test_the_live_stream_shows_a_call_while_it_lasts_and_only_to_its_tenant(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "POLL_SECONDS", 0.1)
    monkeypatch.setattr(live, "SESSION_CHECK_SECONDS", 0.3)

    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            router = SqlLiveCalls(site.engine, instance="router-1", heartbeat=True, clock=site.clock, every=0.05)
            await router.start()
            a_cookie, b_cookie = await login_cookie(site, "a-owner"), await login_cookie(site, "b-owner")
            a_seen: list[str] = []
            b_seen: list[str] = []
            a_stream, b_stream = events(site, a_cookie), events(site, b_cookie)
            try:
                first = await until(a_stream, "live", a_seen)
                assert "现在没有来电" in first and "0 条忙 / 共 5 条" in first
                await until(b_stream, "live", b_seen)

                router.call_started("1764000000.77", "eid:aa", NUMBER_A, "13911112222", site.clock() - timedelta(seconds=65))
                shown = await until(a_stream, "13911112222", a_seen)
                assert "进行中的来电（1 通）" in shown and "在语音菜单中" in shown and "1:05" in shown
                router.call_changed("1764000000.77", "eid:aa", "ringing", "zhang", talking_after=site.clock() + timedelta(seconds=21))
                shown = await until(a_stream, "正在转接 张伟", a_seen)
                assert re.search(r'live-line-busy" data-line="4008001234/zhang"', shown) and "1 条忙 / 共 5 条" in shown

                router.call_started("1764000000.88", "eid:bb", NUMBER_B, "13933334444", site.clock())
                await until(b_stream, "13933334444", b_seen)

                router.call_ended("1764000000.77", "eid:aa")
                gone = await until(a_stream, "现在没有来电", a_seen)
                assert "13911112222" not in gone
                assert not any("13911112222" in d for d in b_seen) and not any("13933334444" in d for d in a_seen)

                # the session ends (logged out everywhere): the stream says so and ends
                user = await find_user(site.engine, "a-owner")
                assert user is not None
                await revoke_user_sessions(site.engine, user.user.id, site.clock())
                assert await until(a_stream, "bye", a_seen) == "session"
                with pytest.raises(StopAsyncIteration):
                    await asyncio.wait_for(a_stream.__anext__(), 5)
            finally:
                await a_stream.aclose()
                await b_stream.aclose()
                await router.close()

            # without a session: the login, not a stream
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http, \
                    http.get(site.base + "/console/live/events", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"].startswith("/console/login")

    arun(body(), 60)


def test_the_live_stream_ends_when_the_console_stops(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "POLL_SECONDS", 0.1)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        async with running_site(tmp_path, db_url) as site:
            cookie = await login_cookie(site, "boss")
            stream = events(site, cookie)
            await until(stream, "live", [])
            started = loop.time()
        # running_site closed the server while the stream was open: it ended at once, not after a timeout
        assert loop.time() - started < 1.5
        with pytest.raises((StopAsyncIteration, aiohttp.ClientError)):
            await asyncio.wait_for(stream.__anext__(), 5)
        await stream.aclose()

    arun(body(), 60)


def test_a_call_moved_to_another_state_keeps_every_other_field() -> None:
    """`ActiveCall.moved` builds the new state field by field: one field left out would be lost silently."""
    from callrouter.store.memory import ActiveCall

    values = {f.name: f"v-{f.name}" for f in dataclasses.fields(ActiveCall)}
    call = ActiveCall(**values)  # type: ignore[arg-type]
    at = T0 + timedelta(minutes=5)
    assert call.moved("talking", "sales-1", at) == dataclasses.replace(call, state="talking", line_id="sales-1", updated_at=at)
