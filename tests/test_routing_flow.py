"""Whole-call scenarios: blacklist, hours across time zones, IVR menus, voicemail, hang-ups."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from callrouter.config.loader import load_config
from callrouter.config.plan import Blacklist
from callrouter.config.service import ServiceConfig
from callrouter.routing.effects import Answer, Collect, Dial, Hangup, Play, RecordVoicemail
from tests.planning import outcomes, plan_from, run_call, tried

SAMPLE = load_config("config.yaml")
ACME = SAMPLE.plans["4008001234"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def kinds(run) -> list[str]:  # type: ignore[no-untyped-def]
    return [type(e).__name__ for e in run.effects]


# -- blacklist ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "blocked"),
    [
        ("13000000000", True),  # exact
        ("+86 130-0000-0000", True),  # exact, written another way
        ("013000000000", True),  # trunk prefix 0 before a mobile
        ("0014155550100", True),  # prefix 00: international
        ("+14155550100", True),  # the same, with +
        ("unknown", True),  # anonymous refused by this plan
        ("", True),
        ("Anonymous", True),
        ("13000000001", False),
        ("01088886666", False),
    ],
)
def test_plan_blacklist(caller: str, blocked: bool) -> None:
    run = run_call(ACME, caller=caller, digits=["1"], default="ANSWER")
    assert (run.result.disposition == "blacklisted") is blocked
    if blocked:
        assert kinds(run) == ["Answer", "Play", "Hangup"]
        assert run.effects[1] == Play("blocked")


def test_global_blacklist_rejects_without_answering() -> None:
    service = ServiceConfig(blacklist=Blacklist(prefixes=("170",)))
    run = run_call(ACME, caller="17012345678", service=service, digits=["1"])
    assert run.result.disposition == "blacklisted"
    assert kinds(run) == ["Hangup"]  # no Answer: the caller is not billed


def test_blacklist_comes_before_hours() -> None:
    run = run_call(ACME, caller="13000000000", now=utc(2026, 11, 24, 15, 0))  # 23:00 local: closed
    assert run.result.disposition == "blacklisted"
    assert not any(isinstance(e, RecordVoicemail) for e in run.effects)


# -- business hours -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "is_open", "why"),
    [
        (utc(2026, 11, 24, 0, 59), False, "2026-11-24 Tue 08:59"),  # 08:59 in Shanghai
        (utc(2026, 11, 24, 1, 0), True, "2026-11-24 Tue 09:00"),
        (utc(2026, 11, 24, 4, 0), False, "12:00"),  # lunch break starts at 12:00
        (utc(2026, 11, 24, 5, 30), True, "13:30"),
        (utc(2026, 11, 24, 9, 59), True, "17:59"),
        (utc(2026, 11, 24, 10, 0), False, "18:00"),
        (utc(2026, 11, 23, 16, 30), False, "2026-11-24 Tue 00:30"),  # Monday 23rd in UTC, Tuesday night in Shanghai
        (utc(2026, 11, 29, 3, 0), False, "Sun"),  # Sunday: closed all day
        (utc(2026, 11, 28, 3, 0), True, "Sat 11:00"),
        (utc(2026, 10, 1, 3, 0), False, "holiday"),  # 国庆, a Thursday
        (utc(2026, 9, 30, 9, 59), True, "2026-09-30 Wed 17:59"),
        (utc(2026, 10, 11, 3, 0), True, "special day"),  # a Sunday worked (调休)
    ],
)
def test_hours_in_the_plans_time_zone(when: datetime, is_open: bool, why: str) -> None:
    run = run_call(ACME, now=when, digits=["1"], default="ANSWER")
    hours_line = next(t for t in run.result.trace if t.startswith("hours:"))
    assert why in hours_line
    assert (run.result.disposition == "after_hours") is (not is_open), hours_line


def test_holiday_begins_at_local_midnight_not_utc_midnight() -> None:
    plan = plan_from(
        """
        number: "4001110000"
        name: around the clock except holidays
        timezone: Asia/Shanghai
        schedule: {holidays: ["2026-10-01"]}
        after_hours: {play: closed}
        entry: {hunt: g}
        hunt_groups: {g: {lines: [{id: a, number: "13800000001"}]}}
        """
    )
    # 2026-09-30T15:59Z is 23:59 on Sep 30 in Shanghai; 16:00Z is already the holiday there.
    assert run_call(plan, now=utc(2026, 9, 30, 15, 59), default="ANSWER").result.disposition == "answered"
    assert run_call(plan, now=utc(2026, 9, 30, 16, 0), default="ANSWER").result.disposition == "after_hours"
    # ...and it ends at local midnight, i.e. 16:00Z on Oct 1.
    assert run_call(plan, now=utc(2026, 10, 1, 16, 0), default="ANSWER").result.disposition == "answered"


def test_a_plan_in_another_time_zone_uses_its_own_clock() -> None:
    plan = plan_from(
        """
        number: "4001110000"
        name: New York office
        timezone: America/New_York
        schedule: {weekly: {tue: ["09:00-17:00"]}}
        entry: {hunt: g}
        hunt_groups: {g: {lines: [{id: a, number: "13800000001"}]}}
        """
    )
    # 2026-11-24 14:00Z is 09:00 EST on Tuesday (22:00 in Shanghai).
    assert run_call(plan, now=utc(2026, 11, 24, 14, 0), default="ANSWER").result.disposition == "answered"
    assert run_call(plan, now=utc(2026, 11, 24, 13, 59), default="ANSWER").result.disposition == "after_hours"


def test_after_hours_takes_a_voicemail() -> None:
    run = run_call(ACME, now=utc(2026, 11, 24, 14, 0))
    assert kinds(run) == ["Answer", "RecordVoicemail", "Play", "Hangup"]
    vm = run.effects[1]
    assert isinstance(vm, RecordVoicemail) and vm.prompt == "after_hours"
    assert vm.path == "/var/spool/asterisk/callrouter-voicemail/4008001234-20261124-1700000000.42"
    assert run.result.disposition == "after_hours"
    assert run.result.voicemail_file == vm.path + ".wav"


# -- IVR ------------------------------------------------------------------------------------------


def test_ivr_path_to_sales() -> None:
    run = run_call(ACME, digits=["1"], lines=outcomes(zhang="ANSWER"))
    assert kinds(run)[:6] == ["Answer", "Play", "Play", "Collect", "HuntAhead", "StartRecording"]  # the hunt's store question, then the recording
    assert run.effects[3] == Collect("main_menu", 5000, 1)
    assert run.result.ivr_path == ("main:1",)
    assert (run.result.group, run.result.answered_line) == ("sales", "zhang")


@pytest.mark.parametrize(
    ("digits", "expected_path", "group"),
    [
        (["2", "1"], ("main:2", "after_sales:1"), "after_sales"),
        (["9", "3"], ("main:9", "main:3"), "complaints"),  # invalid, then a valid choice
        (["9", "8", "7"], ("main:9", "main:8", "main:7"), "sales"),  # invalid 3 times: on_invalid
        (["", "", ""], ("main:-", "main:-", "main:-"), "sales"),  # silence 3 times: on_timeout
        (["*", "*", "3"], ("main:*", "main:*", "main:3"), "complaints"),  # repeat does not use up retries
        (["2", "#", "3"], ("main:2", "after_sales:#", "main:3"), "complaints"),  # back to the parent menu
        (["2", "5", ""], ("main:2", "after_sales:5", "after_sales:-"), "after_sales"),  # retries: 1
    ],
)
def test_ivr_menus(digits: list[str], expected_path: tuple[str, ...], group: str) -> None:
    run = run_call(ACME, digits=digits, default="ANSWER")
    assert run.result.ivr_path == expected_path
    assert run.result.group == group
    assert run.result.disposition == "answered"


def test_invalid_input_plays_the_invalid_prompt_between_tries() -> None:
    run = run_call(ACME, digits=["9", "1"], default="ANSWER")
    prompts = [e.prompt for e in run.effects if isinstance(e, (Play, Collect))]
    assert prompts == ["welcome", "recording_notice", "main_menu", "invalid_choice", "main_menu"]


def test_menu_without_defaults_hangs_up_after_retries() -> None:
    plan = plan_from(
        """
        number: "4001110000"
        name: test
        entry: {menu: m}
        menus:
          m: {prompt: m, retries: 1, options: {"1": {hunt: g}}}
        hunt_groups: {g: {lines: [{id: a, number: "13800000001"}]}}
        """
    )
    run = run_call(plan, digits=["", ""])
    assert kinds(run) == ["Answer", "Collect", "Collect", "Hangup"]
    assert run.result.disposition == "played"


def test_a_caller_cannot_loop_the_menu_forever() -> None:
    run = run_call(ACME, digits=["*"] * 500)
    assert len([e for e in run.effects if isinstance(e, Collect)]) < 45
    assert isinstance(run.effects[-1], Hangup)


def test_caller_hangs_up_during_the_ivr() -> None:
    run = run_call(ACME, digits=["2", "HANGUP"])
    assert run.result.disposition == "abandoned"
    assert run.result.reason == "caller hung up in menu after_sales"
    assert not any(isinstance(e, (Dial, Hangup)) for e in run.effects)


def test_caller_hangs_up_while_ringing() -> None:
    run = run_call(ACME, digits=["1"], lines=outcomes(zhang="NOANSWER", li="CANCEL:3"))
    assert tried(run) == [("zhang", "NOANSWER"), ("li", "CANCEL")]
    assert run.result.disposition == "abandoned"
    assert not any(isinstance(e, Hangup) for e in run.effects)


# -- after the hunt ------------------------------------------------------------------------------


def test_nobody_answers_sales_so_the_caller_leaves_a_message() -> None:
    run = run_call(ACME, digits=["1"], default="NOANSWER")
    assert [line for line, _ in tried(run)] == ["zhang", "li", "wang"]
    assert run.result.disposition == "voicemail"
    assert kinds(run)[-3:] == ["RecordVoicemail", "Play", "Hangup"]


def test_no_message_left_keeps_the_hunt_disposition() -> None:
    run = run_call(ACME, digits=["1"], default="BUSY", leave_message=False)
    assert run.result.disposition == "busy"
    assert run.result.voicemail_file is None


def test_complaints_play_all_busy_and_hang_up() -> None:
    run = run_call(ACME, digits=["3"], default="CHANUNAVAIL")
    assert run.effects[-2:] == [Play("all_busy"), Hangup()]
    assert run.result.disposition == "failed"


def test_shared_phone_is_dialled_with_the_same_occupancy_key_in_every_group() -> None:
    sales = run_call(ACME, digits=["1"], default="ANSWER")
    complaints = run_call(ACME, digits=["3"], lines=outcomes(zhao="BUSY"), default="ANSWER")
    key = lambda run, line: next(e.legs[0].key for e in run.effects if isinstance(e, Dial) and e.legs[0].line_id == line)  # noqa: E731
    assert key(sales, "zhang") == key(complaints, "zhang") == "Local/13800138001@callrouter-lines"


def test_every_flow_starts_with_answer_or_ends_without_one() -> None:
    run = run_call(ACME, digits=["1"], default="ANSWER")
    assert isinstance(run.effects[0], Answer)
