"""Prompts and the test call in a real browser, through a real `callrouter serve` whose console reaches the AMI
peer emulator (which plays each call against the same server's FastAGI port).

An upload of a non-audio file and of a 50 MB file are refused with a message and nothing changes (no file,
no version); a real recording is heard next to the current one and applied as a version; the test-call button
reports the answering line. Screenshots of both pages, desktop and 390x844, in tests/artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect

from callrouter.emulator.ami import AmiPeer
from callrouter.emulator.script import DialScript
from tests.browser import pages
from tests.browser.pages import ConsoleLog, new_page, screenshot
from tests.browser.server import ServeProcess, browser_workspace
from tests.test_process import ROOT
from tests.test_prompts import need

PASSWORD = "plan-prompts-password-1"
SECRET = "browser-ami-secret"
NUMBER = "4008001234"
PROMPTS = f"/console/numbers/{NUMBER}/prompts"
TESTCALL = f"/console/numbers/{NUMBER}/test-call"
PHONE = {"width": 390, "height": 844}
ZHANG, LI, WANG = (f"Local/1380013800{i}@callrouter-lines" for i in (1, 2, 3))


class PeerThread:
    """The AMI peer emulator on an event loop of its own (the browser's sync API holds this thread's)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ami-peer", daemon=True)
        self.thread.start()
        self.peer = AmiPeer("callrouter", SECRET, "127.0.0.1", 0, lines={ZHANG: DialScript("BUSY", 1), WANG: DialScript("BUSY", 1),
                                                                        LI: DialScript("ANSWER", 2, 3)})
        self.port = asyncio.run_coroutine_threadsafe(self.peer.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.peer.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def peer() -> Iterator[PeerThread]:
    running = PeerThread()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, peer: PeerThread) -> Iterator[ServeProcess]:
    """This module's own serve: AMI pointed at the emulator, the sample prompts, 甲公司 with an owner and a viewer."""
    need("ffmpeg")
    need("ffprobe")
    folder: Path = tmp_path_factory.mktemp("serve-prompts")
    cfg = browser_workspace(folder)
    doc = yaml.safe_load(cfg.read_text())
    doc["ami"] = {"port": peer.port, "secret": SECRET, "call_timeout": 30}
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    shutil.copytree(ROOT / "ivr_prompts", folder / "ivr_prompts")
    process = ServeProcess(cfg)
    peer.peer.agi_port = process.agi_port
    try:
        process.cli("tenants", "add", "甲公司")
        process.cli("tenants", "numbers", "add", "甲公司", NUMBER)
        process.add_user(PASSWORD, "a-owner", "--tenant", "甲公司", "--role", "owner")
        yield process
    finally:
        process.stop()


def log_in(page: Page, server: ServeProcess, path: str) -> None:
    pages.log_in(page, server.url("").rstrip("/"), "a-owner", PASSWORD, path)


def versions(server: ServeProcess) -> list[Any]:
    request = urllib.request.Request(server.url(f"/api/plans/{NUMBER}/versions"), headers=server.api_headers)
    with urllib.request.urlopen(request, timeout=10) as r:
        body = json.loads(r.read())
    found: list[Any] = body["versions"] if isinstance(body, dict) else body
    return found


def files(server: ServeProcess) -> set[str]:
    folder = server.workdir / "ivr_prompts"
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def phone_shot(browser: Browser, log: ConsoleLog, server: ServeProcess, path: str, name: str) -> None:
    small = new_page(browser, log, viewport=PHONE)
    try:
        log_in(small, server, path)
        screenshot(small, name)
    finally:
        small.context.close()


