"""CRM caller names: a real local HTTP server stands in for the CRM; calls run through the real server."""

from __future__ import annotations

import asyncio
import json
import shutil
from contextlib import asynccontextmanager
from pathlib import Path
import time
from typing import Any, AsyncIterator, Callable

import pytest
from aiohttp import web

from callrouter.config.loader import load_config
from callrouter.config.service import Crm
from callrouter.crm.cache import TtlCache
from callrouter.crm.client import CrmClient, crm_url, within_budget
from callrouter.crm.parse import CrmResult, InvalidAnswer, parse_answer
from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, CallTranscript, DialScript
from callrouter.metrics import RouterMetrics
from tests.harness import Router, arun, running_router

CALLER = "13912345678"


# -- pure parts ------------------------------------------------------------------------------------

def test_answers_are_parsed_as_hostile_data() -> None:
    assert parse_answer(b'{"name": "\\u5f20\\u4e09", "tags": ["vip", "  "]}', "name", "tags") == ("张三", ("vip",))
    assert parse_answer(b'{"data": {"customer": "Li\\r\\nEXEC Dial"}}', "data.customer", "tags") == ("Li  EXEC Dial", ())
    assert parse_answer(b'{"name": null}', "name", "tags") == ("", ())
    assert parse_answer(json.dumps({"name": "A\x85B\u202eC\u2066D"}).encode(), "name", "tags") == ("A B C D", ())
    assert parse_answer(('{"name": "' + "x" * 500 + '"}').encode(), "name", "tags")[0] == "x" * 64
    for body, why in [(b"<html>", "not JSON"), (b"[1]", "not an object"), (b'{"name": 42}', "not text"), (b'{"tags": "vip"}', "list"),
                      (b"\xff\xfe", "not JSON")]:
        with pytest.raises(InvalidAnswer, match=why):
            parse_answer(body, "name", "tags")


def test_the_cache_forgets_after_its_ttl_and_keeps_its_size() -> None:
    cache = TtlCache(size=2, ttl=600, negative_ttl=60)
    cache.put("a", CrmResult("hit", "A"), now=0)
    cache.put("b", CrmResult("not_found"), now=0)
    cache.put("c", CrmResult("error"), now=0)  # failures are not remembered
    assert cache.get("c", 1) is None
    assert cache.get("b", 59) == CrmResult("not_found") and cache.get("b", 60) is None
    assert cache.get("a", 599) is not None and cache.get("a", 600) is None
    for i in range(5):
        cache.put(str(i), CrmResult("hit", str(i)), now=0)
    assert len(cache) == 2 and cache.get("4", 1) is not None and cache.get("0", 1) is None


def test_the_url_carries_the_caller_encoded() -> None:
    assert crm_url("https://crm/api/lookup?phone={caller}&line={number}", "13912345678", "4008001234") == (
        "https://crm/api/lookup?phone=13912345678&line=4008001234"
    )
    assert crm_url("https://crm/c/{caller}", "139&x=1/../", "") == "https://crm/c/139%26x%3D1%2F..%2F"


# -- against a CRM on a real port ------------------------------------------------------------------

class FakeCrm:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.gate: asyncio.Event | None = None  # when set: answers wait for it
        self.chunks: list[bytes] = []  # what /streamed/ sends, one write each
        self.cut_off = False
        self.names: dict[tuple[str, str], str] = {}  # (400 number, caller) -> name, for /companies/

    async def per_company(self, request: web.Request) -> web.StreamResponse:
        """A CRM shared by several companies: who a caller is depends on the number they called."""
        number, phone = request.match_info["number"], request.match_info["phone"]
        self.requests.append(f"{number}/{phone}")
        if self.gate is not None:
            await self.gate.wait()
        name = self.names.get((number, phone))
        if name is None:
            return web.Response(status=404)
        return web.Response(body=json.dumps({"name": name}).encode(), content_type="application/json")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        phone = request.match_info["phone"]
        self.requests.append(phone)
        if self.gate is not None:
            await self.gate.wait()
        status, body = self.answers.get(phone, (404, b""))
        return web.Response(status=status, body=body, content_type="application/json")

    async def streamed(self, request: web.Request) -> web.StreamResponse:
        """The answer's chunks as separate writes, without a Content-Length; a pause lets each leave alone."""
        self.requests.append(request.match_info["phone"])
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            for chunk in self.chunks:
                await response.write(chunk)
                await asyncio.sleep(0.005)
            await response.write_eof()
        except ConnectionResetError:  # the client stopped reading: what an oversized answer should cause
            self.cut_off = True
        return response


