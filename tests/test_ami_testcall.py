"""`callrouter test-call`: through an AMI-speaking peer that plays the call against a real router process."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
import sys
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
import yaml

from callrouter.ami.client import AmiLoginRefused, AmiOriginateRefused, AmiTimeout, AmiUnreachable
from callrouter.ami.run import place
from callrouter.ami.testcall import PlacedCall, originate_refusal, report
from callrouter.config.loader import RoutingConfig, load_config
from callrouter.emulator.ami import AmiPeer
from callrouter.emulator.script import DialScript
from callrouter.store.calls import StoredCall
from tests.harness import arun
from tests.test_process import ENV, ServerProcess

ROOT = Path(__file__).resolve().parent.parent
SECRET = "ami-test-secret"
DESK_A, DESK_B = "Local/13800000001@callrouter-lines", "Local/13800000002@callrouter-lines"

OPEN_PLAN = """
number: "4008001234"
name: Test Co
entry: {hunt: desk}
hunt_groups:
  desk:
    strategy: sequential
    lines:
      - {id: desk_a, number: "13800000001", ring_timeout: 10}
      - {id: desk_b, number: "13800000002", ring_timeout: 10}
"""

CLOSED_PLAN = """
number: "4008009999"
name: Closed Co
schedule:
  weekly: {{mon: ["09:00-18:00"]}}
  special_days: {{"{today}": [], "{tomorrow}": []}}
entry: {{hunt: desk}}
hunt_groups:
  desk:
    lines:
      - {{id: desk_a, number: "13800000001"}}
