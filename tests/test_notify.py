"""Missed-call notifications: queued with the CDR, sent through a real local HTTP gateway, never lost or doubled."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from datetime import datetime, time, timedelta, timezone
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any, AsyncIterator

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.engine import make_url

from callrouter.config.loader import RoutingConfig
from callrouter.config.notify import MissedCallNotify, Notify, SmsGateway, Webhook
from callrouter.notify.rules import fill, in_quiet_hours, missed_call_messages, quiet_hours_end, retry_delay
from callrouter.notify.sender import OutboxSender
from callrouter.model.record import CallRecord
from callrouter.store.cdr_rows import rows_from_spooled, spool_entry
from callrouter.store.cdr_store import CdrStore
from callrouter.store.db import open_engine
from callrouter.store.schema import outbox
from tests.cdrs import T0, record
from tests.harness import arun, sample_config

BOSS, DEPUTY = "13800000001", "13800000002"


def missed(i: int, caller: str = "13912345678", start: datetime = T0, **changes: Any) -> CallRecord:
    return dataclasses.replace(record(i, caller=caller, start=start, answered=False), **changes)


def config_for(sms_url: str | None = None, webhook_url: str | None = None, service: dict[str, Any] | None = None, **plan_notify: Any) -> RoutingConfig:
    base = sample_config()
    notify = Notify(
        sms=SmsGateway(url=sms_url, **{"timeout": 0.5, **(service or {})}) if sms_url else None,
        webhook=Webhook(url=webhook_url, timeout=0.5) if webhook_url else None,
        retry_base=1, retry_max=10, max_attempts=3,
    )
    plan = base.plans["4008001234"]
    rules = MissedCallNotify(**{"recipients": (BOSS, DEPUTY), **plan_notify})
    plans = MappingProxyType({plan.number: plan.model_copy(update={"notify": rules})})
    return RoutingConfig(base.service.model_copy(update={"notify": notify}), plans, base.sources, base.config_path, base.base_dir)


class Gateway:
    """A stand-in SMS gateway on a real port: records what it got, answers as told."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.mode = "ok"  # ok | error500 | garbage | refuse200 | slow | deep | hugeint
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if request.content_type == "application/json" else dict(await request.post())
        self.received.append({"body": body, "headers": dict(request.headers), "raw": raw})
        if self.mode == "slow":
            await self.release.wait()
        if self.mode == "error500":
            return web.Response(status=500, text="internal error")
        if self.mode == "garbage":
            return web.Response(status=502, body=b"\x00\xff<html>")
        if self.mode == "deep":  # a reply that would exhaust a recursive parser
            return web.Response(body=b'{"Code": ' + b"[" * 30000 + b"]" * 30000 + b"}", content_type="application/json")
        if self.mode == "hugeint":
            return web.Response(body=b'{"Code": ' + b"9" * 5000 + b"}", content_type="application/json")
        if self.mode == "refuse200":
            return web.json_response({"Code": "isv.BUSINESS_LIMIT_CONTROL"})
        return web.json_response({"Code": "OK"})


@asynccontextmanager
async def gateway_on(port: int = 0) -> AsyncIterator[tuple[Gateway, str]]:
    gw = Gateway()
    app = web.Application()
    app.router.add_post("/sms", gw.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    try:
        yield gw, f"http://127.0.0.1:{bound}/sms"
    finally:
        gw.release.set()
        await runner.cleanup()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def store_calls(url: str, config: RoutingConfig, records: list[CallRecord]) -> None:
    engine = open_engine(make_url(url))
    try:
        store = CdrStore(engine, messages=lambda rows: missed_call_messages(rows, config.plans, config.service), clock=lambda: T0)
        await store.write([rows_from_spooled(spool_entry(r)[0]) for r in records])
    finally:
        await engine.dispose()


async def outbox_rows(url: str) -> list[dict[str, Any]]:
    engine = open_engine(make_url(url))
    try:
        async with engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(select(outbox).order_by(outbox.c.id))).all()]
    finally:
        await engine.dispose()


