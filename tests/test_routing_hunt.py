"""Hunt-group scenarios as literal tables: strategy, line outcomes -> who was tried, who answered."""

from __future__ import annotations

from collections import Counter

import pytest

from callrouter.routing.effects import Dial, HuntAhead, RotationNext, StartRecording
from tests.planning import lines_yaml, outcomes, plan_from, run_call, tried


def group_plan(strategy: str, n: int = 20, budget: int = 900, extra: str = "", line_extra: dict | None = None) -> object:
    return plan_from(
        f"""
        number: "4001110000"
        name: test
        entry: {{hunt: g}}
        hunt_groups:
          g:
            strategy: {strategy}
            ring_budget: {budget}
{extra}
            lines:
{lines_yaml(n, indent=14, **(line_extra or {}))}
            on_failure: {{play: sorry}}
        """
    )


MIXED_20 = dict(
    l01="BUSY", l02="NOANSWER", l03="CHANUNAVAIL", l04="CONGESTION", l05="BUSY",
    l06="NOANSWER:5", l07="CHANUNAVAIL", l08="BUSY", l09="CONGESTION", l10="NOANSWER:2",
    l11="BUSY", l12="CHANUNAVAIL", l13="ANSWER:6:95", l14="ANSWER:1", l15="BUSY",
    l16="NOANSWER", l17="BUSY", l18="CHANUNAVAIL", l19="ANSWER:2", l20="BUSY",
)


def test_sequential_over_20_lines_fails_over_until_the_first_answer() -> None:
    run = run_call(group_plan("sequential"), lines=outcomes(**MIXED_20))
    assert tried(run) == [
        ("l01", "BUSY"), ("l02", "NOANSWER"), ("l03", "CHANUNAVAIL"), ("l04", "CONGESTION"), ("l05", "BUSY"),
        ("l06", "NOANSWER"), ("l07", "CHANUNAVAIL"), ("l08", "BUSY"), ("l09", "CONGESTION"), ("l10", "NOANSWER"),
        ("l11", "BUSY"), ("l12", "CHANUNAVAIL"), ("l13", "ANSWER"),
    ]
    r = run.result
    assert (r.disposition, r.answered_line, r.talk_seconds) == ("answered", "l13", 95)
    ring = [a.ring_seconds for a in r.attempts]
    assert ring == [1, 20, 0, 1, 1, 5, 0, 1, 1, 2, 1, 0, 6]


def test_sequential_rings_in_listed_order_every_call() -> None:
    plan = group_plan("sequential", n=3)
    for _ in range(3):
        run = run_call(plan, lines=outcomes(l01="BUSY", l02="ANSWER"))
        assert tried(run) == [("l01", "BUSY"), ("l02", "ANSWER")]


def test_random_is_a_permutation_driven_by_the_seed() -> None:
    plan = group_plan("random")
    a = run_call(plan, seed=1, default="BUSY")
    b = run_call(plan, seed=1, default="BUSY")
    c = run_call(plan, seed=2, default="BUSY")
    order_a = [line for line, _ in tried(a)]
    assert order_a == [line for line, _ in tried(b)]
    assert order_a != [line for line, _ in tried(c)]
    assert sorted(order_a) == [f"l{i:02d}" for i in range(1, 21)]
    assert a.result.disposition == "busy"


def test_random_first_line_is_uniform() -> None:
    plan = group_plan("random", n=4)
    firsts = Counter(tried(run_call(plan, seed=s, default="ANSWER"))[0][0] for s in range(4000))
    assert set(firsts) == {"l01", "l02", "l03", "l04"}
    assert all(800 < n < 1200 for n in firsts.values()), firsts


def test_weighted_prefers_heavy_lines_in_proportion() -> None:
    plan = plan_from(
        """
        number: "4001110000"
        name: test
        entry: {hunt: g}
        hunt_groups:
          g:
            strategy: weighted
            lines:
              - {id: heavy, number: "13800000001", weight: 3}
              - {id: light, number: "13800000002", weight: 1}
        """
    )
    firsts = Counter(tried(run_call(plan, seed=s, default="ANSWER"))[0][0] for s in range(4000))
    assert 2800 < firsts["heavy"] < 3200, firsts


def test_round_robin_starts_each_hunt_one_line_further() -> None:
    plan = group_plan("round_robin", n=5)
    rotation: dict[str, int] = {}
    firsts = []
    for _ in range(7):
        run = run_call(plan, rotation=rotation, default="ANSWER")
        firsts.append(tried(run)[0][0])
    assert firsts == ["l01", "l02", "l03", "l04", "l05", "l01", "l02"]
    assert rotation == {"4001110000/g": 7}


