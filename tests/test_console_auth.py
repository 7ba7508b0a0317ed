"""The console's login, sessions and web security over real HTTP, on SQLite and Postgres."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from callrouter.console.i18n import MESSAGES
from callrouter.console.passwords import Passwords
from callrouter.console.security import CSP
from callrouter.store.schema import users, web_sessions
from callrouter.store.tenants import add_tenant, add_user, find_user, set_disabled
from callrouter.store.web_sessions import revoke_user_sessions
from tests.consoles import CHEAP, NUMBER_A, NUMBER_B, PASSWORD, csrf_in, running_site
from tests.harness import arun

TOKEN = "test-token-0123456789abcdef"


def set_cookie_header(response: aiohttp.ClientResponse) -> str:
    headers = response.headers
    return "; ".join(v for k, v in headers.items() if k.lower() == "set-cookie" and "callrouter_session=" in v)


def test_login_makes_a_new_session_with_safe_cookie_flags_and_logout_ends_it(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token=TOKEN) as site:
            status, _, r = await site.get("/console/")
            assert status == 303 and r.headers["Location"] == "/console/login"
            status, html, r = await site.get("/console/login")
            assert status == 200 and "登录" in html
            flags = set_cookie_header(r).lower()
            assert "httponly" in flags and "samesite=lax" in flags and "path=/console/" in flags and "secure" not in flags
            pre_login = site.cookie()
            assert pre_login
            token = csrf_in(html)

            status, _, r = await site.post("/console/login", {"username": "A-Owner ", "password": PASSWORD, "csrf": token})
            assert status == 303 and r.headers["Location"] == "/console/"
            logged_in = site.cookie()
            assert logged_in and logged_in != pre_login  # rotated at login
            assert "max-age=43200" in set_cookie_header(r).lower()
            status, html, _ = await site.get("/console/")
            assert status == 200 and "甲公司 的管理后台" in html and NUMBER_A in html and NUMBER_B not in html
            assert "租户" not in html  # provider staff only

            # the pre-login id is not valid any more, and is gone from the table
            assert await site.get_as(pre_login) == 303
            assert await site.get_as(logged_in) == 200
            async with site.engine.connect() as conn:
                assert len((await conn.execute(select(web_sessions.c.id))).all()) == 1

            csrf = csrf_in((await site.get("/console/"))[1])
            status, _, r = await site.post("/console/logout", {"csrf": csrf})
            assert status == 303 and r.headers["Location"] == "/console/login"
            assert await site.get_as(logged_in) == 303  # a copied cookie no longer works

            [login] = await site.audit("login")
            assert (login.username, login.tenant_id, login.address) == ("a-owner", site.seeded.tenant_a, "127.0.0.1")
            [logout] = await site.audit("logout")
            assert logout.user_id == login.user_id
            found = await find_user(site.engine, "a-owner")
            assert found is not None and found.user.last_login_at == site.clock()

            # the admin token does not guard the console, and the console does not open the API
            assert (await site.get("/console"))[0] == 308
            assert (await site.get("/api/plans"))[0] == 401

    arun(body())


def test_wrong_passwords_are_rate_limited_per_username_and_per_address(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, console={"login_failures_per_address": 8}) as site:
            for _ in range(5):
                status, html, _ = await site.login("a-owner", "wrong password!")
                assert status == 401 and "用户名或密码错误" in html
            status, html, r = await site.login("a-owner")  # the right password, but too late
            assert status == 429 and "分钟后再试" in html
            assert 890 <= int(r.headers["Retry-After"]) <= 900
            assert (await site.login("b-owner"))[0] == 303  # another user is not locked out

            status, html, _ = await site.login("nobody", "whatever12345")  # unknown: the same answer
            assert status == 401 and "用户名或密码错误" in html
            failed = await site.audit("login_failed")
            assert len(failed) == 6
            assert {(f.username, f.tenant_id, f.after["reason"]) for f in failed} == {
                ("a-owner", site.seeded.tenant_a, "wrong password"), ("nobody", None, "no such user")}

            site.clock.advance(minutes=15, seconds=1)  # the window has passed
            assert (await site.login("a-owner"))[0] == 303

            for i in range(8):  # per address, whatever the username
                assert (await site.login(f"guess{i}", "whatever12345"))[0] == 401
            status, _, r = await site.login("a-viewer")
            assert status == 429 and int(r.headers["Retry-After"]) > 0

    arun(body())


def test_sessions_end_when_idle_at_their_absolute_limit_and_when_revoked(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("a-owner"))[0] == 303
            for _ in range(3):
                site.clock.advance(minutes=29)
                assert (await site.get("/console/"))[0] == 200  # each request pushes the idle timeout on
            site.clock.advance(minutes=31)
            assert (await site.get("/console/"))[0] == 303  # idle for more than 30 minutes

            assert (await site.login("a-owner"))[0] == 303
            for _ in range(35):  # active all day: 20-minute steps to 11 h 40
                site.clock.advance(minutes=20)
                assert (await site.get("/console/"))[0] == 200
            site.clock.advance(minutes=21)
            assert (await site.get("/console/"))[0] == 303  # 12 hours after login, however active

            assert (await site.login("a-owner"))[0] == 303
            found = await find_user(site.engine, "a-owner")
            assert found is not None
            assert await revoke_user_sessions(site.engine, found.user.id, site.clock()) == 1
            assert (await site.get("/console/"))[0] == 303

            assert (await site.login("a-owner"))[0] == 303
            await set_disabled(site.engine, found.user.id, site.clock())  # disabling ends the session too
            assert (await site.get("/console/"))[0] == 303
            assert (await site.login("a-owner"))[0] == 401

    arun(body())


def test_unsafe_requests_need_the_csrf_token_and_the_console_origin(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            status, html, _ = await site.post("/console/login", {"username": "a-owner", "password": PASSWORD, "csrf": "x"})
            assert status == 403 and "页面已过期" in html  # no pre-login session at all
            token = await site.csrf()
            status, _, _ = await site.post("/console/login", {"username": "a-owner", "password": PASSWORD})
            assert status == 403
            status, _, _ = await site.post("/console/login", {"username": "a-owner", "password": PASSWORD, "csrf": token + "x"})
            assert status == 403
            status, _, _ = await site.post("/console/login", {"username": "a-owner", "password": PASSWORD, "csrf": token},
                                           origin=False, headers={"Origin": "http://evil.example"})
            assert status == 403
            status, _, _ = await site.post("/console/login", {"username": "a-owner", "password": PASSWORD, "csrf": token}, origin=False)
            assert status == 403  # neither Origin nor Referer
            status, _, _ = await site.post("/console/login", {"username": "a-owner", "password": PASSWORD, "csrf": token},
                                           origin=False, headers={"Origin": "null"})
            assert status == 403
            assert not await site.audit("login")  # none of these got as far as the password
            status, _, _ = await site.post("/console/login", {"username": "a-owner", "password": PASSWORD, "csrf": token},
                                           origin=False, headers={"Referer": site.base + "/console/login"})
            assert status == 303

            csrf = csrf_in((await site.get("/console/"))[1])
            assert csrf != token  # a new token with the new session
            assert (await site.post("/console/logout", {"csrf": token}))[0] == 403  # the pre-login token is dead
            assert (await site.post("/console/logout", {}, headers={"X-CSRF-Token": csrf}, origin=False))[0] == 403
            assert (await site.post("/console/logout", {}, headers={"X-CSRF-Token": csrf, "Origin": site.base.replace("127.0.0.1", "localhost")},
                                    origin=False))[0] == 403
            assert (await site.get("/console/"))[0] == 200  # still logged in
            assert (await site.post("/console/logout", {}, headers={"X-CSRF-Token": csrf}))[0] == 303

    arun(body())


def test_pages_carry_the_security_headers_escape_names_and_speak_two_languages(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            evil = await add_tenant(site.engine, '<script>alert("x")</script>公司', now=site.clock())
            await add_user(site.engine, "evil-owner", await Passwords(CHEAP).hash(PASSWORD), "owner", evil.id,
                           can_listen=True, can_download=True, now=site.clock())
            assert (await site.login("evil-owner"))[0] == 303
            status, html, r = await site.get("/console/")
            assert status == 200
            assert "<script>alert" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;公司" in html
            assert r.headers["Content-Security-Policy"] == CSP
            assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP and "unsafe-inline" not in CSP
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Referrer-Policy"] == "same-origin"
            assert r.headers["Cache-Control"] == "no-store"
            assert not re.search(r"<script(?![^>]*\bsrc=)|\sstyle=|\son[a-z]+=", html)  # no inline script, style or handler
            assert 'href="/console/static/console.css"' in html

            status, css, r = await site.get("/console/static/console.css")
            assert status == 200 and r.content_type == "text/css" and r.headers["Content-Security-Policy"] == CSP
            assert (await site.get("/console/static/../app.py"))[0] == 404

            status, html, r = await site.get("/console/?lang=en")
            assert "Console of" in html and "Log out" in html and 'lang="en"' in html
            assert "callrouter_lang=en" in r.headers.get("Set-Cookie", "")
            assert "Overview" in (await site.get("/console/"))[1]  # remembered
            assert "概览" in (await site.get("/console/?lang=zh"))[1]

            status, html, _ = await site.get("/console/no-such-page")
            assert status == 404 and "找不到" in html and r.headers["Content-Security-Policy"] == CSP

    arun(body())


def test_provider_staff_see_the_provider_menu(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("boss"))[0] == 303
            html = (await site.get("/console/"))[1]
            assert "服务商管理后台" in html and "租户" in html and "用户" in html
            status, _, r = await site.get("/console/login?next=/console/audit")  # already logged in: the form sends you on
            assert status == 303 and r.headers["Location"] == "/console/audit"
            status, _, r = await site.get("/console/login?next=//evil.example/")
            assert status == 303 and r.headers["Location"] == "/console/"  # never to another site

    arun(body())


def test_behind_a_trusted_proxy_the_cookie_is_secure_and_the_client_address_is_forwarded(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        async with running_site(tmp_path, db_url, console={"trusted_proxies": ["127.0.0.1"]}) as site:
            status, html, r = await site.get("/console/login", headers=forwarded)
            assert "secure" in set_cookie_header(r).lower()
            pre_login = r.cookies["callrouter_session"].value  # a Secure cookie: the client keeps it from plain http
            https_origin = {"Origin": site.base.replace("http://", "https://"), "Cookie": f"callrouter_session={pre_login}", **forwarded}
            status, _, r = await site.post("/console/login", {"username": "a-owner", "password": PASSWORD, "csrf": csrf_in(html)},
                                           origin=False, headers=https_origin)
            assert status == 303 and "secure" in set_cookie_header(r).lower()
            [login] = await site.audit("login")
            assert login.address == "203.0.113.9"

    arun(body())


def test_untrusted_forwarded_headers_are_ignored(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
            _, html, r = await site.get("/console/login", headers=headers)
            assert "secure" not in set_cookie_header(r).lower()
            await site.post("/console/login", {"username": "a-owner", "password": "wrong password!", "csrf": csrf_in(html)}, headers=headers)
            [failed] = await site.audit("login_failed")
            assert failed.address == "127.0.0.1"

    arun(body())


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_hash_made_with_weaker_parameters_is_replaced_at_login(backend: str, tmp_path: Path) -> None:
    from tests.databases import fresh_sqlite

    db_url = fresh_sqlite(str(tmp_path / "rehash.db"))

    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("another password")
            await add_user(site.engine, "old-hash", weak, "viewer", site.seeded.tenant_a, can_listen=True, can_download=False, now=site.clock())
            assert (await site.login("old-hash", "another password"))[0] == 303
            async with site.engine.connect() as conn:
                stored = (await conn.execute(select(users.c.password_hash).where(users.c.username == "old-hash"))).scalar_one()
            assert stored != weak and not CHEAP.check_needs_rehash(stored) and CHEAP.verify(stored, "another password")

    arun(body())


def test_every_message_has_both_languages() -> None:
    assert all(len(pair) == 2 and all(pair) for pair in MESSAGES.values())
