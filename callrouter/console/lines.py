"""Line health in the console: "5 条线路中 4 条正常" on the overview and on each number's page (issue 16).

The same views as `GET /api/lines` and `callrouter lines status` (routing.health.number_views), read
through the router's shared routing state, so every router shows the same thing.
"""

from __future__ import annotations

from typing import Any, Iterable

from aiohttp import web

from callrouter.console.context import console_deps
from callrouter.routing.health import number_views, plans_keys
from callrouter.store.line_health import read_lines


async def line_summaries(request: web.Request, numbers: Iterable[str]) -> list[dict[str, Any]]:
    """One view per number that has a plan: working/total and each line with its state (templates word it)."""
    deps = console_deps(request)
    config = deps.holder.current
    plans = [config.plans[n] for n in sorted(set(numbers)) if n in config.plans]
    if not plans:
        return []
    template = config.service.dialing.template
    keys = plans_keys(plans, template)
    reader = deps.admin.line_health
    records = await reader(keys) if reader is not None else await read_lines(deps.engine, keys)
    views = number_views(plans, template, records, deps.now().timestamp(), config.service.timezone)
    for view in views:
        for line in view["lines"]:  # type: ignore[attr-defined]
            line["since_hm"] = _hhmm(line["since"]) if line["since"] else ""
            line["retry_hm"] = _hhmm(line["retry_at"]) if line["retry_at"] else ""
    return views


def _hhmm(iso: str) -> str:
    """`2026-12-01T10:02:00+08:00` -> `12-01 10:02`: the local time the view already carries."""
    return f"{iso[5:10]} {iso[11:16]}" if len(iso) >= 16 else iso