def test_a_non_audio_file_and_a_50_mb_file_are_refused_and_nothing_changes(page: Page, server: ServeProcess, browser: Browser,
                                                                           console_log: ConsoleLog, tmp_path: Path) -> None:
    before_files, before_versions = files(server), versions(server)
    log_in(page, server, PROMPTS)
    expect(page.locator("h1")).to_contain_text("提示音")
    screenshot(page, "plan-prompts")

    notes = tmp_path / "notes.wav"
    notes.write_text("这是一个文本文件，不是录音。\n" * 50)
    greeting = page.locator("#slot-greeting")
    greeting.locator("input[type=file]").set_input_files(str(notes))
    greeting.get_by_role("button", name="上传并试听").click()
    expect(page.locator("#prompt-error")).to_contain_text("这个文件不是音频文件")
    expect(page.locator("#prompt-error")).to_contain_text("没有做任何修改")
    screenshot(page, "plan-prompts-not-audio")

    big = tmp_path / "big.wav"
    with big.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)  # 50 MB (sparse)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    greeting = page.locator("#slot-greeting")
    greeting.locator("input[type=file]").set_input_files(str(big))
    alert = greeting.locator(".size-alert")
    expect(alert).to_have_text("文件太大（50.0 MB）：最大 20 MB。")  # said as soon as it is chosen
    greeting.get_by_role("button", name="上传并试听").click()
    page.wait_for_timeout(500)
    assert posts == [] and alert.is_visible()  # the page does not send it
    screenshot(page, "plan-prompts-too-big")

    # without the page's check (a form sent as is), the server refuses it before reading it, with its message
    with page.expect_navigation():
        greeting.locator("form.upload-form").evaluate("form => HTMLFormElement.prototype.submit.call(form)")
    expect(page.locator(".alert")).to_contain_text("文件太大：最大 20 MB。没有做任何修改。")
    screenshot(page, "plan-prompts-too-big-server")

    assert files(server) == before_files and versions(server) == before_versions  # no file, no version
    expected = console_log.take()  # the browser logs each refusal's status; nothing else may be there
    assert len(expected) == 2 and "422" in expected[0] and "413" in expected[1], expected


def test_a_recording_is_heard_then_applied_as_a_version(page: Page, server: ServeProcess, browser: Browser,
                                                        console_log: ConsoleLog, tmp_path: Path) -> None:
    recording = tmp_path / "新欢迎语.wav"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=1",
                    "-ac", "1", str(recording)], check=True)
    count = len(versions(server))
    log_in(page, server, PROMPTS)
    greeting = page.locator("#slot-greeting")
    greeting.locator("input[type=file]").set_input_files(str(recording))
    greeting.get_by_role("button", name="上传并试听").click()
    pending = page.locator("#pending-greeting")
    expect(pending).to_contain_text("来自上传的文件 新欢迎语.wav")
    assert page.locator("#slot-greeting audio").count() == 2  # the current one and the new one, side by side
    duration = page.locator("#pending-greeting audio").evaluate(
        "a => new Promise(ok => { a.addEventListener('loadedmetadata', () => ok(a.duration)); a.load(); })")
    assert 0.5 < duration < 1.5  # the browser plays it: trimmed, 8 kHz
    screenshot(page, "plan-prompts-pending")
    phone_shot(browser, console_log, server, PROMPTS, "plan-prompts-phone")
    page.get_by_role("button", name="应用新的提示音").click()
    expect(page.locator("#applied")).to_contain_text("已应用")
    assert len(versions(server)) > count
    expect(page.locator("#slot-greeting .prompt-name")).to_contain_text(f"console/{NUMBER}/greeting-")


def test_the_test_call_button_reports_the_answering_line(page: Page, server: ServeProcess, browser: Browser, console_log: ConsoleLog) -> None:
    log_in(page, server, f"/console/numbers/{NUMBER}")
    page.locator("#testcall-link").click()
    page.wait_for_url(server.url(TESTCALL))
    expect(page.locator("#testcall-live")).to_contain_text("还没有拨测")
    screenshot(page, "plan-testcall")
    page.locator("#testcall-button").click()
    expect(page.locator("#testcall-answered")).to_have_text("接听线路：李娜", timeout=40_000)  # polled live by the page
    expect(page.locator("#testcall-state")).to_have_text("已接通")
    expect(page.locator("#testcall-rung")).to_contain_text("张伟")
    screenshot(page, "plan-testcall-answered")
    phone_shot(browser, console_log, server, TESTCALL, "plan-testcall-phone")
