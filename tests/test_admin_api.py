"""The admin API over real HTTP, against the real app and real databases (SQLite and Postgres)."""

from __future__ import annotations

import asyncio
import base64
import csv
import dataclasses
import io
import json
import re
import shutil
import subprocess
import sys
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest
import yaml
from yarl import URL
from sqlalchemy import update
from sqlalchemy.engine import make_url

from callrouter.api.app import ROUTES, AdminServer, build_admin_app
from callrouter.api.auth import AdminConfigError, admin_token
from callrouter.api.context import AdminDeps
from callrouter.api.openapi import document
from callrouter.config.loader import load_config
from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript
from callrouter.exporter.http import registry_text
from callrouter.config.holder import ConfigHolder
from callrouter.metrics import RouterMetrics
from callrouter.model.record import CallRecord
from callrouter.store.blacklist import BlacklistFollower, BlacklistStore
from callrouter.store.db import open_engine
from callrouter.store.schema import calls
from tests.cdrs import T0, record
from tests.harness import arun
from tests.test_exporter import write
from tests.test_process import ENV, ServerProcess

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = T0 + timedelta(hours=2)


def workspace(tmp_path: Path, db_url: str, exporter_in_serve: bool = False, **admin: Any) -> Path:
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(ROOT / "dialplans", tmp_path / "dialplans")
    (tmp_path / "rec").mkdir()
    doc = yaml.safe_load((tmp_path / "config.yaml").read_text())
    doc["store"]["url"] = db_url
    doc["recordings_dir"] = str(tmp_path / "rec")
    doc["admin"] = {"port": 0, **admin}
    doc["exporter"] = {"in_serve": exporter_in_serve, "poll_interval": 0.1}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    return tmp_path / "config.yaml"


