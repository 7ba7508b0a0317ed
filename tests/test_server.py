"""The FastAGI server against the Asterisk emulator over real loopback TCP."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import pytest

from callrouter.emulator.agi_args import parse_args
from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript, HangupAt
from callrouter.fastagi.session import display_name
from callrouter.routing.health import LineRecord
from callrouter.routing.hunt_start import HuntStart
from callrouter.store.memory import hunt_start_by_parts
from tests.harness import arun, call_held_in_dial, config_with_plan, running_router, sample_config

ZHANG, LI, WANG = (f"Local/1380013800{i}@callrouter-lines" for i in (1, 2, 3))
DESK, ZHAO = "PJSIP/8001", "Local/01088886666@callrouter-lines"


def verbs(t) -> list[str]:  # type: ignore[no-untyped-def]
    return [" ".join(c[:2]) if c[0] == "EXEC" else c[0] if c[0] in ("ANSWER", "HANGUP") else " ".join(c[:2]) for c in t.commands]


def test_a_call_pressing_1_reaches_sales() -> None:
    async def body() -> None:
        async with running_router() as router:
            t = await run_call("127.0.0.1", router.port, CallScript(dtmf=("1",), dial={ZHANG: DialScript("ANSWER", 4, 95)}))
            await router.settle(1)
            assert t.agi_status == "HANGUP" and t.error is None
            assert t.commands[:4] == [
                ["ANSWER"],
                ["STREAM", "FILE", "callrouter/welcome", ""],
                ["STREAM", "FILE", "callrouter/recording_notice", ""],
                ["GET", "DATA", "callrouter/main_menu", "5000", "1"],
            ]
            assert t.commands[4] == ["EXEC", "MixMonitor", "/var/spool/asterisk/monitor/callrouter/4008001234/2026-11-24/1700000000.1.wav,b"]
            hooks = "b(callrouter-dialing^s^1(PJSIP/trunk-00000001^1))U(callrouter-answered^PJSIP/trunk-00000001^1)"
            assert t.commands[5] == ["EXEC", "Dial", f"{ZHANG},20,{hooks}"]
            dial_reply = t.replies[5]
            # 7 s of prompts and menu, 4 s ringing, 95 s talking: Asterisk's ANSWEREDTIME would say 106.
            assert dial_reply == "200 result=-1"
            assert t.replies[6] == "200 result=1 (ANSWER|1:1700000007.000|1:1700000011.000|1700000106.000|" + ZHANG.split("/", 1)[1] + ")"
            assert t.replies.index("HANGUP") > 6  # the notice came later, as on Asterisk 22
            assert t.variables["CALLROUTER_RESULT"] == "ROUTED"
            (rec,) = router.sink.records
            assert (rec.disposition, rec.answered_line, rec.talk_seconds, rec.ring_seconds) == ("answered", "zhang", 95, 4)
            assert rec.ivr_path == ("main:1",) and rec.uniqueid == "1700000000.1" and rec.caller == "13912345678"
            assert 0 < rec.router_ms < 1000
            assert rec.recording_file == "/var/spool/asterisk/monitor/callrouter/4008001234/2026-11-24/1700000000.1.wav"
            assert router.sample("callrouter_calls_total", number="4008001234", disposition="answered") == 1
            assert router.sample("callrouter_sessions_ended_total", outcome="routed") == 1
            assert router.sample("callrouter_active_sessions") == 0

    arun(body())


def test_failover_across_busy_and_unanswered_lines() -> None:
    async def body() -> None:
        async with running_router() as router:
            dial = {ZHANG: DialScript("BUSY", 1), LI: DialScript("NOANSWER"), WANG: DialScript("ANSWER", 2, 10)}
            t = await run_call("127.0.0.1", router.port, CallScript(dtmf=("1",), dial=dial))
            await router.settle(1)
            assert [(d.targets, d.status) for d in t.dials] == [([ZHANG], "BUSY"), ([LI], "NOANSWER"), ([WANG], "ANSWER")]
            rec = router.sink.records[0]
            assert [(a.line_id, a.status, a.ring_seconds) for a in rec.attempts] == [
                ("zhang", "BUSY", 1), ("li", "NOANSWER", 20), ("wang", "ANSWER", 2)
            ]
            assert rec.answered_line == "wang"

    arun(body())


def test_round_robin_rotates_across_real_calls() -> None:
    async def body() -> None:
        async with running_router() as router:
            answered = []
            for i in range(4):
                script = CallScript(uniqueid=f"1700000000.{i}", dtmf=("1",), default_dial=DialScript("ANSWER", 1, 5))
                t = await run_call("127.0.0.1", router.port, script)
                answered.append(t.dials[0].targets[0])
            assert answered == [ZHANG, LI, WANG, ZHANG]

    arun(body())


def test_nobody_answers_voicemail_is_recorded() -> None:
    async def body() -> None:
        async with running_router() as router:
            t = await run_call("127.0.0.1", router.port, CallScript(dtmf=("1",)))
            await router.settle(1)
            assert [d.status for d in t.dials] == ["NOANSWER", "NOANSWER", "NOANSWER"]
            assert [d.timeout for d in t.dials] == [20, 20, 20]
            record = [c for c in t.commands if c[:2] == ["RECORD", "FILE"]]
            assert record and record[0][2] == "/var/spool/asterisk/callrouter-voicemail/4008001234-20261124-1700000000.1"
            assert t.commands[-2][0] == "HANGUP" or t.commands[-1][0] == "HANGUP" or ["HANGUP"] in t.commands
            rec = router.sink.records[0]
            assert rec.disposition in ("voicemail", "no_answer")

    arun(body())


def test_hostile_caller_id_name_cannot_become_a_command() -> None:
    evil = 'Bob" \\"; EXEC System "rm -rf /" ${SHELL(reboot)} \\\\ \r 张三'
    async def body() -> None:
        async with running_router() as router:
            script = CallScript(calleridname=evil, callerid='139"12345678 ${X}', dtmf=("1",), dial={ZHANG: DialScript("ANSWER", 1, 5)})
            t = await run_call("127.0.0.1", router.port, script)
            await router.settle(1)
            names = [c for c in t.commands if c[:3] == ["SET", "VARIABLE", "CALLERID(name)"]]
            assert names == [["SET", "VARIABLE", "CALLERID(name)", display_name(evil)]]
            assert "${SHELL(reboot)}" in t.variables["CALLERID(name)"]  # kept literally, never evaluated
            assert all(len(line.split("\n")) == 1 for line in t.lines)
            assert all(parse_args(line) == cmd for line, cmd in zip(t.lines, t.commands))
            assert not any(c[0] == "EXEC" and c[1] not in ("MixMonitor", "Dial") for c in t.commands)
            assert router.sink.records[0].caller == "13912345678"

    arun(body())


@pytest.mark.parametrize("order", ["during", "notice_first"])  # reply then HANGUP (Asterisk 22.10), and the reverse
def test_caller_hangs_up_during_the_menu(order: str, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with running_router() as router:
            t = await run_call("127.0.0.1", router.port, CallScript(hangup=HangupAt("GET DATA", mode=order)))  # type: ignore[arg-type]
            await router.settle(1)
            assert t.replies.count("HANGUP") == 1
            assert not t.dials
            # Nothing but the CHANNEL STATUS that asks whether the caller is still there meets the dead channel.
            refused = sum(r.startswith("511") for r in t.replies)
            assert refused == 0 or (refused == 1 and t.commands[-2:][0] == ["CHANNEL", "STATUS"])
            assert not any(c[:3] == ["WAIT", "FOR", "DIGIT"] for c in t.commands)
            (rec,) = router.sink.records
            assert rec.disposition == "abandoned" and rec.reason == "caller hung up in menu main"
            assert not [m for m in caplog.messages if "could not be played" in m]

    arun(body())


@pytest.mark.parametrize("order", ["during", "notice_first"])
def test_caller_hangs_up_while_a_line_rings(order: str) -> None:
    async def body() -> None:
        async with running_router() as router:
            t = await run_call("127.0.0.1", router.port, CallScript(dtmf=("1",), hangup=HangupAt("EXEC DIAL", 2, mode=order)))  # type: ignore[arg-type]
            await router.settle(1)
            assert [d.status for d in t.dials] == ["NOANSWER", "CANCEL"]
            rec = router.sink.records[0]
            assert rec.disposition == "abandoned"
            assert [(a.line_id, a.status) for a in rec.attempts] == [("zhang", "NOANSWER"), ("li", "CANCEL")]
            assert not any(r.startswith("511") for r in t.replies)

    arun(body())


def test_a_call_the_line_hangs_up_ends_on_a_live_caller_channel_without_extra_commands() -> None:
    """Asterisk 22.10.1: when the line hangs up, Dial replies -1 but the caller's channel stays up (no HANGUP
    notice): the router reads the Dial's figures, sets ROUTED and leaves; AGISTATUS=SUCCESS."""
    async def body() -> None:
        async with running_router() as router:
            t = await run_call("127.0.0.1", router.port, CallScript(dtmf=("1",), dial={ZHANG: DialScript("ANSWER", 4, 95, ended_by="line")}))
            await router.settle(1)
            after_dial = t.commands[[c[:2] for c in t.commands].index(["EXEC", "Dial"]) + 1:]
            assert [c[:2] for c in after_dial] == [["GET", "FULL"], ["SET", "VARIABLE"]], after_dial
            assert t.variables["CALLROUTER_RESULT"] == "ROUTED" and t.agi_status == "SUCCESS" and not t.hung_up
            assert not any(r.startswith("511") or r == "HANGUP" for r in t.replies)
            rec = router.sink.records[0]
            assert (rec.disposition, rec.answered_line, rec.talk_seconds, rec.ring_seconds) == ("answered", "zhang", 95, 4)

    arun(body())