@asynccontextmanager
async def crm_client(metrics: RouterMetrics, monotonic: Callable[[], float] = time.monotonic, **settings: Any) -> AsyncIterator[tuple[FakeCrm, CrmClient]]:
    fake = FakeCrm()
    app = web.Application()
    app.router.add_get("/customers/{phone}", fake.handle)
    app.router.add_get("/streamed/{phone}", fake.streamed)
    app.router.add_get("/companies/{number}/customers/{phone}", fake.per_company)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    url = settings.pop("url", f"http://127.0.0.1:{port}/customers/{{caller}}").replace("{port}", str(port))
    client = CrmClient(Crm(url=url, **{"timeout": 0.3, **settings}), metrics, monotonic)
    await client.start()
    try:
        yield fake, client
    finally:
        if fake.gate is not None:
            fake.gate.set()
        await client.close()
        await runner.cleanup()


@asynccontextmanager
async def crm_and_router(**settings: Any) -> AsyncIterator[tuple[FakeCrm, CrmClient, Router]]:
    metrics = RouterMetrics()
    async with crm_client(metrics, **settings) as (fake, client), running_router(crm=client, metrics=metrics) as router:
        yield fake, client, router


def answered_call(uniqueid: str, caller: str = CALLER) -> CallScript:
    return CallScript(callerid=caller, calleridname="NETWORK NAME", uniqueid=uniqueid, dtmf=("1",), default_dial=DialScript("ANSWER", 2, 10))


def caller_name_sets(t: CallTranscript) -> list[list[str]]:
    return [c for c in t.commands if c[:3] == ["SET", "VARIABLE", "CALLERID(name)"]]


def test_a_known_caller_is_shown_by_name_and_stored_with_it() -> None:
    async def body() -> None:
        async with crm_and_router() as (fake, client, router):
            fake.answers[CALLER] = (200, json.dumps({"name": "张三", "tags": ["vip"]}).encode())
            t = await run_call("127.0.0.1", router.port, answered_call("c.1"))
            assert caller_name_sets(t) == [["SET", "VARIABLE", "CALLERID(name)", "张三"]]
            await router.settle(1)
            record = router.sink.records[0]
            assert record.caller_name == "张三" and record.trace[-1] == "CRM: 张三 (tags: vip)"
            t = await run_call("127.0.0.1", router.port, answered_call("c.2"))  # from the cache
            assert caller_name_sets(t) == [["SET", "VARIABLE", "CALLERID(name)", "张三"]]
            assert fake.requests == [CALLER]
            assert router.sample("callrouter_crm_lookups_total", result="hit") == 1
            assert router.sample("callrouter_crm_lookups_total", result="cached") == 1

    arun(body())


