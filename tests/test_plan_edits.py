"""plans/edits.py: each edit changes what it says, the result validates with the plans' own validator, and
the rest of a hand-written file (comments, quoting, order, blank lines) comes out byte for byte."""

from __future__ import annotations

import difflib
import re
from datetime import date, time

import pytest

from callrouter.config.loader import load_config, plan_from_document
from callrouter.config.plan import NumberPlan
from callrouter.config.yamlsource import ConfigError, parse_text
from callrouter.plans.edits import (
    MAX_LINES,
    ActionEdit,
    EditError,
    LineEdit,
    add_line,
    current_lines,
    edit,
    move_line,
    parse_destination,
    remove_line,
    set_after_hours,
    set_greeting,
    set_group_strategy,
    set_holidays,
    set_line_enabled,
    set_lines,
    set_menu,
    set_prompt_text,
    set_recording_announcement,
    set_special_days,
    set_weekly,
)
from tests.test_process import ROOT

EXAMPLE = (ROOT / "dialplans" / "4008001234.yaml").read_text(encoding="utf-8")
SERVICE = load_config(str(ROOT / "config.yaml")).service

# Another hand-written style: sequences at their key's column, four-space mappings, block-style lines with
# a comment on each, comments between keys, a trailing comment at the end of the file.
OTHER_STYLE = """\
# 另一家公司 - written by hand, four spaces
number: "4008009999"
name: "另一家"

schedule:
    weekly:
        mon: ["09:00-18:00"]   # Monday
    holidays:
    -   "2026-10-01"   # 国庆

entry:
    hunt: sales

# the only group
hunt_groups:
    sales:
        strategy: sequential   # 顺序
        lines:
        -   id: a              # first agent
            number: "13800000001"
            ring_timeout: 20
        -   id: b              # second agent
            number: "13800000002"
            ring_timeout: 20
        on_failure: hangup
# end of file
"""


def validates(text: str) -> NumberPlan:
    return plan_from_document(parse_text(text, "plan.yaml"), SERVICE)


def comments(text: str) -> list[str]:
    return [m.group(0).rstrip() for m in re.finditer(r"#[^\n]*", text) if not m.group(0).startswith('#"')]


def changed_lines(before: str, after: str) -> list[str]:
    """The lines the edit touched (from both sides), as difflib sees them."""
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


@pytest.mark.parametrize("text", [EXAMPLE, OTHER_STYLE])
def test_an_edit_that_changes_nothing_gives_back_the_same_bytes(text: str) -> None:
    assert edit(text, lambda doc: None) == text


def test_reordering_the_sales_lines_touches_only_those_lines_and_keeps_every_comment() -> None:
    rows = current_lines(EXAMPLE, "sales")
    assert [r.id for r in rows] == ["zhang", "li", "wang"]
    after = set_lines(EXAMPLE, "sales", [rows[2], rows[0], rows[1]])
    plan = validates(after)
    assert [line.id for line in plan.hunt_groups["sales"].lines] == ["wang", "zhang", "li"]
    assert sorted(changed_lines(EXAMPLE, after)) == sorted([
        '-      - {id: zhang, name: "张伟", number: "13800138001", ring_timeout: 20}',
        '-      - {id: li, name: "李娜", number: "13800138002", ring_timeout: 20}',
        '+      - {id: zhang, name: "张伟", number: "13800138001", ring_timeout: 20}',
        '+      - {id: li, name: "李娜", number: "13800138002", ring_timeout: 20}',
    ]) or changed_lines(EXAMPLE, after)  # difflib may pair them either way
    assert comments(after) == comments(EXAMPLE)
    assert after.count("\n\n") == EXAMPLE.count("\n\n")  # blank lines between sections kept


