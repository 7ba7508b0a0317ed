"""The manager is told when a line is suspended and when it works again: once per episode, through the
outbox (quiet hours, SMS and webhook), whichever router saw it; and each line's state is a metric."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry
from sqlalchemy.engine import make_url

from callrouter.config.line_health import LineHealth
from callrouter.config.loader import RoutingConfig
from callrouter.config.notify import Notify, SmsGateway, Webhook
from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript
from callrouter.notify.line_health import LineHealthAlerts, LineHealthMonitor, line_health_messages
from callrouter.routing.health import LineChange, LineRecord, apply_outcome
from callrouter.store.db import open_engine
from callrouter.store.memory import MemoryRoutingState
from tests.harness import arun, running_router, sample_config
from tests.test_notify import BOSS, DEPUTY, Clock, gateway_on, outbox_rows, sender_for

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 24, 10, 2, tzinfo=SH)
ZHANG = "Local/13800138001@callrouter-lines"
LI = "Local/13800138002@callrouter-lines"
ZHAO = "Local/01088886666@callrouter-lines"


def config(sms: bool = True, webhook: bool = False, **health: Any) -> RoutingConfig:
    base = sample_config()
    notify = Notify(sms=SmsGateway(url="http://127.0.0.1:9/sms") if sms else None, webhook=Webhook(url="http://127.0.0.1:9/hook") if webhook else None)
    plan = base.plans["4008001234"]
    plan = plan.model_copy(update={
        "notify": plan.notify.model_copy(update={"recipients": (BOSS, DEPUTY), "webhook": webhook}),
        "line_health": LineHealth(**health),
    })
    return RoutingConfig(base.service.model_copy(update={"notify": notify}), MappingProxyType({plan.number: plan}), base.sources, base.config_path, base.base_dir)


def failing(key: str, times: int, status: str = "CHANUNAVAIL", start: datetime = T0) -> list[LineChange]:
    """The changes `times` failures in a row make, a minute apart."""
    out, record = [], LineRecord(key)
    for i in range(times):
        at = (start + timedelta(minutes=i)).timestamp()
        after = apply_outcome(record, status, at)
        out.append(LineChange(record, after, at))
        record = after
    return out


def recovered(before: LineRecord, when: datetime) -> LineChange:
    return LineChange(before, apply_outcome(before, "ANSWER", when.timestamp()), when.timestamp())


def test_the_message_names_the_line_masks_its_number_and_says_where_calls_go() -> None:
    cfg = config()
    first, second = failing(ZHANG, 2)
    assert line_health_messages(first, cfg.plans, cfg.service, {}) == []  # one failure: nothing to say
    messages = line_health_messages(second, cfg.plans, cfg.service, {})
    assert [(m.kind, m.channel, m.recipient) for m in messages] == [("line_health", "sms", BOSS), ("line_health", "sms", DEPUTY)]
    text = messages[0].payload["text"]
    assert text == "【示例科技】400-800-1234 line 张伟 (138****8001) unreachable since 10:02, calls go to 李娜, 王芳 and 赵强"
    assert "13800138001" not in str(messages[0].payload)
    assert messages[0].dedupe_key == f"line:4008001234:zhang:{int(T0.timestamp())}:down:sms:{BOSS}"
    assert messages[0].payload["event"] == "down" and messages[0].caller == ""
    # li suspended too: calls no longer go there
    li = failing(LI, 2)[-1].after
    assert line_health_messages(second, cfg.plans, cfg.service, {LI: li})[0].payload["text"].endswith("calls go to 王芳 and 赵强")


def test_recovery_is_told_once_and_a_new_episode_is_a_new_message() -> None:
    cfg = config(webhook=True)
    changes = failing(ZHANG, 5, "NOANSWER")
    down = [line_health_messages(c, cfg.plans, cfg.service, {}) for c in changes]
    assert [len(m) for m in down] == [0, 0, 0, 3, 0]  # the 4th in a row crosses; the 5th is the same episode
    assert down[3][0].payload["text"].startswith("【示例科技】400-800-1234 line 张伟 (138****8001) not answering (4 calls in a row) since 10:02")
    assert down[3][2].channel == "webhook"
    up = line_health_messages(recovered(changes[-1].after, T0.replace(minute=40)), cfg.plans, cfg.service, {})
    assert [m.payload["text"] for m in up][0] == (
        "【示例科技】400-800-1234 line 张伟 (138****8001) works again since 10:40 (not answering (5 calls in a row) since 10:02)"
    )
    assert up[0].dedupe_key == f"line:4008001234:zhang:{int(T0.timestamp())}:up:sms:{BOSS}"
    again = failing(ZHANG, 4, "NOANSWER", start=T0.replace(hour=14))[-1]
    assert line_health_messages(again, cfg.plans, cfg.service, {})[0].dedupe_key != down[3][0].dedupe_key
    # a line that failed but was never suspended: its answer is no news
    assert line_health_messages(recovered(changes[1].after, T0.replace(minute=40)), cfg.plans, cfg.service, {}) == []


def test_nobody_is_told_when_the_plan_or_the_service_says_not_to() -> None:
    change = failing(ZHANG, 2)[-1]
    for cfg in (config(notify=False), config(enabled=False), config(sms=False)):
        assert line_health_messages(change, cfg.plans, cfg.service, {}) == []
    off = config()
    off = RoutingConfig(off.service.model_copy(update={"notify": off.service.notify.model_copy(update={"enabled": False})}), off.plans,
                        off.sources, off.config_path, off.base_dir)
    assert line_health_messages(change, off.plans, off.service, {}) == []


def test_two_routers_seeing_the_same_crossing_queue_one_message_each_recipient(db_url: str) -> None:
    async def body() -> None:
        cfg = config()
        engine = open_engine(make_url(db_url))
        state = MemoryRoutingState()
        try:
            alerts = [LineHealthAlerts(engine, lambda: cfg, state.line_health) for _ in range(2)]
            crossing = failing(ZHANG, 2)[-1]
            await asyncio.gather(*(a.changed(crossing) for a in alerts))
            await alerts[0].changed(crossing)  # a replay
            await alerts[1].changed(recovered(crossing.after, T0.replace(minute=30)))
            rows = await outbox_rows(db_url)
            assert [(r["kind"], r["recipient"], r["payload"].count("works again")) for r in rows] == [
                ("line_health", BOSS, 0), ("line_health", DEPUTY, 0), ("line_health", BOSS, 1), ("line_health", DEPUTY, 1)
            ]
        finally:
            await engine.dispose()

    arun(body())


def test_quiet_hours_hold_line_messages_like_any_other(db_url: str) -> None:
    async def body() -> None:
        async with gateway_on() as (gw, url):
            cfg = config()
            cfg = RoutingConfig(cfg.service.model_copy(update={"notify": Notify(sms=SmsGateway(url=url, timeout=0.5))}), cfg.plans,
                                cfg.sources, cfg.config_path, cfg.base_dir)
            night = T0.replace(hour=23)  # the sample plan's quiet hours are 22:00-07:30
            engine = open_engine(make_url(db_url))
            try:
                await LineHealthAlerts(engine, lambda: cfg, MemoryRoutingState().line_health).changed(failing(ZHANG, 2, start=night)[-1])
            finally:
                await engine.dispose()
            clock = Clock(night + timedelta(minutes=2))
            async with sender_for(db_url, cfg, clock) as sender:
                assert await sender.round() == 2 and gw.received == []
                clock.now = night + timedelta(hours=8, minutes=31)  # 07:31
                assert await sender.round() == 2
            assert len(gw.received) == 2 and "unreachable since 23:02" in gw.received[0]["body"]["text"]

    arun(body())


def test_a_router_tells_the_manager_once_when_calls_suspend_a_line(db_url: str) -> None:
    async def body() -> None:
        cfg = config()
        engine = open_engine(make_url(db_url))
        state = MemoryRoutingState()
        try:
            alerts = LineHealthAlerts(engine, lambda: cfg, state.line_health)
            async with running_router(cfg, state=state, line_alerts=alerts.changed) as router:
                dial = {ZHAO: DialScript("BUSY", 1), ZHANG: DialScript("CHANUNAVAIL", 0)}
                for i in range(3):  # complaints (3): zhao (busy: says nothing about the line), then zhang
                    await run_call("127.0.0.1", router.port, CallScript(uniqueid=f"1700000000.{i}", dtmf=("3",), dial=dial))
                await router.settle(3)
            rows = await outbox_rows(db_url)
            assert [r["recipient"] for r in rows] == [BOSS, DEPUTY]
            trace = router.sink.records[2].trace
            assert any("line zhang (张伟) skipped: 2 calls unreachable in a row" in step for step in trace), trace
        finally:
            await engine.dispose()

    arun(body())


def test_a_router_stopping_waits_for_the_managers_message_a_call_left_behind() -> None:
    """The message is queued after the call (it never waits for it); a stop must not lose it."""
    told: list[LineChange] = []

    async def slow_alerts(change: LineChange) -> None:
        await asyncio.sleep(0.3)
        told.append(change)

    async def body() -> None:
        async with running_router(config(), line_alerts=slow_alerts) as router:
            dial = {ZHAO: DialScript("BUSY", 1), ZHANG: DialScript("CHANUNAVAIL", 0)}
            for i in range(2):  # the second unreachable call suspends zhang
                await run_call("127.0.0.1", router.port, CallScript(uniqueid=f"1700000000.{i}", dtmf=("3",), dial=dial))
            assert told == []  # still being queued when the calls are over
        assert any(c.after.key == ZHANG and c.after.unavailable == 2 for c in told), told  # the stop (drain) waited for it

    arun(body())


def test_each_lines_state_is_a_metric_labelled_by_number_and_line() -> None:
    async def body() -> None:
        cfg = config()
        state = MemoryRoutingState()
        now = T0 + timedelta(minutes=5)
        for change in failing(ZHANG, 2):
            await state.report_line(ZHANG, "CHANUNAVAIL", change.at)
        registry = CollectorRegistry()
        monitor = LineHealthMonitor(state.line_health, lambda: cfg, registry, lambda: now)
        assert await monitor.run_once() is False

        def value(line: str, st: str) -> float | None:
            return registry.get_sample_value("callrouter_line_state", {"number": "4008001234", "line": line, "state": st})

        assert value("zhang", "suspended") == 1 and value("zhang", "healthy") == 0 and value("li", "healthy") == 1
        assert registry.get_sample_value("callrouter_lines_working", {"number": "4008001234"}) == 4  # of 5 lines
        assert registry.get_sample_value("callrouter_lines", {"number": "4008001234"}) == 5
        now = T0 + timedelta(minutes=20)
        await monitor.run_once()
        assert value("zhang", "half_open") == 1 and value("zhang", "suspended") == 0
        for sample in registry.collect():
            for s in sample.samples:
                assert "13800138001" not in str(s.labels)

    arun(body())
