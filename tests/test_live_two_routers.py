"""Calls in progress across two real router processes on one Postgres: the console's live view (any router's)
sees both routers' calls and their busy line; a router killed with -9 stops counting after `lease_ttl`, and
the other sweeps its rows; a call that ends goes."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.engine import make_url

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, CallTranscript, DialScript
from callrouter.store.db import open_engine
from callrouter.store.live_calls import leased_lines, live_calls
from callrouter.store.schema import active_calls
from tests.harness import arun
from tests.test_cdr_durability import start
from tests.test_two_routers import two_router_workspace

NUMBER = "4001230000"
DESK = "PJSIP/8001"


def workspace(folder: Path) -> Path:
    folder.mkdir()
    cfg = two_router_workspace(folder)
    doc = yaml.safe_load(cfg.read_text())
    doc["store"] = {**doc.get("store", {}), "lease_ttl": 3}  # the shortest: a dead router's calls go within seconds
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return cfg


def test_calls_in_progress_are_shared_by_two_routers_and_a_dead_routers_calls_go(pg_url: str, tmp_path: Path) -> None:
    cfg_a, cfg_b = workspace(tmp_path / "a"), workspace(tmp_path / "b")

    async def body() -> None:
        engine = open_engine(make_url(pg_url))
        loop = asyncio.get_running_loop()

        async def shown(want: set[str], state: str | None = None, timeout: float = 15) -> list[tuple[str, str, str]]:
            deadline = loop.time() + timeout
            while True:
                now = datetime.now(timezone.utc)
                rows = await live_calls(engine, numbers=frozenset({NUMBER}), now=now)
                if {r.uniqueid for r in rows} == want and all(state in (None, r.state) for r in rows):
                    return [(r.uniqueid, r.state, r.instance) for r in rows]
                assert loop.time() < deadline, f"live calls {[(r.uniqueid, r.state) for r in rows]}, wanted {want}"
                await asyncio.sleep(0.1)

        (ra, port_a), (rb, port_b) = await asyncio.gather(start(cfg_a, pg_url), start(cfg_b, pg_url))
        hold_a, hold_b = asyncio.Event(), asyncio.Event()

        def desk_call(uniqueid: str, port: int, hold: asyncio.Event) -> asyncio.Task[CallTranscript]:
            script = CallScript(uniqueid=uniqueid, callerid=f"1390000{uniqueid[-4:]}", dnid=NUMBER, extension=NUMBER, dtmf=("2",),
                                dial={DESK: DialScript("ANSWER", 1, 30, hold=hold)})
            return asyncio.create_task(run_call("127.0.0.1", port, script, timeout=60))

        try:
            on_a, on_b = desk_call("live.0001", port_a, hold_a), desk_call("live.0002", port_b, hold_b)
            rows = await shown({"live.0001", "live.0002"}, "ringing")  # in the menu first, then on the desk line
            assert len({instance for _, _, instance in rows}) == 2  # one call on each router
            assert await leased_lines(engine, [DESK], now=datetime.now(timezone.utc)) == {DESK: 2}
            async with engine.connect() as conn:
                lines = set((await conn.execute(select(active_calls.c.line_id))).scalars())
            assert lines == {"desk"}

            rb.proc.kill()  # kill -9: router b never removes its rows
            await rb.proc.wait()
            hold_b.set()  # the emulated caller hangs up its end too
            await asyncio.gather(on_b, return_exceptions=True)
            await shown({"live.0001"}, timeout=15)  # b's row stops counting once its registration is stale
            deadline = loop.time() + 15
            while True:  # ... and router a's sweep removes it
                async with engine.connect() as conn:
                    left = set((await conn.execute(select(active_calls.c.uniqueid))).scalars())
                if left == {"live.0001"}:
                    break
                assert loop.time() < deadline, left
                await asyncio.sleep(0.2)

            hold_a.set()
            transcript = await on_a
            assert transcript.variables["CALLROUTER_RESULT"] == "ROUTED"
            await shown(set())
        finally:
            hold_a.set()
            hold_b.set()
            for r in (ra, rb):
                if r.proc.returncode is None:
                    r.proc.terminate()
            for r in (ra, rb):
                await asyncio.wait_for(r.proc.wait(), 20)
                await r._reader
        async with engine.connect() as conn:  # a router that stops takes its rows along
            assert (await conn.execute(select(active_calls.c.uniqueid))).all() == []
        await engine.dispose()

    arun(body(), 120)
