"""Reloading: validated completely, swapped whole, or refused with the running config kept."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from callrouter.config.loader import load_config
from callrouter.config.holder import ConfigHolder
from callrouter.metrics import RouterMetrics

ROOT = Path(__file__).resolve().parent.parent


def test_reload_swaps_whole_or_keeps_the_running_config(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(ROOT / "dialplans", tmp_path / "dialplans")
    plan = tmp_path / "dialplans" / "4008001234.yaml"
    metrics = RouterMetrics()
    holder = ConfigHolder(load_config(str(tmp_path / "config.yaml")), metrics, wall=lambda: 1000.0)
    original = holder.current

    async def body() -> None:
        # A second, valid plan plus a broken edit of the first: nothing of either may be applied.
        (tmp_path / "dialplans" / "second.yaml").write_text(
            'number: "4009990000"\nname: second\nentry: {hunt: g}\nhunt_groups: {g: {lines: [{id: a, number: "13800000009"}]}}\n'
        )
        plan.write_text(plan.read_text().replace("ring_budget: 60", "ring_budget: sixty"))
        errors = await holder.reload()
        assert len(errors) == 1 and errors[0].endswith("hunt_groups.sales.ring_budget: Input should be a valid integer, unable to parse string as an integer")
        assert holder.current is original and "4009990000" not in holder.current.plans
        assert metrics.registry.get_sample_value("callrouter_config_reloads_total", {"result": "failure"}) == 1

        plan.write_text(plan.read_text().replace("ring_budget: sixty", "ring_budget: 75"))
        assert await holder.reload() == []
        assert holder.current is not original
        assert set(holder.current.plans) == {"4008001234", "4009990000"}
        assert holder.current.plans["4008001234"].hunt_groups["sales"].ring_budget == 75
        assert original.plans["4008001234"].hunt_groups["sales"].ring_budget == 60  # calls in progress keep theirs
        assert metrics.registry.get_sample_value("callrouter_config_reloads_total", {"result": "success"}) == 1

    asyncio.run(body())
