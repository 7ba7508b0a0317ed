"""`callrouter plans apply|export|history|show|restore` and `check`'s warning, on SQLite and Postgres:
files and database versions round trip byte for byte (comments too), apply is all or nothing and never
undoes a console edit that was not exported, check says which command to run."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from callrouter.cli.main import main
from callrouter.config.holder import ConfigHolder
from callrouter.config.loader import load_config
from callrouter.metrics import RouterMetrics
from callrouter.plans.edits import move_line
from callrouter.plans.service import PlanDeps, save_plan
from callrouter.store import plan_versions
from callrouter.store.db import open_engine
from callrouter.store.plan_versions import PlanVersion

ROOT = Path(__file__).resolve().parent.parent
NUMBER = "4008001234"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    """The sample config and plans, the database (SQLite, then Postgres) in CALLROUTER_DATABASE_URL."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(ROOT / "dialplans", tmp_path / "dialplans")
    monkeypatch.setenv("CALLROUTER_DATABASE_URL", db_url)
    return tmp_path / "config.yaml"


def versions(number: str = NUMBER) -> list[PlanVersion]:
    async def read() -> list[PlanVersion]:
        engine = open_engine(make_url(os.environ["CALLROUTER_DATABASE_URL"]))
        try:
            async with engine.connect() as conn:
                return await plan_versions.history(conn, number)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def console_edit(cfg: Path, text: str, expected: int | None) -> PlanVersion:
    """A save as the console makes it (another process's, as far as the files are concerned)."""
    async def save() -> PlanVersion:
        engine = open_engine(make_url(os.environ["CALLROUTER_DATABASE_URL"]))
        try:
            deps = PlanDeps(engine, ConfigHolder(load_config(str(cfg)), RouterMetrics()), lambda: datetime.now(timezone.utc))
            return await save_plan(deps, NUMBER, text, author="alice", origin="console", expected_version=expected, summary="王芳 first")
        finally:
            await engine.dispose()

    return asyncio.run(save())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


def test_apply_export_and_restore_round_trip_the_files_byte_for_byte(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(site)
    plan_file = site.parent / "dialplans" / f"{NUMBER}.yaml"
    original = plan_file.read_bytes()
    assert b"#" in original  # the sample is commented: those comments must survive every step

    status, out, _ = run(capsys, "plans", "apply", "--config", cfg, "--dry-run")
    assert status == 0 and "would be stored as version 1" in out and versions() == []
    status, out, _ = run(capsys, "plans", "apply", "--config", cfg)
    assert status == 0 and "stored as version 1" in out
    [v1] = versions()
    assert v1.text.encode() == original and v1.origin == "file" and v1.author.startswith("ops:")
    assert run(capsys, "plans", "apply", "--config", cfg)[1].count("unchanged (version 1)") == 1

    edited = move_line(original.decode(), "sales", "wang", -2)  # a console edit: the file's comments kept
    console_edit(site, edited, 1)
    status, _, err = run(capsys, "check", "--config", cfg)
    assert f"the file is version 1; `callrouter plans export --number {NUMBER}` writes the newest" in err and "version 2" in err
    status, _, err = run(capsys, "plans", "apply", "--config", cfg)  # the file is version 1: not an edit, not applied
    assert status == 1 and "older than the newest" in err and "plans export" in err
    assert [v.version for v in versions()] == [2, 1]

    status, out, _ = run(capsys, "plans", "export", "--config", cfg)
    assert status == 0 and "version 2 written" in out
    assert plan_file.read_bytes() == edited.encode()
    assert [ln for ln in edited.splitlines() if "#" in ln] == [ln for ln in original.decode().splitlines() if "#" in ln]
    assert "differs" not in run(capsys, "check", "--config", cfg)[2]
    assert "already version 2" in run(capsys, "plans", "export", "--config", cfg)[1]

    plan_file.write_text(edited.replace("ring_budget: 60", "ring_budget: 75"))  # ops edit the file
    status, _, err = run(capsys, "check", "--config", cfg)
    assert "the file was edited; `callrouter plans apply` makes it live" in err
    status, out, _ = run(capsys, "plans", "apply", "--config", cfg)
    assert status == 0 and "stored as version 3" in out

    status, out, _ = run(capsys, "plans", "history", NUMBER, "--config", cfg)
    rows = out.splitlines()
    assert status == 0 and [r.split("\t")[0] for r in rows] == ["v3", "v2", "v1"] and rows[0].endswith("(runs)")
    assert "\tconsole\talice\t" in rows[1]
    status, out, _ = run(capsys, "plans", "show", NUMBER, "--version", "2", "--config", cfg)
    assert status == 0 and out == edited

    status, out, _ = run(capsys, "plans", "restore", NUMBER, "1", "--config", cfg)
    assert status == 0 and "version 1 restored as version 4" in out
    [v4, *_] = versions()
    assert (v4.origin, v4.restored_from, v4.text.encode()) == ("restore", 1, original)
    run(capsys, "plans", "export", "--number", NUMBER, "--config", cfg)
    assert plan_file.read_bytes() == original  # back to the file as it was, byte for byte
    assert run(capsys, "plans", "restore", NUMBER, "9", "--config", cfg)[0] == 1
    assert run(capsys, "plans", "show", "4009999999", "--config", cfg)[0] == 1


def test_apply_is_all_or_nothing(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(site)
    plans = site.parent / "dialplans"
    text = (plans / f"{NUMBER}.yaml").read_text()
    (plans / "4008005678.yaml").write_text(text.replace(NUMBER, "4008005678"))
    assert run(capsys, "plans", "apply", "--config", cfg)[0] == 0
    (plans / f"{NUMBER}.yaml").write_text(text.replace("ring_budget: 60", "ring_budget: 75"))  # a good edit
    (plans / "4008005678.yaml").write_text(text.replace(NUMBER, "4008005678").replace("menu: main", "menu: gone", 1))  # a bad one
    status, _, err = run(capsys, "plans", "apply", "--config", cfg)
    assert status == 2 and "no menu named 'gone'" in err and "nothing was loaded" in err
    assert [v.version for v in versions()] == [1] and [v.version for v in versions("4008005678")] == [1]


def test_a_file_behind_the_database_is_applied_only_when_named(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(site)
    text = (site.parent / "dialplans" / f"{NUMBER}.yaml").read_text()
    run(capsys, "plans", "apply", "--config", cfg)
    console_edit(site, move_line(text, "sales", "wang", -2), 1)
    assert run(capsys, "plans", "apply", "--config", cfg)[0] == 1
    status, out, _ = run(capsys, "plans", "apply", "--number", NUMBER, "--config", cfg)
    assert status == 0 and "stored as version 3" in out and versions()[0].text == text
    assert run(capsys, "plans", "apply", "--number", "4009999999", "--config", cfg)[0] == 2
