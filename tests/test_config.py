"""Config validation: every error is reported as file:line, nothing half-loaded."""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from callrouter.cli.main import main
from callrouter.config.loader import load_config
from callrouter.config.yamlsource import ConfigError
from tests.planning import lines_yaml, plan_from

GOOD = """\
number: "4001110000"
name: test
entry: {menu: m}
menus:
  m:
    prompt: m
    options:
      "1": {hunt: g}
hunt_groups:
  g:
    lines:
      - {id: a, number: "13800000001"}
"""


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        plan_from(text, file="p.yaml")
    return [str(i) for i in caught.value.issues]


def test_good_plan_loads_frozen() -> None:
    plan = plan_from(GOOD)
    with pytest.raises(ValidationError):
        plan.name = "changed"  # type: ignore[misc]
    assert plan.hunt_groups["g"].lines[0].number == "13800000001"


def test_unknown_key_is_an_error_with_its_line() -> None:
    text = GOOD.replace("      - {id: a, number: \"13800000001\"}", "      - {id: a, number: \"13800000001\", ring_timout: 5}")
    assert issues(text) == ["p.yaml:12: hunt_groups.g.lines.0.ring_timout: unknown key"]


def test_21_lines_is_an_error() -> None:
    text = GOOD.replace('      - {id: a, number: "13800000001"}', lines_yaml(21))
    (issue,) = issues(text)
    assert issue.startswith("p.yaml:11: hunt_groups.g.lines: ")
    assert "at most 20" in issue


def test_20_lines_is_fine() -> None:
    plan = plan_from(GOOD.replace('      - {id: a, number: "13800000001"}', lines_yaml(20)))
    assert len(plan.hunt_groups["g"].lines) == 20


def test_every_error_is_listed_not_just_the_first() -> None:
    text = textwrap.dedent(
        """\
        number: "4001110000"
        name: test
        timezone: Mars/Olympus
        entry: {menu: m}
        menus:
          m:
            prompt: ../../etc/passwd
            timeout: 0
            options:
              "1": {hunt: g}
        hunt_groups:
          g:
            strategy: fastest
            lines:
              - {id: a, target: "PJSIP/1001,30,tT"}
        """
    )
    found = issues(text)
    assert any(i.startswith("p.yaml:3: timezone: unknown time zone 'Mars/Olympus'") for i in found), found
    assert any(i.startswith("p.yaml:7: menus.m.prompt:") for i in found), found
    assert any(i.startswith("p.yaml:8: menus.m.timeout:") for i in found), found
    assert any(i.startswith("p.yaml:13: hunt_groups.g.strategy:") for i in found), found
    assert any(i.startswith("p.yaml:15: hunt_groups.g.lines.0.target:") and "commas" in i for i in found), found


def test_references_must_exist() -> None:
    text = GOOD.replace('"1": {hunt: g}', '"1": {hunt: sales}\n      "2": {voicemail: box}')
    assert issues(text) == [
        "p.yaml:8: menus.m.options.1: no hunt named 'sales' (known: g)",
        "p.yaml:9: menus.m.options.2: no voicemail named 'box' (known: none defined)",
    ]


def test_repeat_only_inside_a_menu() -> None:
    assert issues(GOOD.replace("entry: {menu: m}", "entry: repeat")) == [
        "p.yaml:3: entry: 'repeat' only works as a menu option"
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"1": {hunt: g}', '"12": {hunt: g}', "longer than max_digits=1"),
        ('"1": {hunt: g}', '"A": {hunt: g}', "not a DTMF key"),
        ('"1": {hunt: g}', '"1": {dial: g}', "an action is a mapping with exactly one of"),
        ('"1": {hunt: g}', '"1": {hunt: g, menu: m}', "an action is a mapping with exactly one of"),
        ('number: "13800000001"', 'number: "138-0000"', "is not a phone number"),
        ('number: "13800000001"', 'number: "13800000001", target: "PJSIP/1"', "exactly one of 'number' or 'target'"),
        ("name: test", "name: test\nname: again", "duplicate key 'name'"),
        ("entry: {menu: m}", "entry: {menu: m", "YAML syntax error"),
    ],
)
def test_field_errors(old: str, new: str, expected: str) -> None:
    text = GOOD.replace(old, new)
    assert text != GOOD
    found = issues(text)
    assert any(expected in i for i in found), found
    assert all(i.startswith("p.yaml:") for i in found)


