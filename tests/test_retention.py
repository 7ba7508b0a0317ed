"""Recording retention: old recordings deleted inside the folder only, CDRs marked, a dry run changes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.engine import make_url

from callrouter.config.loader import load_config
from callrouter.retention.purge import FolderMissing, RetentionPurger, Seen, inside, purge
from callrouter.model.record import CallRecord
from callrouter.store.db import open_engine
from callrouter.store.schema import calls
from tests.cdrs import record
from tests.harness import arun
from tests.test_exporter import write
from tests.test_process import ENV

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
OLD = NOW - timedelta(days=200)
RECENT = NOW - timedelta(days=10)
CUTOFF = NOW - timedelta(days=180)
ROOT = Path(__file__).resolve().parent.parent
MAY = "4008001234/2026-05-08"


def setup_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A recordings folder with old, new, orphan and hostile entries, and an outside world that must survive."""
    rec = tmp_path / "rec"
    outside = tmp_path / "outside"
    for d in (rec / MAY, rec / "4008001234/2026-04-01", rec / "4008001234/2026-11-14", rec / "4008001234/2026-11-24", outside):
        d.mkdir(parents=True)
    (rec / MAY / "old.wav").write_bytes(b"o" * 1000)
    (rec / MAY / "orphan.wav").write_bytes(b"x" * 5)
    (rec / "4008001234/2026-04-01/april.wav").write_bytes(b"a" * 20)  # named by a CDR: its folder is emptied by the CDR pass
    (rec / "4008001234/2026-11-14/new.wav").write_bytes(b"n" * 10)
    (outside / "keep.wav").write_bytes(b"k")
    (outside / "absolute.wav").write_bytes(b"a")
    (tmp_path / "outside.wav").write_bytes(b"u")
    (rec / "link.wav").symlink_to(outside / "keep.wav")
    old = OLD.timestamp()
    for name in (f"{MAY}/old.wav", f"{MAY}/orphan.wav", "4008001234/2026-04-01/april.wav", "link.wav"):
        os.utime(rec / name, (old, old), follow_symlinks=False)
    return rec, outside


def records_for(rec: Path, outside: Path) -> list[CallRecord]:
    def with_file(i: int, name: str | None, at: datetime) -> CallRecord:
        return dataclasses.replace(record(i, start=at), recording_file=name)

    return [
        with_file(1, f"{rec}/{MAY}/old.wav", OLD),
        with_file(2, f"{rec}/4008001234/2026-11-14/new.wav", RECENT),
        with_file(3, f"{rec}/../outside/keep.wav", OLD),  # hostile: climbs out
        with_file(4, str(outside / "absolute.wav"), OLD),  # hostile: absolute elsewhere
        with_file(5, f"{rec}/link.wav", OLD),  # hostile: a symlink leading out
        with_file(6, f"{rec}/{MAY}/gone.wav", OLD),  # already deleted by hand
        with_file(7, None, OLD),  # not recorded
        with_file(8, "../outside.wav", OLD),  # hostile: relative, climbs out
        with_file(9, "4008001234/2026-04-01/april.wav", OLD),  # relative to the folder
    ]


def outside_intact(tmp_path: Path, rec: Path) -> None:
    assert (tmp_path / "outside/keep.wav").read_bytes() == b"k" and (tmp_path / "outside/absolute.wav").read_bytes() == b"a"
    assert (tmp_path / "outside.wav").read_bytes() == b"u" and (rec / "link.wav").is_symlink()


async def purged_marks(url: str) -> dict[str, bool]:
    engine = open_engine(make_url(url))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(calls.c.uniqueid, calls.c.recording_purged_at))).all()
        return {u.rsplit(".", 1)[1]: p is not None for u, p in rows}
    finally:
        await engine.dispose()


