"""`callrouter explain`: the decision trace printed for ops."""

from __future__ import annotations

import pytest

from callrouter.cli.main import main


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["explain", "--config", "config.yaml", "--number", "400-800-1234", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_explain_walks_through_every_decision(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = explain(
        capsys, "--time", "2026-11-24T10:30", "--digits", "2,1",
        "--line", "service_desk=BUSY", "--line", "zhao=ANSWER:8:120",
    )
    assert code == 0
    assert " 3. hours: 2026-11-24 Tue 10:30 Asia/Shanghai: open (hours 09:00-12:00, 13:30-18:00)" in out
    assert "menu main: pressed 2 -> menu: after_sales" in out
    assert "menu after_sales: pressed 1 -> hunt: after_sales" in out
    assert "line service_desk (PJSIP/8001, 25s): BUSY after 1s ringing" in out
    assert "line zhao (Local/01088886666@callrouter-lines, 25s): ANSWER after 8s ringing" in out
    assert "disposition: answered   answered by: zhao   IVR: main:2 after_sales:1" in out


def test_explain_after_hours_and_blacklist(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = explain(capsys, "--time", "2026-11-24T20:00+08:00")
    assert "closed (hours 09:00-12:00, 13:30-18:00)" in out
    assert "disposition: after_hours" in out
    _, out, _ = explain(capsys, "--time", "2026-11-24T10:00", "--caller", "unknown")
    assert "blacklisted: number blacklist refuses withheld caller IDs" in out


def test_explain_round_robin_position(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = explain(capsys, "--time", "2026-11-24T10:00", "--digits", "1", "--rotation", "sales=5", "--default-line", "ANSWER")
    assert "round robin: turn 5, starting at wang" in out  # 5 mod 3 lines = the third line


def test_explain_rotation_must_be_a_turn(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = explain(capsys, "--time", "2026-11-24T10:00", "--digits", "1", "--rotation", "sales=li")
    assert code == 2 and "write GROUP=TURN" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--line", "zhang"), "write LINE_ID=STATUS"),
        (("--line", "zhang=MAYBE"), "STATUS one of"),
        (("--default-line", "ANSWER:x"), "whole numbers"),
    ],
)
def test_explain_rejects_bad_input(capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str) -> None:
    code, _, err = explain(capsys, *args)
    assert code == 2 and message in err


def test_explain_unknown_number(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explain", "--config", "config.yaml", "--number", "4000000000"])
    assert code == 2
    assert "no plan routes 4000000000" in capsys.readouterr().err


def test_explain_takes_the_number_as_a_trunk_sends_it(capsys: pytest.CaptureFixture[str]) -> None:
    """What the router does for +86 400-800-1234 (plan_for), explain shows too."""
    code = main(["explain", "--config", "config.yaml", "--number", "+86 400-800-1234", "--time", "2026-11-24T10:30", "--digits", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "menu main: pressed 1 -> hunt: sales" in out