def test_unquoted_numbers_stay_text_and_keep_leading_zeros() -> None:
    plan = plan_from(GOOD.replace('number: "13800000001"', "number: 01088886666").replace('number: "4001110000"', "number: 4001110000"))
    assert plan.hunt_groups["g"].lines[0].number == "01088886666"
    assert plan.number == "4001110000"


def test_times_are_not_sexagesimal_and_overnight_ranges_are_refused() -> None:
    plan = plan_from(GOOD + "schedule:\n  weekly:\n    mon: [09:00-18:00]\n    sun: [00:00-24:00]\n")
    assert str(plan.schedule.weekly.mon[0][0]) == "09:00:00"  # type: ignore[union-attr]
    found = issues(GOOD + "schedule:\n  weekly:\n    mon: [22:00-06:00]\n")
    assert any("split overnight" in i for i in found)


def copy_sample(tmp_path: Path) -> Path:
    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(root / "dialplans", tmp_path / "dialplans")
    return tmp_path / "config.yaml"


def test_sample_config_loads() -> None:
    config = load_config("config.yaml")
    plan = config.plans["4008001234"]
    assert set(plan.hunt_groups) == {"sales", "after_sales", "complaints"}
    assert len({line.id for g in plan.hunt_groups.values() for line in g.lines}) == 5


def test_a_plan_is_found_by_its_number_in_national_or_international_form() -> None:
    config = load_config("config.yaml")
    plan = config.plans["4008001234"]
    for digits in ("4008001234", "864008001234", "00864008001234"):
        assert config.plan_for(digits) is plan, digits
    for digits in ("4008001235", "8604008001234", "0864008001234", "86", "", "0086"):
        assert config.plan_for(digits) is None, digits
    # The digits as sent come first: a plan of its own for 864008001234 is not taken for 4008001234's.
    own = replace(config, plans={**config.plans, "864008001234": plan.model_copy(update={"name": "eighty-six"})})
    assert own.plan_for("864008001234").name == "eighty-six" and own.plan_for("00864008001234") is plan


def test_duplicate_number_across_files(tmp_path: Path) -> None:
    cfg = copy_sample(tmp_path)
    shutil.copy(tmp_path / "dialplans" / "4008001234.yaml", tmp_path / "dialplans" / "copy.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(str(cfg))
    assert "number 4008001234 is already routed by" in str(caught.value)


def test_check_command_lists_every_error_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = copy_sample(tmp_path)
    (tmp_path / "dialplans" / "broken.yaml").write_text(GOOD.replace("name: test", "name: test\nbogus: 1").replace('"13800000001"', '"x"'))
    assert main(["check", "--config", str(cfg)]) == 2  # a configuration that does not load: 2, as for every command
    err = capsys.readouterr().err
    assert "broken.yaml:3: bogus: unknown key" in err
    assert "broken.yaml:13: hunt_groups.g.lines.0.number: 'x' is not a phone number" in err
    assert "2 error(s); nothing was loaded" in err


def test_check_command_passes_on_the_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", "config.yaml"]) == 0
    assert "4008001234" in capsys.readouterr().out


def test_bad_service_config_reports_its_line(tmp_path: Path) -> None:
    cfg = copy_sample(tmp_path)
    cfg.write_text(cfg.read_text().replace("max_sessions: 2000", "max_sessions: lots"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(cfg))
    (issue,) = caught.value.issues
    assert str(issue).startswith(f"{cfg}:6: max_sessions:")


def test_a_bad_database_url_or_store_setting_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    cfg = copy_sample(tmp_path)
    text = cfg.read_text()
    cfg.write_text(text.replace("  url: null ", "  url: mysql://root@db/cdr ").replace("  batch_size: 1000", "  batch_size: 0"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(cfg))
    messages = [str(i) for i in caught.value.issues]
    url_line = text.splitlines().index(next(line for line in text.splitlines() if line.startswith("  url: null"))) + 1
    assert any(m.startswith(f"{cfg}:{url_line}: store.url:") and "postgresql+asyncpg://" in m for m in messages), messages
    assert any("cdr.batch_size" in m for m in messages), messages


def test_check_command_reports_a_prompt_a_plan_uses_but_that_has_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = copy_sample(tmp_path)
    shutil.copytree(Path(__file__).resolve().parent.parent / "ivr_prompts", tmp_path / "ivr_prompts")
    assert main(["check", "--config", str(cfg)]) == 0
    capsys.readouterr()
    for f in (tmp_path / "ivr_prompts").glob("welcome.*"):
        f.unlink()
    assert main(["check", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'dialplans' / '4008001234.yaml'}:26: greeting: prompt 'welcome' has no file" in err
    assert "1 prompt use(s) have no file in ivr_prompts" in err