def test_a_400_number_in_international_form_finds_its_plan() -> None:
    """Trunks deliver the dialled number as +86..., 0086... or 86...; the plan's number goes in the CDR."""
    forms = ("+86 400-800-1234", "00864008001234", "864008001234", "400-800-1234")

    async def body() -> None:
        async with running_router() as router:
            for i, form in enumerate(forms):
                t = await run_call("127.0.0.1", router.port, CallScript(args=(form,), uniqueid=f"1700000000.{i}", dtmf=("1",),
                                                                        dial={ZHANG: DialScript("ANSWER")}))
                assert t.variables["CALLROUTER_RESULT"] == "ROUTED", form
            missing = await run_call("127.0.0.1", router.port, CallScript(args=("+86 400-999-9999",)))
            assert missing.variables["CALLROUTER_RESULT"] == "NO_PLAN"
            await router.settle(len(forms))
            assert [r.number for r in router.sink.records] == ["4008001234"] * len(forms)

    arun(body())


def test_hangup_arriving_while_idle_between_commands() -> None:
    async def body() -> None:
        async with running_router() as router:
            t = await run_call("127.0.0.1", router.port, CallScript(hangup=HangupAt("STREAM FILE", 1, "after")))
            await router.settle(1)
            assert router.sink.records[0].disposition == "abandoned"
            assert t.variables["CALLROUTER_RESULT"] == "ROUTED"
            # At most the one command already in flight met the dead channel; nothing after it.
            assert sum(r.startswith("511") for r in t.replies) <= 1

    arun(body())


