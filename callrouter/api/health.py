"""Liveness, readiness and metrics: no token, for load balancers, Docker and Prometheus."""

from __future__ import annotations

from aiohttp import web

from callrouter.api.context import PENDING, deps_of
from callrouter.exporter.http import metrics_response
from callrouter.store.health import ping
from callrouter.tasks import within

READY_TIMEOUT = 1.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    deps, _ = deps_of(request)
    reasons: list[str] = []
    try:
        await within(ping(deps.engine), READY_TIMEOUT, request.app[PENDING])  # a hung database must not hang the probe
    except TimeoutError:
        reasons.append(f"database did not answer within {READY_TIMEOUT:g} s")
    except Exception as exc:  # any failure to reach the store means not ready; the reason is reported
        reasons.append(f"database unreachable: {type(exc).__name__}")
    if not deps.holder.current.plans:
        reasons.append("no routing plans loaded")
    extra = deps.extra_ready()
    if extra:
        reasons.append(extra)
    if reasons:
        return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready", "plans": len(deps.holder.current.plans)})


async def metrics(request: web.Request) -> web.Response:
    deps, _ = deps_of(request)
    return metrics_response(deps.metrics)
