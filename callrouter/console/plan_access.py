"""Who may see and change a number's plan in the console, one place for every plan page (edits, versions,
prompts, test call): another tenant's number is 404 before anything else, a viewer 403 on a change, and a
save's audit rows are written as the user (for provider staff: into the company's own log)."""

from __future__ import annotations

from typing import Any, Mapping

from aiohttp import web

from callrouter.config.plan import NumberPlan
from callrouter.console.context import audit, console_deps, not_found, require
from callrouter.plans.service import PlanDeps
from callrouter.store.tenants import PLANS, READ, Scope, number_owner


def number_of(request: web.Request, scope: Scope) -> tuple[str, NumberPlan]:
    """The number from the path and its running plan; 404 for another tenant's (or no such) number."""
    number = request.match_info["number"]
    plan = console_deps(request).holder.current.plans.get(number)
    if not (number.isdigit() and len(number) <= 20 and scope.allows(number)) or plan is None:
        raise not_found()
    return number, plan


def editor_of(request: web.Request) -> tuple[Scope, str, NumberPlan]:
    """The scope, if it may change this number's plan: 404 for another tenant's number first, then 403 for a viewer."""
    scope = require(request, READ)
    number, plan = number_of(request, scope)
    if not scope.can(PLANS):
        raise web.HTTPForbidden()
    return scope, number, plan


async def owner_of(request: web.Request, scope: Scope, number: str) -> int | None:
    """The tenant a provider's action on `number` concerns (so the company sees it in its log); None for a tenant's user."""
    return await number_owner(console_deps(request).engine, number) if scope.is_provider else None


async def plan_deps_for(request: web.Request, scope: Scope, number: str) -> PlanDeps:
    """save_plan's deps, with the audit log written as this user (for the provider: into the company's log)."""
    deps = console_deps(request)
    owner = await owner_of(request, scope, number)

    async def write(action: str, target: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> None:
        await audit(request, action, target, before=before, after=after, for_tenant=owner)

    return PlanDeps(deps.engine, deps.holder, deps.now, write)
