"""The CDR spool: an append-only log on local disk that holds every record until the database has it.

Records are appended as JSON lines to numbered segment files and made durable in groups (one fsync for
all records that arrived while the previous fsync ran). A reader follows the log with a cursor and the
writer deletes a segment once the database holds all of it. Nothing is ever rewritten in place, so a
`kill -9` at any moment leaves whole lines, at worst a torn last line (set aside when read back).

Blocking file calls run in worker threads: appends from one, reads from another. They share only the
table of segment sizes, under a lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from dataclasses import dataclass
from typing import BinaryIO

_SEGMENT = re.compile(r"(\d{12})\.spool\Z")


@dataclass(frozen=True, order=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True)
class SpooledLine:
    start: Position
    end: Position
    data: bytes  # without the newline; torn is True when the newline never made it to disk
    torn: bool = False


class SpoolInUse(Exception):
    """Another process holds the spool folder: two routers must never share one."""


class Spool:
    def __init__(self, directory: str, *, segment_bytes: int = 8 << 20, fsync: bool = True) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        os.makedirs(directory, exist_ok=True)
        # Two writers on one spool would number segments alike and delete each other's records.
        self._owner = open(os.path.join(directory, ".lock"), "a+")  # noqa: SIM115 - held for the spool's life
        try:
            fcntl.flock(self._owner.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._owner.seek(0)
            holder = self._owner.read().strip() or "another process"
            self._owner.close()
            raise SpoolInUse(f"the CDR spool {directory} is in use by {holder}: give each router its own cdr.spool_dir") from None
        self._owner.seek(0)
        self._owner.truncate()
        self._owner.write(f"pid {os.getpid()}\n")
        self._owner.flush()
        existing = sorted(int(m.group(1)) for name in os.listdir(directory) if (m := _SEGMENT.match(name)))
        self._sizes: dict[int, int] = {n: os.path.getsize(self._path(n)) for n in existing}
        # A new process never appends to an old segment: its last line may be torn.
        self._active = (existing[-1] + 1) if existing else 1
        self._file: BinaryIO = open(self._path(self._active), "ab")  # noqa: SIM115 - lives as long as the spool
        self._sizes[self._active] = 0
        self._sync_dir()

    def _path(self, segment: int) -> str:
        return os.path.join(self.directory, f"{segment:012d}.spool")

    def _sync_dir(self) -> None:
        """A new or removed file name is durable only once its folder is synced."""
        if self.fsync:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- appending (blocking; called in a worker thread) -----------------------------------------

    def append(self, lines: list[bytes]) -> list[tuple[Position, Position]]:
        """Write whole lines and make them durable; returns each line's (start, end) position."""
        spans: list[tuple[Position, Position]] = []
        if self._sizes[self._active] >= self.segment_bytes:
            self._rotate()
        size = self._sizes[self._active]  # only this thread changes the active segment's size
        for line in lines:
            spans.append((Position(self._active, size), Position(self._active, size + len(line))))
            size += len(line)
        self._file.write(b"".join(lines))
        self._file.flush()
        if self.fsync:
            os.fdatasync(self._file.fileno())
        with self._lock:
            self._sizes[self._active] = size
        return spans

    def _rotate(self) -> None:
        self._file.close()
        nxt = self._active + 1
        self._file = open(self._path(nxt), "ab")  # noqa: SIM115
        with self._lock:
            self._sizes[nxt] = 0
            self._active = nxt
        self._sync_dir()

    # -- reading ---------------------------------------------------------------------------------

    @property
    def start(self) -> Position:
        """The oldest position still on disk."""
        with self._lock:
            return Position(min(self._sizes), 0)

    @property
    def end(self) -> Position:
        """Just past the last durable line."""
        with self._lock:
            return Position(self._active, self._sizes[self._active])

    def normalise(self, pos: Position) -> Position:
        """Past the end of a closed segment (or a deleted one) is the start of the next one."""
        with self._lock:
            sizes, active = dict(self._sizes), self._active
        while pos.segment != active and pos.offset >= sizes.get(pos.segment, 0):
            later = [n for n in sizes if n > pos.segment]
            if not later:
                break
            pos = Position(min(later), 0)
        return pos

    def read(self, pos: Position, max_bytes: int = 1 << 20) -> list[SpooledLine]:
        """Whole lines from `pos` (blocking). In a closed segment a last line without newline is torn."""
        pos = self.normalise(pos)
        with self._lock:
            limit, closed = self._sizes.get(pos.segment, 0), pos.segment != self._active
        if pos.offset >= limit:
            return []
        with open(self._path(pos.segment), "rb") as f:
            f.seek(pos.offset)
            chunk = f.read(min(max_bytes, limit - pos.offset))
        out: list[SpooledLine] = []
        offset = pos.offset
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                break
            out.append(SpooledLine(Position(pos.segment, offset + start), Position(pos.segment, offset + nl + 1), chunk[start:nl]))
            start = nl + 1
        if not out and start < len(chunk) and closed and offset + len(chunk) >= limit:
            out.append(SpooledLine(Position(pos.segment, offset), Position(pos.segment, limit), chunk, torn=True))
        elif not out and len(chunk) == max_bytes:
            # One line longer than max_bytes: read it whole rather than stall.
            return self.read(pos, max_bytes * 2)
        return out

    def release_before(self, pos: Position) -> int:
        """Delete closed segments wholly before `pos` (the database has them); returns how many."""
        removed = 0
        with self._lock:
            done = [n for n in sorted(self._sizes) if n < pos.segment and n != self._active]
        for n in done:
            os.remove(self._path(n))
            with self._lock:
                del self._sizes[n]
            removed += 1
        if removed:
            self._sync_dir()
        return removed

    def bytes_on_disk(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def close(self, stored_to: Position | None = None) -> None:
        """Close; if the database holds everything up to `stored_to` = end, remove the spool files too."""
        self._file.close()
        if stored_to is not None and self.normalise(stored_to) >= self.end:
            for n in list(self._sizes):
                os.remove(self._path(n))
            self._sizes.clear()
            self._sync_dir()
        self._owner.close()  # releases the folder's lock
