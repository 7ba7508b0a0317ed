"""The running configuration: one reference, replaced whole by a successful reload."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Mapping

from callrouter.config.loader import RoutingConfig, load_config
from callrouter.config.plan import NumberPlan
from callrouter.config.yamlsource import ConfigError, ConfigIssue
from callrouter.metrics import RouterMetrics

log = logging.getLogger(__name__)

# After a reload read the files: (fresh from the files, the one running) -> what to run. The plan
# versions in the database are laid over the files here (docs/plans.md: the database wins).
Overlay = Callable[[RoutingConfig, RoutingConfig], Awaitable[RoutingConfig]]


class ConfigHolder:
    """Calls take `current` once at their start, so a reload never changes a call halfway."""

    def __init__(self, config: RoutingConfig, metrics: RouterMetrics, wall: Callable[[], float] = time.time,
                 overlay: Overlay | None = None) -> None:
        self.current = config
        self._metrics = metrics
        self._wall = wall
        self._lock = asyncio.Lock()
        self.overlay = overlay  # set by app.py once the database is open
        metrics.config_last_success.set(wall())

    async def reload(self) -> list[str]:
        """Load and validate everything off the event loop, then swap. Returns the errors (empty: success)."""
        return [str(issue) for issue in await self.reload_issues()]

    async def reload_issues(self) -> list[ConfigIssue]:
        """As reload(), with each problem located (file, line) for the admin API."""
        async with self._lock:
            path = self.current.config_path
            try:
                fresh = await asyncio.to_thread(load_config, path)
            except ConfigError as exc:
                self._metrics.config_reloads.labels(result="failure").inc()
                for issue in exc.issues:
                    log.error("reload refused, keeping the running configuration: %s", issue)
                return list(exc.issues)
            if self.overlay is not None:
                fresh = await self.overlay(fresh, self.current)
            self.current = fresh
            self._metrics.config_reloads.labels(result="success").inc()
            self._metrics.config_last_success.set(self._wall())
            log.info("configuration reloaded: %d plans", len(fresh.plans))
            return []

    async def apply(self, plans: Mapping[str, tuple[NumberPlan, int]]) -> RoutingConfig:
        """Swap in these validated plan versions (number -> (plan, version)) together, as one new snapshot.

        A version older than or equal to the one running is skipped (a late notification never goes
        back); under the reload lock, so a reload and an apply never undo each other."""
        async with self._lock:
            running = self.current
            newer = {n: pv for n, pv in plans.items() if (running.version_of(n) or 0) < pv[1]}
            if newer:
                self.current = running.with_versions(newer)
                log.info("plan versions applied: %s", ", ".join(f"{n} v{v}" for n, (_, v) in sorted(newer.items())))
            return self.current