def test_round_robin_is_fair_over_many_calls_with_failures() -> None:
    plan = group_plan("round_robin", n=20)
    rotation: dict[str, int] = {}
    answered = Counter()
    offered_first = Counter()
    for _ in range(1000):
        run = run_call(plan, rotation=rotation, default="ANSWER", lines=outcomes(l05="BUSY", l06="NOANSWER"))
        offered_first[tried(run)[0][0]] += 1
        answered[run.result.answered_line] += 1
    assert set(offered_first.values()) == {50}
    # l05 and l06 never answer; the line after them picks up their turns.
    assert answered["l05"] == answered["l06"] == 0
    assert answered["l07"] == 150
    assert all(answered[f"l{i:02d}"] == 50 for i in range(1, 21) if i not in (5, 6, 7))


def test_round_robin_takes_one_turn_per_hunt_even_when_the_start_is_full() -> None:
    plan = group_plan("round_robin", n=4)
    rotation = {"4001110000/g": 1}
    run = run_call(plan, rotation=rotation, lines=outcomes(l02="FULL", l03="ANSWER"))
    assert tried(run) == [("l02", "FULL"), ("l03", "ANSWER")]
    assert [e for e in run.effects if isinstance(e, RotationNext)] == [RotationNext("4001110000/g")]
    assert rotation == {"4001110000/g": 2}  # the next call starts at l03


def test_lines_at_their_limit_are_skipped_and_all_full_is_busy() -> None:
    plan = group_plan("sequential", n=3)
    run = run_call(plan, default="FULL")
    assert tried(run) == [("l01", "FULL"), ("l02", "FULL"), ("l03", "FULL")]
    assert run.result.disposition == "busy"
    dials = [e for e in run.effects if isinstance(e, Dial)]
    assert [d.legs[0].max_calls for d in dials] == [1, 1, 1]


def test_ring_budget_shortens_and_ends_the_hunt() -> None:
    plan = group_plan("sequential", n=5, budget=45)
    run = run_call(plan, default="NOANSWER")
    dials = [e for e in run.effects if isinstance(e, Dial)]
    assert [d.timeout for d in dials] == [20, 20, 5]
    assert run.result.disposition == "no_answer"
    assert "ring budget of 45s spent" in run.result.trace


def test_status_outside_failover_on_stops_the_hunt() -> None:
    plan = group_plan("sequential", n=3, extra="            failover_on: [NOANSWER, CHANUNAVAIL]")
    run = run_call(plan, lines=outcomes(l01="BUSY", l02="ANSWER"))
    assert tried(run) == [("l01", "BUSY")]
    assert run.result.disposition == "busy"
    assert "BUSY does not fail over in this group" in run.result.trace


def test_disabled_lines_are_never_rung() -> None:
    plan = plan_from(
        """
        number: "4001110000"
        name: test
        entry: {hunt: g}
        hunt_groups:
          g:
            lines:
              - {id: off, number: "13800000001", enabled: false}
              - {id: on, number: "13800000002"}
        """
    )
    assert tried(run_call(plan, default="ANSWER")) == [("on", "ANSWER")]


@pytest.mark.parametrize(
    ("outcome_specs", "disposition"),
    [
        ({"l01": "BUSY", "l02": "BUSY"}, "busy"),
        ({"l01": "BUSY", "l02": "NOANSWER"}, "no_answer"),
        ({"l01": "CHANUNAVAIL", "l02": "CONGESTION"}, "failed"),
        ({"l01": "FULL", "l02": "BUSY"}, "busy"),
    ],
)
def test_failure_disposition(outcome_specs: dict[str, str], disposition: str) -> None:
    run = run_call(group_plan("sequential", n=2), lines=outcomes(**outcome_specs))
    assert run.result.disposition == disposition
    assert run.result.trace[-1] == f"result: {disposition} (played sorry)"


def test_ring_all_dials_every_line_at_once() -> None:
    plan = group_plan("ring_all", n=4)
    run = run_call(plan, lines=outcomes(l01="BUSY", l02="FULL", l03="ANSWER:9", l04="ANSWER:4"))
    dials = [e for e in run.effects if isinstance(e, Dial)]
    assert len(dials) == 1 and [leg.line_id for leg in dials[0].legs] == ["l01", "l02", "l03", "l04"]
    assert run.result.answered_line == "l04"
    assert dict(tried(run))["l02"] == "FULL"


def test_caller_hangs_up_while_a_line_rings() -> None:
    plan = group_plan("sequential", n=3)
    run = run_call(plan, lines=outcomes(l01="BUSY", l02="CANCEL:7"))
    assert tried(run) == [("l01", "BUSY"), ("l02", "CANCEL")]
    assert run.result.disposition == "abandoned"
    assert not any(isinstance(e, Dial) and e.legs[0].line_id == "l03" for e in run.effects)


