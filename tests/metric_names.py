"""Every metric family a router process and the exporter can expose, for checks of dashboards and alerts."""

from __future__ import annotations

from datetime import datetime, timezone

from prometheus_client import Metric
from sqlalchemy.engine import make_url

from callrouter.exporter.service import CdrExporter
from callrouter.metrics import RouterMetrics
from callrouter.notify.line_health import LineHealthMetrics
from callrouter.notify.sender import NotifyMetrics
from callrouter.packages.watcher import PackageMetrics
from callrouter.retention.purge import RetentionMetrics
from callrouter.store.db import open_engine
from tests.harness import sample_config


def all_families() -> list[Metric]:
    config = sample_config()
    engine = open_engine(make_url("sqlite+aiosqlite:///:memory:"))  # never connected: families only
    exporter = CdrExporter(engine, lambda: config, lambda: datetime.now(timezone.utc))
    router = RouterMetrics()
    NotifyMetrics(router.registry)  # registered on the router's registry by `serve`, as here
    PackageMetrics(router.registry)
    RetentionMetrics(router.registry)
    LineHealthMetrics(router.registry)
    return [*router.registry.collect(), *exporter.families()]