@asynccontextmanager
async def sender_for(url: str, config: RoutingConfig, clock: Clock, registry: CollectorRegistry | None = None) -> AsyncIterator[OutboxSender]:
    engine = open_engine(make_url(url))
    sender = OutboxSender(engine, lambda: config, registry or CollectorRegistry(), clock, random.Random(1))  # not started:
    try:  # the tests drive rounds themselves, with their own clock
        yield sender
    finally:
        await sender.close()
        await engine.dispose()


# -- pure rules ------------------------------------------------------------------------------------

def test_which_calls_are_missed_and_what_the_message_says() -> None:
    config = config_for("http://gw.example/sms")
    rows = [rows_from_spooled(spool_entry(r)[0]).call for r in [
        missed(1),
        record(2),  # answered
        missed(3, disposition="abandoned", ring_seconds=0),  # hung up in the menu: not a missed call
        missed(4, disposition="abandoned", ring_seconds=12),  # hung up while a line rang
        missed(5, disposition="after_hours", attempts=(), ring_seconds=0),
        missed(6, number="4009999999"),  # no plan
    ]]
    messages = missed_call_messages(rows, config.plans, config.service)
    assert sorted({m.dedupe_key.split(":")[1] for m in messages}) == ["1764000000.1", "1764000000.4", "1764000000.5"]
    assert {m.recipient for m in messages} == {BOSS, DEPUTY} and {m.channel for m in messages} == {"sms"}
    first = next(m for m in messages if m.dedupe_key == f"missed:1764000000.1:sms:{BOSS}")
    assert first.payload["text"] == "【示例科技 Example Tech】11-24 09:00 来电 13912345678 未接通（无人接听），请及时回电。400号码 4008001234"
    withheld = missed_call_messages([rows_from_spooled(spool_entry(missed(7, caller=""))[0]).call], config.plans, config.service)
    assert "未显示号码" in withheld[0].payload["text"]


def test_templates_fill_only_known_fields_and_config_refuses_unknown_ones() -> None:
    assert fill("{caller} {caller.__class__} {x}", {"caller": "{number}"}) == "{number} {caller.__class__} {x}"
    with pytest.raises(ValidationError, match="unknown placeholder"):
        MissedCallNotify(template="call from {caller.__class__}")
    with pytest.raises(ValidationError, match="line breaks"):
        SmsGateway(url="http://gw/sms", headers={"X-Key": "a\r\nInjected: 1"})
    with pytest.raises(ValidationError, match="http"):
        SmsGateway(url="ftp://gw/sms")


def test_quiet_hours_wrap_midnight_and_end_in_the_morning() -> None:
    quiet = (time(22, 0), time(8, 0))
    shanghai = timezone(timedelta(hours=8))
    assert in_quiet_hours(quiet, datetime(2026, 11, 24, 23, 30, tzinfo=shanghai))
    assert in_quiet_hours(quiet, datetime(2026, 11, 24, 7, 59, tzinfo=shanghai))
    assert not in_quiet_hours(quiet, datetime(2026, 11, 24, 8, 0, tzinfo=shanghai))
    assert quiet_hours_end(quiet, datetime(2026, 11, 24, 23, 30, tzinfo=shanghai)) == datetime(2026, 11, 25, 0, 0, tzinfo=timezone.utc)
    assert MissedCallNotify(quiet_hours="22:00-08:00").quiet_hours == quiet  # type: ignore[arg-type]


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    settings = Notify(retry_base=5, retry_max=60)
    rng = random.Random(7)
    delays = [retry_delay(n, settings, rng) for n in range(1, 8)]
    assert 2.5 <= delays[0] <= 5 and 5 <= delays[1] <= 10 and 10 <= delays[2] <= 20
    assert all(30 <= d <= 60 for d in delays[4:])


