"""Recording retention: old recordings deleted inside the folder only, CDRs marked, a dry run changes nothing."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.engine import make_url

from callrouter.config.loader import load_config
from callrouter.retention import RetentionPurger, inside, purge
from callrouter.store.db import open_engine
from callrouter.store.schema import calls
from tests.cdrs import record
from tests.harness import arun
from tests.test_exporter import write
from tests.test_process import ENV

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
OLD = NOW - timedelta(days=200)
RECENT = NOW - timedelta(days=10)


def setup_folder(tmp_path: Path) -> tuple[Path, Path]:
    rec = tmp_path / "rec"
    outside = tmp_path / "outside"
    for d in (rec / "4008001234" / "2026-05-08", rec / "4008001234" / "2026-11-14", outside):
        d.mkdir(parents=True)
    (rec / "4008001234" / "2026-05-08" / "old.wav").write_bytes(b"o" * 1000)
    (rec / "4008001234" / "2026-11-14" / "new.wav").write_bytes(b"n" * 10)
    (rec / "4008001234" / "2026-05-08" / "orphan.wav").write_bytes(b"x" * 5)
    (outside / "keep.wav").write_bytes(b"k")
    (outside / "absolute.wav").write_bytes(b"a")
    (rec / "link.wav").symlink_to(outside / "keep.wav")
    old = OLD.timestamp()
    for name in ("4008001234/2026-05-08/old.wav", "4008001234/2026-05-08/orphan.wav", "link.wav"):
        os.utime(rec / name, (old, old), follow_symlinks=False)
    return rec, outside


def records_for(rec: Path, outside: Path) -> list[object]:
    def with_file(i: int, name: str | None, at: datetime) -> object:
        return dataclasses.replace(record(i, start=at), recording_file=name)

    return [
        with_file(1, f"{rec}/4008001234/2026-05-08/old.wav", OLD),
        with_file(2, f"{rec}/4008001234/2026-11-14/new.wav", RECENT),
        with_file(3, f"{rec}/../outside/keep.wav", OLD),  # hostile: climbs out
        with_file(4, str(outside / "absolute.wav"), OLD),  # hostile: absolute elsewhere
        with_file(5, f"{rec}/link.wav", OLD),  # hostile: a symlink leading out
        with_file(6, f"{rec}/4008001234/2026-05-08/gone.wav", OLD),  # already deleted by hand
        with_file(7, None, OLD),  # not recorded
    ]


async def purged_marks(url: str) -> dict[str, bool]:
    engine = open_engine(make_url(url))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(calls.c.uniqueid, calls.c.recording_purged_at))).all()
        return {u: p is not None for u, p in rows}
    finally:
        await engine.dispose()


def test_paths_are_confined_to_the_folder(tmp_path: Path) -> None:
    rec, outside = setup_folder(tmp_path)
    root = rec.resolve()
    assert inside(root, f"{rec}/4008001234/2026-05-08/old.wav", str(rec))[0] == root / "4008001234/2026-05-08/old.wav"
    assert inside(root, "4008001234/2026-05-08/old.wav")[0] is not None
    for name in (f"{rec}/../outside/keep.wav", str(outside / "keep.wav"), "../outside/keep.wav", "link.wav", f"{rec}/a\x00b", f"{rec}//x"):
        assert inside(root, name, str(rec))[0] is None, name


def test_the_purge_deletes_old_recordings_inside_only_and_marks_the_cdrs(db_url: str, tmp_path: Path) -> None:
    rec, outside = setup_folder(tmp_path)

    async def body() -> None:
        await write(db_url, records_for(rec, outside))  # type: ignore[arg-type]
        engine = open_engine(make_url(db_url))
        try:
            dry = await purge(engine, str(rec), NOW - timedelta(days=180), NOW, dry_run=True, orphans=True)
            assert sorted(dry.deleted) == ["4008001234/2026-05-08/old.wav", "4008001234/2026-05-08/orphan.wav"]
            assert (rec / "4008001234/2026-05-08/old.wav").exists() and not any((await purged_marks(db_url)).values())

            report = await purge(engine, str(rec), NOW - timedelta(days=180), NOW, dry_run=False, orphans=True)
            assert sorted(report.deleted) == ["4008001234/2026-05-08/old.wav", "4008001234/2026-05-08/orphan.wav"]
            assert report.bytes == 1005 and report.orphans == ["4008001234/2026-05-08/orphan.wav"] and report.already_gone == 1
            assert len(report.refused) == 4  # three hostile CDR paths and the symlink met in the folder walk
            assert (outside / "keep.wav").read_bytes() == b"k" and (outside / "absolute.wav").exists()
            assert (rec / "link.wav").is_symlink() and (rec / "4008001234/2026-11-14/new.wav").exists()
            assert not (rec / "4008001234/2026-05-08").exists()  # the emptied date folder is gone
            marks = await purged_marks(db_url)
            assert marks == {"1764000000.1": True, "1764000000.2": False, "1764000000.3": False, "1764000000.4": False,
                             "1764000000.5": False, "1764000000.6": True, "1764000000.7": False}
            again = await purge(engine, str(rec), NOW - timedelta(days=180), NOW, dry_run=False, orphans=True)
            assert again.deleted == [] and again.marked == 0
        finally:
            await engine.dispose()

    arun(body())


def test_the_scheduled_purge_counts_and_skips_a_missing_folder(db_url: str, tmp_path: Path) -> None:
    rec, outside = setup_folder(tmp_path)
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "config.yaml").write_text((root / "config.yaml").read_text())
    (tmp_path / "dialplans").mkdir()
    (tmp_path / "dialplans" / "p.yaml").write_text((root / "dialplans" / "4008001234.yaml").read_text())
    config = load_config(str(tmp_path / "config.yaml"))
    config_here = dataclasses.replace(config, service=config.service.model_copy(update={"recordings_dir": str(rec)}))
    config_missing = dataclasses.replace(config, service=config.service.model_copy(update={"recordings_dir": str(tmp_path / "nope")}))

    async def body() -> None:
        await write(db_url, records_for(rec, outside))  # type: ignore[arg-type]
        engine = open_engine(make_url(db_url))
        registry = CollectorRegistry()
        try:
            missing = RetentionPurger(engine, lambda: config_missing, CollectorRegistry(), lambda: NOW)
            assert await missing.run_once() is None
            purger = RetentionPurger(engine, lambda: config_here, registry, lambda: NOW)
            report = await purger.run_once()
            assert report is not None and len(report.deleted) == 2
            assert registry.get_sample_value("callrouter_recordings_purged_total") == 2
            assert registry.get_sample_value("callrouter_recording_purge_bytes_total") == 1005
            assert registry.get_sample_value("callrouter_recording_purge_refused_total") == 4
        finally:
            await engine.dispose()

    arun(body())


def test_the_purge_command_dry_run_then_for_real(tmp_path: Path) -> None:
    rec, outside = setup_folder(tmp_path)
    root = Path(__file__).resolve().parent.parent
    doc = yaml.safe_load((root / "config.yaml").read_text())
    doc["recordings_dir"] = str(rec)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    (tmp_path / "dialplans").mkdir()
    (tmp_path / "dialplans" / "p.yaml").write_text((root / "dialplans" / "4008001234.yaml").read_text())
    cfg = str(tmp_path / "config.yaml")
    subprocess.run([sys.executable, "-m", "callrouter", "db", "upgrade", "--config", cfg], check=True, capture_output=True, env=ENV)
    when = datetime.now(timezone.utc) - timedelta(days=200)
    arun(write(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'callrouter.db'}", [dataclasses.replace(record(1, start=when), recording_file=f"{rec}/4008001234/2026-05-08/old.wav")]))
    dry = subprocess.run([sys.executable, "-m", "callrouter", "recordings", "purge", "--config", cfg, "--dry-run"], capture_output=True, text=True, env=ENV)
    assert dry.returncode == 0 and "would delete 4008001234/2026-05-08/old.wav" in dry.stdout and "nothing was changed" in dry.stdout
    assert (rec / "4008001234/2026-05-08/old.wav").exists()
    real = subprocess.run([sys.executable, "-m", "callrouter", "recordings", "purge", "--config", cfg], capture_output=True, text=True, env=ENV)
    assert real.returncode == 0 and "deleted 2 recordings" in real.stdout, real.stdout + real.stderr
    assert not (rec / "4008001234/2026-05-08/old.wav").exists() and (outside / "keep.wav").exists()