def test_recording_starts_once_before_the_first_dial() -> None:
    plan = plan_from(
        """
        number: "4001110000"
        name: test
        recording: {enabled: true, file_template: "{number}/{date}/{caller}-{uniqueid}"}
        entry: {hunt: g}
        hunt_groups:
          g:
            lines:
              - {id: a, number: "13800000001"}
              - {id: b, number: "13800000002"}
        """
    )
    run = run_call(plan, lines=outcomes(a="BUSY", b="ANSWER"))
    kinds = [type(e).__name__ for e in run.effects]
    assert kinds.count("StartRecording") == 1
    assert kinds.index("StartRecording") < kinds.index("Dial")
    rec = next(e for e in run.effects if isinstance(e, StartRecording))
    assert rec.path == "/var/spool/asterisk/monitor/callrouter/4001110000/2026-11-24/13912345678-1700000000.42"
    assert run.result.recording_file == rec.path + ".wav"


@pytest.mark.parametrize("strategy, health, asked", [
    ("round_robin", False, "RotationNext"), ("round_robin", True, "RotationNext"), ("sequential", True, "LineHealthRead"),
    ("sequential", False, None), ("random", True, None), ("least_recent", True, None),
])
def test_the_hunts_store_question_is_said_before_the_recording_starts(strategy: str, health: bool, asked: str | None) -> None:
    """HuntAhead, then StartRecording, then the very question it announced: the driver can ask the store
    while Asterisk starts the recording. Not where the order is drawn (random) or read (least recent) first,
    nor with nothing to ask (sequential without line health)."""
    line_health = "" if health else "line_health: {enabled: false}"
    plan = plan_from(
        f"""
        number: "4001110000"
        name: test
        recording: {{enabled: true}}
        {line_health}
        entry: {{hunt: g}}
        hunt_groups:
          g:
            strategy: {strategy}
            lines:
              - {{id: a, number: "13800000001", max_calls: 3}}
              - {{id: b, number: "13800000002"}}
        """
    )
    run = run_call(plan, lines=outcomes(a="ANSWER"))
    kinds = [type(e).__name__ for e in run.effects]
    if asked is None:
        assert "HuntAhead" not in kinds
        return
    assert kinds[kinds.index("HuntAhead") + 1] == "StartRecording"
    ahead = next(e for e in run.effects if isinstance(e, HuntAhead))
    question = next(e for e in run.effects if type(e).__name__ == asked)
    assert [(leg.key, leg.max_calls) for leg in ahead.legs] == [(leg.key, leg.max_calls) for leg in question.legs]
    if isinstance(question, RotationNext):
        assert (ahead.key, ahead.health) == (question.key, question.health) == ("4001110000/g", health)
    else:
        assert (ahead.key, ahead.health) == (None, True)
    assert kinds.index(asked) < kinds.index("Dial")


@pytest.mark.parametrize("strategy", ["sequential", "round_robin", "random", "weighted", "ring_all"])
def test_every_strategy_over_20_lines_with_mixed_outcomes(strategy: str) -> None:
    """Whatever the order, the hunt stops at the first answer and only failover statuses move it on."""
    plan = group_plan(strategy)
    for seed in range(25):
        run = run_call(plan, seed=seed, lines=outcomes(**MIXED_20), rotation={"4001110000/g": seed})
        attempts = tried(run)
        r = run.result
        assert r.disposition == "answered" and r.answered_line in ("l13", "l14", "l19")
        if strategy == "ring_all":
            assert len(attempts) == 20 and r.answered_line == "l14"  # the quickest answer of all
            continue
        statuses = [status for _, status in attempts]
        assert statuses[-1] == "ANSWER" and "ANSWER" not in statuses[:-1]
        assert len({line for line, _ in attempts}) == len(attempts)  # no line rung twice
        expected = [MIXED_20[line].split(":")[0] for line, _ in attempts]
        assert statuses == expected
        if strategy == "round_robin":
            assert attempts[0][0] == f"l{seed % 20 + 1:02d}"  # turn n starts at the n-th line


def test_least_recent_rings_the_longest_idle_line_first() -> None:
    plan = group_plan("least_recent", n=4)
    last_used: dict[str, float] = {}  # shared across calls, as the store would be
    answered = [run_call(plan, lines=outcomes(l02="BUSY"), default="ANSWER", last_used=last_used).result.answered_line for _ in range(6)]
    # Never-used lines go first in listed order (l02 is busy), then whoever has waited longest.
    assert answered == ["l01", "l03", "l04", "l01", "l03", "l04"]
    assert set(last_used) == {f"Local/138{i:08d}@callrouter-lines" for i in (1, 3, 4)}
