"""The admin API when things go wrong on our side: a crashing handler, a stream cut halfway, a hung database."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from callrouter.api.errors import errors_middleware
from tests.harness import arun
from tests.tcpproxy import proxied
from tests.test_admin_api import AUTH, running_api


def test_an_unexpected_exception_is_a_500_json_with_a_request_id_and_no_traceback(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_clock() -> datetime:
        raise RuntimeError("clock exploded: secret internals")

    async def body() -> None:
        async with running_api(tmp_path, db_url, clock=broken_clock) as api:
            with caplog.at_level(logging.ERROR, logger="callrouter.api.errors"):
                status, err, r = await api.get("/api/plans")
            assert status == 500 and r.content_type == "application/json"
            request_id = r.headers["X-Request-Id"]
            assert request_id in err["error"] and "secret internals" not in err["error"] and "Traceback" not in err["error"]
            assert any(request_id in rec.getMessage() and rec.exc_info for rec in caplog.records)
            assert (await api.get("/api/calls"))[0] == 200  # the server goes on

    arun(body())


def test_a_stream_that_fails_halfway_is_cut_never_ended_with_a_spliced_error() -> None:
    """A CSV export whose database fails after the header row must not look complete to the client."""

    async def half_then_fail(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/csv"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"uniqueid,number\r\n1764000000.1,4008001234\r\n")
        raise RuntimeError("database went away")

    async def body() -> None:
        app = web.Application(middlewares=[errors_middleware])
        app.router.add_get("/calls.csv", half_then_fail)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/calls.csv") as r:
                assert r.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await r.read()
        finally:
            await runner.cleanup()

    arun(body())


def test_readiness_answers_503_within_its_budget_when_the_database_hangs(pg_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        proxy, url = await proxied(pg_url)
        try:
            async with running_api(tmp_path, url) as api:
                assert (await api.get("/readyz", headers=None))[0] == 200
                proxy.stall()  # connections stay open, nothing comes back
                status, ready, _ = await api.get("/readyz", headers=None)
                assert status == 503 and "did not answer within 1 s" in ready["reasons"][0]
                assert (await api.get("/healthz", headers=None))[0] == 200
                assert (await api.get("/api/plans", headers=AUTH))[0] == 200  # config-only routes still answer
                await proxy.cut()  # the abandoned probe ends, so the engine can close
        finally:
            await proxy.cut()

    arun(body())
