"""The overview page: whose console this is (the tenant and its numbers, or the provider's summary).

The figures of the overview (today's calls, missed calls, the package, calls in progress) are console/live.py's.
"""

from __future__ import annotations

from aiohttp import web

from callrouter.console import live
from callrouter.console.lines import line_summaries
from callrouter.console.context import console_deps, render, scope_of
from callrouter.store.tenants import list_tenants


async def overview(request: web.Request) -> web.StreamResponse:
    scope = scope_of(request)
    context: dict[str, object] = {"numbers": sorted(scope.numbers) if scope.numbers is not None else None}
    if scope.is_provider:
        tenants = await list_tenants(console_deps(request).engine)
        context["tenant_count"] = len(tenants)
        context["number_count"] = sum(len(t.numbers) for t in tenants)
    context.update(await live.overview_context(request, scope))  # today, missed calls, the package, now
    context["lines"] = await line_summaries(request, scope.numbers) if scope.numbers is not None else []
    return render(request, "overview.html", context)