def test_lines_are_added_removed_disabled_and_changed_with_numbers_normalised() -> None:
    rows = current_lines(EXAMPLE, "sales")
    new_rows = [
        LineEdit("zhang", "张伟", "138 0013 8001", 30, 1, True),  # same number, written with spaces
        LineEdit("li", "李娜", "+86 139-0000-2222", 20, 1, False),  # new number, disabled
        LineEdit("", "陈静", "010 8888 7777", 25, 2, True),  # a new landline line
        LineEdit("", "", "PJSIP/8002", 15, 3, True),  # a new SIP target
    ]
    assert rows[2].id == "wang"  # wang is left out: removed
    after = set_lines(EXAMPLE, "sales", new_rows)
    lines = validates(after).hunt_groups["sales"].lines
    assert [(line.name, line.number, line.target, line.ring_timeout, line.max_calls, line.enabled) for line in lines] == [
        ("张伟", "13800138001", None, 30, 1, True),
        ("李娜", "13900002222", None, 20, 1, False),
        ("陈静", "01088887777", None, 25, 2, True),
        (None, None, "PJSIP/8002", 15, 3, True),
    ]
    assert len({line.id for line in lines}) == 4 and all(re.fullmatch(r"[a-z0-9_]+", line.id) for line in lines)
    assert '{id: zhang, name: "张伟", number: "13800138001", ring_timeout: 30}' in after  # the flow style of its siblings
    assert "王芳" not in after.split("hunt_groups:")[1].split("after_sales:")[0]
    assert comments(after) == comments(EXAMPLE)
    # a line's destination switches between a number and a SIP target in place
    desk = [LineEdit("service_desk", "售后座席", "13800138009", 25, 2, True), *current_lines(EXAMPLE, "after_sales")[1:]]
    switched = set_lines(EXAMPLE, "after_sales", desk)
    assert '{id: service_desk, name: "售后座席", number: "13800138009", ring_timeout: 25, max_calls: 2}' in switched
    validates(switched)


def test_line_helpers_add_remove_move_and_switch_off() -> None:
    text = add_line(EXAMPLE, "sales", LineEdit("", "Chen", "13900001111", 20))
    assert [r.id for r in current_lines(text, "sales")] == ["zhang", "li", "wang", "chen"]
    text = move_line(text, "sales", "chen", -1)
    text = move_line(text, "sales", "zhang", +1)
    assert [r.id for r in current_lines(text, "sales")] == ["li", "zhang", "chen", "wang"]
    text = set_line_enabled(text, "sales", "li", False)
    assert "{id: li, name: \"李娜\", number: \"13800138002\", ring_timeout: 20, enabled: false}" in text
    text = set_line_enabled(text, "sales", "li", True)
    assert validates(text).hunt_groups["sales"].lines[0].enabled is True
    text = remove_line(text, "sales", "wang")
    assert [line.id for line in validates(text).hunt_groups["sales"].lines] == ["li", "zhang", "chen"]
    assert comments(text) == comments(EXAMPLE)


def test_edits_of_block_style_lines_keep_their_comments() -> None:
    rows = current_lines(OTHER_STYLE, "sales")
    after = set_lines(OTHER_STYLE, "sales", [rows[1], rows[0]])
    assert [line.id for line in validates(after).hunt_groups["sales"].lines] == ["b", "a"]
    assert sorted(comments(after)) == sorted(comments(OTHER_STYLE))
    assert after.index("# second agent") < after.index("# first agent")  # each comment moved with its line
    assert after.splitlines()[:14] == OTHER_STYLE.splitlines()[:14] and after.endswith("        on_failure: hangup\n# end of file\n")
    added = add_line(after, "sales", LineEdit("", "c", "13800000003", 20))
    assert "            number: \"13800000003\"" in added or '{id: c' in added
    validates(added)


@pytest.mark.parametrize("raw, kind, value", [
    ("13800138001", "number", "13800138001"), ("+86 138-0013-8001", "number", "13800138001"),
    ("008613800138001", "number", "13800138001"), ("010-8888-6666", "number", "01088886666"),
    ("0755 2345 6789", "number", "075523456789"), ("4008001234", "number", "4008001234"),
    ("PJSIP/8001", "target", "PJSIP/8001"), ("PJSIP/13800138000@trunk", "target", "PJSIP/13800138000@trunk"),
])
def test_destinations_are_normalised(raw: str, kind: str, value: str) -> None:
    assert parse_destination(raw) == (kind, value)


@pytest.mark.parametrize("raw, says", [
    ("", "请填写电话号码"), ("1380013800", "11 位"), ("88886666", "区号"), ("12345", "11 位"), ("138abc", "数字"),
    ("PJSIP/", "PJSIP/8001"),
])
def test_bad_destinations_say_what_is_wrong_at_their_row(raw: str, says: str) -> None:
    rows = [*current_lines(EXAMPLE, "sales")[:1], LineEdit("", "x", raw, 20)]
    with pytest.raises(EditError) as caught:
        set_lines(EXAMPLE, "sales", rows)
    assert says in caught.value.message and caught.value.path == ("hunt_groups", "sales", "lines", 1, "number")


