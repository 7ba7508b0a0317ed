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


async def within(aw: Awaitable[T], seconds: float, keep: set[asyncio.Future[Any]]) -> T:
    """`aw`'s result if it comes within `seconds`, else TimeoutError at once.

    The late operation is cancelled but not awaited: against a peer that hangs, even its cleanup (a
    rollback, a goodbye) hangs, and the caller must not. It stays referenced in `keep` until it ends."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        return task.result()
    task.cancel()
    keep.add(task)
    task.add_done_callback(_finished_late(keep))
    raise TimeoutError(f"no answer within {seconds:g} s")


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

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            again = await self.run_once()
            if again is None:
                await asyncio.sleep(self._backoff.delay(self.failures, self._rng))
            elif not again:
                await asyncio.sleep(max(0.0, self._interval()))
            else:
                await asyncio.sleep(0)  # a backlog: go on, but let calls run between steps

    async def close(self) -> None:
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