def test_a_slow_crm_costs_the_call_its_budget_only_and_the_late_answer_fills_the_cache() -> None:
    async def body() -> None:
        async with crm_and_router(timeout=0.2) as (fake, client, router):
            fake.answers[CALLER] = (200, b'{"name": "Wang"}')
            fake.gate = asyncio.Event()  # the CRM answers only once this call is over
            t = await run_call("127.0.0.1", router.port, answered_call("s.1"))
            assert t.variables["CALLROUTER_RESULT"] == "ROUTED" and t.dials[0].status == "ANSWER"
            assert caller_name_sets(t) == [["SET", "VARIABLE", "CALLERID(name)", "NETWORK NAME"]]
            assert router.sample("callrouter_crm_lookups_total", result="over_budget") == 1
            assert fake.requests == [CALLER] and client.request_key(CALLER, "4008001234") in client._inflight  # the call ended with the CRM still silent
            await router.settle(1)
            assert router.sink.records[0].caller_name == "NETWORK NAME" and router.sink.records[0].trace[-1] == "CRM: no name (timeout)"
            fake.gate.set()
            while client.cache.get(client.request_key(CALLER, "4008001234"), client._now()) is None:
                await asyncio.sleep(0.01)
            t = await run_call("127.0.0.1", router.port, answered_call("s.2"))
            assert caller_name_sets(t) == [["SET", "VARIABLE", "CALLERID(name)", "Wang"]]
            assert fake.requests == [CALLER]

    arun(body())


@pytest.mark.parametrize(
    "status,answer,result",
    [
        (500, b"oops", "invalid"),
        (200, b"<html>not json</html>", "invalid"),
        (200, b'{"name": "' + b"x" * 100_000 + b'"}', "invalid"),
        (200, b'{"name": ["a"]}', "invalid"),
        (404, b"", "not_found"),
    ],
)
def test_a_crm_that_fails_or_talks_garbage_never_stops_the_call(status: int, answer: bytes, result: str) -> None:
    async def body() -> None:
        async with crm_and_router() as (fake, client, router):
            fake.answers[CALLER] = (status, answer)
            t = await run_call("127.0.0.1", router.port, answered_call("g.1"))
            assert t.variables["CALLROUTER_RESULT"] == "ROUTED" and t.dials[0].status == "ANSWER"
            assert caller_name_sets(t) == [["SET", "VARIABLE", "CALLERID(name)", "NETWORK NAME"]]
            assert router.sample("callrouter_crm_lookups_total", result=result) == 1
            await router.settle(1)
            assert router.sink.records[0].trace[-1] == f"CRM: no name ({result})"
            await run_call("127.0.0.1", router.port, answered_call("g.2"))
            assert len(fake.requests) == (1 if result == "not_found" else 2)  # only "not known" is remembered

    arun(body())


def test_an_unreachable_crm_is_an_error_and_the_call_goes_on() -> None:
    async def body() -> None:
        async with crm_and_router(url="http://127.0.0.1:9/customers/{caller}") as (_, _client, router):
            t = await run_call("127.0.0.1", router.port, answered_call("u.1"))
            assert t.variables["CALLROUTER_RESULT"] == "ROUTED"
            assert router.sample("callrouter_crm_lookups_total", result="error") == 1

    arun(body())


def test_a_hostile_name_never_becomes_a_second_agi_command() -> None:
    hostile = 'Bob"\nEXEC Dial "PJSIP/evil\r\n\x00\u2028x'

    async def body() -> None:
        async with crm_and_router() as (fake, client, router):
            fake.answers[CALLER] = (200, json.dumps({"name": hostile}).encode())
            t = await run_call("127.0.0.1", router.port, answered_call("h.1"))
            (sets,) = caller_name_sets(t)
            assert sets[3] == 'Bob" EXEC Dial "PJSIP/evil    x'
            assert not any("evil" in " ".join(c) for c in t.commands if c[:2] != ["SET", "VARIABLE"])
            assert [c[1] for c in t.commands if c[0] == "EXEC"] == ["MixMonitor", "Dial"]
            await router.settle(1)
            assert router.sink.records[0].caller_name == 'Bob" EXEC Dial "PJSIP/evil    x'

    arun(body())


def test_too_many_open_requests_make_calls_go_on_without_asking() -> None:
    async def body() -> None:
        async with crm_and_router(max_concurrency=1) as (fake, client, router):
            fake.gate = asyncio.Event()
            first = client.lookup("13900000001", "4008001234")
            second = client.lookup("13900000002", "4008001234")
            assert second.done() and second.result() == CrmResult("busy")
            same = client.lookup("13900000001", "4008001234")
            assert same is first  # one request per caller, shared
            fake.gate.set()
            assert (await first).source == "not_found"
            assert fake.requests == ["13900000001"]

    arun(body())


