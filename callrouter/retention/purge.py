"""Recording retention: recordings older than the retention are deleted, strictly inside the recordings folder.

Two passes. CDRs: every call with a recording, not yet purged, that started before the cutoff: its file
is deleted and the CDR marked `recording_purged_at` (also when the file was already gone). Orphans:
files in the folder older than the cutoff (by modification time) that no CDR names, e.g. from calls
whose CDR never reached this database. Nothing outside the folder is ever touched: a path with `..`,
an absolute path elsewhere, or a symlink is refused and counted. Folders the purge emptied are removed
(never a folder that was already empty: Asterisk may be about to record into it).

Memory stays flat at millions of calls: CDRs are read in keyset pages, files are reported one by one
to a callback instead of collected, and the file work of each page runs in a worker thread so the
event loop (calls, in `serve`) never waits on the disk.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.loader import RoutingConfig
from callrouter.store.recordings import DueRecording, mark_purged, recordings_due
from callrouter.tasks import Backoff, Periodic, PeriodicPart, within

log = logging.getLogger(__name__)
BATCH = 500
ROUND_BUDGET = 3600.0  # seconds a scheduled purge may take before it is given up on (a hung database)


class FolderMissing(ValueError):
    """The recordings folder is not on this host: purging here would mark every CDR 'already gone'."""


@dataclass(frozen=True)
class Seen:
    """One thing the purge did (or, in a dry run, would do) to one file."""

    action: str  # deleted | orphan | gone (already) | refused | failed
    name: str  # relative to the folder; for `refused`, the path as the CDR named it (shortened)
    why: str = ""
    size: int = 0


@dataclass
class PurgeReport:
    deleted: int = 0  # files deleted, orphans included (in a dry run: that would be)
    orphans: int = 0
    bytes: int = 0
    already_gone: int = 0
    refused: int = 0
    failed: int = 0  # could not be deleted (permissions, I/O); tried again next time
    marked: int = 0  # CDRs marked recording_purged_at
    folders: int = 0  # emptied folders removed

    def add(self, event: Seen) -> None:
        if event.action in ("deleted", "orphan"):
            self.deleted += 1
            self.bytes += event.size
            self.orphans += event.action == "orphan"
        elif event.action == "gone":
            self.already_gone += 1
        elif event.action == "refused":
            self.refused += 1
        else:
            self.failed += 1


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


def _delete(path: Path, root: Path, dry_run: bool, action: str = "deleted") -> Seen:
    """Unlink one regular file (never through or of a symlink)."""
    name = str(path.relative_to(root))
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return Seen("refused", name, "a symlink")
        if not stat.S_ISREG(st.st_mode):
            return Seen("refused", name, "not a regular file")
        if not dry_run:
            os.unlink(path)
    except FileNotFoundError:
        return Seen("gone", name)
    except OSError as exc:
        return Seen("failed", name, exc.strerror or str(exc))
    return Seen(action, name, size=st.st_size)


def _remove_if_emptied(folder: Path, root: Path) -> int:
    """Remove `folder` and then its parents while the purge left them empty; how many were removed."""
    removed = 0
    while folder != root and root in folder.parents:
        try:
            os.rmdir(folder)  # atomic: fails on a folder that is not empty
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                log.warning("retention: cannot remove the folder %s: %s", folder, exc.strerror)
            break
        removed += 1
        folder = folder.parent
    return removed


def _purge_page(root: Path, configured: str, rows: Sequence[DueRecording], dry_run: bool) -> tuple[list[tuple[int, Seen]], int]:
    """The file work of one page of CDRs (in a worker thread): what happened to each, folders removed."""
    out: list[tuple[int, Seen]] = []
    emptied: set[Path] = set()
    for due in rows:
        row_id, name = due.call_id, due.recording_file
        path, why = inside(root, name, configured)
        if path is None:
            out.append((row_id, Seen("refused", name[:200], why)))
            continue
        seen = _delete(path, root, dry_run)
        out.append((row_id, seen))
        if seen.action == "deleted":
            emptied.add(path.parent)
    folders = 0 if dry_run else sum(_remove_if_emptied(f, root) for f in sorted(emptied, reverse=True))
    return out, folders


async def purge(
    engine: AsyncEngine,
    recordings_dir: str,
    cutoff: datetime,
    now: datetime,
    *,
    dry_run: bool,
    orphans: bool,
    seen: Callable[[Seen], None] = lambda _: None,
    batch: int = BATCH,
) -> PurgeReport:
    """Delete what the retention allows; `seen` hears of every file, on the event loop."""
    if not os.path.isdir(recordings_dir):
        raise FolderMissing(f"recordings_dir {recordings_dir} does not exist on this host; nothing was done")
    report = PurgeReport()
    root = Path(recordings_dir).resolve()
    would_delete: set[str] = set()  # dry run only: those files are still there when the orphan pass looks
    after = 0
    while True:  # keyset pages over the CDRs
        rows = await recordings_due(engine, cutoff, after, batch)
        if not rows:
            break
        results, folders = await asyncio.to_thread(_purge_page, root, recordings_dir, rows, dry_run)
        report.folders += folders
        for _row_id, event in results:
            report.add(event)
            seen(event)
            if event.action == "refused":
                log.warning("retention: refused to touch %r: %s", event.name, event.why)
            elif event.action == "failed":
                log.warning("retention: cannot delete %s: %s", event.name, event.why)
            elif dry_run and event.action == "deleted":
                would_delete.add(event.name)
        done = [row_id for row_id, event in results if event.action in ("deleted", "gone")]
        if done and not dry_run:
            await mark_purged(engine, done, now)
            report.marked += len(done)
        after = rows[-1].call_id
    if orphans:
        await _orphans(root, cutoff.timestamp(), would_delete, report, dry_run, seen)
    return report


async def _orphans(root: Path, cutoff: float, would_delete: set[str], report: PurgeReport, dry_run: bool, seen: Callable[[Seen], None]) -> None:
    """Old files no CDR named (the CDR pass has deleted every named one), one folder at a time, deepest first."""
    walker: Iterator[tuple[str, list[str], list[str]]] = os.walk(root, topdown=False, followlinks=False)
    emptied: set[Path] = set()  # folders where something was removed; bounded by the folders not yet visited
    while (entry := await asyncio.to_thread(next, walker, None)) is not None:
        folder = Path(entry[0])
        events, removed_here = await asyncio.to_thread(_orphans_in, root, folder, entry[2], cutoff, would_delete, dry_run, folder in emptied)
        emptied.discard(folder)
        for event in events:
            report.add(event)
            seen(event)
            if event.action == "failed":
                log.warning("retention: cannot delete %s: %s", event.name, event.why)
        if removed_here:
            report.folders += 1
            emptied.add(folder.parent)


def _orphans_in(root: Path, folder: Path, files: list[str], cutoff: float, would_delete: set[str], dry_run: bool, child_removed: bool) -> tuple[list[Seen], bool]:
    events: list[Seen] = []
    for name in files:
        path = folder / name
        relative = str(path.relative_to(root))
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if st.st_mtime >= cutoff or relative in would_delete:
            continue
        if stat.S_ISLNK(st.st_mode):
            events.append(Seen("refused", relative, "a symlink"))
            continue
        events.append(_delete(path, root, dry_run, action="orphan"))
    touched = child_removed or any(e.action == "orphan" for e in events)
    if dry_run or folder == root or not touched:
        return events, False
    try:
        os.rmdir(folder)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            log.warning("retention: cannot remove the folder %s: %s", folder, exc.strerror)
        return events, False
    return events, True


class RetentionPurger(PeriodicPart):
    """The scheduled purge inside `serve`: every `retention.purge_interval`, where the folder exists."""

    def __init__(self, engine: AsyncEngine, config_source: Callable[[], RoutingConfig], registry: CollectorRegistry, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self._config_source = config_source
        self.metrics = RetentionMetrics(registry)
        self._clock = clock
        self._late: set[asyncio.Future[Any]] = set()  # a purge abandoned because the database hangs
        self._warned = False
        # The database away is a warning: the next round purges what this one could not.
        self.periodic = Periodic(
            "recording-retention", self._step, lambda: self._config_source().service.retention.purge_interval,
            backoff=Backoff(first=60.0, cap=3600.0),
        )

    async def _step(self) -> bool:
        """A hung database is given up on after an hour (and at close() at once, not awaited); what was
        deleted meanwhile is marked next time."""
        budget = max(self._config_source().service.retention.purge_interval, ROUND_BUDGET)
        await within(self.purge_due(), budget, self._late)
        return False

    def _count(self, event: Seen) -> None:
        if event.action in ("deleted", "orphan"):
            self.metrics.purged.inc()
            self.metrics.bytes.inc(event.size)
            log.debug("retention: deleted %s (%d bytes)", event.name, event.size)
        elif event.action == "refused":
            self.metrics.refused.inc()

    async def purge_due(self) -> PurgeReport | None:
        """One purge of what the retention allows now; None when it is off or the folder is not here."""
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
        cutoff = now - timedelta(days=settings.recordings_days)
        report = await purge(self.engine, folder, cutoff, now, dry_run=False, orphans=settings.orphans, seen=self._count)
        if report.deleted or report.refused or report.marked or report.failed:
            log.info(
                "retention: deleted %d recordings older than %s (%d bytes, %d without a CDR), %d already gone, %d refused, %d failed, %d folders removed",
                report.deleted, f"{cutoff:%Y-%m-%d}", report.bytes, report.orphans, report.already_gone, report.refused, report.failed, report.folders,
            )
        return report
