"""Per-line health as scenario tables: call after call on an injected clock, the line health carried
from one call to the next as the store would carry it, every decision asserted in the trace."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callrouter.config.line_health import LineHealth
from callrouter.config.yamlsource import ConfigError
from callrouter.routing.effects import Dial, LineHealthRead, LineOutcomeReport
from callrouter.routing.health import LineRecord, apply_outcome, line_state, masked, shown_number
from tests.planning import outcomes, plan_from, run_call, tried

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 24, 10, 2, tzinfo=SH)  # a Tuesday, open hours
ROOT = Path(__file__).resolve().parent.parent


def plan(strategy: str = "sequential", health: str = "") -> object:
    return plan_from(
        f"""
        number: "4008001234"
        name: 示例科技
        timezone: Asia/Shanghai
        entry: {{hunt: sales}}
        hunt_groups:
          sales:
            strategy: {strategy}
            ring_budget: 120
            lines:
              - {{id: zhang, name: 张伟, number: "13800138001"}}
              - {{id: li, name: 李娜, number: "13800138002"}}
              - {{id: wang, name: 王芳, number: "13800138003"}}
        {health}
        """
    )


ZHANG = "Local/13800138001@callrouter-lines"


@dataclass(frozen=True)
class Step:
    """One call: when it comes (minutes after T0), how each line does, what the hunt tries."""

    minute: float
    lines: dict[str, str]
    tried: list[tuple[str, str]]
    trace: tuple[str, ...] = ()  # fragments the trace must contain


def play(p: object, steps: list[Step], health: dict[str, LineRecord] | None = None) -> dict[str, LineRecord]:
    health = {} if health is None else health
    for n, step in enumerate(steps, 1):
        run = run_call(p, now=T0 + timedelta(minutes=step.minute), lines=outcomes(**step.lines), health=health)  # type: ignore[arg-type]
        assert tried(run) == step.tried, f"call {n}: {run.result.trace}"
        text = "\n".join(run.result.trace)
        for fragment in step.trace:
            assert fragment in text, f"call {n}: {fragment!r} not in\n{text}"
    return health


# -- the state machine --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "state", "kind"),
    [
        (["CHANUNAVAIL"], "healthy", None),
        (["CHANUNAVAIL", "CHANUNAVAIL"], "suspended", "unavailable"),
        (["CONGESTION", "CHANUNAVAIL"], "suspended", "unavailable"),  # both are "unreachable"
        (["NOANSWER"] * 3, "healthy", None),
        (["NOANSWER"] * 4, "suspended", "noanswer"),
        (["NOANSWER", "NOANSWER", "ANSWER", "NOANSWER", "NOANSWER"], "healthy", None),  # ANSWER starts over
        (["CHANUNAVAIL", "BUSY", "CANCEL", "FULL", "CHANUNAVAIL"], "suspended", "unavailable"),  # those say nothing
        (["CANCEL"] * 10, "healthy", None),
        (["BUSY"] * 10, "healthy", None),
        (["NOANSWER", "CHANUNAVAIL", "NOANSWER", "NOANSWER", "NOANSWER"], "suspended", "noanswer"),  # since it last answered
    ],
)
def test_what_counts(statuses: list[str], state: str, kind: str | None) -> None:
    record = LineRecord("k")
    for i, status in enumerate(statuses):
        record = apply_outcome(record, status, 1000.0 + i)
    got = line_state(record, LineHealth(), 1000.0 + len(statuses))
    assert (got.state, got.kind) == (state, kind)


def test_the_cool_down_runs_from_the_last_failure_then_half_open() -> None:
    settings = LineHealth(cooldown=900)
    record = apply_outcome(apply_outcome(LineRecord("k"), "CHANUNAVAIL", 0.0), "CHANUNAVAIL", 60.0)
    assert record.since == 0.0 and record.last_failure == 60.0
    assert line_state(record, settings, 959.0).state == "suspended"
    assert line_state(record, settings, 960.0).state == "half_open"
    again = apply_outcome(record, "CHANUNAVAIL", 1000.0)
    assert line_state(again, settings, 1000.0).state == "suspended" and line_state(again, settings, 1000.0).retry_at == 1900.0
    assert apply_outcome(again, "ANSWER", 1001.0).clean
    assert apply_outcome(LineRecord("k"), "ANSWER", 5.0) == LineRecord("k")  # nothing to write for a line that works


def test_what_people_see_of_numbers() -> None:
    assert masked("13800138001") == "138****8001"
    assert masked("Local/01088886666@callrouter-lines") == "Local/010****6666@callrouter-lines"
    assert masked("PJSIP/8001") == "PJSIP/8001"
    assert shown_number("4008001234") == "400-800-1234"


# -- scenarios ------------------------------------------------------------------------------------------


def test_a_line_that_fails_chanunavail_is_skipped_then_tried_again_after_the_cool_down_and_recovers() -> None:
    play(plan(), [
        Step(0, {"zhang": "CHANUNAVAIL", "li": "ANSWER"}, [("zhang", "CHANUNAVAIL"), ("li", "ANSWER")]),
        Step(1, {"zhang": "CHANUNAVAIL", "li": "ANSWER"}, [("zhang", "CHANUNAVAIL"), ("li", "ANSWER")],
             ("line zhang (张伟) suspended: 2 calls unreachable in a row since 10:02, until 10:18",)),
        Step(5, {"zhang": "ANSWER", "li": "ANSWER"}, [("li", "ANSWER")],
             ("line zhang (张伟) skipped: 2 calls unreachable in a row since 10:02, retried after 10:18",)),
        Step(15.9, {"zhang": "ANSWER", "li": "ANSWER"}, [("li", "ANSWER")]),
        Step(16, {"zhang": "ANSWER", "li": "ANSWER"}, [("zhang", "ANSWER")],
             ("line zhang (张伟): cool-down over (2 calls unreachable in a row since 10:02), tried again",
              "line zhang (张伟) works again: answered")),
        Step(19, {"zhang": "ANSWER"}, [("zhang", "ANSWER")]),
    ])


def test_noanswer_counts_after_four_in_a_row_and_an_answer_in_between_starts_over() -> None:
    na = {"zhang": "NOANSWER", "li": "ANSWER"}
    health = play(plan(), [
        Step(0, na, [("zhang", "NOANSWER"), ("li", "ANSWER")]),
        Step(1, na, [("zhang", "NOANSWER"), ("li", "ANSWER")]),
        Step(2, na, [("zhang", "NOANSWER"), ("li", "ANSWER")]),
        Step(3, {"zhang": "ANSWER"}, [("zhang", "ANSWER")]),  # back to nothing
        Step(4, na, [("zhang", "NOANSWER"), ("li", "ANSWER")]),
        Step(5, na, [("zhang", "NOANSWER"), ("li", "ANSWER")]),
        Step(6, na, [("zhang", "NOANSWER"), ("li", "ANSWER")]),
        Step(7, na, [("zhang", "NOANSWER"), ("li", "ANSWER")],
             ("line zhang (张伟) suspended: 4 calls unanswered in a row since 10:06, until 10:24",)),
        Step(8, na, [("li", "ANSWER")], ("line zhang (张伟) skipped: 4 calls unanswered in a row since 10:06, retried after 10:24",)),
    ])
    assert health[ZHANG].noanswer == 4


def test_a_caller_who_hangs_up_while_the_line_rings_does_not_count_against_it() -> None:
    steps = [Step(i, {"zhang": "CANCEL:5"}, [("zhang", "CANCEL")]) for i in range(10)]
    health = play(plan(), steps + [Step(10, {"zhang": "ANSWER"}, [("zhang", "ANSWER")])])
    assert ZHANG not in health or health[ZHANG].clean


def test_when_every_line_is_suspended_they_all_ring_as_configured() -> None:
    dead = {"zhang": "CHANUNAVAIL", "li": "CHANUNAVAIL", "wang": "CHANUNAVAIL"}
    all_three = [("zhang", "CHANUNAVAIL"), ("li", "CHANUNAVAIL"), ("wang", "CHANUNAVAIL")]
    play(plan(), [
        Step(0, dead, all_three),
        Step(1, {**dead, "wang": "ANSWER"}, [("zhang", "CHANUNAVAIL"), ("li", "CHANUNAVAIL"), ("wang", "ANSWER")]),
        Step(2, dead, [("wang", "CHANUNAVAIL")], ("line zhang (张伟) skipped", "line li (李娜) skipped")),
        Step(3, dead, [("wang", "CHANUNAVAIL")], ("line wang (王芳) suspended",)),  # the last working line failed too
        Step(4, {**dead, "li": "ANSWER"}, [("zhang", "CHANUNAVAIL"), ("li", "ANSWER")],
             ("every line is suspended (zhang (张伟), li (李娜), wang (王芳)): ringing them all as configured",
              "line li (李娜) works again: answered")),
        Step(5, {**dead, "li": "ANSWER"}, [("li", "ANSWER")]),
    ])


def test_mode_last_tries_a_suspended_line_after_the_others() -> None:
    p = plan(health="line_health: {mode: last, unavailable_after: 1, cooldown: 10m}")
    play(p, [
        Step(0, {"zhang": "CONGESTION", "li": "ANSWER"}, [("zhang", "CONGESTION"), ("li", "ANSWER")]),
        Step(1, {"zhang": "ANSWER", "li": "BUSY", "wang": "NOANSWER"}, [("li", "BUSY"), ("wang", "NOANSWER"), ("zhang", "ANSWER")],
             ("line zhang (张伟) tried last: 1 call unreachable in a row since 10:02, retried after 10:12",
              "line zhang (张伟) works again: answered")),
        Step(2, {"zhang": "ANSWER"}, [("zhang", "ANSWER")]),
    ])


def test_a_half_open_line_that_fails_again_is_suspended_for_another_cool_down() -> None:
    dead = {"zhang": "CHANUNAVAIL", "li": "ANSWER"}
    play(plan(health="line_health: {cooldown: 900}"), [
        Step(0, dead, [("zhang", "CHANUNAVAIL"), ("li", "ANSWER")]),
        Step(1, dead, [("zhang", "CHANUNAVAIL"), ("li", "ANSWER")]),
        Step(16, dead, [("zhang", "CHANUNAVAIL"), ("li", "ANSWER")], ("tried again", "line zhang (张伟) failed again: suspended until 10:33")),
        Step(17, dead, [("li", "ANSWER")], ("retried after 10:33",)),
        Step(31.5, dead, [("zhang", "CHANUNAVAIL"), ("li", "ANSWER")]),
    ])


def test_ring_all_leaves_suspended_lines_out_and_counts_only_what_it_can_tell() -> None:
    p = plan("ring_all")
    health = play(p, [
        Step(0, {"zhang": "CHANUNAVAIL", "li": "CHANUNAVAIL", "wang": "ANSWER"},
             [("zhang", "NOANSWER"), ("li", "NOANSWER"), ("wang", "ANSWER")]),  # the others were cancelled by Asterisk
    ])
    assert list(health) == ["Local/13800138003@callrouter-lines"]  # only the answer says something about a line
    health[ZHANG] = LineRecord(ZHANG, unavailable=2, since=T0.timestamp(), last_failure=T0.timestamp())
    run = run_call(p, now=T0 + timedelta(minutes=1), lines=outcomes(li="ANSWER"), health=health)  # type: ignore[arg-type]
    dial = next(e for e in run.effects if isinstance(e, Dial))
    assert [leg.line_id for leg in dial.legs] == ["li", "wang"]
    assert "line zhang (张伟) skipped" in "\n".join(run.result.trace)


def test_a_plan_that_turns_it_off_reads_and_reports_nothing() -> None:
    run = run_call(plan(health="line_health: {enabled: false}"), now=T0, lines=outcomes(zhang="CHANUNAVAIL", li="ANSWER"))  # type: ignore[arg-type]
    assert not any(isinstance(e, (LineHealthRead, LineOutcomeReport)) for e in run.effects)
    on = run_call(plan(), now=T0, lines=outcomes(zhang="CHANUNAVAIL", li="ANSWER"))  # type: ignore[arg-type]
    assert [e for e in on.effects if isinstance(e, LineOutcomeReport)] == [
        LineOutcomeReport(ZHANG, "CHANUNAVAIL"), LineOutcomeReport("Local/13800138002@callrouter-lines", "ANSWER")
    ]


# -- settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("written", "seconds"), [("15m", 900), ("1h30m", 5400), ("90s", 90), ("600", 600), (120, 120)])
def test_cooldown_is_written_as_a_duration(written: object, seconds: float) -> None:
    assert LineHealth(cooldown=written).cooldown == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("line_health: {cooldown: 15x}", "line_health.cooldown: '15x' is not a duration"),
        ("line_health: {cooldown: 5s}", "line_health.cooldown: Input should be greater than or equal to 10"),
        ("line_health: {mode: never}", "line_health.mode: Input should be 'skip' or 'last'"),
        ("line_health: {noanswer_after: 0}", "line_health.noanswer_after"),
        ("line_health: {down_template: '{caller}'}", "unknown placeholder(s) ['caller']"),
        ("line_health: {unavailable: 2}", "line_health.unavailable: unknown key"),
    ],
)
def test_bad_settings_are_refused_with_their_line(block: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        plan(health=block)
    text = str(caught.value.issues[0])
    assert message in text and text.startswith("plan.yaml:14:"), text


def test_explain_shows_a_suspended_line_skipped() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "callrouter", "explain", "--config", str(ROOT / "config.yaml"), "--number", "4008001234",
         "--time", "2026-11-24T10:30", "--digits", "1", "--rotation", "sales=0",
         "--health", "zhang=NOANSWER:4@10:20", "--line", "li=ANSWER"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "line zhang (张伟) skipped: 4 calls unanswered in a row since 10:20, retried after 10:35" in done.stdout
    assert "answered by: li" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "callrouter", "explain", "--config", str(ROOT / "config.yaml"), "--number", "4008001234", "--health", "zhang=BUSY:3"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert bad.returncode == 2 and "STATUS:COUNT[@HH:MM]" in bad.stderr
