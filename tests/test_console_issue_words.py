"""The plan checks' issues in Chinese next to a form's field: every kind and message a form can reach is
said in Chinese (matched against the validator's real output, so a reworded check fails here); English
pages show the validator's words."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrouter.console.i18n import translator
from callrouter.console.issue_words import issue_text
from callrouter.plans.service import PlanRejected, check_plan_text
from tests.harness import sample_config

SAMPLE = (Path(__file__).resolve().parent.parent / "dialplans" / "4008001234.yaml").read_text()
ZHANG = '{id: zhang, name: "张伟", number: "13800138001", ring_timeout: 20}'

CASES = [  # (what the company typed, as an edit of the sample plan's text; the Chinese it must read)
    (("ring_timeout: 20}", "ring_timeout: 900}"), "不能大于"),
    (("ring_timeout: 20}", "ring_timeout: 0}"), "不能小于"),
    (("ring_timeout: 20}", "ring_timeout: soon}"), "请填写整数"),
    (("strategy: round_robin", "strategy: loudest"), "只能是："),
    (('mon: ["09:00-12:00", "13:30-18:00"]', 'mon: ["18:00-09:00"]'), "结束时间必须晚于开始时间"),
    (('mon: ["09:00-12:00", "13:30-18:00"]', 'mon: ["9 to 5"]'), "这样的时间段"),
    (('mon: ["09:00-12:00", "13:30-18:00"]', 'mon: ["24:00-24:00"]'), "时段不能从 24:00 开始"),
    (('- "2026-10-01"', '- "2026-13-01"'), "日期格式不对"),
    ((ZHANG, '{id: zhang, name: "张伟", number: "138-abc", ring_timeout: 20}'), "不是有效的电话号码"),
    ((ZHANG, '{id: zhang, name: "张伟", number: "13800138001", target: "PJSIP/1", ring_timeout: 20}'), "只能填一个"),
    ((ZHANG, '{id: li, name: "张伟", number: "13800138001", ring_timeout: 20}'), "在本组中重复"),
    (('"1": {hunt: sales}', '"x": {hunt: sales}'), "不是按键"),
    (('"1": {hunt: sales}', '"11": {hunt: sales}'), "超过了最多"),
    (('"1": {hunt: sales}', '"1": dance'), "不是有效的去向"),
]


def issues_of(edit: tuple[str, str]) -> list:  # type: ignore[type-arg]
    old, new = edit
    assert old in SAMPLE, old
    with pytest.raises(PlanRejected) as rejected:
        check_plan_text(SAMPLE.replace(old, new, 1), "4008001234", sample_config())
    return rejected.value.issues


@pytest.mark.parametrize("edit, chinese", CASES, ids=[c[1] for c in CASES])
def test_each_check_a_form_can_reach_is_said_in_chinese(edit: tuple[str, str], chinese: str) -> None:
    issues = issues_of(edit)
    said = [issue_text(issue, "zh", translator("zh"), issue.message) for issue in issues]
    assert any(chinese in text for text in said), (said, [i.message for i in issues], [i.kind for i in issues])
    assert not any(text.startswith("未通过检查") for text in said if chinese in text)


def test_english_pages_show_the_validators_words_and_unknown_checks_say_so() -> None:
    issues = issues_of(("ring_timeout: 20}", "ring_timeout: 900}"))
    assert [issue_text(i, "en", translator("en"), i.message) for i in issues] == [i.message for i in issues]
    issue = issues[0]
    odd = type(issue)(issue.file, issue.line, "something no form says", issue.path)
    assert issue_text(odd, "zh", translator("zh"), odd.message) == "未通过检查：something no form says"
