"""The CDR spool: an append-only log on local disk that holds every record until the database has it.

Records are appended as JSON lines to numbered segment files and made durable in groups: one write and
one fdatasync for all records that arrived while the previous one ran (group commit; the CDR writer
gathers them on the event loop and hands each group to the spool's own appender thread, `Appender`). A reader follows the log with a cursor and the
writer deletes a segment once the database holds all of it. Nothing is ever rewritten in place, so a
`kill -9` at any moment leaves whole lines, at worst a torn last line (set aside when read back).

An append either lands whole or leaves the segment exactly as it was: it is one unbuffered write (no
bytes of a failed append linger in a buffer to land with the next one), and on any failure (disk full,
EFBIG, EIO, a failed fdatasync) the file is truncated back to its size before the append, which raises.
The next append then goes to a new segment (a segment that refused a write may be at a per-file limit,
or, if even the truncate failed, hold a partial line past its recorded size, which this process never
reads and a later one sets aside as torn).

Blocking file calls run in worker threads: appends from the appender thread, reads from another. They
share only the table of segment sizes, under a lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import re
import threading
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

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


Spans = list[tuple[Position, Position]]  # each appended line's (start, end)
_Job = tuple[list[bytes], asyncio.AbstractEventLoop, "asyncio.Future[Spans]"]


class SpoolInUse(Exception):
    """Another process holds the spool folder: two routers must never share one."""


class Spool:
    def __init__(self, directory: str, *, segment_bytes: int = 8 << 20, fsync: bool = True,
                 datasync: Callable[[int], None] = os.fdatasync) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._datasync = datasync  # os.fdatasync; a test passes its own to count the syncs or make one fail
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
        self._fd = self._open(self._active)
        self._sizes[self._active] = 0
        self._rotate_next = False  # the active segment refused a write: the next append starts a new one
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

    def _open(self, segment: int) -> int:
        return os.open(self._path(segment), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def append(self, lines: list[bytes]) -> Spans:
        """Write whole lines and make them durable; returns each line's (start, end) position.

        Raises (OSError, usually) with the segment left as it was before the call: none of these lines
        is in the spool then, and the positions of later appends are unaffected."""
        size = self._sizes[self._active]  # only this thread changes the active segment's size
        if size >= self.segment_bytes or (self._rotate_next and size > 0):
            self._rotate()
            size = 0
        spans: Spans = []
        end = size
        for line in lines:
            spans.append((Position(self._active, end), Position(self._active, end + len(line))))
            end += len(line)
        try:
            _write_all(self._fd, b"".join(lines))
            if self.fsync:
                self._datasync(self._fd)
        except BaseException:
            self._undo(size)
            raise
        with self._lock:
            self._sizes[self._active] = end
        return spans

    def _undo(self, size: int) -> None:
        """Cut a failed append off again, so the segment holds exactly what it held before."""
        self._rotate_next = size > 0
        try:
            os.ftruncate(self._fd, size)
            if self.fsync:
                self._datasync(self._fd)
        except OSError as exc:
            # Bytes past `size` stay in this segment; this process reads only up to `size`, a restart sets
            # a partial last line aside as torn (its record is still held by the writer and spooled again).
            log.error("could not cut a failed append off segment %d of the CDR spool (%s); continuing in a new segment", self._active, exc)
            self._rotate_next = True

    def _rotate(self) -> None:
        nxt = self._active + 1
        fd = self._open(nxt)  # first: if this fails (disk full), the spool stays on the current segment
        os.close(self._fd)
        self._fd = fd
        with self._lock:
            self._sizes[nxt] = 0
            self._active = nxt
        self._rotate_next = False
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
        os.close(self._fd)
        if stored_to is not None and self.normalise(stored_to) >= self.end:
            for n in list(self._sizes):
                os.remove(self._path(n))
            self._sizes.clear()
            self._sync_dir()
        self._owner.close()  # releases the folder's lock


class Appender:
    """The spool's one appending thread, fed from the event loop: one hand-off per group of records.

    `append` returns a future for the group's positions (or the exception `Spool.append` raised), set on
    the loop once the group is durable. A dedicated thread fed by a queue costs the loop less than
    `asyncio.to_thread` per group (no executor, context copy or future chaining), and keeps appends in
    one thread, which `Spool.append` needs. Groups are appended in the order they were handed over."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="cdr-spool-append", daemon=True)
        self._thread.start()

    def append(self, lines: list[bytes]) -> asyncio.Future[Spans]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Spans] = loop.create_future()
        self._jobs.put((lines, loop, done))
        return done

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            lines, loop, done = job
            try:
                spans = self.spool.append(lines)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine, which decides
                _deliver(loop, done, None, exc)
            else:
                _deliver(loop, done, spans, None)

    def close(self) -> None:
        """After the last group: the thread ends once it has appended everything handed over."""
        self._jobs.put(None)
        self._thread.join()


def _deliver(loop: asyncio.AbstractEventLoop, done: asyncio.Future[Spans], spans: Spans | None, exc: BaseException | None) -> None:
    def settle() -> None:
        if done.done():  # the awaiting coroutine was cancelled: nobody wants the answer
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            assert spans is not None
            done.set_result(spans)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody can be waiting any more
        log.debug("CDR spool append finished after its event loop closed")


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written: a file size limit gives a short write before EFBIG."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"write to the CDR spool wrote nothing ({len(view)} bytes left)")
        view = view[written:]
