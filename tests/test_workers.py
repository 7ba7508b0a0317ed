"""`callrouter serve --workers 2` as a real process tree on Postgres: both workers take calls on the one port, a
line's limit holds across them, a reload (SIGHUP or the admin API) reaches both, a killed worker is started
again, SIGTERM drains and exits 0; refused where the state would be per process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, CallTranscript, DialScript
from callrouter.store.db import open_engine
from callrouter.store.schema import active_calls, calls
from tests.harness import arun
from tests.test_process import ROOT, ServerProcess
from tests.test_two_routers import two_router_workspace

READY = r"callrouter ready: 2 workers on FastAGI 127\.0\.0\.1:(\d+) \(pids (\d+), (\d+)\)"


class CountingEvent(asyncio.Event):
    """A Dial hold that counts the calls parked on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def wait(self) -> bool:  # type: ignore[override]
        self.waiting += 1
        return await super().wait()


def env_for(db_url: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CALLROUTER_DATABASE_URL", None)
    if db_url:
        env["CALLROUTER_DATABASE_URL"] = db_url
    return env


async def start_workers(cfg: Path, db_url: str) -> tuple[ServerProcess, int, list[int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", "0", "--admin-port", "0", "--workers", "2",
        stderr=asyncio.subprocess.PIPE, cwd=str(cfg.parent), env=env_for(db_url),
    )
    server = ServerProcess(proc)
    ready = await server.wait_for(READY, timeout=60)
    return server, int(ready.group(1)), [int(ready.group(2)), int(ready.group(3))]


def rr_call(uid: str, dial: DialScript | None = None) -> CallScript:
    return CallScript(uniqueid=uid, dnid="4001230000", extension="4001230000", dtmf=("1",), default_dial=dial or DialScript("ANSWER", 1, 2))


def desk_call(uid: str, dial: DialScript) -> CallScript:
    return CallScript(uniqueid=uid, dnid="4001230000", extension="4001230000", dtmf=("2",), dial={"PJSIP/8001": dial})


async def instances_of(db_url: str, like: str, n: int, timeout: float = 30) -> dict[str, str]:
    """uniqueid -> the instance (host:pid:id) that routed it, once `n` CDRs matching `like` are stored."""
    engine = open_engine(make_url(db_url))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            async with engine.connect() as conn:
                rows = dict((await conn.execute(select(calls.c.uniqueid, calls.c.instance).where(calls.c.uniqueid.like(like)))).all())
            if len(rows) >= n:
                return rows
            assert loop.time() < deadline, f"only {len(rows)} of {n} CDRs like {like}"
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def live_instances(db_url: str, n: int, timeout: float = 10) -> list[str]:
    """The instances of the calls in progress (active_calls), once there are `n`."""
    engine = open_engine(make_url(db_url))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            async with engine.connect() as conn:
                rows = list((await conn.execute(select(active_calls.c.instance))).scalars())
            if len(rows) >= n:
                return rows
            assert loop.time() < deadline, f"only {len(rows)} of {n} calls in progress"
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


def pid_of(instance: str) -> int:
    return int(instance.split(":")[1])  # host:pid:random (store.routing_state.new_instance_id)


def test_two_workers_share_the_port_the_limits_reloads_restarts_and_drain(pg_url: str, tmp_path: Path) -> None:
    cfg = two_router_workspace(tmp_path)
    plan = tmp_path / "dialplans" / "4001230000.yaml"

    async def body() -> None:
        server, port, pids = await start_workers(cfg, pg_url)
        proc = server.proc
        try:
            # Both workers take calls on the one port (the kernel spreads the connections).
            for chunk in range(0, 40, 20):
                done = await asyncio.gather(*(run_call("127.0.0.1", port, rr_call(f"rr.{i}"), timeout=30) for i in range(chunk, chunk + 20)))
                assert [t.variables.get("CALLROUTER_RESULT") for t in done] == ["ROUTED"] * 20
            routed = await instances_of(pg_url, "rr.%", 40)
            assert sorted({pid_of(i) for i in routed.values()}) == sorted(pids)
            assert len(set(routed.values())) == 2
            assert (tmp_path / "var" / "cdr-spool" / ".lock").exists() and (tmp_path / "var" / "cdr-spool" / "worker-1" / ".lock").exists()

            # max_calls 2 on the desk holds across the workers: two calls talk, every other call finds it
            # full, whichever worker has it (calls are placed until each worker has refused one).
            hold = CountingEvent()
            talking = [asyncio.create_task(run_call("127.0.0.1", port, desk_call(f"desk.{i}", DialScript("ANSWER", 1, 30, hold=hold)), timeout=60))
                       for i in range(2)]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while hold.waiting < 2:
                assert loop.time() < deadline, "the two desk calls did not reach Dial"
                await asyncio.sleep(0.05)
            assert len(await live_instances(pg_url, 2)) == 2
            refused_by: set[str] = set()
            full: list[CallTranscript] = []
            for i in range(40):
                t = await run_call("127.0.0.1", port, desk_call(f"full.{i}", DialScript("ANSWER", 1, 30)), timeout=30)
                full.append(t)
                refused_by.add((await instances_of(pg_url, f"full.{i}", 1))[f"full.{i}"])
                if len(refused_by) == 2:
                    break
            assert len(refused_by) == 2, "40 calls all reached one worker"
            assert all(not t.dials for t in full)  # the desk was never rung a third time
            hold.set()
            assert all(bool(t.dials) for t in await asyncio.gather(*talking))

            # SIGHUP to the parent reloads both workers.
            plan.write_text(plan.read_text().replace("13800000001", "13800000009"))
            mark = len(server.log)
            proc.send_signal(signal.SIGHUP)
            await server.wait_for(r"configuration reloaded: 1 plans", after=mark)
            await asyncio.sleep(1.0)
            assert sum("configuration reloaded" in line for line in server.log[mark:]) == 2, server.log[mark:]

            # The admin API's reload (here worker 0's) reaches the other worker through the parent.
            admin_ports = [int(m.group(1)) for line in server.log if (m := re.search(r"admin API listening on 127\.0\.0\.1:(\d+)", line))]
            assert len(admin_ports) == 2
            mark = len(server.log)
            request = urllib.request.Request(f"http://127.0.0.1:{admin_ports[0]}/api/reload", method="POST")
            reply = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(request, timeout=10).read()))
            assert reply["reloaded"] is True
            loop_deadline = loop.time() + 10
            while sum("configuration reloaded" in line for line in server.log[mark:]) < 2:
                assert loop.time() < loop_deadline, server.log[mark:]
                await asyncio.sleep(0.1)

            # A worker killed is logged and started again; calls go on meanwhile and after.
            mark = len(server.log)
            os.kill(pids[1], signal.SIGKILL)
            died = await server.wait_for(r"worker (\d) \(pid (\d+)\) died \(signal SIGKILL\); starting it again in 1 s", after=mark)
            assert int(died.group(2)) == pids[1]
            again = await server.wait_for(rf"worker {died.group(1)} started again \(pid (\d+)\)", after=mark, timeout=60)
            new_pid = int(again.group(1))
            assert new_pid not in pids
            seen: set[int] = set()
            for chunk in range(0, 60, 20):
                done = await asyncio.gather(*(run_call("127.0.0.1", port, rr_call(f"after.{i}"), timeout=30) for i in range(chunk, chunk + 20)))
                assert [t.variables.get("CALLROUTER_RESULT") for t in done] == ["ROUTED"] * 20
                rung = {target for t in done for d in t.dials for target in d.targets}  # (lines take 1 call: some find all busy)
                assert "Local/13800000001@callrouter-lines" not in rung and "Local/13800000009@callrouter-lines" in rung  # the reloaded plan
                seen = {pid_of(i) for i in (await instances_of(pg_url, "after.%", chunk + 20)).values()}
                if new_pid in seen:
                    break
            assert seen == {pids[0], new_pid}

            # SIGTERM: the calls in progress finish, then every worker and the parent leave with 0.
            hold = CountingEvent()
            last = [asyncio.create_task(run_call("127.0.0.1", port, rr_call(f"last.{i}", DialScript("ANSWER", 1, 1, hold=hold)), timeout=60))
                    for i in range(3)]  # 4 lines of one call each
            deadline = loop.time() + 20
            while hold.waiting < 3:
                assert loop.time() < deadline, "the last calls did not reach Dial"
                await asyncio.sleep(0.05)
            mark = len(server.log)
            proc.send_signal(signal.SIGTERM)
            await server.wait_for(r"stopping: draining 2 workers", after=mark)
            await asyncio.sleep(0.5)
            assert proc.returncode is None  # still draining
            hold.set()
            assert [t.variables.get("CALLROUTER_RESULT") for t in await asyncio.gather(*last)] == ["ROUTED"] * 3
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            await instances_of(pg_url, "last.%", 3)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for pid in pids:  # never left behind, whatever failed (a restarted one stops with its parent)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await server._reader
        assert not any("Traceback" in line for line in server.log), "\n".join(server.log)

    arun(body(), 240)


def test_workers_are_refused_where_the_routing_state_would_be_per_process(tmp_path: Path) -> None:
    cfg = two_router_workspace(tmp_path)

    def serve(db_url: str | None, port: int = 0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", str(port), "--workers", "2"],
                              capture_output=True, text=True, env=env_for(db_url), cwd=str(tmp_path), timeout=60)

    nowhere = "postgresql+asyncpg://nobody@127.0.0.1:1/none"  # refused before any connection
    with socket.socket() as taken:  # a port another server listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = serve(nowhere, port)
    assert busy.returncode == 2
    assert f"FastAGI cannot listen on 127.0.0.1:{port}: Address already in use" in busy.stderr

    sqlite = serve(None)
    assert sqlite.returncode == 2
    assert "--workers 2 needs the routing state shared through Postgres" in sqlite.stderr
    assert "up to N times its limit" in sqlite.stderr

    cfg.write_text(cfg.read_text().replace("routing_state: auto", "routing_state: local"))
    local = serve(nowhere)
    assert local.returncode == 2
    assert "--workers 2 needs store.routing_state auto or shared: with local" in local.stderr
    assert "Traceback" not in local.stderr + sqlite.stderr + busy.stderr