def test_paths_are_confined_to_the_folder(tmp_path: Path) -> None:
    rec, outside = setup_folder(tmp_path)
    root = rec.resolve()
    assert inside(root, f"{rec}/{MAY}/old.wav", str(rec))[0] == root / MAY / "old.wav"
    assert inside(root, f"{MAY}/old.wav")[0] == root / MAY / "old.wav"
    for name in (f"{rec}/../outside/keep.wav", str(outside / "keep.wav"), "../outside.wav", "/etc/passwd", "link.wav",
                 f"{rec}/a\x00b", f"{rec}//x", f"{rec}/./x", f"{rec}x/y.wav"):
        assert inside(root, name, str(rec))[0] is None, name
    (rec / "linked").symlink_to(outside)  # a linked folder on the way is refused too
    assert inside(root, "linked/keep.wav", str(rec)) == (None, "a symlink")


def test_the_purge_deletes_old_recordings_inside_only_and_marks_the_cdrs(db_url: str, tmp_path: Path) -> None:
    rec, outside = setup_folder(tmp_path)
    old_files = [f"{MAY}/old.wav", "4008001234/2026-04-01/april.wav", f"{MAY}/orphan.wav"]

    async def body() -> None:
        await write(db_url, records_for(rec, outside))
        engine = open_engine(make_url(db_url))
        try:
            dry_seen: list[Seen] = []
            dry = await purge(engine, str(rec), CUTOFF, NOW, dry_run=True, orphans=True, seen=dry_seen.append, batch=2)
            assert sorted(e.name for e in dry_seen if e.action in ("deleted", "orphan")) == sorted(old_files)
            assert (dry.deleted, dry.orphans, dry.bytes, dry.marked, dry.folders) == (3, 1, 1025, 0, 0)
            assert all((rec / f).exists() for f in old_files) and not any((await purged_marks(db_url)).values())

            seen: list[Seen] = []
            report = await purge(engine, str(rec), CUTOFF, NOW, dry_run=False, orphans=True, seen=seen.append, batch=2)
            assert {(e.action, e.name) for e in seen if e.action in ("deleted", "orphan", "gone")} == {
                ("deleted", f"{MAY}/old.wav"), ("deleted", "4008001234/2026-04-01/april.wav"), ("orphan", f"{MAY}/orphan.wav"), ("gone", f"{MAY}/gone.wav")}
            assert (report.deleted, report.bytes, report.orphans, report.already_gone, report.failed) == (3, 1025, 1, 1, 0)
            refused = sorted(e.name for e in seen if e.action == "refused")
            assert refused == sorted(["../outside.wav", f"{rec}/../outside/keep.wav", str(outside / "absolute.wav"), f"{rec}/link.wav", "link.wav"])
            outside_intact(tmp_path, rec)
            assert not any((rec / f).exists() for f in old_files) and (rec / "4008001234/2026-11-14/new.wav").exists()
            assert not (rec / MAY).exists() and not (rec / "4008001234/2026-04-01").exists()  # emptied date folders are gone
            assert (rec / "4008001234/2026-11-24").is_dir()  # a folder that was already empty stays (Asterisk may record into it)
            assert report.folders == 2
            assert await purged_marks(db_url) == {"1": True, "2": False, "3": False, "4": False, "5": False, "6": True, "7": False, "8": False, "9": True}

            again = await purge(engine, str(rec), CUTOFF, NOW, dry_run=False, orphans=True)
            assert (again.deleted, again.marked, again.refused) == (0, 0, 5)  # the hostile CDRs stay unmarked and refused
            outside_intact(tmp_path, rec)
        finally:
            await engine.dispose()

    arun(body())


def test_without_orphans_the_cdr_pass_alone_deletes_and_removes_its_folders(db_url: str, tmp_path: Path) -> None:
    rec, outside = setup_folder(tmp_path)

    async def body() -> None:
        await write(db_url, records_for(rec, outside))
        engine = open_engine(make_url(db_url))
        try:
            report = await purge(engine, str(rec), CUTOFF, NOW, dry_run=False, orphans=False)
            assert (report.deleted, report.orphans, report.refused, report.folders) == (2, 0, 4, 1)
            assert (rec / MAY / "orphan.wav").exists() and not (rec / "4008001234/2026-04-01").exists()
            outside_intact(tmp_path, rec)
            with pytest.raises(FolderMissing):  # elsewhere, every CDR would look 'already gone': nothing is done
                await purge(engine, str(tmp_path / "not-mounted"), CUTOFF, NOW, dry_run=False, orphans=False)
            assert (await purged_marks(db_url))["2"] is False
        finally:
            await engine.dispose()

    arun(body())


