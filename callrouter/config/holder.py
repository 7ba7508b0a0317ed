"""The running configuration: one reference, replaced whole by a successful reload."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from callrouter.config.loader import RoutingConfig, load_config
from callrouter.config.yamlsource import ConfigError, ConfigIssue
from callrouter.metrics import RouterMetrics

log = logging.getLogger(__name__)


class ConfigHolder:
    """Calls take `current` once at their start, so a reload never changes a call halfway."""

    def __init__(self, config: RoutingConfig, metrics: RouterMetrics, wall: Callable[[], float] = time.time) -> None:
        self.current = config
        self._metrics = metrics
        self._wall = wall
        self._lock = asyncio.Lock()
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
            self.current = fresh
            self._metrics.config_reloads.labels(result="success").inc()
            self._metrics.config_last_success.set(self._wall())
            log.info("configuration reloaded: %d plans", len(fresh.plans))
            return []