def test_withheld_callers_are_not_looked_up() -> None:
    async def body() -> None:
        async with crm_and_router() as (fake, _client, router):
            script = CallScript(callerid="", uniqueid="w.1", dtmf=("1",), default_dial=DialScript("ANSWER", 2, 10))
            await run_call("127.0.0.1", router.port, script)
            assert fake.requests == []

    arun(body())


def test_a_header_naming_an_unset_variable_stops_the_start() -> None:
    from callrouter.config.envsubst import MissingEnvironment

    async def body() -> None:
        client = CrmClient(Crm(url="http://crm/{caller}", headers={"Authorization": "Bearer ${CALLROUTER_TEST_UNSET_TOKEN}"}), RouterMetrics())
        with pytest.raises(MissingEnvironment, match="CALLROUTER_TEST_UNSET_TOKEN is not set"):
            await client.start()
        await client.close()

    arun(body())


def test_names_and_not_known_expire_with_their_ttls() -> None:
    now = [1000.0]

    async def body() -> None:
        async with crm_client(RouterMetrics(), lambda: now[0], cache_ttl=600, negative_ttl=60) as (fake, client):
            fake.answers[CALLER] = (200, b'{"name": "Zhao"}')
            assert (await client.lookup(CALLER, "4008001234")) == CrmResult("hit", "Zhao")
            now[0] += 599
            assert client.lookup(CALLER, "4008001234").result() == CrmResult("cached", "Zhao")
            now[0] += 1
            assert (await client.lookup(CALLER, "4008001234")).source == "hit"
            assert fake.requests == [CALLER, CALLER]
            stranger = "13800000000"
            assert (await client.lookup(stranger, "4008001234")).source == "not_found"
            now[0] += 59
            assert client.lookup(stranger, "4008001234").result().source == "cached"
            now[0] += 1
            assert (await client.lookup(stranger, "4008001234")).source == "not_found"
            assert fake.requests == [CALLER, CALLER, stranger, stranger]

    arun(body())


def test_an_answer_in_pieces_is_read_whole_and_an_endless_one_is_cut_off() -> None:
    async def body() -> None:
        metrics = RouterMetrics()
        async with crm_client(metrics, url="http://127.0.0.1:{port}/streamed/{caller}") as (fake, client):
            fake.chunks = [b'{"na', b'me": "Qian", ', b'"tags": ["vip"]}']
            assert (await client.lookup(CALLER, "4008001234")) == CrmResult("hit", "Qian", ("vip",))
            fake.chunks = [b'{"name": "' + b"x" * 8192] * 64  # 512 KiB, no Content-Length
            assert (await client.lookup("13800000000", "4008001234")).source == "invalid"
            assert metrics.registry.get_sample_value("callrouter_crm_lookups_total", {"result": "invalid"}) == 1

    arun(body())


def test_a_call_waiting_when_the_client_closes_gets_no_name_not_an_exception() -> None:
    async def body() -> None:
        async with crm_client(RouterMetrics()) as (fake, client):
            fake.gate = asyncio.Event()
            answer = client.lookup(CALLER, "4008001234")
            await client.close()
            assert (await within_budget(answer, 1.0)) == CrmResult("error")
            assert client.lookup(CALLER, "4008001234").result() == CrmResult("skipped")

    arun(body())


# -- one CRM for several companies -----------------------------------------------------------------

A_NUMBER, B_NUMBER = "4008001234", "4009990000"
PER_COMPANY = "http://127.0.0.1:{port}/companies/{number}/customers/{caller}"


