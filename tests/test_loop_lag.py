"""The event-loop lag sampler: a loop kept busy shows as lag."""

from __future__ import annotations

import asyncio
import time

from callrouter.loop_lag import LoopLagSampler
from callrouter.metrics import RouterMetrics
from tests.harness import arun


def samples(metrics: RouterMetrics, le: str) -> float:
    """How many samples were at most `le` seconds late."""
    return metrics.registry.get_sample_value("callrouter_event_loop_lag_seconds_bucket", {"le": le}) or 0.0


def test_a_blocked_loop_is_measured_as_lag() -> None:
    async def body() -> None:
        metrics = RouterMetrics()
        sampler = LoopLagSampler(metrics.loop_lag, every=0.01)
        sampler.start()
        await asyncio.sleep(0.1)  # idle: samples come in, none late by much
        idle = metrics.registry.get_sample_value("callrouter_event_loop_lag_seconds_count") or 0.0
        assert idle >= 3
        time.sleep(0.3)  # a call's CPU work that holds the loop
        await asyncio.sleep(0.05)
        await sampler.close()
        total = metrics.registry.get_sample_value("callrouter_event_loop_lag_seconds_count") or 0.0
        assert total - samples(metrics, "0.25") >= 1  # the timer the blocked loop ran late by about 0.29 s
        assert samples(metrics, "0.1") >= idle  # and the ones before it were not

    arun(body())