"""


def workspace(tmp_path: Path, ami_port: int) -> Path:
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "dialplans").mkdir()
    (tmp_path / "dialplans" / "open.yaml").write_text(OPEN_PLAN)
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    (tmp_path / "dialplans" / "closed.yaml").write_text(CLOSED_PLAN.format(today=today, tomorrow=today + timedelta(days=1)))
    doc = yaml.safe_load((tmp_path / "config.yaml").read_text())
    doc["ami"] = {"port": ami_port, "call_timeout": 20}
    doc["admin"] = {"enabled": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    cfg = tmp_path / "config.yaml"
    subprocess.run([sys.executable, "-m", "callrouter", "db", "upgrade", "--config", str(cfg)], check=True, capture_output=True, env=ENV)
    return cfg


@asynccontextmanager
async def asterisk_and_router(tmp_path: Path, **lines: DialScript) -> AsyncIterator[tuple[RoutingConfig, AmiPeer]]:
    peer = AmiPeer("callrouter", SECRET, "127.0.0.1", 0, lines={DESK_A: lines.get("a", DialScript("BUSY", 1)), DESK_B: lines.get("b", DialScript("ANSWER", 2, 5))})
    ami_port = await peer.start()
    cfg = workspace(tmp_path, ami_port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", "0",
        stderr=asyncio.subprocess.PIPE, cwd=str(tmp_path), env=ENV,
    )
    server = ServerProcess(proc)
    try:
        peer.agi_port = int((await server.wait_for(r"FastAGI listening on 127\.0\.0\.1:(\d+)")).group(1))
        yield load_config(str(cfg)), peer
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
        await peer.close()


@pytest.fixture(autouse=True)
def ami_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLROUTER_AMI_SECRET", SECRET)
    monkeypatch.delenv("CALLROUTER_DATABASE_URL", raising=False)  # the CDR is read from the workspace's own store


def with_ami(config: RoutingConfig, **changes: object) -> RoutingConfig:
    ami = config.service.ami.model_copy(update=changes)
    return dataclasses.replace(config, service=config.service.model_copy(update={"ami": ami}))


# -- the pure fold ---------------------------------------------------------------------------------

def ev(name: str, channel: str, uniqueid: str, linkedid: str, **extra: str) -> dict[str, str]:
    return {"Event": name, "Channel": channel, "Uniqueid": uniqueid, "Linkedid": linkedid, **extra}


def test_events_of_other_calls_are_ignored_and_dials_are_followed() -> None:
    call = PlacedCall("Local/4008001234@from-pstn-400-")
    for e in [
        ev("Newchannel", "PJSIP/trunk-0001", "9.1", "9.1"),  # another call on the box
        ev("Newchannel", "Local/4008001234@from-pstn-400-00000001;1", "1.10", "1.10"),
        ev("Newchannel", "Local/4008001234@from-pstn-400-00000001;2", "1.11", "1.10"),
        ev("DialBegin", "PJSIP/trunk-0001", "9.1", "9.1", DestUniqueid="9.2", DialString="x"),
        ev("VarSet", "Local/4008001234@from-pstn-400-00000001;2", "1.11", "1.10", Variable="CALLROUTER_RESULT", Value="ROUTED"),
        ev("DialBegin", "Local/4008001234@from-pstn-400-00000001;2", "1.11", "1.10", DestUniqueid="1.12", DialString="13800000001@callrouter-lines"),
        ev("DialEnd", "Local/4008001234@from-pstn-400-00000001;2", "1.11", "1.10", DestUniqueid="1.12", DialStatus="BUSY"),
        ev("Hangup", "Local/4008001234@from-pstn-400-00000001;2", "1.11", "1.10", **{"Cause-txt": "User busy"}),
    ]:
        call.feed(e)
    assert call.inbound_uniqueid == "1.11" and call.variables == {"CALLROUTER_RESULT": "ROUTED"} and call.hung_up
    assert [(d.target, d.status) for d in call.dials.values()] == [("13800000001@callrouter-lines", "BUSY")]
    r = report("4008001234", "139", call, None, [], "database unreachable (OSError)")
    assert not r.answered and "dialled 13800000001@callrouter-lines" in "\n".join(r.lines) and "User busy" in r.lines[-1]


def routed_call(result: str, agi_status: str = "SUCCESS") -> PlacedCall:
    call = PlacedCall("Local/4008001234@from-pstn-400-")
    call.feed(ev("Newchannel", "Local/4008001234@from-pstn-400-00000001;1", "1.10", "1.10"))
    call.feed(ev("Newchannel", "Local/4008001234@from-pstn-400-00000001;2", "1.11", "1.10"))
    for name, value in (("CALLROUTER_RESULT", result), ("AGISTATUS", agi_status)):
        call.feed(ev("VarSet", "Local/4008001234@from-pstn-400-00000001;2", "1.11", "1.10", Variable=name, Value=value))
    return call


def test_the_cdr_decides_blacklisted_and_a_fallback_is_called_out() -> None:
    at = datetime(2026, 11, 24, 2, 30, tzinfo=ZoneInfo("UTC"))
    cdr = StoredCall(
        1, "1.11", "", "4008001234", "13900000000", "13900000000", "", at, None, at, 0, 0, 0, "blacklisted", "caller on the blacklist",
        "", None, None, None, None, None, None, "router-1", 1.0,
    )
    r = report("4008001234", "13900000000", routed_call("ROUTED"), cdr, [], "")
    assert not r.answered and r.exit_code == 1 and "the caller is blacklisted" in r.lines[-1]
    assert "router: handled the call (CALLROUTER_RESULT=ROUTED)" in r.lines
    r = report("4008001234", "13900000000", routed_call("", "FAILURE"), None, [], "none: Asterisk could not reach the router")
    assert "router: did NOT route the call (CALLROUTER_RESULT=(not set), AGISTATUS=FAILURE)" in r.lines[1]
    assert r.lines[-1] == "not answered" and not r.answered


def test_originate_answers_are_told_apart() -> None:
    assert originate_refusal({"Response": "Error", "Message": "Permission denied"}) == "Permission denied"
    assert originate_refusal([{"Response": "Success"}, {"Response": "Failure", "Reason": "0"}]) == "no such extension or context"
    assert originate_refusal([{"Response": "Success"}, {"Response": "Failure", "Reason": "1"}]) is None
    assert originate_refusal([{"Response": "Success"}, {"Response": "Success", "Reason": "4"}]) is None


# -- against the AMI peer and a real router ------------------------------------------------------

def test_a_test_call_answered_by_the_second_line_after_the_first_was_busy(tmp_path: Path) -> None:
    async def body() -> None:
        async with asterisk_and_router(tmp_path) as (config, peer):
            result = await place(config, "4008001234", "13912345678")
            text = "\n".join(result.lines)
            assert result.answered and result.exit_code == 0, text
            assert "router: handled the call (CALLROUTER_RESULT=ROUTED)" in text
            assert "line desk_a" in text and "BUSY" in text and "answered by line desk_b" in text
            originate = next(a for a in peer.received if a["action"] == "Originate")
            assert originate["channel"] == "Local/4008001234@from-pstn-400" and "<13912345678>" in originate["callerid"]
            assert originate["actionid"].startswith("callrouter-test-") and originate["application"] == "Wait"
            assert originate["variable"] == f"CALLROUTER_TEST_CALL={originate['actionid']}"

            # The database out of reach: the report stands on Asterisk's events alone, and says so.
            with pytest.MonkeyPatch.context() as env:
                env.setenv("CALLROUTER_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
                result = await place(config, "4008001234", "13912345678")
            text = "\n".join(result.lines)
            assert result.answered and "router's CDR: database unreachable" in text, text
            assert "dialled 13800000001@callrouter-lines" in text and "line desk_a" in text and "BUSY" in text
            assert result.lines[-1] == "answered by line desk_b", text

            # A call that outlives --timeout is hung up through AMI and reported as a timeout.
            peer.lines = {DESK_A: DialScript("ANSWER", 1, 5, hold=asyncio.Event())}
            with pytest.raises(AmiTimeout, match="did not end within 1 s.*callrouter hung it up") as timed_out:
                await place(config, "4008001234", "13912345678", timeout=1)
            assert timed_out.value.exit_code == 6
            hangup = [a for a in peer.received if a["action"] == "Hangup"]
            assert len(hangup) == 1 and hangup[0]["channel"].startswith("Local/4008001234@from-pstn-400-") and hangup[0]["channel"].endswith(";1")

    arun(body(), timeout=60)


def test_all_lines_failing_is_reported_with_their_statuses(tmp_path: Path) -> None:
    async def body() -> None:
        async with asterisk_and_router(tmp_path, a=DialScript("CHANUNAVAIL", 0), b=DialScript("NOANSWER", 10)) as (config, _):
            result = await place(config, "4008001234", "13912345678")
            text = "\n".join(result.lines)
            assert not result.answered and result.exit_code == 1
            assert "every line failed (desk_a CHANUNAVAIL, desk_b NOANSWER)" in text, text

    arun(body(), timeout=60)


def test_a_number_closed_now_is_reported_as_after_hours(tmp_path: Path) -> None:
    async def body() -> None:
        async with asterisk_and_router(tmp_path) as (config, _):
            result = await place(config, "4008009999", "13912345678")
            text = "\n".join(result.lines)
            assert not result.answered and "after_hours" in text and "closed at this time" in text, text

    arun(body(), timeout=60)


def test_login_and_connection_failures_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        peer = AmiPeer("callrouter", SECRET, "127.0.0.1", 9)
        port = await peer.start()
        cfg = workspace(tmp_path, port)
        config = load_config(str(cfg))
        try:
            monkeypatch.setenv("CALLROUTER_AMI_SECRET", "wrong")
            with pytest.raises(AmiLoginRefused, match="refused the login: Authentication failed") as refused:
                await place(config, "4008001234", "13912345678")
            assert refused.value.exit_code == 4
            monkeypatch.setenv("CALLROUTER_AMI_SECRET", SECRET)
            # Asterisk refuses the Originate itself (no `originate` write class), or cannot place it (no such context).
            peer.originate_permitted = False
            with pytest.raises(AmiOriginateRefused, match="refused the Originate: Permission denied") as refused_originate:
                await place(config, "4008001234", "13912345678")
            assert refused_originate.value.exit_code == 5
            peer.originate_permitted = True
            with pytest.raises(AmiOriginateRefused, match="no such extension or context"):
                await place(with_ami(config, inbound_context="from-elsewhere"), "4008001234", "13912345678")
        finally:
            await peer.close()
        with pytest.raises(AmiUnreachable, match=f"cannot reach AMI at 127.0.0.1:{port}") as unreachable:
            await place(config, "4008001234", "13912345678")
        assert unreachable.value.exit_code == 3

        # Something that accepts the connection but never speaks AMI: a timeout, not a hang.
        silent_peer_done = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # until the client gives up
            writer.close()
            silent_peer_done.set()

        silent_server = await asyncio.start_server(silent, "127.0.0.1", 0)
        silent_port = silent_server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(AmiTimeout, match=f"AMI at 127.0.0.1:{silent_port} did not answer the login within 0.5 s"):
                await place(with_ami(config, port=silent_port, connect_timeout=0.5), "4008001234", "13912345678")
            await asyncio.wait_for(silent_peer_done.wait(), 10)  # and the connection was closed
        finally:
            silent_server.close()
            await silent_server.wait_closed()

        originates = sum(a.get("action") == "Originate" for a in peer.received)
        for hostile in ["139\r\nAction: Originate", "abc", "13912345678\x00", "+"]:
            with pytest.raises(ValueError, match="--from"):
                await place(config, "4008001234", hostile)
        with pytest.raises(ValueError, match="--timeout"):
            await place(config, "4008001234", "13912345678", timeout=0)
        assert sum(a.get("action") == "Originate" for a in peer.received) == originates

    arun(body(), timeout=60)


def test_the_command_end_to_end(tmp_path: Path) -> None:
    async def body() -> None:
        async with asterisk_and_router(tmp_path) as (config, _):
            env = {**ENV, "CALLROUTER_AMI_SECRET": SECRET}
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callrouter", "test-call", "--config", config.config_path, "--number", "400-800-1234",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )
            out, err = await asyncio.wait_for(child.communicate(), 40)
            assert child.returncode == 0, err.decode()
            assert "answered by line desk_b" in out.decode()
            env["CALLROUTER_AMI_SECRET"] = "nope"
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callrouter", "test-call", "--config", config.config_path, "--number", "4008001234",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )
            out, err = await asyncio.wait_for(child.communicate(), 40)
            assert child.returncode == 4 and "refused the login" in err.decode()
            assert "nope" not in out.decode() + err.decode()
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callrouter", "test-call", "--config", config.config_path, "--number", "4008001234",
                "--from", "139\r\nAction: Hangup", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )
            out, err = await asyncio.wait_for(child.communicate(), 40)
            assert child.returncode == 2 and "--from" in err.decode() and not out

    arun(body(), timeout=90)


