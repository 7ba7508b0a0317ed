"""Ring and talk time are the bound line's own, on Asterisk's clock (issue: talk time as Asterisk means it).

Dial's ANSWEREDTIME/DIALEDTIME come from the *calling* channel (app_dial.c end_bridge_callback), so after
an IVR they include the menu and every earlier attempt. The emulator now returns exactly that, and the
router must not read them as the line's talk time.
"""

from __future__ import annotations

import pytest

from callrouter.agi.dialtiming import hook_options, normal_status, parse_summary, whole_seconds
from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript
from tests.harness import NOW, arun, running_router

ZHANG = "Local/13800138001@callrouter-lines"
LI = "Local/13800138002@callrouter-lines"


def test_stamps_give_ring_and_talk_of_the_line() -> None:
    t = parse_summary("ANSWER|2:100.000|2:102.000|104.600|13800138002@x/n", seq=2, elapsed=99.0, gap=0.1)
    assert (t.status, t.peer, t.timed_by) == ("ANSWER", "13800138002@x/n", "asterisk")
    assert t.ring_seconds == pytest.approx(2.0) and t.talk_seconds == pytest.approx(2.5)


def test_a_stamp_of_an_earlier_dial_is_not_taken_for_this_one() -> None:
    t = parse_summary("ANSWER|1:100.000|1:101.000|110.000|p", seq=2, elapsed=7.0, gap=0.0)
    assert t.timed_by == "router" and (t.ring_seconds, t.talk_seconds) == (0.0, 7.0)


@pytest.mark.parametrize("summary", ["", "ANSWER", "ANSWER|x|y|z|p", "ANSWER|2:nan|2:inf|-5|p", "ANSWER|2:1e400|2:1|1e400|"])
def test_garbage_summaries_fall_back_to_the_router_clock(summary: str) -> None:
    t = parse_summary(summary, seq=2, elapsed=3.0, gap=0.0)
    assert t.timed_by == "router" and t.ring_seconds >= 0 and t.talk_seconds >= 0


def test_an_unanswered_dial_rings_from_its_b_stamp() -> None:
    t = parse_summary("NOANSWER|3:50.000||70.250|", seq=3, elapsed=0.001, gap=0.25)
    assert (t.timed_by, t.ring_seconds, t.talk_seconds) == ("asterisk", pytest.approx(20.0), 0.0)


def test_hook_options_refuse_a_channel_name_that_would_change_the_dial() -> None:
    assert hook_options("PJSIP/trunk-0000001a", 1) == (
        "b(callrouter-dialing^s^1(PJSIP/trunk-0000001a^1))U(callrouter-answered^PJSIP/trunk-0000001a^1)"
    )
    assert hook_options("Local/4008001234@from-pstn-400-00000003;2", 4).endswith("^4)")
    for hostile in ("PJSIP/a,b", "PJSIP/a^b", "PJSIP/a)b", "PJSIP/${EVIL}", "PJSIP/a|b", "", "PJSIP/a b"):
        assert hook_options(hostile, 1) == ""


def test_statuses_outside_the_documented_set_become_other() -> None:
    assert [normal_status(s) for s in ("ANSWER", "BUSY", "", "WEIRD", "answer", "X" * 500)] == [
        "ANSWER", "BUSY", "CHANUNAVAIL", "OTHER", "OTHER", "OTHER"]
    assert [whole_seconds(x) for x in (0.0, 0.49, 0.5, 2.5, 3.5, -1.0)] == [0, 0, 1, 3, 4, 0]


def test_menu_then_a_failed_first_line_then_the_answer() -> None:
    """The call of the issue: n1 rang (no answer), w1 rang 2.0 s and talked 2.6 s after a menu."""

    async def body() -> None:
        async with running_router() as router:
            dial = {ZHANG: DialScript("NOANSWER"), LI: DialScript("ANSWER", 2.0, 2.6)}
            t = await run_call("127.0.0.1", router.port, CallScript(dtmf=("1",), dial=dial))
            await router.settle(1)
            summaries = [r for r in t.replies if r.startswith("200 result=1 (")]
            # What Asterisk itself says after the answered Dial: the caller's up time, IVR and attempt 1 included.
            assert t.variables["ANSWEREDTIME"] == str(int(7 + 20 + 2.0 + 2.6)) and t.variables["DIALEDTIME"] == "31"
            assert len(summaries) == 2
            (rec,) = router.sink.records
            assert [(a.line_id, a.status, a.ring_seconds, a.talk_seconds) for a in rec.attempts] == [
                ("zhang", "NOANSWER", 20, 0), ("li", "ANSWER", 2, 3)]
            assert rec.talk_seconds == 3 and rec.ring_seconds == 22
            assert rec.answered_at is not None and (rec.answered_at - NOW).total_seconds() == pytest.approx(2.0)
            assert router.sample("callrouter_dial_timing_total", clock="asterisk") == 2
            assert "line li (Local/13800138002@callrouter-lines, 20s): ANSWER after 2s ringing, talked 3s" in rec.trace

    arun(body())


def test_an_older_dialplan_without_the_hooks_is_named_in_the_trace() -> None:
    async def body() -> None:
        async with running_router() as router:
            script = CallScript(dtmf=("1",), dial={ZHANG: DialScript("ANSWER", 4, 30)}, timing_hooks=False)
            await run_call("127.0.0.1", router.port, script)
            await router.settle(1)
            (rec,) = router.sink.records
            assert rec.disposition == "answered"
            assert router.sample("callrouter_dial_timing_total", clock="router") == 1
            assert any("timing hooks are missing" in line for line in rec.trace)

    arun(body())


def test_a_caller_hanging_up_while_a_line_rings_is_timed_from_the_b_stamp() -> None:
    from callrouter.emulator.script import HangupAt

    async def body() -> None:
        async with running_router() as router:
            await run_call("127.0.0.1", router.port, CallScript(dtmf=("1",), hangup=HangupAt("EXEC DIAL")))
            await router.settle(1)
            (rec,) = router.sink.records
            assert rec.disposition == "abandoned"
            assert [(a.status, a.ring_seconds) for a in rec.attempts] == [("CANCEL", 4)]

    arun(body())


def test_the_record_names_the_asterisk_it_came_from() -> None:
    """Two Asterisk servers can hand out the same uniqueid: the CDR key carries which one sent the call."""

    async def body() -> None:
        async with running_router() as router:
            for eid in ("02:00:00:00:00:0A", "02:00:00:00:00:0b", "not an eid"):
                script = CallScript(args=("4008001234", eid), dtmf=("1",), dial={ZHANG: DialScript("ANSWER", 1, 5)})
                await run_call("127.0.0.1", router.port, script)
            await router.settle(3)
            assert [r.source for r in router.sink.records] == ["eid:02:00:00:00:00:0a", "eid:02:00:00:00:00:0b", "ip:127.0.0.1"]
            assert len({r.uniqueid for r in router.sink.records}) == 1

    arun(body())
