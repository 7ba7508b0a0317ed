"""plans/diff.py: the YAML line diff and the changes for callers, said in Chinese and English."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from callrouter.config.plan import NumberPlan
from callrouter.console.i18n import MESSAGES, translator
from callrouter.plans.diff import line_diff, plan_changes, summary_text
from callrouter.plans.phrase import keys_of

ZH, EN = translator("zh"), translator("en")

BASE = textwrap.dedent("""\
    # 示例科技 - hand-written, comments kept
    number: "4008001234"
    name: "示例科技"
    schedule:
      weekly:
        mon: ["09:00-18:00"]
        tue: ["09:00-18:00"]
        sat: ["10:00-16:00"]
      holidays: ["2026-10-01"]
    after_hours: {voicemail: box}
    greeting: welcome
    entry: {menu: main}
    menus:
      main:
        prompt: main_menu
        options:
          "1": {hunt: sales}
          "3": {hunt: complaints}
        on_timeout: {hunt: sales}
    hunt_groups:
      sales:
        strategy: round_robin
        lines:
          - {id: zhang, name: "张伟", number: "13800138001"}
          - {id: li, name: "李娜", number: "13800138002"}
          - {id: wang, name: "王芳", number: "13800138003"}
      complaints:
        lines:
          - {id: zhao, name: "赵强", number: "01088886666"}
      after_sales:
        lines:
          - {id: desk, name: "售后座席", target: "PJSIP/8001"}
    voicemail:
      box: {prompt: leave_message}
    prompts:
      welcome: "您好，欢迎致电示例科技。"
      main_menu: "咨询请按1，投诉请按3。"
    """)


def plan(text: str) -> NumberPlan:
    return NumberPlan.model_validate(yaml.safe_load(text))


def edited(*pairs: tuple[str, str]) -> str:
    text = BASE
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def said(text: str) -> tuple[list[str], list[str]]:
    changes = plan_changes(plan(BASE), plan(text))
    for change in changes:
        for key in keys_of(change):
            assert key in MESSAGES, key  # no raw key on a page, in either language
    return [c.say(ZH) for c in changes], [c.say(EN) for c in changes]


def test_a_reorder_is_said_with_the_old_order() -> None:
    zh, en = said(edited(('      - {id: zhang, name: "张伟", number: "13800138001"}\n', ""),
                         ('      - {id: wang, name: "王芳", number: "13800138003"}\n',
                          '      - {id: wang, name: "王芳", number: "13800138003"}\n      - {id: zhang, name: "张伟", number: "13800138001"}\n')))
    assert zh == ["坐席组「sales」接听顺序：李娜、王芳、张伟（原为 张伟、李娜、王芳）"]
    assert en == ["group “sales” answer order: 李娜, 王芳, 张伟 (was 张伟, 李娜, 王芳)"]


def test_strategy_hours_menu_key_and_a_disabled_line() -> None:
    zh, en = said(edited(("strategy: round_robin", "strategy: sequential"),
                         ('    sat: ["10:00-16:00"]\n', ""),
                         ('"3": {hunt: complaints}', '"3": {hunt: after_sales}'),
                         ('{id: li, name: "李娜", number: "13800138002"}', '{id: li, name: "李娜", number: "13800138002", enabled: false}')))
    assert zh == [
        "周六 营业时间 10:00-16:00 → 休息",
        "语音菜单「main」按 3 → 坐席组「after_sales」（原为 坐席组「complaints」）",
        "坐席组「sales」振铃方式：轮循 → 顺序",
        "坐席组「sales」停用线路 李娜",
    ]
    assert en[0] == "Sat hours: 10:00-16:00 → closed" and en[3] == "group “sales” line 李娜 switched off"


def test_lines_added_removed_and_their_settings_masked() -> None:
    zh, _ = said(edited(('      - {id: zhao, name: "赵强", number: "01088886666"}\n',
                         '      - {id: zhao, name: "赵强", number: "01088886667", ring_timeout: 30}\n'
                         '      - {id: sun, name: "孙丽", number: "13900001111"}\n'),
                        ('      - {id: li, name: "李娜", number: "13800138002"}\n', "")))
    assert "坐席组「sales」删除线路 李娜" in zh
    assert "坐席组「complaints」新增线路 孙丽（139****1111）" in zh
    assert "坐席组「complaints」赵强 电话：010****6666 → 010****6667" in zh
    assert "坐席组「complaints」赵强 每次响铃：20 秒 → 30 秒" in zh
    assert not any("13900001111" in s or "01088886667" in s for s in zh)  # no full phone number on the page


def test_greeting_wording_and_new_recording_and_other_fields() -> None:
    zh, _ = said(edited(('welcome: "您好，欢迎致电示例科技。"', 'welcome: "您好，这里是示例科技。"')))
    assert zh == ["提示语「welcome」：「您好，欢迎致电示例科技。」 → 「您好，这里是示例科技。」"]
    zh, en = said(edited(("greeting: welcome", "greeting: welcome_4008001234_0a1b2c3d4e"),
                         ('  welcome: "您好，欢迎致电示例科技。"\n', '  welcome: "您好，欢迎致电示例科技。"\n'
                          '  welcome_4008001234_0a1b2c3d4e: "您好，欢迎致电示例科技。"\n')))
    assert zh[0] == "欢迎语改用新的录音 welcome_4008001234_0a1b2c3d4e（原为 welcome）"
    assert en[0].startswith("Greeting: a new recording welcome_4008001234_0a1b2c3d4e")
    zh, _ = said(edited(("after_hours: {voicemail: box}\n", ""), ('holidays: ["2026-10-01"]', 'holidays: ["2026-10-01", "2027-01-01"]')))
    assert zh == ["新增节假日 2027-01-01", "非工作时间来电：请来电者留言（最长 120 秒） → 直接挂机"]
    zh, _ = said(edited(("  box: {prompt: leave_message}", "  box: {prompt: leave_message, max_seconds: 60}")))
    assert zh == ["其他设置已修改：留言设置"]  # the action is the same box; the box itself changed


def test_a_menu_wording_changed_with_its_prompt_is_said_once() -> None:
    zh, _ = said(edited(('main_menu: "咨询请按1，投诉请按3。"', 'main_menu: "咨询请按1。"')))
    assert zh == ["语音菜单「main」提示语：「咨询请按1，投诉请按3。」 → 「咨询请按1。」"]
    zh, _ = said(edited(("    prompt: main_menu\n", '    prompt: main_menu\n    text: "咨询请按1。"\n'),
                        ('main_menu: "咨询请按1，投诉请按3。"', 'main_menu: "请按1。"')))
    assert zh == ["语音菜单「main」提示语：「咨询请按1，投诉请按3。」 → 「咨询请按1。」",
                  "提示语「main_menu」：「咨询请按1，投诉请按3。」 → 「请按1。」"]  # another wording than the menu's: said too


def test_nothing_changed_and_a_first_version() -> None:
    same = plan(BASE.replace("# 示例科技 - hand-written, comments kept", "# only a comment differs"))
    assert plan_changes(plan(BASE), same) == ()
    assert summary_text(plan_changes(plan(BASE), same), ZH) == "没有变化"
    assert summary_text(plan_changes(None, same), EN) == "The first version"
    written_out = BASE.replace("    strategy: round_robin\n", "    strategy: round_robin\n    ring_budget: 120\n")
    assert plan_changes(plan(BASE), plan(written_out)) == ()  # a default written out is no change


def test_summary_joins_the_changes() -> None:
    text = edited(("strategy: round_robin", "strategy: ring_all"), ('"3": {hunt: complaints}', '"3": {hunt: after_sales}'))
    assert summary_text(plan_changes(plan(BASE), plan(text)), ZH) == (
        "语音菜单「main」按 3 → 坐席组「after_sales」（原为 坐席组「complaints」）；坐席组「sales」振铃方式：轮循 → 同时振铃")


@pytest.mark.parametrize("context", [0, 1, 3])
def test_line_diff_hunks_with_line_numbers_and_context(context: int) -> None:
    new = edited(("strategy: round_robin", "strategy: sequential  # 顺序"), ('name: "示例科技"', 'name: "示例科技 Example"'))
    hunks = line_diff(BASE, new, context=context)
    changed = [(line.op, line.old_no, line.new_no, line.text) for hunk in hunks for line in hunk.lines if line.op != " "]
    assert changed == [
        ("-", 3, None, 'name: "示例科技"'), ("+", None, 3, 'name: "示例科技 Example"'),
        ("-", 22, None, "    strategy: round_robin"), ("+", None, 22, "    strategy: sequential  # 顺序"),
    ]
    kept = [line for hunk in hunks for line in hunk.lines if line.op == " "]
    assert all(BASE.splitlines()[line.old_no - 1] == line.text for line in kept if line.old_no)
    assert len(hunks) == (2 if context < 8 else 1)
    assert hunks[0].old_start == max(1, 3 - context)
    assert line_diff(BASE, BASE) == ()
