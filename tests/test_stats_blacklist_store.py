"""Statistics from the stored sums match the raw calls, cut at the plan's local midnight; `callrouter stats`
prints them; runtime blacklist entries are stored, merged, expire, and reach new calls."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import make_url

from callrouter.cli.main import main
from callrouter.config.plan import Blacklist
from callrouter.metrics import RouterMetrics
from callrouter.routing.blacklist import blacklist_match
from callrouter.routing.caller import caller_from
from callrouter.store.blacklist import BlacklistFollower, BlacklistInputError, BlacklistStore
from callrouter.store.cdr_rows import rows_from_spooled, spool_entry
from callrouter.store.cdr_store import CdrStore
from callrouter.store.db import open_engine
from callrouter.store.stats import number_report
from tests.cdrs import record
from tests.harness import arun

SHANGHAI = ZoneInfo("Asia/Shanghai")


def generated(n: int, seed: int = 3, tz: ZoneInfo = SHANGHAI, first: date = date(2026, 11, 23)) -> list:  # type: ignore[type-arg]
    """Calls spread over three local days, some just before and after local midnight."""
    rng = random.Random(seed)
    start = datetime.combine(first, datetime.min.time(), tz).astimezone(timezone.utc)
    return [record(i, start=start + timedelta(seconds=rng.randrange(3 * 86400) - i), answered=rng.random() < 0.7) for i in range(n)]


def store(url: str, records: list) -> None:  # type: ignore[type-arg]
    async def body() -> None:
        engine = open_engine(make_url(url))
        await CdrStore(engine).write([rows_from_spooled(spool_entry(r)[0]) for r in records])
        await engine.dispose()

    arun(body())


@pytest.mark.parametrize(
    ("zone", "first"),
    [
        ("Asia/Shanghai", date(2026, 11, 23)),  # one offset: the database adds up days and hours
        ("Asia/Kolkata", date(2026, 11, 23)),  # +5:30: midnight falls mid-hour in UTC
        ("America/New_York", date(2026, 10, 31)),  # clocks go back on 1 November: cut in Python
    ],
)
def test_daily_and_hourly_statistics_match_the_raw_calls(db_url: str, zone: str, first: date) -> None:
    tz = ZoneInfo(zone)
    records = generated(600, tz=tz, first=first)
    store(db_url, records)
    days = (first, first + timedelta(days=1))

    async def body():  # type: ignore[no-untyped-def]
        engine = open_engine(make_url(db_url))
        report = await number_report(engine, "4008001234", days[0], days[1], zone)
        await engine.dispose()
        return report

    report = arun(body())
    inside = [r for r in records if r.started_at.astimezone(tz).date() in days]
    assert 300 < len(inside) < 600
    assert report.total.calls == len(inside)
    assert report.total.answered == sum(r.disposition == "answered" for r in inside)
    assert report.total.talk_seconds == sum(r.talk_seconds for r in inside)
    by_day = Counter(r.started_at.astimezone(tz).date() for r in inside)
    assert {d: t.calls for d, t in report.days.items()} == dict(by_day)
    by_hour = Counter(r.started_at.astimezone(tz).hour for r in inside)
    assert {h: t.calls for h, t in report.hours.items() if t.calls} == dict(by_hour)
    assert report.peak_hours()[0] == max(by_hour, key=lambda h: (by_hour[h], -h))
    li = next(line for line in report.lines if line.line_id == "li")
    assert li.answered == report.total.answered and li.attempts == len(inside)
    assert report.total.average_ring_seconds == 8.0


def test_stats_command_prints_a_table_csv_and_json(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLROUTER_DATABASE_URL", raising=False)
    records = [record(i, start=datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc), answered=i % 4 != 0) for i in range(40)]
    store(db_url, records)
    base = ["stats", "--config", "config.yaml", "--url", db_url, "--number", "400-800-1234", "--from", "2026-11-24", "--to", "2026-11-24"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "4008001234: 2026-11-24 to 2026-11-24 (Asia/Shanghai)" in out
    assert "2026-11-24     40        30        75.0%" in out and "peak: 09:00" in out
    assert main([*base, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows == [{"number": "4008001234", "day": "2026-11-24", "calls": "40", "answered": "30", "answer_rate": "0.75",
                     "talk_seconds": "1200", "average_talk_seconds": "40.0", "average_ring_seconds": "8.0"}]
    assert main([*base, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"]["calls"] == 40 and data["hours"][9]["calls"] == 40 and data["lines"][0]["line_id"] == "li"
    assert main([*base[:-4], "--from", "2026-11-25", "--to", "2026-11-24"]) == 2
    assert "is before" in capsys.readouterr().err


def test_runtime_blacklist_entries_are_stored_merged_and_expire(db_url: str) -> None:
    now = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)

    async def body() -> None:
        engine = open_engine(make_url(db_url))
        bl = BlacklistStore(engine)
        await bl.add("*", "+86 139-0000-1111", "harassment", "ops", now=now, numbers=None)
        await bl.add("4008001234", "13900002222", "", "ops", expires_at=now + timedelta(hours=1), now=now, numbers=None)
        await bl.add("4008001234", "013900002222", "updated", "ops", now=now, numbers=None)  # same caller: updated, not doubled
        with pytest.raises(BlacklistInputError, match="scope must be a 400 number"):
            await bl.add("sales", "139", now=now, numbers=None)
        with pytest.raises(BlacklistInputError, match="caller must be a phone number"):
            await bl.add("*", "'; DROP TABLE calls; --", now=now, numbers=None)
        snap = await bl.snapshot(now)
        assert snap.for_number("4008001234").numbers == {"13900001111", "13900002222"}
        assert snap.for_number("4009999999").numbers == {"13900001111"}
        entries = await bl.entries(now, numbers=None)
        assert [(e.scope, e.caller, e.reason) for e in entries] == [("*", "13900001111", "harassment"), ("4008001234", "13900002222", "updated")]
        await bl.add("4008001234", "13900003333", "", "ops", expires_at=now + timedelta(minutes=5), now=now, numbers=None)
        assert "13900003333" not in (await bl.snapshot(now + timedelta(minutes=6))).for_number("4008001234").numbers
        assert await bl.remove("*", "13900001111", numbers=None) and not await bl.remove("*", "13900001111", numbers=None)
        follower = BlacklistFollower(bl, RouterMetrics(), lambda: now, every=0.05)
        await follower.start()
        assert follower.current.for_number("4009999999").numbers == frozenset()
        await bl.add("*", "13900004444", now=now, numbers=None)
        await asyncio.sleep(0.3)
        assert "13900004444" in follower.current.for_number("4009999999").numbers
        await follower.close()
        await engine.dispose()
        hit = blacklist_match(caller_from("+8613900004444"), ("number", Blacklist()), ("runtime", follower.current.for_number("4001")))
        assert hit == ("runtime", "runtime blacklist: number 13900004444")

    arun(body())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stats", "--number", "4008001234", "--from", "2026-11-01", "--to", "2026-11-30", "--timezone", "Mars/Base"], "is not an IANA time zone"),
        (["stats", "--number", "4008001234", "--from", "2026-11-01", "--to", "2026-11-30", "--timezone", "../../etc/passwd"], "is not an IANA time zone"),
        (["blacklist", "add", "13900001111", "--expires", "nonsense"], "is not an ISO time"),
        (["blacklist", "add", "139x"], "caller must be a phone number"),
        (["blacklist", "remove", "13900001111", "--scope", "sales"], "scope must be a 400 number"),
    ],
)
def test_bad_store_command_input_is_one_clear_line_and_exit_2(
    db_url: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALLROUTER_DATABASE_URL", raising=False)
    assert main([*args, "--config", "config.yaml", "--url", db_url]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
