"""Minutes packages: usage from the CDRs, once-only warnings through the outbox, sizing and staffing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.loader import RoutingConfig
from callrouter.config.notify import Notify, SmsGateway, Webhook
from callrouter.config.package import Package
from callrouter.packages.rules import Usage, due_alerts, erlang_c, month_bounds, package_end, service_level, size_package
from callrouter.packages.watcher import PackageMetrics, PackageWatcher, check_packages
from callrouter.store.db import open_engine
from callrouter.store.schema import outbox
from tests.cdrs import record
from tests.harness import arun, sample_config
from tests.tcpproxy import proxied
from tests.test_exporter import write
from tests.test_process import ENV

BOSS = "13800000001"
SHANGHAI_MIDNIGHT_DEC = datetime(2026, 11, 30, 16, 0, tzinfo=timezone.utc)  # 00:00 on 1 December in Shanghai


def config_with(package: Package) -> RoutingConfig:
    base = sample_config()
    plan = base.plans["4008001234"]
    notify = plan.notify.model_copy(update={"recipients": (BOSS,)})
    plans = MappingProxyType({plan.number: plan.model_copy(update={"package": package, "notify": notify})})
    service = base.service.model_copy(update={"notify": Notify(sms=SmsGateway(url="http://gw/sms"), webhook=Webhook(url="http://hook/x"))})
    return RoutingConfig(service, plans, base.sources, base.config_path, base.base_dir)


def talk(i: int, seconds: int, at: datetime) -> object:
    return dataclasses.replace(record(i, start=at), talk_seconds=seconds)


# -- pure rules ------------------------------------------------------------------------------------

def test_usage_warnings_are_the_most_urgent_one_of_each_kind() -> None:
    package = Package(monthly_minutes=1000, expires=date(2026, 12, 31))
    def usage(used: int, today: date) -> Usage:
        return Usage("4008001234", f"{today:%Y-%m}", 1000, used, date(2026, 12, 31), today)

    assert due_alerts(usage(799, date(2026, 11, 24)), package, "Co") == []
    (a,) = due_alerts(usage(800, date(2026, 11, 24)), package, "Co")
    assert a.kind == "usage_80" and a.key == "package:4008001234:2026-11:80" and "已用 800/1000 分钟（80%）" in a.text
    (a,) = due_alerts(usage(1200, date(2026, 11, 24)), package, "Co")
    assert a.kind == "usage_100"
    kinds = [a.kind for a in due_alerts(usage(0, date(2026, 12, 25)), package, "Co")]
    assert kinds == ["expiry_7d"]
    assert [a.kind for a in due_alerts(usage(0, date(2026, 12, 28)), package, "Co")] == ["expiry_3d"]
    assert [a.key for a in due_alerts(usage(0, date(2027, 1, 1)), package, "Co")] == ["package:4008001234:2026-12-31:expired"]


def test_expiry_warnings_fall_on_the_right_days() -> None:
    package = Package(monthly_minutes=1000, expires=date(2026, 12, 31))  # the last day of the package
    expected = {date(2026, 12, 23): [], date(2026, 12, 24): ["7d"], date(2026, 12, 27): ["7d"], date(2026, 12, 28): ["3d"],
                date(2026, 12, 31): ["3d"], date(2027, 1, 1): ["expired"]}
    for today, kinds in expected.items():
        alerts = due_alerts(Usage("4008001234", f"{today:%Y-%m}", 1000, 0, package.expires, today), package, "Co")
        assert [a.key.split(":")[3] for a in alerts] == kinds, today
    (a,) = due_alerts(Usage("4008001234", "2026-12", 1000, 0, package.expires, date(2026, 12, 28)), package, "某公司")
    assert a.text == "【某公司】400号码 4008001234 的套餐将于 2026-12-31 到期（还剩 3 天），请及时续费。"
    from zoneinfo import ZoneInfo

    assert package_end(package.expires, ZoneInfo("Asia/Shanghai")) == datetime(2026, 12, 31, 16, 0, tzinfo=timezone.utc)


def test_a_month_is_the_local_calendar_month() -> None:
    from zoneinfo import ZoneInfo

    start, end = month_bounds(date(2026, 12, 5), ZoneInfo("Asia/Shanghai"))
    assert start == SHANGHAI_MIDNIGHT_DEC and end == datetime(2026, 12, 31, 16, 0, tzinfo=timezone.utc)


def test_erlang_c_matches_known_values_and_staffing_meets_the_target() -> None:
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(2, 2.0) == 1.0
    # the textbook case: 10 erlangs (200 calls an hour of 3 minutes), 80% answered within 20 s
    assert [round(erlang_c(n, 10.0), 4) for n in (11, 12, 13, 14)] == [0.6821, 0.4494, 0.2853, 0.1741]
    assert round(service_level(13, 10.0, 180, 20), 3) == 0.796 and round(service_level(14, 10.0, 180, 20), 3) == 0.888
    peak = size_package(1000, 3, 22, (1000,), peak_share=0.2)
    assert peak.traffic_erlangs == pytest.approx(10.0) and peak.agents == 14
    s = size_package(200, 3, 22, (1000, 5000, 10_000, 20_000))
    assert s.billed_minutes_per_month == 13_860 and s.with_headroom == 16_632 and s.package == 20_000
    assert s.traffic_erlangs == pytest.approx(1.5)
    assert s.service_level >= 0.8 and service_level(s.agents - 1, 1.5, 180, 20) < 0.8
    assert size_package(10_000, 5, 30, (1000,)).package is None
    with pytest.raises(ValueError):
        size_package(10, 0, 22, (1000,))


# -- against real databases --------------------------------------------------------------------------

def test_usage_counts_billed_minutes_of_the_local_month_and_warns_once(db_url: str) -> None:
    package = Package(monthly_minutes=10, expires=date(2026, 12, 31))
    config = config_with(package)
    last_minute = SHANGHAI_MIDNIGHT_DEC - timedelta(seconds=30)  # 23:59:30 on 30 November in Shanghai: November
    calls = [talk(1, 61, last_minute), talk(2, 240, SHANGHAI_MIDNIGHT_DEC), talk(3, 170, SHANGHAI_MIDNIGHT_DEC + timedelta(hours=1))]
    unanswered = dataclasses.replace(record(4, start=SHANGHAI_MIDNIGHT_DEC, answered=False))

    async def body() -> None:
        await write(db_url, [*calls, unanswered])  # type: ignore[list-item]
        engine = open_engine(make_url(db_url))
        metrics = PackageMetrics(CollectorRegistry())
        try:
            (november,) = await check_packages(engine, config, SHANGHAI_MIDNIGHT_DEC - timedelta(seconds=5), metrics)
            assert (november.month, november.used) == ("2026-11", 2)  # 61 s at 23:59:31 on 30 November -> 2 minutes, November's
            now = SHANGHAI_MIDNIGHT_DEC + timedelta(hours=2)
            (usage,) = await check_packages(engine, config, now, metrics)
            assert (usage.month, usage.used) == ("2026-12", 4 + 3)  # 240 s -> 4 min, 170 s -> 3 min; November's call not counted
            async with engine.connect() as conn:
                assert (await conn.execute(select(outbox.c.dedupe_key))).all() == []  # 70%: nothing due yet
            await write(db_url, [talk(5, 120, SHANGHAI_MIDNIGHT_DEC + timedelta(hours=1))])  # type: ignore[list-item]
            for _ in range(3):  # several rounds (or several routers): still once
                await check_packages(engine, config, now, metrics)
            async with engine.connect() as conn:
                rows = (await conn.execute(select(outbox.c.dedupe_key, outbox.c.channel, outbox.c.recipient, outbox.c.payload))).all()
            assert [(r.dedupe_key, r.channel) for r in rows] == [(f"package:4008001234:2026-12:80:sms:{BOSS}", "sms")]
            assert "本月已用 9/10 分钟（90%）" in json.loads(rows[0].payload)["text"]
            assert metrics.used.labels(number="4008001234")._value.get() == 9
            later = datetime(2026, 12, 28, 2, 0, tzinfo=timezone.utc)  # three days before expiry, same month
            await check_packages(engine, config, later, metrics)
            await check_packages(engine, config, later, metrics)
            async with engine.connect() as conn:
                keys = sorted(r.dedupe_key for r in (await conn.execute(select(outbox.c.dedupe_key))).all())
            assert keys == [f"package:4008001234:2026-12-31:3d:sms:{BOSS}", f"package:4008001234:2026-12:80:sms:{BOSS}"]
        finally:
            await engine.dispose()

    arun(body())


def test_usage_and_size_commands(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "dialplans").mkdir()
    plan = yaml.safe_load((root / "dialplans" / "4008001234.yaml").read_text())
    plan["package"] = {"monthly_minutes": 3000, "expires": "2027-06-30"}
    (tmp_path / "dialplans" / "4008001234.yaml").write_text(yaml.safe_dump(plan, allow_unicode=True))
    (tmp_path / "config.yaml").write_text((root / "config.yaml").read_text())
    cfg = str(tmp_path / "config.yaml")
    subprocess.run([sys.executable, "-m", "callrouter", "db", "upgrade", "--config", cfg], check=True, capture_output=True, env=ENV)
    arun(write(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'callrouter.db'}", [talk(1, 125, datetime.now(timezone.utc) - timedelta(minutes=5))]))  # type: ignore[list-item]
    out = subprocess.run([sys.executable, "-m", "callrouter", "usage", "--config", cfg, "--format", "json"], capture_output=True, text=True, env=ENV)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["used"] == 3 and row["allowance"] == 3000 and row["expires"] == "2027-06-30"
    size = subprocess.run([sys.executable, "-m", "callrouter", "usage", "size", "--calls-per-day", "200", "--minutes-per-call", "3"],
                          capture_output=True, text=True, env=ENV)
    assert size.returncode == 0 and "recommended package: 20,000 minutes/month" in size.stdout and "agents needed: 4" in size.stdout
    bad = subprocess.run([sys.executable, "-m", "callrouter", "usage", "size", "--calls-per-day", "200", "--minutes-per-call", "0"],
                         capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2 and "minutes per call" in bad.stderr


async def outbox_keys(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return sorted(r.dedupe_key for r in (await conn.execute(select(outbox.c.dedupe_key))).all())


def test_two_watchers_queue_each_warning_once_and_drop_gauges_of_removed_packages(db_url: str) -> None:
    config = config_with(Package(monthly_minutes=2, expires=date(2027, 6, 30), webhook=True))
    now = SHANGHAI_MIDNIGHT_DEC + timedelta(days=3)

    async def body() -> None:
        await write(db_url, [talk(1, 100, SHANGHAI_MIDNIGHT_DEC + timedelta(days=1))])  # type: ignore[list-item]
        engines = [open_engine(make_url(db_url)), open_engine(make_url(db_url))]  # two routers
        registries = [CollectorRegistry(), CollectorRegistry()]
        current = [config]
        watchers = [PackageWatcher(e, lambda: current[0], r, lambda: now) for e, r in zip(engines, registries)]
        try:
            for _ in range(2):  # two rounds of two watchers at once
                results = await asyncio.gather(*(w.check() for w in watchers))
                assert [[u.used for u in r] for r in results] == [[2], [2]]
            assert await outbox_keys(engines[0]) == sorted([f"package:4008001234:2026-12:100:sms:{BOSS}", "package:4008001234:2026-12:100:webhook"])
            queued = [r.get_sample_value("callrouter_package_alerts_total", {"number": "4008001234", "kind": "usage_100"}) or 0 for r in registries]
            assert sum(queued) == 1  # counted by the router whose insert won
            sample = registries[1].get_sample_value
            assert sample("callrouter_package_minutes_used", {"number": "4008001234"}) == 2
            assert sample("callrouter_package_minutes_allowance", {"number": "4008001234"}) == 2
            assert sample("callrouter_package_expiry_timestamp_seconds", {"number": "4008001234"}) == datetime(2027, 6, 30, 16, tzinfo=timezone.utc).timestamp()
            plan = config.plans["4008001234"]
            current[0] = dataclasses.replace(config, plans=MappingProxyType({plan.number: plan.model_copy(update={"package": None})}))  # a reload
            assert await watchers[1].check() == []
            assert sample("callrouter_package_minutes_used", {"number": "4008001234"}) is None
        finally:
            for w in watchers:
                await w.close()
            for e in engines:
                await e.dispose()

    arun(body())


def test_a_database_outage_is_counted_and_the_next_round_catches_up(pg_url: str) -> None:
    config = config_with(Package(monthly_minutes=1, expires=date(2027, 6, 30)))
    now = SHANGHAI_MIDNIGHT_DEC + timedelta(days=3)

    async def body() -> None:
        await write(pg_url, [talk(1, 100, SHANGHAI_MIDNIGHT_DEC + timedelta(days=1))])  # type: ignore[list-item]
        proxy, via_proxy = await proxied(pg_url)
        engine = open_engine(make_url(via_proxy), connect_timeout=2)
        registry = CollectorRegistry()
        watcher = PackageWatcher(engine, lambda: config, registry, lambda: now)
        try:
            await proxy.cut()
            assert await watcher.run_once() is None
            assert registry.get_sample_value("callrouter_package_check_errors_total") == 1
            await proxy.restore()
            await watcher.start()  # the loop's first round runs at once
            deadline = asyncio.get_running_loop().time() + 10
            while registry.get_sample_value("callrouter_package_alerts_total", {"number": "4008001234", "kind": "usage_100"}) != 1:
                assert asyncio.get_running_loop().time() < deadline, "the warning was never queued"
                await asyncio.sleep(0.02)
            await watcher.close()
            assert await outbox_keys(engine) == [f"package:4008001234:2026-12:100:sms:{BOSS}"]
        finally:
            await watcher.close()
            await engine.dispose()
            await proxy.cut()

    arun(body(), 60)
