"""Two real `callrouter serve` processes on one Postgres (issue 14): a plan saved through one router's
admin API is routed by both within 2 s (the other hears it by LISTEN/NOTIFY), and a save with several
changes is never seen half: every call placed meanwhile runs either the old plan whole or the new one."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, CallTranscript, DialScript
from tests.harness import arun
from tests.test_cdr_durability import start
from tests.test_process import ROOT

NUMBER = "4001230001"
PLAN = f"""# two routers, one plan (a comment ops wrote: it must survive every save)
number: "{NUMBER}"
name: plan versions
entry: {{menu: main}}
menus:
  main:
    prompt: main_menu   # the old menu recording
    options:
      "1": {{hunt: sales}}
hunt_groups:
  sales:
    strategy: sequential
    lines:
      - {{id: a, number: "13800000001", ring_timeout: 20, max_calls: 100}}
      - {{id: b, number: "13800000002", ring_timeout: 20, max_calls: 100}}
      - {{id: c, number: "13800000003", ring_timeout: 20, max_calls: 100}}
"""
# Two changes in one save: another menu recording and another answer order.
NEW = PLAN.replace("prompt: main_menu", "prompt: main_menu_v2").replace(
    '      - {id: a, number: "13800000001", ring_timeout: 20, max_calls: 100}\n      - {id: b, number: "13800000002", ring_timeout: 20, max_calls: 100}\n'
    '      - {id: c, number: "13800000003", ring_timeout: 20, max_calls: 100}\n',
    '      - {id: c, number: "13800000003", ring_timeout: 20, max_calls: 100}\n      - {id: b, number: "13800000002", ring_timeout: 20, max_calls: 100}\n'
    '      - {id: a, number: "13800000001", ring_timeout: 20, max_calls: 100}\n',
)
OLD_SEEN, NEW_SEEN = ("main_menu", "13800000001"), ("main_menu_v2", "13800000003")


def workspace(folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    (folder / "dialplans").mkdir()
    (folder / "dialplans" / f"{NUMBER}.yaml").write_text(PLAN)
    return folder / "config.yaml"


def seen(t: CallTranscript) -> tuple[str, str]:
    """(the menu recording played, the first line rung): both old or both new, never one of each."""
    assert t.variables.get("CALLROUTER_RESULT") == "ROUTED", t.variables
    menu = next(p for p in t.played if "main_menu" in p)
    assert t.dials, t.lines
    first = t.dials[0].targets[0]
    return menu.rsplit("/", 1)[-1], next(n for n in ("13800000001", "13800000002", "13800000003") if n in first)


def test_a_save_reaches_both_routers_within_2_s_and_whole(pg_url: str, tmp_path: Path) -> None:
    assert NEW != PLAN and "main_menu_v2" in NEW and NEW.index("13800000003") < NEW.index("13800000001")

    async def body() -> None:
        (ra, port_a), (rb, port_b) = await asyncio.gather(start(workspace(tmp_path / "a"), pg_url, 60), start(workspace(tmp_path / "b"), pg_url, 60))
        try:
            for r in (ra, rb):
                await r.wait_for(r"plan listener: listening on callrouter_plans", timeout=20)
            admin_a = int((await ra.wait_for(r"admin API listening on 127\.0\.0\.1:(\d+)")).group(1))
            ports = {"a": port_a, "b": port_b}
            counter = iter(range(1_000_000))

            async def call(router: str) -> tuple[str, str]:
                script = CallScript(uniqueid=f"{router}.{next(counter)}", dnid=NUMBER, extension=NUMBER, dtmf=("1",),
                                    default_dial=DialScript("ANSWER", 0.01, 0.01))
                return seen(await run_call("127.0.0.1", ports[router], script, timeout=30))

            assert await call("a") == OLD_SEEN and await call("b") == OLD_SEEN
            observed: dict[str, list[tuple[str, str]]] = {"a": [], "b": []}
            stop = asyncio.Event()

            async def keep_calling(router: str) -> None:  # calls all through the change, on both routers
                while not stop.is_set():
                    observed[router].append(await call(router))

            callers = [asyncio.create_task(keep_calling(r)) for r in ("a", "a", "b", "b")]
            await asyncio.sleep(0.3)
            loop = asyncio.get_running_loop()
            async with aiohttp.ClientSession() as http:
                headers = {"Content-Type": "application/yaml", "If-Match": "file", "X-Summary": "c first, new menu"}
                async with http.put(f"http://127.0.0.1:{admin_a}/api/plans/{NUMBER}", data=NEW.encode(), headers=headers) as resp:
                    assert resp.status == 201, await resp.text()
                    saved_at = loop.time()
                    assert (await resp.json())["version"] == 2
            assert await call("a") == NEW_SEEN  # the router that saved runs it at once
            while await call("b") != NEW_SEEN:
                assert loop.time() - saved_at <= 2.0, "router b did not route by the new plan within 2 s of the save"
            reached_b = loop.time() - saved_at
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*callers)
            await rb.wait_for(r"plan versions from the database \((notify|listen)\): 4001230001 v2")  # by LISTEN, not the poll
            for router, seen_there in observed.items():
                assert set(seen_there) <= {OLD_SEEN, NEW_SEEN}, (router, set(seen_there))  # never half a change
                assert seen_there[-1] == NEW_SEEN
                first_new = seen_there.index(NEW_SEEN)
                assert all(s == NEW_SEEN for s in seen_there[first_new:]), router  # and never back
            assert len(observed["a"]) > 3 and len(observed["b"]) > 3
            print(f"router b routed by the new plan {reached_b * 1000:.0f} ms after the save")
        finally:
            for r in (ra, rb):
                r.proc.terminate()
            for r in (ra, rb):
                await asyncio.wait_for(r.proc.wait(), 20)
                await r._reader

    arun(body(), 120)
