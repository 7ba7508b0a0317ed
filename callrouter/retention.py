"""Recording retention: recordings older than the retention are deleted, strictly inside the recordings folder.

Two passes. CDRs: every call with a recording, not yet purged, that started before the cutoff: its file
is deleted and the CDR marked `recording_purged_at` (also when the file was already gone). Orphans:
files in the folder older than the cutoff (by modification time) that no CDR names, e.g. from calls
whose CDR never reached this database. Nothing outside the folder is ever touched: a path with `..`,
an absolute path elsewhere, or a symlink is refused and counted. Emptied date folders are removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.loader import RoutingConfig
from callrouter.store.schema import calls
from callrouter.tasks import cancel_and_wait

log = logging.getLogger(__name__)
BATCH = 500


@dataclass
class PurgeReport:
    deleted: list[str] = field(default_factory=list)  # paths, relative to the folder
    bytes: int = 0
    already_gone: int = 0
    refused: list[str] = field(default_factory=list)  # as named, with why
    orphans: list[str] = field(default_factory=list)
    marked: int = 0


class RetentionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.purged = Counter("callrouter_recordings_purged", "Recordings deleted by the retention purge", registry=registry)
        self.bytes = Counter("callrouter_recording_purge_bytes", "Bytes of recordings deleted", registry=registry)
        self.refused = Counter(
            "callrouter_recording_purge_refused", "Recording paths the purge refused to touch (outside the folder, symlinks)", registry=registry
        )


def inside(root: Path, name: str, configured: str = "") -> tuple[Path | None, str]:
    """The file `name` (absolute under the folder, as configured or resolved, or relative to it) if it
    lies strictly inside root; else (None, why). Symlinks are refused: a recording is never one."""
    if "\x00" in name:
        return None, "NUL in the path"
    relative = name
    for prefix in {str(root), configured.rstrip("/")} - {""}:
        if name.startswith(prefix + "/"):
            relative = name[len(prefix) + 1:]
            break
    if os.path.isabs(relative):
        return None, "outside the recordings folder"
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None, "'..' or an empty segment in the path"
    path = root.joinpath(*parts)
    walked = root
    for part in parts:  # no symlink anywhere on the way (a linked folder could lead outside)
        walked = walked / part
        if walked.is_symlink():
            return None, "a symlink"
    return path, ""


def _delete(path: Path, report: PurgeReport, root: Path, dry_run: bool) -> bool:
    try:
        size = path.stat().st_size
        if not dry_run:
            path.unlink()
    except FileNotFoundError:
        report.already_gone += 1
        return True
    except OSError as exc:
        log.warning("retention: cannot delete %s: %s", path, exc.strerror)
        return False
    report.deleted.append(str(path.relative_to(root)))
    report.bytes += size
    return True


async def purge(engine: AsyncEngine, recordings_dir: str, cutoff: datetime, now: datetime, *, dry_run: bool, orphans: bool) -> PurgeReport:
    report = PurgeReport()
    root = Path(recordings_dir).resolve()
    named: set[str] = set()
    after = 0
    while True:  # keyset pages over the CDRs: memory stays flat at millions of calls
        q = (
            select(calls.c.id, calls.c.recording_file)
            .where(calls.c.recording_file.is_not(None), calls.c.recording_purged_at.is_(None), calls.c.started_at < cutoff, calls.c.id > after)
            .order_by(calls.c.id)
            .limit(BATCH)
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        if not rows:
            break
        done: list[int] = []
        for row_id, name in rows:
            path, why = inside(root, name, recordings_dir)
            if path is None:
                report.refused.append(f"{name[:200]} ({why})")
                log.warning("retention: refused to touch %r: %s", name[:200], why)
                continue
            named.add(str(path))
            if _delete(path, report, root, dry_run):
                done.append(row_id)
        if done and not dry_run:
            async with engine.begin() as conn:
                await conn.execute(update(calls).where(calls.c.id.in_(done)).values(recording_purged_at=now))
            report.marked += len(done)
        after = rows[-1][0]
    if orphans:
        await asyncio.to_thread(_orphans, root, cutoff.timestamp(), named, report, dry_run)
    return report


def _orphans(root: Path, cutoff: float, named: set[str], report: PurgeReport, dry_run: bool) -> None:
    for folder, _dirs, files in os.walk(root, topdown=False, followlinks=False):
        here = Path(folder)
        for name in files:
            path = here / name
            if path.is_symlink():
                report.refused.append(f"{path.relative_to(root)} (a symlink)")
                continue
            if str(path) in named:
                continue
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
            except FileNotFoundError:
                continue
            if _delete(path, report, root, dry_run):
                report.orphans.append(str(path.relative_to(root)))
        if here != root and not dry_run and not any(here.iterdir()):
            here.rmdir()  # a date folder emptied by the purge


class RetentionPurger:
    """The scheduled purge inside `serve`: every `retention.purge_interval`, where the folder exists."""

    def __init__(self, engine: AsyncEngine, config_source: Callable[[], RoutingConfig], registry: CollectorRegistry, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self._config_source = config_source
        self.metrics = RetentionMetrics(registry)
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recording-retention")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run_once(self) -> PurgeReport | None:
        config = self._config_source()
        settings = config.service.retention
        folder = config.service.recordings_dir
        if not settings.enabled:
            return None
        if not os.path.isdir(folder):
            if not self._warned:
                log.warning("retention: %s does not exist on this host; recordings are purged where they are", folder)
                self._warned = True
            return None
        now = self._clock()
        report = await purge(self.engine, folder, now - timedelta(days=settings.recordings_days), now, dry_run=False, orphans=settings.orphans)
        self.metrics.purged.inc(len(report.deleted))
        self.metrics.bytes.inc(report.bytes)
        self.metrics.refused.inc(len(report.refused))
        if report.deleted or report.refused or report.marked:
            log.info(
                "retention: deleted %d recordings (%d bytes, %d orphans), %d already gone, %d refused",
                len(report.deleted), report.bytes, len(report.orphans), report.already_gone, len(report.refused),
            )
        return report

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the database away: the next round purges what this one could not
                log.warning("retention purge failed: %s", exc)
            await asyncio.sleep(self._config_source().service.retention.purge_interval)

