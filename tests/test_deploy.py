"""The deployment files cannot drift from the code: mounts exist, commands parse, ports and metric names match.

No Docker daemon runs here (docs/deployment.md), so this is what can be checked without one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from callrouter.cli.main import build_parser
from callrouter.config.loader import load_config
from callrouter.metrics import STORE_OPERATIONS, RouterMetrics

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DASHBOARD = json.loads((ROOT / "deploy/grafana/dashboards/callrouter.json").read_text())
PROMETHEUS = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
ALERTS = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
METRIC = re.compile(r"\b(callrouter_[a-z0-9_]+)")


def exported_names() -> set[str]:
    """Every sample name the router process and the exporter can expose, from their metric families."""
    from tests.metric_names import all_families

    names: set[str] = set()
    for family in all_families():
        base = family.name
        if family.type == "counter":
            names |= {base + "_total", base + "_created"}
        elif family.type == "histogram":
            names |= {base + "_bucket", base + "_sum", base + "_count", base + "_created"}
        else:
            names.add(base)
    return names


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in DASHBOARD["templating"]["list"]:
        yield f"variable {variable['name']}", variable["definition"]


def alert_exprs() -> Iterator[tuple[str, str]]:
    for group in ALERTS["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def test_services_are_all_there() -> None:
    assert set(COMPOSE["services"]) >= {"asterisk", "postgres", "router", "exporter", "prometheus", "grafana", "migrate"}


def test_every_mounted_file_exists() -> None:
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_named_volumes_are_declared() -> None:
    declared = set(COMPOSE["volumes"])
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses volume {source!r}, not declared"


@pytest.mark.parametrize("service", ["migrate", "router", "exporter"])
def test_callrouter_commands_parse(service: str) -> None:
    command = COMPOSE["services"][service]["command"]
    args = build_parser().parse_args(command)
    assert args.config == "/etc/callrouter/config.yaml"


def test_the_router_waits_for_the_schema() -> None:
    assert COMPOSE["services"]["router"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert COMPOSE["services"]["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_prometheus_scrapes_the_ports_config_serves() -> None:
    service = load_config(str(ROOT / "config.yaml")).service
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in PROMETHEUS["scrape_configs"]}
    assert targets["callrouter-router"] == [f"{service.admin.host}:{service.admin.port}"]
    assert targets["callrouter-exporter"] == [f"{service.exporter.host}:{service.exporter.port}"]


def test_grafana_provisions_the_dashboard_folder_compose_mounts() -> None:
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/callrouter.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = [v.split(":")[1] for v in COMPOSE["services"]["grafana"]["volumes"]]
    assert path in mounts
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in datasource["datasources"]}
    used: set[Any] = {p["datasource"]["uid"] for p in DASHBOARD["panels"] if "datasource" in p}
    assert used <= uids


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        g = panel["gridPos"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        assert g["x"] + g["w"] <= 24
        taken |= cells


@pytest.mark.parametrize("where,expr", list(dashboard_exprs()) + list(alert_exprs()))
def test_every_queried_metric_is_exported(where: str, expr: str) -> None:
    names = set(METRIC.findall(expr))
    assert names or expr.startswith("up{"), f"{where}: queries no callrouter metric"
    unknown = names - exported_names()
    assert not unknown, f"{where}: {sorted(unknown)} is not exported by the router or the exporter"


def test_every_store_error_operation_is_exported_at_zero_from_the_start() -> None:
    """The store-errors alert takes `rate()`, which cannot see a series that first appears at 1: every
    operation the code counts, and every one docs/metrics.md names, is there at 0 before any error."""
    metrics = RouterMetrics()
    counted = set(re.findall(r'store_errors\.labels\(operation="([a-z_]+)"\)', "".join(
        path.read_text() for path in (ROOT / "callrouter").rglob("*.py"))))
    row = next(line for line in (ROOT / "docs/metrics.md").read_text().splitlines() if line.startswith("| `callrouter_store_errors_total`"))
    assert counted and counted <= set(STORE_OPERATIONS), sorted(counted - set(STORE_OPERATIONS))
    assert all(re.search(rf"\b{operation}\b", row) for operation in STORE_OPERATIONS), row
    for operation in STORE_OPERATIONS:
        assert metrics.registry.get_sample_value("callrouter_store_errors_total", {"operation": operation}) == 0.0, operation