def test_unknown_script_and_unknown_number_are_handed_back_to_the_dialplan() -> None:
    async def body() -> None:
        async with running_router() as router:
            a = await run_call("127.0.0.1", router.port, CallScript(script="nosuch"))
            b = await run_call("127.0.0.1", router.port, CallScript(dnid="4009999999", extension="4009999999"))
            c = await run_call("127.0.0.1", router.port, CallScript(dtmf=("1",), dial={ZHANG: DialScript("ANSWER")}))
            assert a.variables["CALLROUTER_RESULT"] == "UNKNOWN_SCRIPT" and a.agi_status == "SUCCESS"
            assert b.variables["CALLROUTER_RESULT"] == "NO_PLAN"
            assert c.variables["CALLROUTER_RESULT"] == "ROUTED"
            assert router.sample("callrouter_sessions_ended_total", outcome="unknown_script") == 1
            assert router.sample("callrouter_sessions_ended_total", outcome="no_plan") == 1

    arun(body())


def test_number_can_come_as_an_agi_argument() -> None:
    async def body() -> None:
        async with running_router() as router:
            t = await run_call("127.0.0.1", router.port, CallScript(dnid="unknown", extension="s", args=("4008001234",), dtmf=("3",), dial={ZHAO: DialScript("ANSWER")}))
            assert t.dials[0].targets == [ZHAO]

    arun(body())


