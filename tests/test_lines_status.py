"""Line status where people look: `GET /api/lines` and `callrouter lines status` (from the database when
the routing state is shared, from the running router's API when it is local)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.engine import make_url

from callrouter.store import line_health
from callrouter.store.db import open_engine
from tests.harness import arun
from tests.test_admin_api import NOW, running_api, workspace
from tests.test_process import ENV

ZHANG = "Local/13800138001@callrouter-lines"
LI = "Local/13800138002@callrouter-lines"


async def fail_lines(url: str, now: datetime = NOW) -> None:
    """zhang: unreachable twice, the last 5 minutes ago (suspended); li: one unanswered call (still working)."""
    engine = open_engine(make_url(url))
    try:
        for minutes in (6, 5):
            await line_health.report(engine, ZHANG, "CHANUNAVAIL", (now - timedelta(minutes=minutes)).timestamp())
        await line_health.report(engine, LI, "NOANSWER", (now - timedelta(minutes=1)).timestamp())
    finally:
        await engine.dispose()


def test_the_api_shows_each_lines_health_and_why(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        await fail_lines(db_url)
        async with running_api(tmp_path, db_url) as api:
            status, got, _ = await api.get("/api/lines?number=4008001234")
            assert status == 200
            (number,) = got["numbers"]
            assert (number["number"], number["working"], number["total"]) == ("4008001234", 4, 5)
            lines = {line["line"]: line for line in number["lines"]}
            assert set(lines) == {"zhang", "li", "wang", "service_desk", "zhao"}
            zhang = lines["zhang"]
            assert zhang["state"] == "suspended" and not zhang["working"] and zhang["phone"] == "138****8001"
            assert zhang["groups"] == ["sales", "complaints"] and zhang["unavailable"] == 2 and zhang["last_status"] == "CHANUNAVAIL"
            assert zhang["reason"] == "2 calls unreachable in a row since 10:54, retried after 11:10"
            assert zhang["since"] == "2026-11-24T10:54:00+08:00" and zhang["retry_at"] == "2026-11-24T11:10:00+08:00"
            assert lines["li"]["state"] == "healthy" and lines["li"]["reason"] == "0 unreachable, 1 unanswered since it last answered"
            assert lines["wang"] == {**lines["wang"], "state": "healthy", "reason": "", "since": None, "unavailable": 0}
            assert "13800138001" not in json.dumps(got)
            status, every, _ = await api.get("/api/lines")
            assert status == 200 and every == got  # one plan in the sample
            assert (await api.get("/api/lines?number=4009990000"))[0] == 404
            assert (await api.get("/api/lines?number=abc"))[0] == 400
            assert (await api.get("/api/lines", headers={}))[0] == 401

    arun(body())


def test_lines_status_reads_the_shared_state_from_the_database(pg_url: str, tmp_path: Path) -> None:
    arun(fail_lines(pg_url, datetime.now(timezone.utc)))  # the command reads the real clock
    cfg = workspace(tmp_path, pg_url)

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "callrouter", "lines", "status", "--config", str(cfg), *args],
                              capture_output=True, text=True, env=ENV, timeout=60)

    table = status()
    assert table.returncode == 1, table.stderr  # a line is suspended
    rows = table.stdout.splitlines()
    assert rows[0] == "400-800-1234 示例科技 Example Tech: 4 of 5 lines working"
    zhang = next(r for r in rows if r.strip().startswith("zhang"))
    assert "张伟" in zhang and "138****8001" in zhang and "suspended" in zhang and "2 calls unreachable in a row since" in zhang
    as_json = status("--number", "400-800-1234", "--format", "json")
    got = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and got["numbers"][0]["working"] == 4
    unknown = status("--number", "4009990000")
    assert unknown.returncode == 2 and "no plan routes 4009990000" in unknown.stderr


def test_lines_status_with_local_state_asks_the_router_and_says_when_it_is_not_running(tmp_path: Path) -> None:
    cfg = workspace(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    done = subprocess.run([sys.executable, "-m", "callrouter", "lines", "status", "--config", str(cfg), "--api", "http://127.0.0.1:1"],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 1 and "the router's admin API does not answer" in done.stderr and "Traceback" not in done.stderr


def test_a_tenant_token_sees_the_lines_of_its_own_numbers_only(db_url: str, tmp_path: Path) -> None:
    from callrouter.store.api_tokens import add_token
    from tests.consoles import NUMBER_A, running_site

    async def body() -> None:
        async with running_site(tmp_path, db_url, token="test-token-0123456789abcdef") as site:
            now = site.clock()
            mine = (await add_token(site.engine, site.seeded.tenant_a, "reporting", "read", now=now))[0]
            theirs = (await add_token(site.engine, site.seeded.tenant_b, "reporting", "read", now=now))[0]

            async def get(path: str, token: str) -> tuple[int, dict[str, object]]:
                async with site.http.get(site.base + path, headers={"Authorization": f"Bearer {token}"}) as r:
                    return r.status, await r.json()

            status, got = await get("/api/lines", mine)
            assert status == 200 and [n["number"] for n in got["numbers"]] == [NUMBER_A]  # type: ignore[union-attr]
            status, got = await get("/api/lines", theirs)
            assert status == 200 and got["numbers"] == []
            status, got = await get(f"/api/lines?number={NUMBER_A}", theirs)
            assert status == 404 and "lines" not in json.dumps(got)

    arun(body())
