"""Hostile input from outside: browser pages aimed at a token-less admin API, oversized bodies, and config
files or JSON bodies built to exhaust the parser. Each gets a clear refusal, never a crash or an OOM."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import AsyncIterator

import pytest

from callrouter.config.loader import load_config
from callrouter.config.yamlsource import ConfigError, read_yaml
from tests.harness import arun
from tests.test_admin_api import AUTH, ROOT, TOKEN, Api, running_api
from tests.test_config import copy_sample
from tests.test_process import ENV

# -- hostile YAML ----------------------------------------------------------------------------------

MAX_DEPTH = 64  # the documented limits (docs/configuration.md)
MAX_FILE_BYTES = 1024 * 1024
PLAN_HEAD = 'number: "4001110000"\nname: hostile\n'


def _alias_bomb() -> bytes:
    """Billion laughs in 300 bytes: 9^7 leaves if the aliases are expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdef", "bcdefg"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return ("\n".join(lines) + "\n").encode()


def _garbage() -> bytes:
    rng = random.Random(11)
    return PLAN_HEAD.encode() + bytes(rng.randrange(256) for _ in range(4096))


HOSTILE: dict[str, tuple[bytes, int, str]] = {  # name: (file content, expected line, words in the message)
    "alias bomb": (_alias_bomb(), 1, "anchors"),
    "recursive alias": (PLAN_HEAD.encode() + b"loop: &loop [*loop]\n", 3, "anchors"),
    "alias only": (PLAN_HEAD.encode() + b"x: *nowhere\n", 3, "alias"),
    "deep nesting": (PLAN_HEAD.encode() + b"deep: " + b"[" * 5000 + b"]" * 5000 + b"\n", 3, f"deeper than {MAX_DEPTH}"),
    "deep block nesting": (PLAN_HEAD.encode() + b"".join(b" " * i + b"k:\n" for i in range(200)), 67, f"deeper than {MAX_DEPTH}"),
    "5000-digit int": (PLAN_HEAD.encode() + b"weight: " + b"9" * 5000 + b"\n", 3, "digits"),
    "5000-digit float": (PLAN_HEAD.encode() + b"weight: " + b"9" * 5000 + b".5\n", 3, "digits"),
    "over the size cap": (PLAN_HEAD.encode() + b"# " + b"x" * MAX_FILE_BYTES + b"\n", 1, "larger than"),
    "binary garbage": (_garbage(), 3, "UTF-8"),
    "control characters": (PLAN_HEAD.encode() + b"x: 1\n\x00\x01\x02\n", 4, "control character"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_yaml_file_is_a_config_error_with_its_file_and_line_in_bounded_memory(name: str, tmp_path: Path) -> None:
    content, line, words = HOSTILE[name]
    cfg = copy_sample(tmp_path)
    plan = tmp_path / "dialplans" / "hostile.yaml"
    plan.write_bytes(content)
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:  # any other exception fails the test
            load_config(str(cfg))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (issue,) = caught.value.issues
    assert issue.file == str(plan) and issue.line == line, str(issue)
    assert words in issue.message, str(issue)
    assert peak < 32 * 1024 * 1024, f"{peak} bytes to refuse a {len(content)}-byte file"


def test_a_hostile_service_config_is_a_config_error_too(tmp_path: Path) -> None:
    cfg = copy_sample(tmp_path)
    cfg.write_bytes(cfg.read_bytes() + b"extra: &x [*x]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(cfg))
    (issue,) = caught.value.issues
    assert issue.file == str(cfg) and issue.line == cfg.read_text().count("\n") and "anchors" in issue.message


def test_nesting_up_to_the_cap_still_parses(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("deep: " + "[" * (MAX_DEPTH - 1) + "1" + "]" * (MAX_DEPTH - 1) + "\n")
    doc = read_yaml(str(path))
    value = doc.data["deep"]
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == 1


@pytest.mark.parametrize("name", ["recursive alias", "5000-digit int", "deep nesting"])
def test_check_refuses_a_hostile_plan_with_a_message_and_no_traceback(name: str, tmp_path: Path) -> None:
    cfg = copy_sample(tmp_path)
    (tmp_path / "dialplans" / "hostile.yaml").write_bytes(HOSTILE[name][0])
    done = subprocess.run(
        [sys.executable, "-m", "callrouter", "check", "--config", str(cfg)], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr  # a configuration that does not load, as for every command
    assert "Traceback" not in done.stderr
    assert f"{tmp_path / 'dialplans' / 'hostile.yaml'}:{HOSTILE[name][1]}: " in done.stderr
    assert "1 error(s); nothing was loaded" in done.stderr


@pytest.mark.parametrize("name", ["alias bomb", "recursive alias", "deep nesting", "5000-digit int", "binary garbage"])
def test_reload_refuses_a_hostile_plan_with_the_issue_and_keeps_the_old_config(name: str, db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_api(tmp_path, db_url) as api:
            before = api.holder.current
            (tmp_path / "dialplans" / "hostile.yaml").write_bytes(HOSTILE[name][0])
            status, refused = await api.send("POST", "/api/reload")
            assert status == 422 and "unchanged" in refused["error"], refused
            (issue,) = refused["issues"]
            assert issue["file"].endswith("hostile.yaml") and issue["line"] == HOSTILE[name][1], issue
            assert api.holder.current is before
            assert (await api.get("/api/plans"))[0] == 200

    arun(body())


# -- hostile JSON bodies ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "raw, words",
    [
        (b'{"caller": ' + b"[" * 5000 + b"]" * 5000 + b"}", "deeper than"),
        (b"[" * 30000, "deeper than"),
        (b'{"caller": "139", "ttl_seconds": ' + b"9" * 5000 + b"}", "digits"),
        (b'{"caller": "139", "ttl_seconds": 1e999999}', "out of range"),
        (b'{"caller": NaN}', "NaN"),
        (b'{"caller": "\xff"}', "UTF-8"),
        (b'{"caller": ', "malformed JSON"),
    ],
)
def test_bad_json_bodies_are_a_400_never_a_500(raw: bytes, words: str, db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_api(tmp_path, db_url) as api:
            status, err = await api.send("POST", "/api/blacklist", data=raw, headers={**AUTH, "Content-Type": "application/json"})
            assert status == 400 and words in err["error"], (status, err)
            assert (await api.get("/api/blacklist"))[1]["entries"] == []

    arun(body())


def _reloads(api: Api) -> float:
    """Successful reloads so far: a refused request must not have reloaded."""
    return api.metrics.registry.get_sample_value("callrouter_config_reloads_total", {"result": "success"}) or 0.0


# -- the token-less API and browser pages ----------------------------------------------------------

def test_without_a_token_only_loopback_host_names_are_served(db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with running_api(tmp_path, db_url, token=None) as api:
            port = api.base.rsplit(":", 1)[1]
            for host in ["attacker.example", f"attacker.example:{port}", "127.0.0.1.attacker.example", "10.0.0.1", "[::2]:80", "localhost:x", "::1"]:
                with caplog.at_level(logging.WARNING, logger="callrouter.api.auth"):
                    status, err, r = await api.get("/api/plans", headers={"Host": host})
                assert status == 403 and r.content_type == "application/json" and "loopback" in err["error"], (host, status, err)
                assert "X-Request-Id" in r.headers
                assert any("Host" in rec.getMessage() and rec.levelno == logging.WARNING for rec in caplog.records)
                caplog.clear()
            assert (await api.get("/metrics", headers={"Host": "attacker.example"}))[0] == 403  # rebinding reads nothing
            for host in ["localhost", f"localhost:{port}", "LOCALHOST", f"127.0.0.1:{port}", "127.1.2.3", "[::1]", f"[::1]:{port}"]:
                assert (await api.get("/api/plans", headers={"Host": host}))[0] == 200, host
            assert (await api.get("/api/plans", headers=None))[0] == 200

    arun(body())


def test_without_a_token_a_foreign_origin_cannot_post(db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with running_api(tmp_path, db_url, token=None) as api:
            port = api.base.rsplit(":", 1)[1]
            before = api.holder.current
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            for origin in ["http://attacker.example", "null", f"http://localhost:{int(port) + 1}", "https://127.0.0.1", "http://127.0.0.1:x", f"http://127.0.0.1:{port}/path"]:
                with caplog.at_level(logging.WARNING, logger="callrouter.api.auth"):
                    status, err = await api.send("POST", "/api/reload", headers={"Origin": origin, **form}, data=b"a=1")
                assert status == 403 and "Origin" in err["error"], (origin, status, err)
                assert any("Origin" in rec.getMessage() for rec in caplog.records)
                caplog.clear()
            status, err = await api.send("POST", "/api/blacklist", headers={"Origin": "http://attacker.example"}, json={"caller": "13900001111"})
            assert status == 403
            assert api.holder.current is before  # no reload was carried out
            assert not _reloads(api)
            assert (await api.get("/api/blacklist"))[1]["entries"] == []
            same = {"Origin": f"http://127.0.0.1:{port}"}
            assert (await api.send("POST", "/api/reload", headers=same))[0] == 200
            assert (await api.send("POST", "/api/reload", headers={"Origin": f"http://LOCALHOST:{port}", "Host": f"localhost:{port}"}))[0] == 200

    arun(body())


def test_with_a_token_any_host_or_origin_is_served(db_url: str, tmp_path: Path) -> None:
    """Behind a reverse proxy the name is the proxy's; the token is what protects the API then."""

    async def body() -> None:
        async with running_api(tmp_path, db_url) as api:
            assert (await api.get("/api/plans", headers={**AUTH, "Host": "admin.example.com"}))[0] == 200
            assert (await api.send("POST", "/api/reload", headers={**AUTH, "Origin": "https://admin.example.com"}))[0] == 200

    arun(body())


# -- the body cap ----------------------------------------------------------------------------------

async def _chunks(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * 65536
        sent += 65536


@pytest.mark.parametrize("token", ["token", None])
def test_every_route_refuses_a_body_over_64_kib_before_its_handler_runs(token: str | None, db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_api(tmp_path, db_url, token=TOKEN if token else None) as api:
            auth = AUTH if token else {}
            before = api.holder.current
            two_mb = b"x" * (2 * 1024 * 1024)
            status, err = await api.send("POST", "/api/reload", headers=auth, data=two_mb)  # with Content-Length
            assert status == 413 and "too large" in err["error"], (status, err)
            status, err = await api.send("POST", "/api/reload", headers=auth, data=_chunks(2 * 1024 * 1024))  # chunked
            assert status == 413 and "too large" in err["error"], (status, err)
            assert api.holder.current is before and not _reloads(api)
            status, _ = await api.send("GET", "/api/plans", headers=auth, data=b"y" * 70_000)  # a route that reads no body
            assert status == 413
            status, _ = await api.send("DELETE", "/api/blacklist/*/139", headers=auth, data=_chunks(200_000))
            assert status == 413
            assert (await api.send("POST", "/api/reload", headers=auth, data=b"z" * 1000))[0] == 200  # small bodies are fine

    arun(body())