def test_malformed_environment_is_contained() -> None:
    async def body() -> None:
        async with running_router() as router:
            bad = await run_call("127.0.0.1", router.port, CallScript(raw_environment=b"agi_network: yes\nthis is not a header\n\n"))
            good = await run_call("127.0.0.1", router.port, CallScript(dtmf=("1",), dial={ZHANG: DialScript("ANSWER")}))
            assert bad.lines == [] and bad.agi_status == "SUCCESS"
            assert good.variables["CALLROUTER_RESULT"] == "ROUTED"
            assert router.sample("callrouter_protocol_errors_total", kind="RemoteProtocolError") == 1

    arun(body())


def test_newline_injected_into_the_environment_is_a_protocol_error() -> None:
    async def body() -> None:
        async with running_router() as router:
            raw = b"agi_network: yes\nagi_callerid: 139\nHANGUP\nagi_calleridname: x\n\n"
            t = await run_call("127.0.0.1", router.port, CallScript(raw_environment=raw))
            assert t.lines == []
            assert router.sample("callrouter_sessions_ended_total", outcome="protocol_error") == 1

    arun(body())


def test_silent_peer_times_out() -> None:
    async def body() -> None:
        config = sample_config(timeouts=sample_config().service.timeouts.model_copy(update={"environment": 0.2}))
        async with running_router(config) as router:
            reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
            assert await asyncio.wait_for(reader.read(), 3) == b""  # the server hung up on us
            writer.close()
            await asyncio.sleep(0.05)
            assert router.sample("callrouter_sessions_ended_total", outcome="timeout") == 1

    arun(body())


def test_line_limit_is_respected_across_concurrent_calls_and_released() -> None:
    async def body() -> None:
        async with running_router() as router:
            first, hold = await call_held_in_dial(router, ZHAO, "3", uniqueid="1.1")
            assert router.sample("callrouter_active_sessions") == 1  # read from the server when scraped
            second = await run_call("127.0.0.1", router.port, CallScript(uniqueid="1.2", dtmf=("3",), default_dial=DialScript("ANSWER", 1, 5)))
            assert [d.targets for d in second.dials] == [[ZHANG]]  # zhao (max_calls 1) was skipped
            hold.set()
            await first
            await router.settle(2)
            assert router.sample("callrouter_active_sessions") == 0
            assert await router.state.active(ZHAO) == 0
            second_rec = next(r for r in router.sink.records if r.uniqueid == "1.2")
            assert [(a.line_id, a.status) for a in second_rec.attempts] == [("zhao", "FULL"), ("zhang", "ANSWER")]

    arun(body())


