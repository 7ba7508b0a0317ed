"""Logs that follow one call: JSON (one object per line) or text, each line written while routing a call
carrying its uniqueid (and in JSON its number and a short caller hash, never the caller's number);
a real `serve` with `--log-format json`, and `callrouter lines status` asking it which lines work."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import signal
import sys
from pathlib import Path

import pytest

from callrouter.cli.common import log_handler
from callrouter.config.service import ServiceConfig
from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript
from callrouter.fastagi.calllog import identify, marking
from tests.harness import arun
from tests.test_process import ENV, ServerProcess, workspace

CALLER = "13912345678"
HASH = hashlib.sha256(CALLER.encode()).hexdigest()[:8]
ZHANG = "Local/13800138001@callrouter-lines"


def emit(fmt: str) -> list[str]:
    out = io.StringIO()
    handler = log_handler(fmt, out)
    log = logging.getLogger("callrouter.test.calllog")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        log.info("before the call")
        with marking("1700000000.1"):
            log.info("header read")
            identify("4008001234", CALLER)
            log.warning("line %s: %s", "zhang", "unreachable")
            try:
                raise ValueError("boom\nsecond line")
            except ValueError:
                log.exception("routing failed")
        log.info("after the call")
    finally:
        log.removeHandler(handler)
    return out.getvalue().splitlines()


def test_json_logs_are_one_object_per_line_with_the_call_inside_a_call() -> None:
    lines = emit("json")
    records = [json.loads(line) for line in lines]
    assert len(records) == 5
    before, header, warning, failed, after = records
    assert set(before) == {"time", "level", "logger", "message"} == set(after)
    assert before["message"] == "before the call" and before["level"] == "INFO" and before["logger"] == "callrouter.test.calllog"
    assert header["uniqueid"] == "1700000000.1" and "number" not in header
    assert warning == {**warning, "level": "WARNING", "message": "line zhang: unreachable", "uniqueid": "1700000000.1",
                       "number": "4008001234", "caller_hash": HASH}
    assert failed["uniqueid"] == "1700000000.1" and "ValueError: boom\nsecond line" in failed["exc"]
    assert CALLER not in "\n".join(lines)


def test_text_logs_stay_the_default_and_carry_the_uniqueid_inside_a_call() -> None:
    lines = emit("text")
    assert lines[0].endswith("INFO callrouter.test.calllog: before the call")
    assert lines[1].endswith("INFO callrouter.test.calllog: [1700000000.1] header read")
    assert lines[2].endswith("WARNING callrouter.test.calllog: [1700000000.1] line zhang: unreachable")
    assert lines[-1].endswith("INFO callrouter.test.calllog: after the call")
    assert ServiceConfig().logging.format == "text"
    with pytest.raises(ValueError, match="'text' or 'json'"):
        ServiceConfig.model_validate({"logging": {"format": "xml"}})


def test_a_real_serve_writes_json_logs_that_follow_each_call_and_lines_status_asks_it(tmp_path: Path) -> None:
    cfg = workspace(tmp_path)

    async def body() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", "0", "--admin-port", "0", "--log-format", "json",
            stderr=asyncio.subprocess.PIPE, cwd=str(cfg.parent), env=ENV,
        )
        server = ServerProcess(proc)
        try:
            port = int((await server.wait_for(r"FastAGI listening on 127\.0\.0\.1:(\d+)")).group(1))
            admin = int((await server.wait_for(r"admin API listening on 127\.0\.0\.1:(\d+)")).group(1))
            dead = {ZHANG: DialScript("CHANUNAVAIL", 0), "Local/01088886666@callrouter-lines": DialScript("BUSY", 1)}
            for i in (1, 2):  # complaints: zhao busy, zhang unreachable: the second call suspends zhang
                t = await run_call("127.0.0.1", port, CallScript(uniqueid=f"1800000000.{i}", callerid=CALLER, dtmf=("3",), dial=dead))
                assert t.variables["CALLROUTER_RESULT"] == "ROUTED"
            await run_call("127.0.0.1", port, CallScript(uniqueid="1800000000.3", dnid="4009990000", extension="4009990000"))
            await server.wait_for(r"no routing plan for number")
            await server.wait_for(r"line zhang of 4008001234 suspended")
            status = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callrouter", "lines", "status", "--config", str(cfg), "--api", f"http://127.0.0.1:{admin}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
            )
            out, err = await asyncio.wait_for(status.communicate(), 30)
            text = out.decode()
            assert status.returncode == 1, err.decode()  # a line is suspended
            assert "400-800-1234 示例科技 Example Tech: 4 of 5 lines working" in text
            assert "zhang" in text and "138****8001" in text and "suspended" in text and "2 calls unreachable in a row since" in text
            assert "13800138001" not in text
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)
            await server._reader
        records = [json.loads(line) for line in server.log]  # every line of stderr is one JSON object
        assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
        no_plan = next(r for r in records if "no routing plan" in r["message"])
        assert no_plan["uniqueid"] == "1800000000.3" and no_plan["number"] == "4009990000"
        suspended = next(r for r in records if "suspended" in r["message"])
        assert (suspended["uniqueid"], suspended["number"], suspended["caller_hash"]) == ("1800000000.2", "4008001234", HASH)
        assert "uniqueid" not in next(r for r in records if r["message"].startswith("FastAGI listening"))
        assert CALLER not in "\n".join(server.log)

    arun(body(), timeout=90)


def test_serve_takes_the_format_from_the_config_and_the_flag_wins(tmp_path: Path) -> None:
    cfg = workspace(tmp_path)
    text = cfg.read_text()
    assert "logging:\n  format: text" in text
    cfg.write_text(text.replace("logging:\n  format: text", "logging:\n  format: json"))

    async def started(*flags: str) -> list[str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", "0", "--admin-port", "0", *flags,
            stderr=asyncio.subprocess.PIPE, cwd=str(cfg.parent), env=ENV,
        )
        server = ServerProcess(proc)
        try:
            await server.wait_for(r"callrouter ready")
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)
            await server._reader
        return server.log

    async def body() -> None:
        assert all(json.loads(line)["level"] for line in await started())
        text = await started("--log-format", "text")
        assert any(line.endswith("callrouter.app: callrouter ready: 1 plans (4008001234)") for line in text), text
        assert not text[0].startswith("{")

    arun(body(), timeout=60)
