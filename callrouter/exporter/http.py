"""HTTP for metrics: rendering explicit registries, and `callrouter exporter`'s own small server."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import datetime, timezone
from typing import Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from callrouter.config.loader import RoutingConfig
from callrouter.exporter.service import CdrExporter
from callrouter.store.db import StoreError, open_engine, require_current_schema, resolve_url, shown

log = logging.getLogger(__name__)


def registry_text(registry: CollectorRegistry) -> Callable[[], bytes]:
    """A metrics source rendered at each scrape (small, live registries)."""
    return lambda: generate_latest(registry)


def metrics_response(sources: Sequence[Callable[[], bytes]]) -> web.Response:
    """The Prometheus text format of several sources (their metric names never overlap)."""
    body = b"".join(source() for source in sources)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def exporter_app(exporter: CdrExporter) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return metrics_response([exporter.exposition])

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        reason = exporter.not_ready_reason()
        if reason:
            return web.json_response({"status": "not ready", "reason": reason}, status=503)
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


async def run_exporter(config: RoutingConfig, host: str | None = None, port: int | None = None, clock: Callable[[], datetime] = utc_now) -> int:
    """`callrouter exporter`: until SIGTERM/SIGINT. The bound address is logged (port 0 picks a free one)."""
    settings = config.service.exporter
    url = resolve_url(config.service.store.url, config.base_dir)
    engine = open_engine(url, pool_size=2)
    try:
        try:
            async with asyncio.timeout(10):
                await require_current_schema(engine, url)
        except TimeoutError:
            raise StoreError(f"database {shown(url)} did not answer within 10 s") from None
        exporter = CdrExporter(engine, lambda: config, clock)
        await exporter.start()
        runner = web.AppRunner(exporter_app(exporter), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host or settings.host, settings.port if port is None else port)
            await site.start()
            bound = runner.addresses[0]
            log.info("callrouter exporter: serving /metrics on %s:%d from %s", bound[0], bound[1], shown(url))
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()
            await exporter.close()
    finally:
        await engine.dispose()
    return 0