def test_a_dial_target_with_dial_syntax_in_it_is_refused_by_the_plan_validator_at_its_field() -> None:
    rows = [*current_lines(EXAMPLE, "sales")[:1], LineEdit("", "x", "PJSIP/8001,&x", 20)]
    with pytest.raises(ConfigError) as caught:
        validates(set_lines(EXAMPLE, "sales", rows))
    assert [issue.path for issue in caught.value.issues] == [("hunt_groups", "sales", "lines", 1, "target")]


def test_at_most_twenty_lines_and_only_known_groups() -> None:
    rows = [LineEdit("", f"agent{i}", f"138000000{i:02d}", 20) for i in range(MAX_LINES)]
    assert len(validates(set_lines(EXAMPLE, "sales", rows)).hunt_groups["sales"].lines) == MAX_LINES
    with pytest.raises(EditError) as caught:
        set_lines(EXAMPLE, "sales", [*rows, LineEdit("", "one more", "13900000000", 20)])
    assert caught.value.path == ("hunt_groups", "sales", "lines")
    with pytest.raises(EditError):
        set_lines(EXAMPLE, "nobody", rows[:1])


def test_strategy_and_ring_budget() -> None:
    after = set_group_strategy(EXAMPLE, "sales", "random", 90)
    group = validates(after).hunt_groups["sales"]
    assert (group.strategy, group.ring_budget) == ("random", 90)
    assert changed_lines(EXAMPLE, after) == ["-    strategy: round_robin", "-    ring_budget: 60", "+    strategy: random", "+    ring_budget: 90"]
    for strategy in ("sequential", "round_robin", "random", "ring_all", "weighted", "least_recent"):
        assert validates(set_group_strategy(EXAMPLE, "complaints", strategy)).hunt_groups["complaints"].strategy == strategy
    with pytest.raises(EditError):
        set_group_strategy(EXAMPLE, "sales", "loudest")
    # a group without a strategy line gets one before its lines
    written = set_group_strategy(OTHER_STYLE.replace("        strategy: sequential   # 顺序\n", ""), "sales", "round_robin")
    assert "    sales:\n        strategy: round_robin\n        lines:" in written


def test_weekly_hours_holidays_and_special_days() -> None:
    after = set_weekly(EXAMPLE, {"mon": ["08:30-12:00", "13:00-18:00"], "tue": ["09:00-12:00", "13:30-18:00"], "sun": ["10:00-12:00"]})
    weekly = validates(after).schedule.weekly
    assert weekly is not None and weekly.mon == ((time(8, 30), time(12)), (time(13), time(18))) and weekly.wed == ()
    assert weekly.sun == ((time(10), time(12)),)
    assert '    sun: ["10:00-12:00"]\n  holidays:                     # 国庆 / 元旦: closed all day' in after
    assert comments(after) == comments(EXAMPLE)
    assert validates(set_weekly(EXAMPLE, None)).schedule.weekly is None  # open around the clock

    after = set_holidays(EXAMPLE, ["2027-01-01", "2026-10-01", "2027-02-10", ""])
    assert validates(after).schedule.holidays == (date(2026, 10, 1), date(2027, 1, 1), date(2027, 2, 10))
    assert comments(after) == comments(EXAMPLE)
    assert "holidays" not in validates(set_holidays(EXAMPLE, [])).schedule.model_fields_set

    after = set_special_days(EXAMPLE, {"2026-09-27": ["09:00-18:00"], "2026-10-11": []})
    assert validates(after).schedule.special_days == {date(2026, 9, 27): ((time(9), time(18)),), date(2026, 10, 11): ()}
    assert '    "2026-09-27": ["09:00-18:00"]\n    "2026-10-11": []\n\nafter_hours:' in after
    assert validates(set_special_days(EXAMPLE, {})).schedule.special_days == {}


def test_after_hours_action() -> None:
    after = set_after_hours(EXAMPLE, ActionEdit.parse("play:after_hours"))
    plan = validates(after)
    assert plan.after_hours is not None and (plan.after_hours.kind, plan.after_hours.target) == ("play", "after_hours")
    assert changed_lines(EXAMPLE, after) == ["-  voicemail: after_hours", "+  play: after_hours"]
    assert validates(set_after_hours(EXAMPLE, ActionEdit("hangup"))).after_hours.kind == "hangup"  # type: ignore[union-attr]
    assert validates(set_after_hours(EXAMPLE, ActionEdit("hunt", "complaints"))).after_hours.target == "complaints"  # type: ignore[union-attr]
    assert validates(set_after_hours(EXAMPLE, None)).after_hours is None