@dataclasses.dataclass
class Api:
    base: str
    http: aiohttp.ClientSession
    holder: ConfigHolder
    follower: BlacklistFollower
    rec: Path
    metrics: RouterMetrics

    async def get(self, path: str | URL, headers: dict[str, str] | None = AUTH, **kw: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.http.get(path if isinstance(path, URL) else self.base + path, headers=headers, **kw) as r:
            body = await r.read()
            return r.status, _decode(r, body), r

    async def send(self, method: str, path: str, headers: dict[str, str] | None = AUTH, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, headers=headers, **kw) as r:
            return r.status, _decode(r, await r.read())


def _decode(r: aiohttp.ClientResponse, body: bytes) -> Any:
    if r.content_type == "application/json":
        return json.loads(body)
    return body


@asynccontextmanager
async def running_api(
    tmp_path: Path, db_url: str, token: str | None = TOKEN, clock: Callable[[], datetime] = lambda: NOW, **admin: Any
) -> AsyncIterator[Api]:
    cfg = workspace(tmp_path, db_url, **admin)
    config = load_config(str(cfg))
    metrics = RouterMetrics()
    holder = ConfigHolder(config, metrics)
    engine = open_engine(make_url(db_url))
    store = BlacklistStore(engine)
    follower = BlacklistFollower(store, metrics, lambda: NOW, 60)
    deps = AdminDeps(holder, engine, store, follower.refresh, [registry_text(metrics.registry)], clock)
    server = AdminServer(build_admin_app(deps, config.service.admin, token))
    await server.start("127.0.0.1", 0, token)
    try:
        async with aiohttp.ClientSession() as http:
            yield Api(f"http://127.0.0.1:{server.port}", http, holder, follower, tmp_path / "rec", metrics)
    finally:
        await server.close()
        await engine.dispose()


def calls_for_search() -> list[CallRecord]:
    out = []
    for i in range(25):
        r = record(i, number="4008001234" if i % 2 else "4008005678", caller="13900000001" if i % 5 == 0 else "13912345678", answered=i % 3 != 0)
        out.append(dataclasses.replace(r, started_at=T0 + timedelta(minutes=i), ended_at=T0 + timedelta(minutes=i, seconds=50)))
    return out


# -- auth ------------------------------------------------------------------------------------------

def test_every_api_route_needs_the_token_and_health_does_not(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_api(tmp_path, db_url) as api:
            status, err, r = await api.get("/api/plans", headers=None)
            assert status == 401 and "missing bearer token" in err["error"]
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            status, err, _ = await api.get("/api/plans", headers={"Authorization": "Bearer wrong-token-0123456789"})
            assert status == 401 and "wrong" in err["error"]
            for method, path, _h in ROUTES:
                if path.startswith("/api/"):
                    concrete = path.replace("{uniqueid}", "x").replace("{path:.+}", "a.wav").replace("{scope}", "*")
                    concrete = concrete.replace("{caller}", "139").replace("{number}", "4008001234")
                    status, _ = await api.send(method, concrete, headers=None)
                    assert status == 401, f"{method} {path} answered {status} without a token"
            assert (await api.get("/api/plans"))[0] == 200
            assert (await api.get("/api/plans", headers={"Authorization": f"bearer {TOKEN}"}))[0] == 200  # the scheme is case-insensitive
            assert (await api.get("/api/plans", headers={"Authorization": TOKEN}))[0] == 401  # no scheme
            assert (await api.get("/nothing-here", headers=None))[0] == 401  # only the named probes are public
            assert (await api.get(URL(api.base + "/%61pi/plans", encoded=True), headers=None))[0] == 401
            assert (await api.get("/healthz", headers=None))[0] == 200
            assert (await api.get("/metrics", headers=None))[0] == 200

    arun(body())


def test_without_a_token_the_api_starts_only_on_loopback(db_url: str, tmp_path: Path) -> None:
    config = load_config(str(workspace(tmp_path, db_url)))
    assert admin_token(config.service.admin, {}) is None
    assert admin_token(config.service.admin, {"CALLROUTER_ADMIN_TOKEN": TOKEN}) == TOKEN
    with pytest.raises(AdminConfigError, match="16 printable"):
        admin_token(config.service.admin, {"CALLROUTER_ADMIN_TOKEN": "short"})

    async def body() -> None:
        server = AdminServer(build_admin_app(None, config.service.admin, None))  # type: ignore[arg-type]
        with pytest.raises(AdminConfigError, match="non-loopback"):
            await server.start("0.0.0.0", 0, None)
        (tmp_path / "b").mkdir()
        async with running_api(tmp_path / "b", db_url, token=None) as api:
            assert (await api.get("/api/plans", headers=None))[0] == 200

    arun(body())


# -- calls -----------------------------------------------------------------------------------------

def test_search_filters_and_pages_through_every_call_once(db_url: str, tmp_path: Path) -> None:
    records = calls_for_search()

    async def body() -> None:
        await write(db_url, records)
        async with running_api(tmp_path, db_url) as api:
            seen: list[str] = []
            path = "/api/calls?limit=7"
            while True:
                status, page, _ = await api.get(path)
                assert status == 200
                seen += [c["uniqueid"] for c in page["calls"]]
                if not page["next_cursor"]:
                    break
                path = f"/api/calls?limit=7&cursor={page['next_cursor']}"
            assert seen == [r.uniqueid for r in sorted(records, key=lambda r: r.started_at, reverse=True)]

            _, page, _ = await api.get("/api/calls?number=4008005678")
            assert {c["number"] for c in page["calls"]} == {"4008005678"} and len(page["calls"]) == 13
            _, page, _ = await api.get("/api/calls?caller=%2B86%20139-0000-0001")
            assert len(page["calls"]) == 5 and {c["caller"] for c in page["calls"]} == {"13900000001"}
            _, page, _ = await api.get("/api/calls?disposition=no_answer")
            assert len(page["calls"]) == sum(1 for r in records if r.disposition == "no_answer")
            _, page, _ = await api.get("/api/calls?from=2026-11-24T09:05&to=2026-11-24T09:10")  # Shanghai time
            assert len(page["calls"]) == 5
            _, page, _ = await api.get("/api/calls?from=2026-11-24T01:05Z&to=2026-11-24T01:10Z&disposition=answered,no_answer")
            assert len(page["calls"]) == 5
            _, page, _ = await api.get("/api/calls?from=2026-11-24T01:05Z&to=2026-11-24T01:10Z&disposition=answered&disposition=no_answer")
            assert len(page["calls"]) == 5

            _, first, _ = await api.get("/api/calls?limit=3")
            raw = base64.urlsafe_b64decode(first["next_cursor"] + "==")
            mac, payload = raw[:12], raw[12:]
            started, row_id = json.loads(payload)
            edited = json.dumps([started, row_id + 5], separators=(",", ":")).encode()
            for forged in (mac + edited, edited, mac + payload + b" "):
                cursor = base64.urlsafe_b64encode(forged).decode().rstrip("=")
                status, err, _ = await api.get(f"/api/calls?limit=3&cursor={cursor}")
                assert status == 400 and err["error"].startswith("cursor"), forged

            for bad, where in [("cursor=bm9wZQ", "cursor"), ("limit=0", "limit"), ("limit=100000", "limit"), ("disposition=bogus", "disposition"),
                               ("from=yesterday", "from"), ("caller=abc", "caller"), ("number=12", "number"),
                               ("from=2026-11-24T10:00&to=2026-11-24T09:00", "to"), ("caller=" + "1" * 5000, "caller")]:
                status, err, _ = await api.get(f"/api/calls?{bad}")
                assert status == 400 and err["error"].startswith(where), (bad, err)

    arun(body())


def test_a_request_line_beyond_the_limit_is_refused_and_the_server_keeps_serving(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_api(tmp_path, db_url) as api:
            status, _, _ = await api.get("/api/calls?caller=" + "1" * 200_000)
            assert 400 <= status < 500
            assert (await api.get("/api/calls"))[0] == 200

    arun(body())


def test_csv_export_streams_every_match_and_defuses_formulas(db_url: str, tmp_path: Path) -> None:
    records = calls_for_search()
    records[3] = dataclasses.replace(records[3], caller_name='=HYPERLINK("http://evil","x")', reason="+cmd|' /C calc'!A0")

    async def body() -> None:
        await write(db_url, records)
        async with running_api(tmp_path, db_url) as api:
            status, data, r = await api.get("/api/calls.csv?number=4008001234")
            assert status == 200 and r.headers["Content-Type"].startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(data.decode())))
            assert len(rows) == 12 and {row["number"] for row in rows} == {"4008001234"}
            evil = next(row for row in rows if row["uniqueid"] == records[3].uniqueid)
            assert evil["caller_name"].startswith("'=") and evil["reason"].startswith("'+")
        (tmp_path / "capped").mkdir()
        async with running_api(tmp_path / "capped", db_url, export_max_rows=5) as api:
            status, err, _ = await api.get("/api/calls.csv")
            assert status == 413 and err["matching"] == 25

    arun(body())


def test_one_call_has_its_attempts_and_trace(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        await write(db_url, [record(1)])
        async with running_api(tmp_path, db_url) as api:
            status, call, _ = await api.get(f"/api/calls/{record(1).uniqueid}")
            assert status == 200
            assert [a["status"] for a in call["attempts"]] == ["BUSY", "ANSWER"]
            assert call["trace"] == list(record(1).trace) and call["ivr_path"] == ["main:1"]
            status, err, _ = await api.get("/api/calls/nope")
            assert status == 404 and "nope" in err["error"]

    arun(body())


def test_a_uniqueid_two_asterisks_share_is_told_apart_by_source_else_the_newest(db_url: str, tmp_path: Path) -> None:
    older = dataclasses.replace(record(1), source="ast-a")
    newer = dataclasses.replace(record(1), source="ast-b", reason="later", started_at=record(1).started_at + timedelta(hours=1), ended_at=record(1).ended_at + timedelta(hours=1))

    async def body() -> None:
        await write(db_url, [older, newer])
        async with running_api(tmp_path, db_url) as api:
            status, call, _ = await api.get(f"/api/calls/{record(1).uniqueid}")
            assert status == 200 and (call["source"], call["reason"]) == ("ast-b", "later") and len(call["attempts"]) == 2
            status, call, _ = await api.get(f"/api/calls/{record(1).uniqueid}?source=ast-a")
            assert status == 200 and call["source"] == "ast-a" and len(call["attempts"]) == 2
            status, err, _ = await api.get(f"/api/calls/{record(1).uniqueid}?source=ast-c")
            assert status == 404 and "ast-c" in err["error"]

    arun(body())


# -- recordings ------------------------------------------------------------------------------------

def test_recordings_download_with_range_and_never_leave_the_folder(db_url: str, tmp_path: Path) -> None:
    audio = bytes(range(256)) * 40

    async def body() -> None:
        async with running_api(tmp_path, db_url) as api:
            day = api.rec / "4008001234" / "2026-11-24"
            day.mkdir(parents=True)
            (day / "1764000000.1.wav").write_bytes(audio)
            (tmp_path / "secret.txt").write_text("TOPSECRET")
            (api.rec / "escape.wav").symlink_to(tmp_path / "secret.txt")
            status, data, r = await api.get("/api/recordings/4008001234/2026-11-24/1764000000.1.wav")
            assert status == 200 and data == audio and r.headers["Content-Type"] == "audio/wav"
            status, data, r = await api.get("/api/recordings/4008001234/2026-11-24/1764000000.1.wav", headers={**AUTH, "Range": "bytes=10-19"})
            assert status == 206 and data == audio[10:20] and r.headers["Content-Range"] == f"bytes 10-19/{len(audio)}"
            status, _, _ = await api.get("/api/recordings/4008001234/2026-11-24/1764000000.1.wav", headers={**AUTH, "Range": "bytes=999999-"})
            assert status == 416
            for attack in ["%2e%2e/secret.txt", "4008001234/%2E%2E/%2e%2e/secret.txt", "%2Fetc%2Fpasswd", "..%5Csecret.txt",
                           "a%00.wav", "escape.wav"]:
                status, body_, _ = await api.get(URL(api.base + "/api/recordings/" + attack, encoded=True))
                assert status in (400, 403, 404), attack
                assert b"TOPSECRET" not in (body_ if isinstance(body_, bytes) else str(body_).encode())
            assert (await api.get("/api/recordings/missing.wav"))[0] == 404

            inside = dataclasses.replace(record(7), recording_file=f"{api.rec}/4008001234/2026-11-24/1764000000.1.wav")
            outside = dataclasses.replace(record(8), recording_file=str(tmp_path / "secret.txt"))
            unrecorded = record(9)
            relative = dataclasses.replace(record(10), recording_file="4008001234/2026-11-24/1764000000.1.wav")
            climbing = dataclasses.replace(record(11), recording_file="4008001234/../../secret.txt")
            await write(db_url, [inside, outside, unrecorded, relative, climbing])
            status, data, _ = await api.get(f"/api/calls/{inside.uniqueid}/recording", headers={**AUTH, "Range": "bytes=0-3"})
            assert status == 206 and data == audio[:4]
            status, data, _ = await api.get(f"/api/calls/{relative.uniqueid}/recording")
            assert status == 200 and data == audio
            status, err, _ = await api.get(f"/api/calls/{climbing.uniqueid}/recording")
            assert status == 400 and "TOPSECRET" not in json.dumps(err)
            status, err, _ = await api.get(f"/api/calls/{outside.uniqueid}/recording")
            assert status == 404 and "not in the configured recordings folder" in err["error"]
            assert (await api.get(f"/api/calls/{unrecorded.uniqueid}/recording"))[0] == 404
            engine = open_engine(make_url(db_url))
            async with engine.begin() as conn:  # as the retention purge marks a call whose recording it deleted
                await conn.execute(update(calls).where(calls.c.uniqueid == inside.uniqueid).values(recording_purged_at=NOW))
            await engine.dispose()
            status, err, _ = await api.get(f"/api/calls/{inside.uniqueid}/recording")
            assert status == 410 and "retention" in err["error"]

    arun(body())


# -- blacklist -------------------------------------------------------------------------------------

def test_blacklist_changes_apply_at_once_and_bad_requests_change_nothing(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_api(tmp_path, db_url) as api:
            status, entry = await api.send("POST", "/api/blacklist", json={"caller": "+86 139-1111-2222", "scope": "4008001234", "reason": "骚扰", "ttl_seconds": 3600})
            assert status == 201 and entry["caller"] == "13911112222" and entry["created_by"].startswith("api:")
            assert "13911112222" in api.follower.current.for_number("4008001234").numbers
            status, again = await api.send("POST", "/api/blacklist", json={"caller": "13911112222", "scope": "4008001234", "reason": "updated"})
            assert status == 201 and again["reason"] == "updated" and again["expires_at"] is None
            for payload, code, text in [
                ({"caller": "not-a-number"}, 422, "caller"),
                ({"caller": "139", "scope": "abc"}, 422, "scope"),
                ({"caller": "139", "colour": "red"}, 422, "colour"),
                ({"caller": 13911112222}, 422, "caller"),
                ({"caller": "139", "ttl_seconds": 600, "expires_at": "2027-01-01T00:00Z"}, 422, "not both"),
                ({"caller": "139", "expires_at": "2020-01-01T00:00Z"}, 422, "future"),
                (["13911112222"], 422, "object"),
            ]:
                status, err = await api.send("POST", "/api/blacklist", json=payload)
                assert status == code and text in err["error"], (payload, err)
            status, err = await api.send("POST", "/api/blacklist", data=b'{"caller": ', headers={**AUTH, "Content-Type": "application/json"})
            assert status == 400 and "malformed JSON" in err["error"]
            status, err = await api.send("POST", "/api/blacklist", data=b"caller=139", headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
            assert status == 415
            status, err = await api.send("POST", "/api/blacklist", data=b"{" + b" " * 70_000 + b"}", headers={**AUTH, "Content-Type": "application/json"})
            assert status == 413 and "too large" in err["error"]
            _, listing, _ = await api.get("/api/blacklist?scope=4008001234")
            assert [e["caller"] for e in listing["entries"]] == ["13911112222"]
            assert (await api.send("DELETE", "/api/blacklist/4008001234/13911112222"))[0] == 204
            assert "13911112222" not in api.follower.current.for_number("4008001234").numbers
            status, err = await api.send("DELETE", "/api/blacklist/4008001234/13911112222")
            assert status == 404
            status, err = await api.send("DELETE", "/api/blacklist/abc/139")
            assert status == 400

    arun(body())


# -- statistics, plans, reload ---------------------------------------------------------------------

def test_statistics_plans_and_reload(db_url: str, tmp_path: Path) -> None:
    records = calls_for_search()

    async def body() -> None:
        await write(db_url, records)
        async with running_api(tmp_path, db_url) as api:
            status, report, _ = await api.get("/api/stats/4008001234?from=2026-11-24&to=2026-11-24")
            assert status == 200
            mine = [r for r in records if r.number == "4008001234"]
            assert report["total"]["calls"] == len(mine)
            assert report["total"]["answered"] == sum(r.disposition == "answered" for r in mine)
            assert [d["day"] for d in report["days"]] == ["2026-11-24"] and report["peak_hours"] == [9]
            assert (await api.get("/api/stats/4008001234?from=2026-11-24&to=2026-11-01"))[0] == 400
            assert (await api.get("/api/stats/4008001234?from=2025-01-01&to=2026-11-24"))[0] == 400
            assert (await api.get("/api/stats/40x"))[0] == 400

            status, plans, _ = await api.get("/api/plans")
            plan = plans["plans"][0]
            assert plan["number"] == "4008001234" and plan["file"].endswith("4008001234.yaml")
            sales = next(g for g in plan["hunt_groups"] if g["name"] == "sales")
            assert sales["strategy"] == "round_robin" and len(sales["lines"]) == 3

            assert await api.send("POST", "/api/reload") == (200, {"reloaded": True, "plans": 1})
            plan_file = tmp_path / "dialplans" / "4008001234.yaml"
            good = plan_file.read_text()
            plan_file.write_text(good.replace("strategy: round_robin", "strategy: round_robbin"))
            status, refused = await api.send("POST", "/api/reload")
            assert status == 422 and "unchanged" in refused["error"]
            issue = refused["issues"][0]
            assert issue["file"].endswith("4008001234.yaml") and issue["line"] == good[: good.index("strategy: round_robin")].count("\n") + 1
            assert api.holder.current.plans["4008001234"].hunt_groups["sales"].strategy == "round_robin"
            lines = good.splitlines(keepends=True)
            plan_file.write_text("".join(lines[:5]) + "  broken: [unclosed\n" + "".join(lines[5:]))
            status, refused = await api.send("POST", "/api/reload")
            assert status == 422 and refused["issues"][0]["file"].endswith("4008001234.yaml")
            assert isinstance(refused["issues"][0]["line"], int) and refused["issues"][0]["line"] >= 6
            assert (await api.get("/api/plans"))[1]["plans"][0]["hunt_groups"]  # still serving the old plans
            plan_file.write_text(good)
            assert (await api.send("POST", "/api/reload"))[0] == 200

    arun(body())


# -- health, metrics, errors, the document ---------------------------------------------------------

def test_readiness_follows_the_database(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_api(tmp_path, db_url) as api:
            status, ready, _ = await api.get("/readyz", headers=None)
            assert status == 200 and ready["status"] == "ready"
            api.metrics.active_sessions.inc()
            _, text, _ = await api.get("/metrics", headers=None)
            assert b"callrouter_active_sessions 1.0" in text
        down = "postgresql+asyncpg://postgres@127.0.0.1:9/none"
        (tmp_path / "down").mkdir()
        async with running_api(tmp_path / "down", down) as api:
            status, ready, _ = await api.get("/readyz", headers=None)
            assert status == 503 and "database" in ready["reasons"][0]

    arun(body())


def test_unknown_routes_and_methods_get_json_errors(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_api(tmp_path, db_url) as api:
            status, err, r = await api.get("/api/nothing-here")
            assert status == 404 and err == {"error": "no such route"} and r.headers["X-Request-Id"]
            status, err = await api.send("PUT", "/api/plans")
            assert status == 405 and "GET" in err["error"]

    arun(body())


def test_the_openapi_document_describes_exactly_the_served_routes(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_api(tmp_path, db_url) as api:
            status, served, _ = await api.get("/openapi.json", headers=None)
            assert status == 200
            documented = {(m.upper(), p) for p, ops in served["paths"].items() for m in ops}
            routed = {(m, p.replace("{path:.+}", "{path}")) for m, p, _h in ROUTES} | {("GET", "/openapi.json")}
            assert documented == routed
            assert served == document()

    arun(body())


def test_serve_runs_the_admin_api_beside_fastagi(tmp_path: Path) -> None:
    db = tmp_path / "var" / "callrouter.db"
    cfg = workspace(tmp_path, f"sqlite+aiosqlite:///{db}", exporter_in_serve=True)
    subprocess.run([sys.executable, "-m", "callrouter", "db", "upgrade", "--config", str(cfg)], check=True, capture_output=True, env=ENV)

    async def body() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callrouter", "serve", "--config", str(cfg), "--port", "0",
            stderr=asyncio.subprocess.PIPE, cwd=str(tmp_path), env={**ENV, "CALLROUTER_ADMIN_TOKEN": TOKEN},
        )
        server = ServerProcess(proc)
        try:
            port = int((await server.wait_for(r"admin API listening on 127\.0\.0\.1:(\d+)")).group(1))
            agi_port = int((await server.wait_for(r"FastAGI listening on 127\.0\.0\.1:(\d+)")).group(1))
            call = CallScript(callerid="13955556666", uniqueid="77.1", dtmf=("1",), default_dial=DialScript("ANSWER", 2, 5))
            assert (await run_call("127.0.0.1", agi_port, call)).variables["CALLROUTER_RESULT"] == "ROUTED"
            async with aiohttp.ClientSession() as http:
                deadline = asyncio.get_running_loop().time() + 10
                while True:  # ready once the in-process exporter has loaded its totals
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                        assert "CDR exporter" in (await r.json())["reasons"][0]
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
                async with http.get(f"http://127.0.0.1:{port}/api/plans", headers=AUTH) as r:
                    assert r.status == 200 and (await r.json())["plans"][0]["number"] == "4008001234"
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    text = await r.text()
                assert re.search(r'callrouter_calls_total\{disposition="\w+",number="4008001234"\} 1\.0', text)
                assert "13955556666" not in text and "5556666" not in text  # a caller is never a label value
                lag_samples = re.search(r"^callrouter_event_loop_lag_seconds_count (\S+)$", text, re.M)
                assert lag_samples and float(lag_samples.group(1)) > 0  # serve samples its event loop's lag
                deadline = asyncio.get_running_loop().time() + 10
                while True:  # the CDR reaches the database within the writer's batch age
                    async with http.get(f"http://127.0.0.1:{port}/api/calls/77.1", headers=AUTH) as r:
                        if r.status == 200:
                            assert (await r.json())["caller"] == "13955556666"
                            break
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
                while True:  # exporter.in_serve: the CDR families follow on the same /metrics
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                        text = await r.text()
                    if re.search(r'callrouter_cdr_calls_total\{disposition="\w+",number="4008001234"\} 1\.0', text):
                        break
                    assert asyncio.get_running_loop().time() < deadline, text[-2000:]
                    await asyncio.sleep(0.05)
        finally:
            proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 20) == 0

    arun(body())