def test_session_cap_hands_extra_calls_back() -> None:
    async def body() -> None:
        async with running_router(sample_config(max_sessions=1)) as router:
            first, hold = await call_held_in_dial(router, ZHANG, "1")
            extra = await run_call("127.0.0.1", router.port, CallScript())
            assert extra.variables["CALLROUTER_RESULT"] == "BUSY"
            assert extra.commands == [["SET", "VARIABLE", "CALLROUTER_RESULT", "BUSY"]]
            hold.set()
            assert (await first).variables["CALLROUTER_RESULT"] == "ROUTED"
            assert router.sample("callrouter_sessions_ended_total", outcome="rejected_busy") == 1

    arun(body())


class ExplodingState:
    """A store that fails: the call using it must fail alone."""

    remote = False

    async def next_turn(self, key: str) -> int:
        raise RuntimeError("store exploded")

    async def acquire(self, line_key: str, limit: int) -> bool:
        return True

    async def release(self, line_key: str) -> None: ...

    async def active(self, line_key: str) -> int:
        return 0

    async def last_used(self, line_keys: tuple[str, ...]) -> dict[str, float]:
        return {}

    async def mark_used(self, line_key: str, when: float) -> None: ...

    async def line_health(self, line_keys: tuple[str, ...]) -> dict[str, LineRecord]:
        return {}

    async def report_line(self, line_key: str, status: str, when: float) -> tuple[LineRecord, LineRecord]:
        return LineRecord(line_key), LineRecord(line_key)

    async def start_hunt(self, turn_key: str | None, lines: tuple[tuple[str, int], ...], health: bool) -> HuntStart:
        return await hunt_start_by_parts(self, turn_key, lines, health)  # a turn explodes, as next_turn does

    def release_soon(self, line_key: str) -> None: ...

    def report_soon(self, line_key: str, status: str, when: float) -> asyncio.Future[tuple[LineRecord, LineRecord]]:
        done: asyncio.Future[tuple[LineRecord, LineRecord]] = asyncio.get_running_loop().create_future()
        done.set_result((LineRecord(line_key), LineRecord(line_key)))
        return done


def test_a_crash_in_one_call_touches_no_other_call() -> None:
    async def body() -> None:
        async with running_router(state=ExplodingState()) as router:
            crashed, fine = await asyncio.gather(
                run_call("127.0.0.1", router.port, CallScript(uniqueid="1.1", dtmf=("1",))),  # sales: round robin
                run_call("127.0.0.1", router.port, CallScript(uniqueid="1.2", dtmf=("3",), default_dial=DialScript("ANSWER"))),
            )
            await router.settle(2)
            assert crashed.variables["CALLROUTER_RESULT"] == "ERROR"
            assert fine.variables["CALLROUTER_RESULT"] == "ROUTED"
            by_id = {r.uniqueid: r for r in router.sink.records}
            assert by_id["1.1"].disposition == "error" and by_id["1.2"].disposition == "answered"
            assert router.sample("callrouter_sessions_ended_total", outcome="error") == 1

    arun(body())


def test_drain_lets_calls_finish_then_refuses_new_ones() -> None:
    async def body() -> None:
        async with running_router() as router:
            call, hold = await call_held_in_dial(router, ZHANG, "1")
            port = router.port
            drain = asyncio.create_task(router.server.drain(5.0))
            await asyncio.sleep(0.1)
            try:
                await run_call("127.0.0.1", port, CallScript())
                refused = False
            except OSError:
                refused = True
            assert refused
            hold.set()
            assert await drain == 0
            assert (await call).variables["CALLROUTER_RESULT"] == "ROUTED"
            assert router.sink.records[0].disposition == "answered"

    arun(body())


def test_drain_timeout_cuts_calls_off_but_keeps_their_records() -> None:
    async def body() -> None:
        async with running_router() as router:
            call, hold = await call_held_in_dial(router, ZHANG, "1")
            assert await router.server.drain(0.2) == 1
            (rec,) = router.sink.records
            assert (rec.disposition, rec.reason) == ("error", "cut off by router shutdown")
            assert (rec.ivr_path, rec.group, rec.recording_file is not None) == (("main:1",), "sales", True)  # kept for disputes
            assert await router.state.active(ZHANG) == 0
            hold.set()
            await asyncio.wait_for(call, 5)

    arun(body())


