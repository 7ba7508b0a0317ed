"""Small helpers for the background tasks each part of the router owns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Awaitable, Callable, TypeVar

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