# -- queued with the CDR ---------------------------------------------------------------------------

def test_a_missed_call_queues_one_message_per_recipient_and_a_replay_queues_none(db_url: str) -> None:
    config = config_for("http://gw.example/sms")

    async def body() -> None:
        await store_calls(db_url, config, [missed(1), record(2)])
        await store_calls(db_url, config, [missed(1), record(2)])  # the spool replayed after a crash
        rows = await outbox_rows(db_url)
        assert [(r["recipient"], r["status"]) for r in rows] == [(BOSS, "pending"), (DEPUTY, "pending")]

    arun(body())


def test_a_bug_in_deciding_messages_does_not_hold_back_the_cdrs(db_url: str) -> None:
    def broken(rows: Any) -> Any:
        raise RuntimeError("bug")

    async def body() -> None:
        engine = open_engine(make_url(db_url))
        try:
            assert await CdrStore(engine, messages=broken).write([rows_from_spooled(spool_entry(missed(1))[0])]) == 1
        finally:
            await engine.dispose()

    arun(body())


# -- sent through a real HTTP gateway --------------------------------------------------------------

def test_messages_reach_the_gateway_once_with_the_text_and_an_idempotency_key(db_url: str) -> None:
    async def body() -> None:
        async with gateway_on() as (gw, url):
            config = config_for(url, service={"body": {"phone": "{to}", "content": "{text}", "ref": "{id}"}, "success_field": "Code", "success_value": "OK"})
            hostile = missed(2, caller="13900000000", caller_name='"}, "evil": {"x')
            await store_calls(db_url, config, [missed(1), hostile])
            clock = Clock(T0 + timedelta(minutes=5))
            registry = CollectorRegistry()
            async with sender_for(db_url, config, clock, registry) as sender:
                assert await sender.round() == 4
                assert await sender.round() == 0
            sent = {"kind": "missed_call", "channel": "sms", "result": "sent"}
            assert registry.get_sample_value("callrouter_notifications_total", sent) == 4
            assert registry.get_sample_value("callrouter_outbox_pending_messages") == 0
            bodies = sorted((r["body"]["phone"], r["body"]["content"]) for r in gw.received)
            assert [b[0] for b in bodies] == [BOSS, BOSS, DEPUTY, DEPUTY]
            assert all("来电" in b[1] for b in bodies)
            assert all(r["headers"]["Idempotency-Key"].startswith("callrouter-") for r in gw.received)
            rows = await outbox_rows(db_url)
            assert {r["status"] for r in rows} == {"sent"} and all(r["attempts"] == 1 for r in rows)

    arun(body())


def test_a_gateway_outage_delays_messages_and_loses_none(db_url: str) -> None:
    async def body() -> None:
        async with gateway_on() as (_, url):
            port = int(url.split(":")[2].split("/")[0])
        config = config_for(url)  # nothing listens there now: connection refused
        await store_calls(db_url, config, [missed(1)])
        clock = Clock(T0 + timedelta(minutes=5))
        async with sender_for(db_url, config, clock) as sender:
            assert await sender.round() == 2
            rows = await outbox_rows(db_url)
            assert {r["status"] for r in rows} == {"pending"} and all("Connect" in r["last_error"] for r in rows)
            assert await sender.round() == 0  # not due yet: backing off
            async with gateway_on(port) as (gw, _):
                clock.now += timedelta(seconds=30)
                assert await sender.round() == 2
            assert len(gw.received) == 2
        rows = await outbox_rows(db_url)
        assert {r["status"] for r in rows} == {"sent"} and all(r["attempts"] == 2 for r in rows)

    arun(body())


