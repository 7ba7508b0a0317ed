"""`callrouter serve` as a real process: signals, reload, shutdown, records on disk."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from callrouter.emulator.asterisk import run_call
from callrouter.store.db import head_revision
from callrouter.emulator.script import CallScript, DialScript
from tests.harness import arun

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("CALLROUTER_DATABASE_URL", None)  # these tests use the embedded default store in their own folder


class ServerProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.log.append(raw.decode(errors="replace").rstrip())

    async def wait_for(self, pattern: str, timeout: float = 10.0, after: int = 0) -> re.Match[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for line in self.log[after:]:
                m = re.search(pattern, line)
                if m:
                    return m
            await asyncio.sleep(0.02)
        raise AssertionError(f"no log line matching {pattern!r}; log:\n" + "\n".join(self.log))


async def start_serve(cfg: Path) -> tuple[ServerProcess, int]:
    """`callrouter serve` on a free port; returns the process wrapper and the port it listens on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", "0", "--admin-port", "0",
        stderr=asyncio.subprocess.PIPE, cwd=str(cfg.parent), env=ENV,
    )
    server = ServerProcess(proc)
    port = int((await server.wait_for(r"FastAGI listening on 127\.0\.0\.1:(\d+)")).group(1))
    return server, port


def workspace(tmp_path: Path) -> Path:
    """A copy of the sample, open around the clock: these tests run on the real clock."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(ROOT / "dialplans", tmp_path / "dialplans")
    plan = tmp_path / "dialplans" / "4008001234.yaml"
    text = plan.read_text()
    start, end = text.index("schedule:\n"), text.index("after_hours:\n")
    plan.write_text(text[:start] + text[end:])
    cfg = tmp_path / "config.yaml"
    subprocess.run([sys.executable, "-m", "callrouter", "db", "upgrade", "--config", str(cfg)], check=True, capture_output=True, env=ENV)
    return cfg


def test_serve_reloads_on_sighup_keeps_old_config_on_errors_and_drains_on_sigterm(tmp_path: Path) -> None:
    cfg = workspace(tmp_path)
    plan = tmp_path / "dialplans" / "4008001234.yaml"

    async def body() -> None:
        server, port = await start_serve(cfg)
        proc = server.proc
        await server.wait_for(r"callrouter\.db \(routing state local\)")  # auto: SQLite serves one host
        try:
            answer = DialScript("ANSWER", 1, 5)
            first = await run_call("127.0.0.1", port, CallScript(uniqueid="1.1", dtmf=("3",), default_dial=answer))
            assert first.dials[0].targets == ["Local/01088886666@callrouter-lines"]

            plan.write_text(plan.read_text().replace('{id: zhao, name: "赵强", number: "01088886666", ring_timeout: 25}\n      - {id: zhang', '{id: zhao, name: "赵强", number: "01099990000", ring_timeout: 25}\n      - {id: zhang'))
            mark = len(server.log)
            proc.send_signal(signal.SIGHUP)
            await server.wait_for(r"configuration reloaded: 1 plans", after=mark)
            second = await run_call("127.0.0.1", port, CallScript(uniqueid="1.2", dtmf=("3",), default_dial=answer))
            assert second.dials[0].targets == ["Local/01099990000@callrouter-lines"]

            good_text = plan.read_text()
            plan.write_text(good_text.replace("ring_budget: 45", "ring_budget: 45\n    ring_budgte: 50"))
            mark = len(server.log)
            proc.send_signal(signal.SIGHUP)
            refused = await server.wait_for(r"reload refused, keeping the running configuration: (.*)", after=mark)
            bad_line = plan.read_text().splitlines().index("    ring_budgte: 50") + 1
            assert refused.group(1) == f"{plan}:{bad_line}: hunt_groups.complaints.ring_budgte: unknown key"
            third = await run_call("127.0.0.1", port, CallScript(uniqueid="1.3", dtmf=("3",), default_dial=answer))
            assert third.dials[0].targets == ["Local/01099990000@callrouter-lines"]  # still the last good config

            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await server._reader
        with sqlite3.connect(tmp_path / "var" / "callrouter.db") as db:
            rows = db.execute("SELECT uniqueid, disposition FROM calls ORDER BY started_at").fetchall()
        assert rows == [("1.1", "answered"), ("1.2", "answered"), ("1.3", "answered")]
        assert not list((tmp_path / "var" / "cdr-spool").glob("*.spool"))  # all stored, spool cleared on stop

    arun(body(), timeout=60)


def test_serve_refuses_to_start_on_a_broken_config(tmp_path: Path) -> None:
    cfg = workspace(tmp_path)
    (tmp_path / "dialplans" / "bad.yaml").write_text("number: 4001\nname: x\nentry: {hunt: nope}\n")

    async def body() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", "0", "--admin-port", "0",
            stderr=asyncio.subprocess.PIPE, env=ENV,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 2
        assert "bad.yaml:3: entry: no hunt named 'nope'" in err.decode()

    arun(body())


def test_serve_refuses_a_database_without_the_current_schema_and_says_what_to_do(tmp_path: Path) -> None:
    cfg = workspace(tmp_path)
    with sqlite3.connect(tmp_path / "var" / "callrouter.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '0000'")
    run = subprocess.run([sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", "0", "--admin-port", "0"],
                         capture_output=True, text=True, env=ENV, timeout=30)
    assert run.returncode == 2
    assert "is at schema 0000, which this version of callrouter does not know (was it migrated by a newer release?)" in run.stderr
    status = subprocess.run([sys.executable, "-m", "callrouter", "db", "status", "--config", str(cfg)], capture_output=True, text=True, env=ENV)
    assert status.returncode == 1 and f"schema 0000, this version needs {head_revision()}" in status.stdout
    upgrade = subprocess.run([sys.executable, "-m", "callrouter", "db", "upgrade", "--config", str(cfg)], env=ENV, capture_output=True, text=True)
    assert upgrade.returncode == 2 and "does not know" in upgrade.stderr and "Traceback" not in upgrade.stderr
    with sqlite3.connect(tmp_path / "var" / "callrouter.db") as db:
        db.execute("DELETE FROM alembic_version")  # as a database from before the first migration would look
    run = subprocess.run([sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", "0", "--admin-port", "0"],
                         capture_output=True, text=True, env=ENV, timeout=30)
    assert run.returncode == 2 and "has no callrouter schema: run `callrouter db upgrade` first" in run.stderr


def test_simulate_places_calls_against_a_running_server(tmp_path: Path) -> None:
    cfg = workspace(tmp_path)

    async def simulate(port: int, *args: str) -> tuple[int, str]:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callrouter", "simulate", "--port", str(port), "--number", "4008001234", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=ENV,
        )
        out, _ = await asyncio.wait_for(child.communicate(), 30)
        return child.returncode or 0, out.decode()

    async def body() -> None:
        server, port = await start_serve(cfg)
        proc = server.proc
        try:
            code, out = await simulate(port, "--digits", "1", "--target", "Local/13800138001@callrouter-lines=BUSY",
                                       "--target", "Local/13800138002@callrouter-lines=ANSWER:4:30")
            assert code == 0, out
            assert '>> EXEC "Dial" "Local/13800138001@callrouter-lines,20,b(callrouter-dialing^s^1(' in out
            assert "dial Local/13800138001@callrouter-lines (20s): BUSY" in out
            assert "dial Local/13800138002@callrouter-lines (20s): ANSWER, answered by Local/13800138002@callrouter-lines" in out
            assert "CALLROUTER_RESULT=ROUTED" in out
            code, out = await simulate(port, "--calls", "20", "--concurrency", "5", "--default", "ANSWER", "--quiet")
            assert code == 0, out
            assert "20 calls in" in out
            # Three sales lines carry one call each: with 5 calls at once some find every line full.
            counts = {k: int(v) for k, v in re.findall(r"(\w+/\w+|\w+/-): (\d+)", out)}
            assert sum(counts.values()) == 20 and all(k.startswith("ROUTED/") for k in counts), out
            assert counts.get("ROUTED/ANSWER", 0) >= 3
            code, out = await simulate(port, "--target", "nonsense")
            assert code == 2 and "write TARGET=STATUS" in out
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 10)

    arun(body(), timeout=90)


def test_probe_reports_health_over_fastagi(tmp_path: Path) -> None:
    cfg = workspace(tmp_path)

    async def body() -> None:
        server, port = await start_serve(cfg)
        proc = server.proc
        try:
            for expected_code, expected_text, target_port in ((0, "healthy", port), (1, "unhealthy: cannot connect", 1)):
                probe = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "callrouter", "probe", "--port", str(target_port),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=ENV,
                )
                out, _ = await asyncio.wait_for(probe.communicate(), 20)
                assert probe.returncode == expected_code and expected_text in out.decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 10)
            await server._reader
        assert not any("protocol error" in line or "went silent" in line for line in server.log)

    arun(body(), timeout=60)


def test_serve_says_where_the_console_is_and_how_to_make_the_first_account(tmp_path: Path) -> None:
    cfg = workspace(tmp_path)

    async def body() -> None:
        server, _ = await start_serve(cfg)
        try:
            hint = await server.wait_for(r"console \(管理后台\) at (http://127\.0\.0\.1:\d+/console/) has no account yet: (.*)")
            assert "callrouter users add --provider" in hint.group(2)
        finally:
            server.proc.send_signal(signal.SIGTERM)
            await server.proc.wait()
        done = subprocess.run([sys.executable, "-m", "callrouter", "users", "add", "--provider", "admin", "--password-stdin", "--config", str(cfg)],
                              input="a-long-enough-password\n", capture_output=True, text=True, env=ENV, cwd=str(tmp_path))
        assert done.returncode == 0, done.stdout + done.stderr
        server, _ = await start_serve(cfg)
        try:
            await server.wait_for(r"console \(管理后台\) at http://127\.0\.0\.1:\d+/console/$")
            assert not [line for line in server.log if "has no account yet" in line]
        finally:
            server.proc.send_signal(signal.SIGTERM)
            await server.proc.wait()

    arun(body(), timeout=60)


def test_serve_on_a_taken_port_says_so_and_exits_2(tmp_path: Path) -> None:
    cfg = workspace(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", str(port), "--admin-port", "0"],
                              capture_output=True, text=True, env=ENV, cwd=str(tmp_path), timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"FastAGI cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
