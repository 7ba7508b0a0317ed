"""Small helpers for the background tasks each part of the router owns, and the one periodic loop.

Every background loop of the router (outbox sender, exporter, package watcher, retention purge,
blacklist follower) is a `Periodic`: one start/stop, one backoff, one error policy. A database that is
away is expected and logged as a WARNING line (the work waits in the database; nothing is lost);
anything else is a bug and is logged with its traceback, counted, and the loop goes on after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)
T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Stop a background task we own and wait until it has unwound (its finally blocks ran)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# Seconds a stopping router gives each goodbye to the store (removing its leases, its calls in progress).
# Short, because what it does not finish expires on its own after store.lease_ttl, and a database that
# hangs must not hold a SIGTERM for the sum of every part's budget.
GOODBYE_BUDGET = 2.0


async def within(aw: Awaitable[T], seconds: float, keep: set[asyncio.Future[Any]]) -> T:
    """`aw`'s result if it comes within `seconds`, else TimeoutError at once.

    The late operation is cancelled but not awaited: against a peer that hangs, even its cleanup (a
    rollback, a goodbye) hangs, and the caller must not. It stays referenced in `keep` until it ends.
    The same when the caller is cancelled while it waits (a loop being closed)."""
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:  # the caller is stopping: the same, without waiting for its cleanup
        _abandon(task, keep)
        raise
    if task in done:
        return task.result()
    _abandon(task, keep)
    raise TimeoutError(f"no answer within {seconds:g} s")


def _abandon(task: asyncio.Future[Any], keep: set[asyncio.Future[Any]]) -> None:
    """Cancel `task` without awaiting it; `keep` holds it until it ends (asyncio holds tasks weakly)."""
    task.cancel()
    keep.add(task)
    task.add_done_callback(_finished_late(keep))


def _finished_late(keep: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        keep.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved, so asyncio does not warn
            log.debug("an abandoned operation failed later: %s", task.exception())

    return done


# What "the database is away or slow" looks like: a warning, not a bug (TimeoutError: `within` gave up).
EXPECTED_FAILURES: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError)


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait after the n-th failure in a row: doubling from `first` to `cap`, with jitter so
    that several routers do not retry in step."""

    first: float = 1.0
    cap: float = 60.0
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random) -> float:
        base = min(self.cap, self.first * 2.0 ** max(0, failures - 1))
        return base * (1 + self.jitter * (2 * rng.random() - 1))


class Periodic:
    """Run `step` every `interval()` seconds until closed.

    `step` returns True when it did work and wants to run again at once (a backlog), else False.
    `run_once()` runs one step under the error policy, for tests and for a first run at start; `close()`
    cancels the step in progress (its cleanup is not awaited past `stop_budget`: against a hung
    database even a rollback hangs) and returns.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[bool]],
        interval: Callable[[], float],
        *,
        backoff: Backoff = Backoff(),
        on_error: Callable[[BaseException], None] | None = None,
        stop_budget: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._step, self._interval, self._backoff = step, interval, backoff
        self._on_error = on_error
        self._stop_budget = stop_budget
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._unwinding: set[asyncio.Task[None]] = set()  # closed but past stop_budget, still ending
        self.failures = 0  # in a row; 0 after a step that succeeded

    async def run_once(self) -> bool | None:
        """One step; True/False as the step said, None when it failed (logged by the policy)."""
        try:
            again = await self._step()
        except asyncio.CancelledError:
            raise
        except EXPECTED_FAILURES as exc:
            self.failures += 1
            log.warning("%s: %s: %s (attempt %d; retrying)", self.name, type(exc).__name__, exc, self.failures)
            self._report(exc)
            return None
        except Exception as exc:  # a bug: it must be seen, with its traceback, and the loop must go on
            self.failures += 1
            log.exception("%s: step failed", self.name)
            self._report(exc)
            return None
        self.failures = 0
        return again

    def _report(self, exc: BaseException) -> None:
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:  # a broken metric hook must not stop the loop
                log.exception("%s: error hook failed", self.name)

    def start(self, delay: float = 0.0) -> None:
        """Start the loop; its first step runs after `delay` seconds (0: at once; an owner that made
        a first `run_once()` itself waits an interval)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(delay), name=self.name)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            again = await self.run_once()
            await asyncio.sleep(self._pause(again))

    def _pause(self, again: bool | None) -> float:
        """Seconds until the next step: a backoff after a failure, none for a backlog, else the interval."""
        if again is None:
            return self._backoff.delay(self.failures, self._rng)
        if again:
            return 0.0  # a backlog: go on, but let calls run between steps
        try:
            return max(0.0, self._interval())
        except Exception:  # the interval is read from the configuration; a bug there must not end the loop
            log.exception("%s: cannot read its interval", self.name)
            return self._backoff.cap

    async def close(self) -> None:
        """Cancel the loop; return once it has unwound, or after `stop_budget` seconds at the most."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self._stop_budget)
        if task in done:
            with contextlib.suppress(asyncio.CancelledError):
                task.result()
        else:
            log.warning("%s: still unwinding %.1f s after it was stopped; leaving it", self.name, self._stop_budget)
            self._unwinding.add(task)  # referenced until it ends (asyncio holds tasks weakly)
            task.add_done_callback(self._unwinding.discard)


class PeriodicPart:
    """A part of the router whose background work is one `Periodic` (set as `self.periodic`):
    the start()/close() that `app.py` calls and the run_once() that tests call, written once."""

    periodic: Periodic

    async def start(self) -> None:
        self.periodic.start()

    async def close(self) -> None:
        await self.periodic.close()

    async def run_once(self) -> bool | None:
        """One step under the loop's error policy; None when it failed (logged, and counted if the part counts)."""
        return await self.periodic.run_once()