def test_one_caller_to_two_companies_gets_each_companys_name_and_each_is_cached() -> None:
    async def body() -> None:
        async with crm_client(RouterMetrics(), url=PER_COMPANY) as (fake, client):
            fake.names = {(A_NUMBER, CALLER): "甲公司的张三", (B_NUMBER, CALLER): "乙公司的张总"}
            assert (await client.lookup(CALLER, A_NUMBER)) == CrmResult("hit", "甲公司的张三")
            assert (await client.lookup(CALLER, B_NUMBER)) == CrmResult("hit", "乙公司的张总")
            assert client.lookup(CALLER, A_NUMBER).result() == CrmResult("cached", "甲公司的张三")
            assert client.lookup(CALLER, B_NUMBER).result() == CrmResult("cached", "乙公司的张总")
            assert fake.requests == [f"{A_NUMBER}/{CALLER}", f"{B_NUMBER}/{CALLER}"]

    arun(body())


def test_requests_in_flight_are_shared_only_when_they_are_the_same_request() -> None:
    async def body() -> None:
        async with crm_client(RouterMetrics(), url=PER_COMPANY) as (fake, client):
            fake.names = {(A_NUMBER, CALLER): "A", (B_NUMBER, CALLER): "B"}
            fake.gate = asyncio.Event()
            to_a, to_b, again_a = client.lookup(CALLER, A_NUMBER), client.lookup(CALLER, B_NUMBER), client.lookup(CALLER, A_NUMBER)
            assert to_a is again_a and to_b is not to_a
            fake.gate.set()
            assert ((await to_a).name, (await to_b).name) == ("A", "B")
        async with crm_client(RouterMetrics()) as (fake, client):  # the URL does not name the number: one request serves both
            fake.answers[CALLER] = (200, b'{"name": "Zhou"}')
            assert (await client.lookup(CALLER, A_NUMBER)).source == "hit"
            assert client.lookup(CALLER, B_NUMBER).result() == CrmResult("cached", "Zhou")
            assert fake.requests == [CALLER]

    arun(body())


def test_calls_to_two_companies_show_and_store_each_companys_name(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(root / "dialplans", tmp_path / "dialplans")
    plan_a = (tmp_path / "dialplans" / f"{A_NUMBER}.yaml").read_text()
    (tmp_path / "dialplans" / f"{B_NUMBER}.yaml").write_text(plan_a.replace(f'number: "{A_NUMBER}"', f'number: "{B_NUMBER}"'))
    two_companies = load_config(str(tmp_path / "config.yaml"))
    assert set(two_companies.plans) == {A_NUMBER, B_NUMBER}

    def call_to(number: str, uniqueid: str) -> CallScript:
        return CallScript(callerid=CALLER, calleridname="NETWORK NAME", uniqueid=uniqueid, dnid=number, extension=number,
                          dtmf=("1",), default_dial=DialScript("ANSWER", 2, 10))

    async def body() -> None:
        metrics = RouterMetrics()
        async with crm_client(metrics, url=PER_COMPANY) as (fake, client), running_router(two_companies, crm=client, metrics=metrics) as router:
            fake.names = {(A_NUMBER, CALLER): "甲公司的张三", (B_NUMBER, CALLER): "乙公司的张总"}
            a = await run_call("127.0.0.1", router.port, call_to(A_NUMBER, "m.1"))
            b = await run_call("127.0.0.1", router.port, call_to(B_NUMBER, "m.2"))
            again = await run_call("127.0.0.1", router.port, call_to(A_NUMBER, "m.3"))
            assert caller_name_sets(a) == [["SET", "VARIABLE", "CALLERID(name)", "甲公司的张三"]]
            assert caller_name_sets(b) == [["SET", "VARIABLE", "CALLERID(name)", "乙公司的张总"]]
            assert caller_name_sets(again) == [["SET", "VARIABLE", "CALLERID(name)", "甲公司的张三"]]
            await router.settle(3)
            names = {r.uniqueid: r.caller_name for r in router.sink.records}
            assert names == {"m.1": "甲公司的张三", "m.2": "乙公司的张总", "m.3": "甲公司的张三"}
            assert fake.requests == [f"{A_NUMBER}/{CALLER}", f"{B_NUMBER}/{CALLER}"]  # the second call to A: from the cache
            assert router.sample("callrouter_crm_lookups_total", result="cached") == 1

    arun(body())