def test_peer_silent_after_a_command_times_out() -> None:
    async def body() -> None:
        timeouts = sample_config().service.timeouts.model_copy(update={"command": 0.3})
        async with running_router(sample_config(timeouts=timeouts)) as router:
            reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
            writer.write(b"agi_network: yes\nagi_network_script: route\nagi_uniqueid: 1.9\nagi_callerid: 139\nagi_dnid: 4008001234\n\n")
            first = await asyncio.wait_for(reader.readline(), 3)
            assert first == b"ANSWER\n"
            # ...and we never answer it.
            rest = await asyncio.wait_for(reader.read(), 3)
            assert rest == b""  # the server gave up and closed
            writer.close()
            await router.settle(1)
            assert router.sink.records[0].disposition == "error"
            assert router.sample("callrouter_sessions_ended_total", outcome="timeout") == 1

    arun(body())


def test_least_recent_over_real_calls(tmp_path: Path) -> None:
    config = config_with_plan(
        tmp_path,
        'number: "4001110000"\nname: lr\nentry: {hunt: g}\nhunt_groups:\n  g:\n    strategy: least_recent\n    lines:\n'
        '      - {id: a, target: "PJSIP/a"}\n      - {id: b, target: "PJSIP/b"}\n      - {id: c, target: "PJSIP/c"}\n',
    )
    clock = iter(range(1_700_000_000, 1_700_000_100))

    async def body() -> None:
        async with running_router(config) as router:
            router.server.deps.clock = lambda: datetime.fromtimestamp(next(clock), timezone.utc)
            first = []
            for i in range(5):
                script = CallScript(uniqueid=f"2.{i}", dnid="4001110000", extension="4001110000",
                                    dial={"PJSIP/b": DialScript("BUSY")}, default_dial=DialScript("ANSWER", 1, 5))
                t = await run_call("127.0.0.1", router.port, script)
                first.append(t.dials[0].targets[0])
            assert first == ["PJSIP/a", "PJSIP/b", "PJSIP/b", "PJSIP/b", "PJSIP/b"]  # b never answers, so it stays "least recent"
            answered = [r.answered_line for r in router.sink.records]
            assert answered == ["a", "c", "a", "c", "a"]

    arun(body())


def test_missing_menu_prompt_still_lets_the_caller_choose() -> None:
    async def body() -> None:
        async with running_router() as router:
            script = CallScript(missing_files=frozenset({"callrouter/main_menu"}), dtmf=("3",), default_dial=DialScript("ANSWER"))
            t = await run_call("127.0.0.1", router.port, script)
            await router.settle(1)
            assert ["WAIT", "FOR", "DIGIT", "5000"] in t.commands
            assert t.dials[0].targets == [ZHAO]  # pressed 3: complaints
            assert router.sink.records[0].ivr_path == ("main:3",)

    arun(body())


def test_ring_all_maps_the_answering_line_from_dialedpeernumber(tmp_path: Path) -> None:
    config = config_with_plan(
        tmp_path,
        'number: "4001110000"\nname: all\nentry: {hunt: g}\nhunt_groups:\n  g:\n    strategy: ring_all\n    lines:\n'
        '      - {id: a, number: "13800000001"}\n      - {id: b, number: "13800000002"}\n      - {id: c, target: "PJSIP/c"}\n',
    )

    async def body() -> None:
        async with running_router(config) as router:
            dial = {"Local/13800000001@callrouter-lines": DialScript("ANSWER", 9), "Local/13800000002@callrouter-lines": DialScript("ANSWER", 4)}
            t = await run_call("127.0.0.1", router.port, CallScript(dnid="4001110000", extension="4001110000", dial=dial))
            await router.settle(1)
            assert t.dials[0].targets == ["Local/13800000001@callrouter-lines", "Local/13800000002@callrouter-lines", "PJSIP/c"]
            assert t.variables["DIALEDPEERNUMBER"] == "13800000002@callrouter-lines"
            assert router.sink.records[0].answered_line == "b"

    arun(body())