@pytest.mark.parametrize("mode", ["error500", "garbage", "refuse200", "slow", "deep", "hugeint"])
def test_a_failing_gateway_is_retried_then_given_up_on_with_the_reason(mode: str, tmp_path: Any) -> None:
    url_db = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    from tests.databases import fresh_sqlite

    fresh_sqlite(str(tmp_path / "store.db"))

    async def body() -> None:
        async with gateway_on() as (gw, url):
            gw.mode = mode
            config = config_for(url, service={"success_field": "Code", "success_value": "OK"}, recipients=(BOSS,))
            await store_calls(url_db, config, [missed(1)])
            clock = Clock(T0 + timedelta(minutes=5))
            async with sender_for(url_db, config, clock) as sender:
                for _ in range(3):
                    assert await sender.round() == 1
                    clock.now += timedelta(seconds=30)
                assert await sender.round() == 0
            (row,) = await outbox_rows(url_db)
            assert row["status"] == "failed" and row["attempts"] == 3
            expected = {
                "error500": "HTTP 500", "garbage": "HTTP 502", "refuse200": "BUSINESS_LIMIT", "slow": "Timeout",
                "deep": "deeper than", "hugeint": "digits",
            }[mode]
            assert expected in row["last_error"], row["last_error"]

    arun(body())


def test_quiet_hours_hold_messages_until_morning_or_drop_them(db_url: str) -> None:
    async def body() -> None:
        async with gateway_on() as (gw, url):
            night = T0.replace(hour=15)  # 23:00 in Shanghai
            config = config_for(url, recipients=(BOSS,), quiet_hours="22:00-08:00")
            await store_calls(db_url, config, [missed(1, start=night)])
            clock = Clock(night + timedelta(minutes=1))
            async with sender_for(db_url, config, clock) as sender:
                assert await sender.round() == 1
                assert gw.received == []
                (row,) = await outbox_rows(db_url)
                assert row["status"] == "pending" and row["attempts"] == 0 and "quiet" in row["last_error"]
                clock.now = night + timedelta(hours=8, minutes=59)  # 07:59 next morning
                assert await sender.round() == 0
                clock.now = night + timedelta(hours=9)  # 08:00
                assert await sender.round() == 1
            assert len(gw.received) == 1
            dropping = config_for(url, recipients=(DEPUTY,), quiet_hours="22:00-08:00", quiet_hours_action="drop")
            await store_calls(db_url, dropping, [missed(2, start=night)])
            async with sender_for(db_url, dropping, Clock(night + timedelta(minutes=1))) as sender:
                assert await sender.round() == 1
            assert len(gw.received) == 1
            assert (await outbox_rows(db_url))[-1]["status"] == "suppressed"

    arun(body())


def test_one_caller_cannot_flood_a_managers_phone(db_url: str) -> None:
    async def body() -> None:
        async with gateway_on() as (gw, url):
            config = config_for(url, recipients=(BOSS,), per_caller_limit=3, per_caller_window=3600)
            clock = Clock(T0 + timedelta(minutes=1))
            async with sender_for(db_url, config, clock) as sender:
                for i in range(5):
                    await store_calls(db_url, config, [missed(i, caller="13911110000")])
                    await sender.round()
                await store_calls(db_url, config, [missed(9, caller="13922220000")])  # another caller still gets through
                await sender.round()
            assert len(gw.received) == 4
            statuses = [r["status"] for r in await outbox_rows(db_url)]
            assert statuses == ["sent", "sent", "sent", "suppressed", "suppressed", "sent"]

    arun(body())