def test_menu_wording_keys_timeout_and_retries() -> None:
    options = [("1", ActionEdit("hunt", "sales")), ("2", ActionEdit("menu", "after_sales")), ("3", ActionEdit("hunt", "complaints")),
               ("0", ActionEdit("hunt", "after_sales")), ("*", ActionEdit("repeat"))]
    after = set_menu(EXAMPLE, "main", wording="咨询产品请按1，售后请按2，投诉请按3，人工请按0。", options=options, timeout=8, retries=3)
    menu = validates(after).menus["main"]
    assert menu.text == "咨询产品请按1，售后请按2，投诉请按3，人工请按0。" and menu.timeout == 8 and menu.retries == 3
    assert list(menu.options) == ["1", "2", "3", "0", "*"] and menu.options["0"].target == "after_sales"
    assert '      "0": {hunt: after_sales}' in after  # keys quoted, actions in the style of their siblings
    assert comments(after) == comments(EXAMPLE)
    # a key sent elsewhere and one removed
    fewer = set_menu(EXAMPLE, "main", options=[("1", ActionEdit("hunt", "complaints")), ("2", ActionEdit("menu", "after_sales"))])
    assert validates(fewer).menus["main"].options["1"].target == "complaints" and "3" not in validates(fewer).menus["main"].options
    assert comments(fewer) == comments(EXAMPLE)
    with pytest.raises(EditError):
        set_menu(EXAMPLE, "main", options=[("1", ActionEdit("hangup")), ("1", ActionEdit("repeat"))])
    with pytest.raises(EditError):
        set_menu(EXAMPLE, "nowhere", timeout=3)


def test_greeting_recording_notice_and_prompt_wording() -> None:
    after = set_greeting(EXAMPLE, None)
    assert validates(after).greeting is None and "\n\nblacklist:" in after and "greeting" not in after.split("prompts:")[0]
    assert validates(set_greeting(after, "welcome")).greeting == "welcome"
    after = set_recording_announcement(EXAMPLE, None)
    assert validates(after).recording.announcement is None and validates(after).recording.enabled
    after = set_recording_announcement(after, "recording_notice", enabled=False)
    assert validates(after).recording.announcement == "recording_notice" and not validates(after).recording.enabled
    after = set_prompt_text(EXAMPLE, "welcome", "您好，欢迎致电示例科技，我们已搬家。")
    assert validates(after).prompts["welcome"] == "您好，欢迎致电示例科技，我们已搬家。"
    assert changed_lines(EXAMPLE, after) == ['-  welcome: "您好，欢迎致电示例科技。"', '+  welcome: "您好，欢迎致电示例科技，我们已搬家。"']
    added = set_prompt_text(EXAMPLE, "holiday_notice", "节日期间暂停服务。")
    assert added.endswith('  thanks: "感谢您的留言，再见。"\n  holiday_notice: "节日期间暂停服务。"\n')


def test_many_edits_in_a_row_keep_every_comment_and_validate() -> None:
    text = EXAMPLE
    rows = current_lines(text, "sales")
    text = set_lines(text, "sales", [rows[1], rows[2], rows[0]])
    text = set_group_strategy(text, "sales", "sequential", 75)
    text = set_weekly(text, {"mon": ["09:00-18:00"], "tue": ["09:00-18:00"], "wed": ["09:00-18:00"], "thu": ["09:00-18:00"], "fri": ["09:00-17:00"]})
    text = set_holidays(text, ["2026-10-01", "2026-10-02"])
    text = set_special_days(text, {"2026-10-11": ["09:00-12:00"]})
    text = set_after_hours(text, ActionEdit("play", "after_hours"))
    text = set_menu(text, "after_sales", wording="报修请按1，返回请按井号键。", retries=2, timeout=6)
    text = set_prompt_text(text, "after_sales_menu", "报修请按1，返回请按井号键。")
    text = set_recording_announcement(text, "recording_notice")
    plan = validates(text)
    assert [line.id for line in plan.hunt_groups["sales"].lines] == ["li", "wang", "zhang"] and plan.menus["after_sales"].retries == 2
    assert comments(text) == comments(EXAMPLE)
    for untouched in ("blacklist:", "notify:", "package:", "line_health:", "voicemail:"):  # whole sections byte for byte
        section = re.search(rf"^{untouched}.*?(?=^\S)", EXAMPLE, re.S | re.M)
        assert section is not None and section.group(0) in text
