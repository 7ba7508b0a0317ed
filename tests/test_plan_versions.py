"""Plan versions (issue 14) on SQLite and Postgres: the one save (validated, located issues, stale saves
refused with what is there now, the file kept as version 1), restore, every router following (poll and
Postgres LISTEN), an invalid version never replacing a running plan, a reload where the database wins,
and the admin API routes with their tenancy, If-Match and audit."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import pytest
from sqlalchemy import text as text_sql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config.holder import ConfigHolder
from callrouter.config.loader import RoutingConfig, load_config
from callrouter.metrics import RouterMetrics
from callrouter.plans.edits import move_line
from callrouter.plans.follower import PlanFollower
from callrouter.plans.service import (
    PlanDeps, PlanRejected, StaleVersion, check_plan_text, current_text, restore_plan, save_plan,
)
from callrouter.store import plan_versions
from callrouter.store.api_tokens import add_token
from callrouter.store.db import open_engine
from callrouter.store.plan_versions import PlanVersion
from tests.consoles import NUMBER_A, running_site
from tests.harness import arun
from tests.test_api_tenancy import ADMIN, call_api

ROOT = Path(__file__).resolve().parent.parent
NUMBER = "4008001234"
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


def workspace(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(ROOT / "dialplans", tmp_path / "dialplans")
    return tmp_path / "config.yaml"


class Audits:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, Any, Any]] = []

    async def __call__(self, action: str, target: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> None:
        self.rows.append((action, target, before, after))


def on_database(url: str, body: Callable[[AsyncEngine], Awaitable[None]]) -> None:
    """Run a test body with an engine on `url`, disposed afterwards."""
    async def run() -> None:
        engine = open_engine(make_url(url))
        try:
            await body(engine)
        finally:
            await engine.dispose()

    arun(run())


def router(config: RoutingConfig, engine: AsyncEngine, audits: Audits | None = None) -> PlanDeps:
    return PlanDeps(engine, ConfigHolder(config, RouterMetrics()), lambda: T0, audits)


def sales_order(config: RoutingConfig) -> list[str]:
    return [line.id for line in config.plans[NUMBER].hunt_groups["sales"].lines]


def comments(text: str) -> list[str]:
    return [line[line.index("#"):] for line in text.splitlines() if "#" in line]


def test_a_save_is_validated_stored_as_the_next_version_and_run_at_once(db_url: str, tmp_path: Path) -> None:
    config = load_config(str(workspace(tmp_path)))
    file_text = Path(config.sources[NUMBER]).read_text()

    async def body(engine: AsyncEngine) -> None:
        audits = Audits()
        deps = router(config, engine, audits)
        text, version = await current_text(deps, NUMBER)
        assert (text, version) == (file_text, None)  # no version yet: the file, as an editor starts from it
        edited = move_line(text, "sales", "wang", -2)  # a console-style edit: 王芳 first
        saved = await save_plan(deps, NUMBER, edited, author="alice", origin="console", expected_version=None, summary="王芳 first")
        assert saved.version == 2 and saved.author == "alice" and saved.origin == "console"
        async with engine.connect() as conn:
            history = await plan_versions.history(conn, NUMBER)
        assert [(v.version, v.origin, v.author) for v in history] == [(2, "console", "alice"), (1, "file", "file")]
        assert history[1].text == file_text  # the file kept as version 1, so a restore can go back to it
        assert history[0].text == edited and comments(edited) == comments(file_text)  # every comment of the file kept
        assert deps.holder.current.version_of(NUMBER) == 2 and sales_order(deps.holder.current) == ["wang", "zhang", "li"]
        assert audits.rows == [("plan_save", NUMBER, audits.rows[0][2], audits.rows[0][3])]
        assert audits.rows[0][2]["version"] == 1 and audits.rows[0][3]["version"] == 2
        assert await current_text(deps, NUMBER) == (edited, 2)

    on_database(db_url, body)


def test_a_text_that_does_not_validate_is_refused_with_located_issues_and_nothing_changes(db_url: str, tmp_path: Path) -> None:
    config = load_config(str(workspace(tmp_path)))
    text = Path(config.sources[NUMBER]).read_text()

    async def body(engine: AsyncEngine) -> None:
        deps = router(config, engine)
        broken = text.replace("ring_timeout: 20}", "ring_timeout: -5}", 1)
        with pytest.raises(PlanRejected) as refused:
            await save_plan(deps, NUMBER, broken, author="alice", origin="console", expected_version=None, summary="x")
        [issue] = refused.value.issues
        assert issue.path == ("hunt_groups", "sales", "lines", 0, "ring_timeout")
        assert "ring_timeout: -5" in broken.splitlines()[issue.line - 1]  # the issue's line is where the field is
        dangling = text.replace("entry:\n  menu: main", "entry:\n  menu: nowhere")
        with pytest.raises(PlanRejected) as refused:
            await save_plan(deps, NUMBER, dangling, author="alice", origin="console", expected_version=None, summary="x")
        [issue] = refused.value.issues
        assert issue.path == ("entry",) and "no menu named 'nowhere'" in issue.message  # the cross-check's, located too
        with pytest.raises(PlanRejected, match="this is the plan of 4009999999, not 4008001234"):
            await save_plan(deps, "4009999999", text, author="a", origin="api", expected_version=None, summary="x")
        with pytest.raises(PlanRejected, match="larger than 1024 KiB"):
            await save_plan(deps, NUMBER, text + "#" * (1024 * 1024), author="a", origin="api", expected_version=None, summary="x")
        with pytest.raises(PlanRejected, match="aliases"):
            await save_plan(deps, NUMBER, text + "\nx: &a [1]\ny: *a\n", author="a", origin="api", expected_version=None, summary="x")
        async with engine.connect() as conn:
            assert await plan_versions.history(conn, NUMBER) == []
        assert deps.holder.current is config  # the running plan untouched

    on_database(db_url, body)


def test_the_second_of_two_saves_from_one_version_is_refused_with_what_is_there_now(db_url: str, tmp_path: Path) -> None:
    config = load_config(str(workspace(tmp_path)))
    text = Path(config.sources[NUMBER]).read_text()

    async def body(engine: AsyncEngine) -> None:
        deps = router(config, engine)
        first = await save_plan(deps, NUMBER, move_line(text, "sales", "li", -1), author="alice", origin="console",
                                expected_version=None, summary="李娜 first")
        with pytest.raises(StaleVersion) as stale:  # bob also started from the file
            await save_plan(deps, NUMBER, move_line(text, "sales", "wang", -2), author="bob", origin="console",
                            expected_version=None, summary="王芳 first")
        assert stale.value.current is not None and stale.value.current.version == first.version == 2
        assert stale.value.current.author == "alice" and stale.value.current.summary == "李娜 first"
        # Two saves from version 2 at the same moment: one is version 3, the other is refused.
        results = await asyncio.gather(
            save_plan(deps, NUMBER, move_line(text, "sales", "wang", -1), author="carol", origin="api", expected_version=2, summary="c"),
            save_plan(deps, NUMBER, move_line(text, "sales", "wang", -2), author="dave", origin="api", expected_version=2, summary="d"),
            return_exceptions=True,
        )
        stored = [r for r in results if isinstance(r, PlanVersion)]
        refused = [r for r in results if isinstance(r, StaleVersion)]
        assert len(stored) == 1 and len(refused) == 1, results
        assert stored[0].version == 3 and refused[0].current is not None and refused[0].current.version == 3
        async with engine.connect() as conn:
            assert [v.version for v in await plan_versions.history(conn, NUMBER)] == [3, 2, 1]
        assert deps.holder.current.version_of(NUMBER) == 3

    on_database(db_url, body)


def test_restore_stores_an_old_version_again_as_the_newest(db_url: str, tmp_path: Path) -> None:
    config = load_config(str(workspace(tmp_path)))
    text = Path(config.sources[NUMBER]).read_text()

    async def body(engine: AsyncEngine) -> None:
        audits = Audits()
        deps = router(config, engine, audits)
        await save_plan(deps, NUMBER, move_line(text, "sales", "wang", -2), author="alice", origin="console", expected_version=None, summary="x")
        assert sales_order(deps.holder.current) == ["wang", "zhang", "li"]
        with pytest.raises(StaleVersion):
            await restore_plan(deps, NUMBER, 1, author="bob", expected_version=1)
        back = await restore_plan(deps, NUMBER, 1, author="bob", expected_version=2)
        assert (back.version, back.origin, back.restored_from, back.text) == (3, "restore", 1, text)
        assert sales_order(deps.holder.current) == ["zhang", "li", "wang"] and deps.holder.current.version_of(NUMBER) == 3
        assert [a[0] for a in audits.rows] == ["plan_save", "plan_restore"]
        with pytest.raises(LookupError):
            await restore_plan(deps, NUMBER, 9, author="bob", expected_version=3)

    on_database(db_url, body)


def test_another_router_follows_and_refuses_an_invalid_version_keeping_its_running_plan(db_url: str, tmp_path: Path) -> None:
    config = load_config(str(workspace(tmp_path)))
    text = Path(config.sources[NUMBER]).read_text()

    async def body(engine: AsyncEngine) -> None:
        deps = router(config, engine)
        other = ConfigHolder(config, RouterMetrics())
        metrics = RouterMetrics()
        follower = PlanFollower(engine, other, metrics, every=3600, listen=False)
        await save_plan(deps, NUMBER, move_line(text, "sales", "wang", -2), author="alice", origin="console", expected_version=None, summary="x")
        assert await follower.sync() == 1
        assert other.current.version_of(NUMBER) == 2 and sales_order(other.current) == ["wang", "zhang", "li"]
        # A version that does not validate (written past save_plan, as by an older release): refused, counted once.
        async with engine.begin() as conn:
            await plan_versions.insert(conn, PlanVersion(NUMBER, 3, text.replace("menu: main", "menu: gone", 1), "x", "api", "bad", None, T0))
        running = other.current
        assert await follower.sync() == 0 and await follower.sync() == 0
        assert other.current is running and sales_order(other.current) == ["wang", "zhang", "li"]
        assert metrics.registry.get_sample_value("callrouter_plan_versions_applied_total", {"result": "refused"}) == 1
        assert metrics.registry.get_sample_value("callrouter_plan_versions_applied_total", {"result": "applied"}) == 1

    on_database(db_url, body)


def test_a_reload_reads_the_files_then_the_database_wins(db_url: str, tmp_path: Path) -> None:
    cfg = workspace(tmp_path)
    config = load_config(str(cfg))
    plan_file = Path(config.sources[NUMBER])
    text = plan_file.read_text()

    async def body(engine: AsyncEngine) -> None:
        deps = router(config, engine)
        holder = ConfigHolder(config, RouterMetrics())
        follower = PlanFollower(engine, holder, RouterMetrics(), every=3600, listen=False)
        holder.overlay = follower.overlay
        await save_plan(deps, NUMBER, move_line(text, "sales", "wang", -2), author="alice", origin="console", expected_version=None, summary="x")
        # ops edit the file differently and reload: the file's change is read, the database's version runs
        plan_file.write_text(move_line(text, "sales", "li", -1))
        assert await holder.reload() == []
        assert holder.current.version_of(NUMBER) == 2 and sales_order(holder.current) == ["wang", "zhang", "li"]
        # a config.yaml change is taken; the version is validated against it
        assert holder.current.sources[NUMBER] == str(plan_file)

    on_database(db_url, body)


def test_postgres_notify_reaches_a_listening_router_at_once(pg_url: str, tmp_path: Path) -> None:
    config = load_config(str(workspace(tmp_path)))
    text = Path(config.sources[NUMBER]).read_text()

    async def body() -> None:
        engine = open_engine(make_url(pg_url))
        deps = router(config, engine)
        other = ConfigHolder(config, RouterMetrics())
        follower = PlanFollower(engine, other, RouterMetrics(), every=3600)  # the poll would take an hour: only LISTEN can do it
        await follower.start()
        try:
            assert follower.listener is not None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not follower.listener.connected:
                assert loop.time() < deadline, "the LISTEN connection was not made"
                await asyncio.sleep(0.02)
            saved_at = loop.time()
            await save_plan(deps, NUMBER, move_line(text, "sales", "wang", -2), author="alice", origin="console", expected_version=None, summary="x")
            while other.current.version_of(NUMBER) != 2:
                assert loop.time() - saved_at < 2.0, "a save did not reach the listening router within 2 s"
                await asyncio.sleep(0.01)
            assert follower.listener.heard >= 1 and sales_order(other.current) == ["wang", "zhang", "li"]
            # The LISTEN connection is killed (a Postgres restart, a proxy timeout): it is made again, and a save
            # after that is heard too.
            async with engine.connect() as conn:
                killed = (await conn.execute(text_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'callrouter-plans' AND datname = current_database()"))).scalar()
            assert killed == 1
            deadline = loop.time() + 10
            while follower.listener.connected:
                assert loop.time() < deadline, "the listener did not notice its connection was gone"
                await asyncio.sleep(0.02)
            while not follower.listener.connected:
                assert loop.time() < deadline, "the LISTEN connection was not made again"
                await asyncio.sleep(0.02)
            heard = follower.listener.heard
            saved_at = loop.time()
            await save_plan(deps, NUMBER, text, author="alice", origin="console", expected_version=2, summary="back")
            while other.current.version_of(NUMBER) != 3:
                assert loop.time() - saved_at < 2.0, "a save after the reconnection did not arrive within 2 s"
                await asyncio.sleep(0.01)
            assert follower.listener.heard > heard
        finally:
            await follower.close()
            await engine.dispose()

    arun(body())


def test_check_plan_text_is_the_validator_of_the_files(tmp_path: Path) -> None:
    config = load_config(str(workspace(tmp_path)))
    text = Path(config.sources[NUMBER]).read_text()
    assert check_plan_text(text, NUMBER, config) == config.plans[NUMBER]
    assert check_plan_text(text.replace("\n", "\r\n"), NUMBER, config) == config.plans[NUMBER]  # a browser's line ends


# -- the admin API ---------------------------------------------------------------------------------


def test_the_plan_routes_save_refuse_stale_and_invalid_restore_and_audit(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=ADMIN) as site:
            text = (site.config_path.parent / "dialplans" / f"{NUMBER_A}.yaml").read_text()
            headers = {"Authorization": f"Bearer {ADMIN}"}

            async def put(body: str, if_match: str | None, content_type: str = "application/yaml") -> tuple[int, Any]:
                h = {**headers, "Content-Type": content_type} | ({"If-Match": if_match} if if_match is not None else {})
                async with site.http.put(f"{site.base}/api/plans/{NUMBER_A}", data=body.encode(), headers=h) as r:
                    return r.status, json.loads(await r.read())

            status, data = await put(text, None)
            assert status == 428 and "If-Match" in data["error"]
            edited = move_line(text, "sales", "wang", -2)
            status, data = await put(edited, '"file"')
            assert status == 201 and data["version"] == 2 and data["origin"] == "api" and data["author"].startswith("admin-token@")
            status, data = await put(move_line(text, "sales", "li", -1), "file")  # started from the file too: refused
            assert status == 412 and data["current_version"] == 2 and data["current"]["author"].startswith("admin-token@")
            status, data = await put(json.dumps({"text": edited.replace("menu: main", "menu: gone", 1), "summary": "s"}), "2", "application/json")
            assert status == 422 and data["issues"][0]["path"] == ["entry"] and data["issues"][0]["line"] > 1
            status, data = await put(text, "2", "application/octet-stream")
            assert status == 415
            status, raw = await call_api(site, "GET", f"/api/plans/{NUMBER_A}/versions", ADMIN)
            listing = json.loads(raw)
            assert status == 200 and listing["runs"] == 2 and [v["version"] for v in listing["versions"]] == [2, 1]
            status, raw = await call_api(site, "GET", f"/api/plans/{NUMBER_A}/versions/1", ADMIN)
            assert status == 200 and json.loads(raw)["text"] == text
            async with site.http.get(f"{site.base}/api/plans/{NUMBER_A}/versions/2", headers={**headers, "Accept": "application/yaml"}) as r:
                assert r.status == 200 and (await r.read()).decode() == edited and r.headers["ETag"] == '"2"'
            assert (await call_api(site, "GET", f"/api/plans/{NUMBER_A}/versions/9", ADMIN))[0] == 404
            status, raw = await call_api(site, "POST", f"/api/plans/{NUMBER_A}/restore/1", ADMIN)
            assert status == 201 and json.loads(raw)["version"] == 3 and json.loads(raw)["restored_from"] == 1
            status, raw = await call_api(site, "GET", "/api/plans", ADMIN)
            assert [p["version"] for p in json.loads(raw)["plans"] if p["number"] == NUMBER_A] == [3]
            actions = [e.action for e in await site.audit("plan_save")] + [e.action for e in await site.audit("plan_restore")]
            assert actions == ["plan_save", "plan_restore"]

    arun(body())


def test_tenant_tokens_change_only_their_own_plans_and_read_tokens_none(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=ADMIN) as site:
            text = (site.config_path.parent / "dialplans" / f"{NUMBER_A}.yaml").read_text()
            now = site.clock()
            a_read = (await add_token(site.engine, site.seeded.tenant_a, "r", "read", now=now))[0]
            a_write = (await add_token(site.engine, site.seeded.tenant_a, "w", "write", now=now))[0]
            b_write = (await add_token(site.engine, site.seeded.tenant_b, "w", "write", now=now))[0]

            async def put(token: str) -> int:
                h = {"Authorization": f"Bearer {token}", "Content-Type": "application/yaml", "If-Match": "file"}
                async with site.http.put(f"{site.base}/api/plans/{NUMBER_A}", data=text.encode(), headers=h) as r:
                    return r.status

            assert await put(a_read) == 403
            assert await put(b_write) == 404  # another tenant's number does not exist for B
            assert (await call_api(site, "GET", f"/api/plans/{NUMBER_A}/versions", b_write))[0] == 404
            assert (await call_api(site, "POST", f"/api/plans/{NUMBER_A}/restore/1", b_write))[0] == 404
            assert await put(a_write) == 201
            [entry] = await site.audit("plan_save")
            assert entry.tenant_id == site.seeded.tenant_a and entry.username == "token:w"
            assert (await call_api(site, "GET", f"/api/plans/{NUMBER_A}/versions", a_read))[0] == 200

    arun(body())



def test_a_reload_with_the_database_away_keeps_the_versions_running(tmp_path: Path) -> None:
    config = load_config(str(workspace(tmp_path)))
    text = Path(config.sources[NUMBER]).read_text()
    edited = check_plan_text(move_line(text, "sales", "wang", -2), NUMBER, config)

    async def body() -> None:
        engine = open_engine(make_url("postgresql+asyncpg://router@127.0.0.1:1/none"), connect_timeout=1)  # nothing listens there
        holder = ConfigHolder(config.with_versions({NUMBER: (edited, 4)}), RouterMetrics())
        holder.overlay = PlanFollower(engine, holder, RouterMetrics(), listen=False).overlay
        try:
            assert await holder.reload() == []  # the files are fine: the reload goes through...
            assert holder.current.version_of(NUMBER) == 4 and sales_order(holder.current) == ["wang", "zhang", "li"]  # ...not back to the file
        finally:
            await engine.dispose()

    arun(body())


def test_serve_starts_on_the_database_versions_and_says_which_files_differ(db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from contextlib import AsyncExitStack

    from callrouter.app import follow_plans

    config = load_config(str(workspace(tmp_path)))
    text = Path(config.sources[NUMBER]).read_text()

    async def body(engine: AsyncEngine) -> None:
        await save_plan(router(config, engine), NUMBER, move_line(text, "sales", "wang", -2), author="alice", origin="console",
                        expected_version=None, summary="x")
        holder = ConfigHolder(config, RouterMetrics())  # as serve starts: the files
        async with AsyncExitStack() as stack:
            await follow_plans(engine, holder, RouterMetrics(), stack)
            assert holder.current.version_of(NUMBER) == 2 and sales_order(holder.current) == ["wang", "zhang", "li"]
            assert holder.overlay is not None  # a reload lays the versions over the files
        [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "differs" in r.getMessage()]
        assert config.sources[NUMBER] in warning and "the file is version 1" in warning
        assert f"`callrouter plans export --number {NUMBER}`" in warning

    on_database(db_url, body)
