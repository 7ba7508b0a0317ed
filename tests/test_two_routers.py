"""Two real router processes against one Postgres, as behind one Asterisk cluster: round robin stays fair
across both (every line offered first the same number of times) and a line's limit holds across both."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript
from callrouter.store.db import open_engine
from callrouter.store.schema import call_attempts, calls
from tests.harness import arun
from tests.test_cdr_durability import start, wait_rows
from tests.test_process import ROOT

PLAN = """
number: "4001230000"
name: two routers
entry: {menu: main}
menus:
  main:
    prompt: main_menu
    options:
      "1": {hunt: rr}
      "2": {hunt: desk}
hunt_groups:
  rr:
    strategy: round_robin
    lines:
      - {id: a, number: "13800000001", ring_timeout: 20}
      - {id: b, number: "13800000002", ring_timeout: 20}
      - {id: c, number: "13800000003", ring_timeout: 20}
      - {id: d, number: "13800000004", ring_timeout: 20}
  desk:
    strategy: sequential
    lines:
      - {id: desk, target: "PJSIP/8001", ring_timeout: 20, max_calls: 2}
"""


def two_router_workspace(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "dialplans").mkdir()
    (tmp_path / "dialplans" / "4001230000.yaml").write_text(PLAN)
    return tmp_path / "config.yaml"


def test_round_robin_and_line_limits_hold_across_two_router_processes(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_a, cfg_b = two_router_workspace(tmp_path / "a"), two_router_workspace(tmp_path / "b")
    answer = DialScript("ANSWER", 1, 2)

    async def body() -> None:
        (ra, port_a), (rb, port_b) = await asyncio.gather(start(cfg_a, pg_url), start(cfg_b, pg_url))
        try:
            ports = (port_a, port_b)

            async def rr_call(i: int) -> None:
                script = CallScript(uniqueid=f"rr.{i}", dnid="4001230000", extension="4001230000", dtmf=("1",), default_dial=answer)
                t = await run_call("127.0.0.1", ports[i % 2], script, timeout=30)
                assert t.variables["CALLROUTER_RESULT"] == "ROUTED"

            for chunk in range(0, 200, 20):  # 20 calls at a time, alternating between the routers
                await asyncio.gather(*(rr_call(i) for i in range(chunk, chunk + 20)))

            hold = asyncio.Event()
            held = DialScript("ANSWER", 1, 30, hold=hold)
            desk_calls = [
                asyncio.create_task(run_call("127.0.0.1", ports[i % 2], CallScript(
                    uniqueid=f"desk.{i}", dnid="4001230000", extension="4001230000", dtmf=("2",), dial={"PJSIP/8001": held}), timeout=30))
                for i in range(6)
            ]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while sum(t.done() for t in desk_calls) < 4:  # the four that find the desk full end at once
                assert loop.time() < deadline, "calls that found the line full did not end"
                await asyncio.sleep(0.05)
            assert sum(not t.done() for t in desk_calls) == 2  # two calls talking on the desk, across both routers
            hold.set()
            transcripts = await asyncio.gather(*desk_calls)
            assert sum(bool(t.dials) for t in transcripts) == 2
            await wait_rows(pg_url, 206)
        finally:
            for r in (ra, rb):
                r.proc.terminate()
            for r in (ra, rb):
                await asyncio.wait_for(r.proc.wait(), 20)
                await r._reader

        engine = open_engine(make_url(pg_url))
        async with engine.connect() as conn:
            firsts = Counter((await conn.execute(
                select(call_attempts.c.line_id).where(call_attempts.c.seq == 1, call_attempts.c.call_uniqueid.like("rr.%"))
            )).scalars())
            instances = Counter((await conn.execute(select(calls.c.instance).where(calls.c.uniqueid.like("rr.%")))).scalars())
            desk = Counter((await conn.execute(
                select(call_attempts.c.status).where(call_attempts.c.call_uniqueid.like("desk.%"))
            )).scalars())
        await engine.dispose()
        assert len(instances) == 2 and sorted(instances.values()) == [100, 100]
        assert sorted(firsts) == ["a", "b", "c", "d"] and max(firsts.values()) - min(firsts.values()) <= 1, firsts
        assert desk == {"ANSWER": 2, "FULL": 4}

    arun(body(), 120)
