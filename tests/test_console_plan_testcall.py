"""The console's test-call button against the AMI peer emulator and a real `callrouter serve` (its console
places the call through AMI; the emulated Asterisk plays it against the same server's FastAGI port)."""

from __future__ import annotations

import asyncio
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import yaml

from callrouter.emulator.ami import AmiPeer
from callrouter.emulator.script import DialScript
from tests.browser.server import ServeProcess, browser_workspace
from tests.harness import arun

SECRET = "ami-console-secret"
NUMBER = "4008001234"
PAGE = f"/console/numbers/{NUMBER}/test-call"
PASSWORD = "correct horse battery"
ZHANG, LI, WANG = (f"Local/1380013800{i}@callrouter-lines" for i in (1, 2, 3))


def serve_with_ami(folder: Path, ami_port: int) -> ServeProcess:
    cfg = browser_workspace(folder)
    doc = yaml.safe_load(cfg.read_text())
    doc["ami"] = {"port": ami_port, "secret": SECRET, "call_timeout": 30}
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    server = ServeProcess(cfg)
    server.cli("tenants", "add", "甲公司")
    server.cli("tenants", "numbers", "add", "甲公司", NUMBER)
    server.cli("tenants", "add", "乙公司")
    server.add_user(PASSWORD, "a-owner", "--tenant", "甲公司", "--role", "owner")
    server.add_user(PASSWORD, "a-viewer", "--tenant", "甲公司", "--role", "viewer")
    server.add_user(PASSWORD, "b-owner", "--tenant", "乙公司", "--role", "owner")
    return server


@asynccontextmanager
async def asterisk_and_console(folder: Path) -> AsyncIterator[tuple[ServeProcess, AmiPeer]]:
    peer = AmiPeer("callrouter", SECRET, "127.0.0.1", 0, lines={ZHANG: DialScript("BUSY", 1), WANG: DialScript("BUSY", 1),
                                                                LI: DialScript("ANSWER", 1, 3)})
    port = await peer.start()
    server = await asyncio.to_thread(serve_with_ami, folder, port)
    peer.agi_port = server.agi_port
    try:
        yield server, peer
    finally:
        await asyncio.to_thread(server.stop)
        await peer.close()


async def log_in(http: aiohttp.ClientSession, base: str, username: str) -> None:
    http.cookie_jar.clear()
    async with http.get(base + "/console/login") as r:
        token = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
    async with http.post(base + "/console/login", data={"username": username, "password": PASSWORD, "csrf": token},
                         headers={"Origin": base}, allow_redirects=False) as r:
        assert r.status == 303


async def page(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url, allow_redirects=False) as r:
        return r.status, await r.text()


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


async def finished(http: aiohttp.ClientSession, base: str, timeout: float = 40) -> str:
    """Poll the status fragment, as the page's script does, until the run is no longer running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen_running = False
    while True:
        status, html = await page(http, base + PAGE + "/status")
        assert status == 200
        if 'data-running="1"' in html:
            seen_running = True
        elif seen_running or "testcall-state" in html:
            return html
        assert loop.time() < deadline, html
        await asyncio.sleep(0.2)


def test_the_button_places_a_real_call_and_reports_the_answering_line(tmp_path: Path) -> None:
    async def body() -> None:
        async with asterisk_and_console(tmp_path) as (server, peer), \
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            base = server.url("")
            await log_in(http, base, "a-owner")
            status, html = await page(http, base + PAGE)
            assert status == 200 and "开始拨测" in html and "还没有拨测" in html
            async with http.post(base + PAGE, data={"csrf": csrf(html)}, headers={"Origin": base}, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == PAGE
            result = await finished(http, base)
            assert "已接通" in result and "接听线路：李娜" in result, result
            status, english = await page(http, base + PAGE + "?lang=en")
            assert status == 200 and "Answered by: 李娜" in english and "Place a test call" in english
            assert not re.findall(r"(?<![\w/])(?:prompts|testcall|numbers)\.[a-z_.]+", english), english
            await page(http, base + PAGE + "?lang=zh")  # (the language is remembered)
            assert "张伟" in result and "占线" in result  # the line that rang first, busy
            originate = next(a for a in peer.received if a["action"] == "Originate")
            assert originate["channel"] == f"Local/{NUMBER}@from-pstn-400"

            # one test call per number at a time: a second press while the first is ringing is refused
            hold = asyncio.Event()
            peer.lines = {ZHANG: DialScript("ANSWER", 1, 3, hold=hold), LI: DialScript("ANSWER", 1, 3, hold=hold),
                          WANG: DialScript("ANSWER", 1, 3, hold=hold)}
            token = csrf((await page(http, base + PAGE))[1])
            async with http.post(base + PAGE, data={"csrf": token}, headers={"Origin": base}, allow_redirects=False) as r:
                assert r.status == 303
            for _ in range(100):
                live = (await page(http, base + PAGE + "/status"))[1]
                if "来电进入路由" in live:
                    break
                await asyncio.sleep(0.1)
            # live, from Asterisk's events as they come (the emulator tells its dials once the AGI session ends)
            assert 'data-running="1"' in live and "Asterisk 已接受呼叫" in live and "来电进入路由" in live, live
            async with http.post(base + PAGE, data={"csrf": token}, headers={"Origin": base}, allow_redirects=False) as r:
                assert r.status == 409 and "正在拨测中" in await r.text()
            hold.set()
            assert "接听线路" in await finished(http, base)
            assert sum(1 for a in peer.received if a["action"] == "Originate") == 2

            status, html = await page(http, base + "/console/audit")
            assert html.count("拨测") >= 2  # audited, each press

            await log_in(http, base, "a-viewer")
            status, html = await page(http, base + PAGE)
            assert status == 200 and "testcall-button" not in html and "接听线路：" in html
            async with http.post(base + PAGE, data={"csrf": csrf(html)}, headers={"Origin": base}, allow_redirects=False) as r:
                assert r.status == 403
            await log_in(http, base, "b-owner")
            assert (await page(http, base + PAGE))[0] == 404
            assert (await page(http, base + PAGE + "/status"))[0] == 404
            token = csrf((await page(http, base + "/console/"))[1])
            async with http.post(base + PAGE, data={"csrf": token}, headers={"Origin": base}, allow_redirects=False) as r:
                assert r.status == 404
            assert sum(1 for a in peer.received if a["action"] == "Originate") == 2

    arun(body(), timeout=120)


def test_an_unreachable_asterisk_is_reported_on_the_page(tmp_path: Path) -> None:
    async def body() -> None:
        peer = AmiPeer("callrouter", SECRET, "127.0.0.1", 0)
        port = await peer.start()
        await peer.close()  # nothing listens there any more
        server = await asyncio.to_thread(serve_with_ami, tmp_path, port)
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                base = server.url("")
                await log_in(http, base, "a-owner")
                token = csrf((await page(http, base + PAGE))[1])
                async with http.post(base + PAGE, data={"csrf": token}, headers={"Origin": base}, allow_redirects=False) as r:
                    assert r.status == 303
                result = await finished(http, base)
                assert "拨测失败" in result and "无法通过 AMI 拨打" in result and "cannot reach AMI" in result, result
        finally:
            await asyncio.to_thread(server.stop)

    arun(body(), timeout=90)