def test_the_limit_holds_for_several_calls_of_one_caller_sent_in_one_round(db_url: str) -> None:
    async def body() -> None:
        async with gateway_on() as (gw, url):
            config = config_for(url, per_caller_limit=3, per_caller_window=3600)
            await store_calls(db_url, config, [missed(i, caller="13911110000") for i in range(4)])
            async with sender_for(db_url, config, Clock(T0 + timedelta(minutes=1))) as sender:
                assert await sender.round() == 8
            assert sorted(r["body"]["to"] for r in gw.received) == [BOSS] * 3 + [DEPUTY] * 3
            rows = await outbox_rows(db_url)
            assert [r["status"] for r in rows if r["recipient"] == BOSS] == ["sent", "sent", "sent", "suppressed"]
            assert "per-caller limit" in rows[-1]["last_error"]

    arun(body())


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_hostile_text_reaches_the_gateway_as_data(encoding: str, db_url: str) -> None:
    caller = '1"},"to":"1&to=2%0A\\u0000'
    company = '"}],"evil":{"x":"&to=110&'

    async def body() -> None:
        async with gateway_on() as (gw, url):
            service = {"body": {"phone": "{to}", "content": "{text}"}, "encoding": encoding}
            config = config_for(url, service=service, recipients=(BOSS,), company=company)
            await store_calls(db_url, config, [missed(1, caller=caller)])
            async with sender_for(db_url, config, Clock(T0 + timedelta(minutes=1))) as sender:
                assert await sender.round() == 1
            (got,) = gw.received
            assert got["body"] == {"phone": BOSS, "content": f"【{company}】11-24 09:00 来电 {caller} 未接通（无人接听），请及时回电。400号码 4008001234"}

    arun(body())


def test_close_returns_while_the_gateway_hangs_and_the_message_stays_queued(db_url: str) -> None:
    async def body() -> None:
        async with gateway_on() as (gw, url):
            gw.mode = "slow"  # never answers until the test ends
            config = config_for(url, service={"timeout": 60}, recipients=(BOSS,))
            await store_calls(db_url, config, [missed(1)])
            engine = open_engine(make_url(db_url))
            sender = OutboxSender(engine, lambda: config, CollectorRegistry(), Clock(T0 + timedelta(minutes=1)), random.Random(1))
            try:
                await sender.start()
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while not gw.received and loop.time() < deadline:
                    await asyncio.sleep(0.01)
                assert gw.received, "the sender never reached the gateway"
                await asyncio.wait_for(sender.close(), 5)  # a hang guard, not a timing claim
            finally:
                await engine.dispose()
            (row,) = await outbox_rows(db_url)
            assert row["status"] == "pending" and row["attempts"] == 1  # leased: another round sends it again

    arun(body())


def test_two_senders_never_send_one_message_twice(pg_url: str) -> None:
    async def body() -> None:
        async with gateway_on() as (gw, url):
            config = config_for(url, service={"body": {"to": "{to}", "text": "{text}", "id": "{id}"}})
            await store_calls(pg_url, config, [missed(i, caller=f"1390000{i:04d}") for i in range(40)])
            clock = Clock(T0 + timedelta(minutes=5))
            async with sender_for(pg_url, config, clock) as a, sender_for(pg_url, config, clock) as b:
                while sum(await asyncio.gather(a.round(), b.round())) > 0:
                    pass
            ids = [r["body"]["id"] for r in gw.received]
            assert len(ids) == 80 and len(set(ids)) == 80

    arun(body())


def test_the_webhook_gets_the_event_as_json(db_url: str) -> None:
    async def body() -> None:
        async with gateway_on() as (gw, url):
            config = config_for(None, webhook_url=url, recipients=(), webhook=True)
            await store_calls(db_url, config, [missed(1, caller="")])
            async with sender_for(db_url, config, Clock(T0 + timedelta(minutes=5))) as sender:
                assert await sender.round() == 1
            (got,) = gw.received
            assert got["body"]["kind"] == "missed_call" and got["body"]["number"] == "4008001234"
            assert got["body"]["disposition"] == "no_answer" and got["body"]["uniqueid"] == "1764000000.1"

    arun(body())


def test_check_warns_about_recipients_without_a_gateway() -> None:
    from callrouter.cli.check import notify_warnings

    (warning,) = notify_warnings(sample_config())  # the sample plan names a manager; config.yaml has no gateway
    assert "no notify.sms gateway" in warning and warning.startswith(sample_config().sources["4008001234"])
    assert notify_warnings(config_for("http://gw.example/sms")) == []
