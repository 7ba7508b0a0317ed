"""Two real router processes against one Postgres share line health: calls through one suspend a line,
the other stops dialling it at once, and the manager is told once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.engine import make_url

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript
from callrouter.store.db import open_engine
from callrouter.store.schema import outbox
from tests.harness import arun
from tests.test_cdr_durability import start
from tests.test_process import workspace

ZHANG = "Local/13800138001@callrouter-lines"
ZHAO = "Local/01088886666@callrouter-lines"


def test_a_line_suspended_through_one_router_is_not_dialled_by_the_other(pg_url: str, tmp_path: Path) -> None:
    configs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        cfg = workspace(tmp_path / name)
        doc = yaml.safe_load(cfg.read_text())
        doc["notify"]["sms"] = {"url": "http://127.0.0.1:9/sms"}  # nobody listens: the messages wait in the outbox
        cfg.write_text(yaml.safe_dump(doc, allow_unicode=True))
        configs.append(cfg)
    dial = {ZHAO: DialScript("BUSY", 1), ZHANG: DialScript("CHANUNAVAIL", 0)}

    async def call(port: int, uid: str) -> list[str]:
        t = await run_call("127.0.0.1", port, CallScript(uniqueid=uid, dtmf=("3",), dial=dial), timeout=30)  # complaints: zhao, zhang
        assert t.variables["CALLROUTER_RESULT"] == "ROUTED"
        return [target for d in t.dials for target in d.targets]

    async def body() -> None:
        (ra, port_a), (rb, port_b) = await asyncio.gather(start(configs[0], pg_url), start(configs[1], pg_url))
        try:
            assert await call(port_b, "b.1") == [ZHAO, ZHANG]
            assert await call(port_a, "a.1") == [ZHAO, ZHANG]  # the second unreachable call in a row: suspended
            assert await call(port_b, "b.2") == [ZHAO]  # the other router skips it
            assert await call(port_a, "a.2") == [ZHAO]
        finally:
            for r in (ra, rb):
                r.proc.terminate()
            for r in (ra, rb):
                await asyncio.wait_for(r.proc.wait(), 20)
                await r._reader
        assert any("line zhang of 4008001234 suspended" in line for line in ra.log), ra.log
        engine = open_engine(make_url(pg_url))
        async with engine.connect() as conn:
            rows = (await conn.execute(select(outbox.c.kind, outbox.c.recipient, outbox.c.payload).where(outbox.c.kind == "line_health"))).all()
        await engine.dispose()
        assert [(kind, recipient) for kind, recipient, _ in rows] == [("line_health", "13800138000")]
        assert "400-800-1234 line 张伟 (138****8001) unreachable since" in rows[0][2]

    arun(body(), 120)