def test_voicemail_that_cannot_be_written_is_not_a_hangup() -> None:
    async def body() -> None:
        async with running_router() as router:
            script = CallScript(dtmf=("1",), existing_dirs=frozenset({"/elsewhere"}))
            t = await run_call("127.0.0.1", router.port, script)
            await router.settle(1)
            assert "200 result=-1 (writefile)" in t.replies
            rec = router.sink.records[0]
            assert (rec.disposition, rec.voicemail_file) == ("no_answer", None)  # not "abandoned"
            assert t.commands[-2] == ["HANGUP"]  # the call was ended properly, not left hanging

    arun(body())


def test_caller_who_hangs_up_after_speaking_leaves_a_message() -> None:
    async def body() -> None:
        async with running_router() as router:
            t = await run_call("127.0.0.1", router.port, CallScript(dtmf=("1",), hangup=HangupAt("RECORD FILE")))
            await router.settle(1)
            assert "200 result=-1 (hangup) endpos=24000" in t.replies
            rec = router.sink.records[0]
            assert rec.disposition == "voicemail"
            assert rec.voicemail_file == "/var/spool/asterisk/callrouter-voicemail/4008001234-20261124-1700000000.1.wav"
            assert not any(r.startswith("511") for r in t.replies)

    arun(body())


def test_a_port_check_that_connects_and_leaves_is_not_a_protocol_error() -> None:
    async def body() -> None:
        async with running_router() as router:
            _, writer = await asyncio.open_connection("127.0.0.1", router.port)
            writer.close()
            await writer.wait_closed()
            good = await run_call("127.0.0.1", router.port, CallScript(dtmf=("1",), default_dial=DialScript("ANSWER")))
            assert good.variables["CALLROUTER_RESULT"] == "ROUTED"
            assert router.sample("callrouter_sessions_ended_total", outcome="closed_early") == 1
            assert router.sample("callrouter_protocol_errors_total", kind="RemoteProtocolError") == 0

    arun(body())


def test_a_line_is_free_again_as_soon_as_its_dial_returns_while_the_call_goes_on() -> None:
    """zhang did not answer; while the same caller talks to li, zhang can take another call."""

    async def body() -> None:
        async with running_router() as router:
            hold = asyncio.Event()
            dial = {ZHANG: DialScript("NOANSWER"), LI: DialScript("ANSWER", 1, 30, hold=hold)}
            task = asyncio.create_task(run_call("127.0.0.1", router.port, CallScript(dtmf=("1",), dial=dial)))
            while not await router.state.active(LI):
                await asyncio.sleep(0.01)
            assert await router.state.active(ZHANG) == 0  # released when its Dial came back, not at the call's end
            assert await router.state.active(LI) == 1
            hold.set()
            await task
            await router.settle(1)
            assert await router.state.active(LI) == 0
            assert [a.status for a in router.sink.records[0].attempts] == ["NOANSWER", "ANSWER"]

    arun(body())


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_accepted_agi_connections_have_tcp_nodelay(loop_kind: str) -> None:
    """AgiChannel does not set TCP_NODELAY itself (issue 15): both event loops set it on every accepted
    TCP socket. If a loop stopped doing so, each command's reply would wait on Nagle's algorithm."""
    import socket

    import uvloop

    from callrouter.fastagi.channel import AgiChannel

    async def body() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(AgiChannel):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await asyncio.get_running_loop().create_server(lambda: Probe(command_timeout=5), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(seen, 5)
        finally:
            writer.close()
            server.close()

    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(body()) != 0
