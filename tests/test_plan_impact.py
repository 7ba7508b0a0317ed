"""plans/impact.py: typical calls run on the old and the new plan through the dry run, said as sentences."""

from __future__ import annotations

from datetime import datetime, timezone

from callrouter.config.service import ServiceConfig
from callrouter.console.i18n import MESSAGES, translator
from callrouter.plans.impact import CallImpact, typical_calls
from callrouter.plans.phrase import keys_of
from tests.test_plan_diff import BASE, edited, plan

ZH, EN = translator("zh"), translator("en")
SERVICE = ServiceConfig()
NOW = datetime(2026, 11, 20, 1, 0, tzinfo=timezone.utc)  # Friday 2026-11-20 09:00 in Shanghai: calls on Tuesday the 24th


def calls(new_text: str, old_text: str | None = BASE) -> list[CallImpact]:
    found = list(typical_calls(plan(old_text) if old_text is not None else None, plan(new_text), SERVICE, NOW))
    for call in found:
        for key in keys_of(call.sentence).union(*(keys_of(n) for n in call.notes)):
            assert key in MESSAGES, key
    return found


def by_label(found: list[CallImpact], label: str) -> CallImpact:
    return next(c for c in found if c.label.say(ZH) == label)


def test_nothing_changed_every_call_says_unchanged() -> None:
    found = calls(BASE)
    labels = [(c.label.say(ZH), c.when.say(ZH)) for c in found]
    assert labels == [("按 1 的来电", "周二 10:30"), ("按 3 的来电", "周二 10:30"), ("不按键的来电", "周二 10:30"),
                      ("非工作时间的来电", "周二 20:00"), ("节假日或特殊安排日的来电", "2026-10-01 周四 10:30")]
    assert not any(c.changed for c in found)
    assert by_label(found, "按 3 的来电").sentence.say(ZH) == "按 3 的来电（周二 10:30）：呼叫 赵强，无人接听则挂机（不变）"
    assert by_label(found, "非工作时间的来电").sentence.say(ZH) == "非工作时间的来电（周二 20:00）：非工作时间，请来电者留言（不变）"
    assert found[0].at == datetime(2026, 11, 24, 2, 30, tzinfo=timezone.utc)


def test_a_reorder_rings_the_new_order_and_round_robin_says_from_line_1() -> None:
    text = edited(('      - {id: zhang, name: "张伟", number: "13800138001"}\n', ""),
                  ('      - {id: wang, name: "王芳", number: "13800138003"}\n',
                   '      - {id: wang, name: "王芳", number: "13800138003"}\n      - {id: zhang, name: "张伟", number: "13800138001"}\n'))
    key1 = by_label(calls(text), "按 1 的来电")
    assert key1.changed and key1.before is not None
    assert key1.before.rings == ("zhang", "li", "wang") and key1.after.rings == ("li", "wang", "zhang")
    assert key1.sentence.say(ZH) == "按 1 的来电（周二 10:30）：原先依次呼叫 张伟、李娜、王芳，无人接听则挂机；现在依次呼叫 李娜、王芳、张伟，无人接听则挂机"
    assert key1.sentence.say(EN).startswith("A caller pressing 1 (Tue 10:30): before, rings 张伟, 李娜, 王芳 in turn")
    assert [n.say(ZH) for n in key1.notes] == ["轮循按每组从第 1 位开始计算；实际来电从上一通的下一位开始。"]
    assert not by_label(calls(text), "按 3 的来电").changed


def test_strategy_change_to_ring_all() -> None:
    key1 = by_label(calls(edited(("strategy: round_robin", "strategy: ring_all"))), "按 1 的来电")
    assert key1.changed and key1.after.together and key1.before is not None and not key1.before.together
    assert "现在同时呼叫 张伟、李娜、王芳" in key1.sentence.say(ZH)
    assert key1.notes[0].key == "impact.note.round_robin"  # the old plan's order was counted from line 1


def test_hours_change_adds_the_day_and_shows_it_closed() -> None:
    found = calls(edited(('    sat: ["10:00-16:00"]\n', "")))
    sat = by_label(found, "营业时间有变化时段的来电")
    assert sat.when.say(ZH) == "周六 10:00" and sat.changed
    assert sat.sentence.say(ZH) == ("营业时间有变化时段的来电（周六 10:00）：原先依次呼叫 张伟、李娜、王芳，无人接听则挂机；"
                                    "现在非工作时间，请来电者留言")
    assert sat.after.closed and sat.before is not None and not sat.before.closed
    assert not by_label(found, "按 1 的来电").changed


def test_menu_key_retargeted_and_a_line_disabled() -> None:
    found = calls(edited(('"3": {hunt: complaints}', '"3": {hunt: after_sales}'),
                         ('{id: li, name: "李娜", number: "13800138002"}', '{id: li, name: "李娜", number: "13800138002", enabled: false}')))
    key3 = by_label(found, "按 3 的来电")
    assert key3.changed and key3.sentence.say(ZH) == "按 3 的来电（周二 10:30）：原先呼叫 赵强，无人接听则挂机；现在呼叫 售后座席，无人接听则挂机"
    key1 = by_label(found, "按 1 的来电")
    assert key1.changed and key1.after.rings == ("zhang", "wang")
    silent = by_label(found, "不按键的来电")
    assert silent.changed and silent.after.rings == ("zhang", "wang")


def test_a_holiday_added_is_tried_and_a_key_added_is_tried_on_the_old_plan() -> None:
    found = calls(edited(('holidays: ["2026-10-01"]', 'holidays: ["2026-10-01", "2026-11-24"]'),
                         ('      "3": {hunt: complaints}\n', '      "3": {hunt: complaints}\n      "4": {play: welcome}\n')))
    holiday = by_label(found, "节假日或特殊安排日的来电")
    assert holiday.when.say(ZH) == "2026-11-24 周二 10:30" and holiday.changed and holiday.after.closed
    key4 = by_label(found, "按 4 的来电")
    assert key4.changed and key4.after.end == "play:welcome"
    assert key4.after.said.say(ZH) == "播放「您好，欢迎致电示例科技。」后挂机"
    # the Tuesday of the key calls is a holiday now, so they move to the next Tuesday
    assert by_label(found, "按 1 的来电").when.say(ZH) == "周二 10:30" and found[0].at.day == 1 and found[0].at.month == 12


def test_a_first_version_has_no_before() -> None:
    found = calls(BASE, None)
    assert all(c.before is None and not c.changed for c in found)
    assert found[0].sentence.say(ZH) == "按 1 的来电（周二 10:30）：依次呼叫 张伟、李娜、王芳，无人接听则挂机"


def test_deterministic_for_the_same_clock_and_seed() -> None:
    text = edited(("strategy: round_robin", "strategy: random"))
    one = typical_calls(plan(BASE), plan(text), SERVICE, NOW, seed=7)
    two = typical_calls(plan(BASE), plan(text), SERVICE, NOW, seed=7)
    assert one == two
    assert by_label(list(one), "按 1 的来电").notes[0].key == "impact.note.random"