def local_config(tmp_path: Path, rec: Path) -> Path:
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["recordings_dir"] = str(rec)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    (tmp_path / "dialplans").mkdir()
    (tmp_path / "dialplans" / "p.yaml").write_text((ROOT / "dialplans" / "4008001234.yaml").read_text())
    return tmp_path / "config.yaml"


def test_the_scheduled_purge_counts_skips_a_missing_folder_and_closes(db_url: str, tmp_path: Path) -> None:
    rec, outside = setup_folder(tmp_path)
    config = load_config(str(local_config(tmp_path, rec)))
    config_missing = dataclasses.replace(config, service=config.service.model_copy(update={"recordings_dir": str(tmp_path / "nope")}))

    async def body() -> None:
        await write(db_url, records_for(rec, outside))
        engine = open_engine(make_url(db_url))
        registry = CollectorRegistry()
        try:
            missing = RetentionPurger(engine, lambda: config_missing, CollectorRegistry(), lambda: NOW)
            assert await missing.purge_due() is None
            purger = RetentionPurger(engine, lambda: config, registry, lambda: NOW)
            await purger.start()  # the first round runs at once
            deadline = asyncio.get_running_loop().time() + 10
            counted = ("callrouter_recordings_purged_total", "callrouter_recording_purge_refused_total", "callrouter_recording_purge_bytes_total")
            # the round counts as it goes (due rows first, then the orphan walk): wait for the whole round, not its first part
            while [registry.get_sample_value(name) for name in counted] != [3, 5, 1025]:
                got = [registry.get_sample_value(name) for name in counted]
                assert asyncio.get_running_loop().time() < deadline, f"the scheduled purge counted {got}, not [3, 5, 1025]"
                await asyncio.sleep(0.02)
            await purger.close()
            assert [registry.get_sample_value(name) for name in counted] == [3, 5, 1025]
            outside_intact(tmp_path, rec)
        finally:
            await engine.dispose()

    arun(body())


def test_the_purge_command_dry_run_then_for_real(tmp_path: Path) -> None:
    rec, outside = setup_folder(tmp_path)
    cfg = str(local_config(tmp_path, rec))
    subprocess.run([sys.executable, "-m", "callrouter", "db", "upgrade", "--config", cfg], check=True, capture_output=True, env=ENV)
    when = datetime.now(timezone.utc) - timedelta(days=200)
    old = dataclasses.replace(record(1, start=when), recording_file=f"{rec}/{MAY}/old.wav")
    hostile = dataclasses.replace(record(2, start=when), recording_file="../outside.wav")
    arun(write(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'callrouter.db'}", [old, hostile]))
    purge_cmd = [sys.executable, "-m", "callrouter", "recordings", "purge", "--config", cfg]
    dry = subprocess.run([*purge_cmd, "--dry-run"], capture_output=True, text=True, env=ENV)
    assert dry.returncode == 0 and f"would delete {MAY}/old.wav\n" in dry.stdout and "nothing was changed" in dry.stdout, dry.stdout + dry.stderr
    assert "refused ../outside.wav" in dry.stderr
    assert (rec / MAY / "old.wav").exists()
    real = subprocess.run(purge_cmd, capture_output=True, text=True, env=ENV)
    assert real.returncode == 0 and "deleted 3 recordings" in real.stdout and "1 CDRs marked" in real.stdout, real.stdout + real.stderr
    assert not (rec / MAY / "old.wav").exists()
    outside_intact(tmp_path, rec)
    rec.rename(tmp_path / "unmounted")
    gone = subprocess.run(purge_cmd, capture_output=True, text=True, env=ENV)
    assert gone.returncode == 2 and "does not exist on this host" in gone.stderr
