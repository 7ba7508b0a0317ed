"""The calls page (通话记录) in a real browser, through a real `callrouter serve`: company A finds a call placed
through the emulator, reads its story, plays its recording (a 206, and the audio element gets a duration);
company B's user opening A's call gets 404 and none of A's data; a viewer without the download permission
sees no download link and is refused on its URL."""

from __future__ import annotations

import io
import json
import math
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path
from typing import Any, Iterator

import pytest
from playwright.sync_api import Browser, Page, Response

from callrouter.emulator.script import CallScript, DialScript
from tests.browser.pages import ConsoleLog, new_page, screenshot
from tests.browser import pages
from tests.browser.server import ServeProcess

PASSWORD = "browser-test-password"
NUMBER_A, NUMBER_B = "4008001234", "4008005678"
UNIQUEID = "1770000000.41"
MISSED = "1770000000.42"
RESULTS = {"answered": "已接听", "voicemail": "留言", "no_answer": "未接"}
PHONE = {"width": 390, "height": 844}


def add_user(server: ServeProcess, *args: str) -> None:
    server.add_user(PASSWORD, *args)


def api_call(server: ServeProcess, uniqueid: str) -> dict[str, Any] | None:
    request = urllib.request.Request(server.url(f"/api/calls/{uniqueid}"), headers=server.api_headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            found: dict[str, Any] = json.loads(r.read())
            return found
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def one_second_wav() -> bytes:
    """A real WAV file: one second of a 440 Hz tone, 8 kHz mono 16-bit (what MixMonitor writes for a phone call)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(int(8000 * math.sin(2 * math.pi * 440 * i / 8000)).to_bytes(2, "little", signed=True) for i in range(8000)))
    return out.getvalue()


@pytest.fixture(scope="module")
def recorded_call(server: ServeProcess) -> Iterator[dict[str, Any]]:
    """Companies A (4008001234) and B, their users, and A's call through the main menu, answered and recorded."""
    server.cli("tenants", "add", "甲公司")
    server.cli("tenants", "numbers", "add", "甲公司", NUMBER_A)
    server.cli("tenants", "add", "乙公司")
    server.cli("tenants", "numbers", "add", "乙公司", NUMBER_B)
    add_user(server, "a-owner", "--tenant", "甲公司", "--role", "owner")
    add_user(server, "a-viewer", "--tenant", "甲公司", "--role", "viewer", "--no-download")
    add_user(server, "b-owner", "--tenant", "乙公司", "--role", "owner")
    transcript = server.place_call(CallScript(uniqueid=UNIQUEID, callerid="+86 139-1234-5678", dtmf=("1",),
                                              default_dial=DialScript("ANSWER", 4, 65)))
    assert transcript.variables.get("CALLROUTER_RESULT") == "ROUTED", transcript.lines
    assert transcript.mixmonitor, "the plan records calls: MixMonitor must have started"
    missed = server.place_call(CallScript(uniqueid=MISSED, callerid="010-8888-6666", dtmf=("1",), default_dial=DialScript("NOANSWER")))
    assert missed.variables.get("CALLROUTER_RESULT") == "ROUTED", missed.lines
    deadline = time.monotonic() + 10
    while (cdr := api_call(server, UNIQUEID)) is None or api_call(server, MISSED) is None:  # the CDR reaches the database in the writer's next batch
        assert time.monotonic() < deadline, "the call's CDR did not arrive"
        time.sleep(0.1)
    recording = Path(cdr["recording_file"])
    assert recording.is_relative_to(server.workdir / "rec"), recording
    recording.parent.mkdir(parents=True, exist_ok=True)
    recording.write_bytes(one_second_wav())  # what Asterisk's MixMonitor would have left there
    yield cdr


def api_calls(server: ServeProcess, number: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(server.url(f"/api/calls?number={number}"), headers=server.api_headers)
    with urllib.request.urlopen(request, timeout=10) as r:
        found: list[dict[str, Any]] = json.loads(r.read())["calls"]
        return found


def log_in(page: Page, server: ServeProcess, username: str) -> None:
    pages.log_in(page, server.url("").rstrip("/"), username, PASSWORD, "/console/calls")


def only_404s(log: ConsoleLog) -> None:
    """The browser reports each refused load as a console error: expected here, and nothing else may be there."""
    problems = log.take()
    assert problems and all("404" in p or "403" in p for p in problems), problems


def test_company_a_finds_the_call_reads_its_story_and_plays_the_recording(
        page: Page, server: ServeProcess, recorded_call: dict[str, Any]) -> None:
    cdr = recorded_call
    log_in(page, server, "a-owner")
    assert page.locator('nav a[aria-current="page"]').inner_text() == "通话记录"
    shown = [r.locator("td").all_inner_texts() for r in page.locator("tr.calls-row").all()]
    stored = api_calls(server, NUMBER_A)  # the CDRs, newest first, as the page lists them
    assert [(row[1], row[2], row[3]) for row in shown] == [(c["caller"], c["number"], RESULTS[c["disposition"]]) for c in stored]
    assert [c["uniqueid"] for c in stored] == [MISSED, UNIQUEID] and stored[0]["caller"] == "01088886666"
    row = page.locator("tr.calls-row", has=page.locator(f'a[href*="/console/calls/{UNIQUEID}?"]'))
    assert row.count() == 1
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == cdr["caller"] == "13912345678"
    assert cells[2] == NUMBER_A and cells[3] == "已接听" and cells[6] == "有录音"
    line = {"zhang": "张伟", "li": "李娜", "wang": "王芳"}[cdr["answered_line"]]
    assert cells[4] == line and cells[5] == f"{cdr['billable_seconds'] // 60} 分 {cdr['billable_seconds'] % 60} 秒"
    screenshot(page, "calls-list")

    page.fill("input[name=caller]", "+86 139 1234 5678")  # the caller in another written form
    page.click("button[type=submit] >> text=查询")
    assert page.locator("tr.calls-row").count() == 1 and "共 1 通" in page.inner_text("main")
    assert page.input_value("input[name=caller]") == "+86 139 1234 5678"

    page.locator("a.calls-open").first.click()
    page.wait_for_url(f"**/console/calls/{UNIQUEID}?source=*")
    facts = page.inner_text(".call-facts")
    assert "主菜单按 1 → sales 组" in facts and line in facts and "+86 139-1234-5678" in facts
    attempts = page.locator("table.call-attempts tbody tr")
    assert attempts.count() == len(cdr["attempts"])
    last = attempts.last.locator("td").all_inner_texts()
    assert last[1] == line and last[2] == "已接听" and last[3] == f"{cdr['attempts'][-1]['ring_seconds']} 秒"
    assert not page.locator("details.call-trace").evaluate("d => d.open")  # the technical trace is folded away
    assert "保留" in page.inner_text(".call-retention") and "天" in page.inner_text(".call-retention")
    assert page.locator("a.call-download").count() == 1
    screenshot(page, "calls-call")

    responses: list[Response] = []
    page.on("response", lambda r: responses.append(r) if "/recording" in r.url else None)
    audio = page.locator("audio.call-player")
    assert audio.get_attribute("preload") == "none"
    page.locator("h1").click()  # a user gesture, so the page may start playback
    duration = audio.evaluate("""async (a) => {
        const loaded = new Promise((ok) => a.addEventListener('loadedmetadata', ok, {once: true}));
        await a.play().catch(() => null);
        await loaded;
        a.pause();
        return a.duration;
    }""")
    assert duration == pytest.approx(1.0, abs=0.05), duration
    assert any(r.status == 206 for r in responses), [(r.url, r.status) for r in responses]
    audio.evaluate("a => { a.currentTime = 0.5; }")  # the player can seek (HTTP Range)
    page.wait_for_function("document.querySelector('audio.call-player').readyState >= 1")
    screenshot(page, "calls-call-playing")


def test_on_a_phone_the_list_and_the_call_are_readable(browser: Browser, server: ServeProcess, recorded_call: dict[str, Any]) -> None:
    log = ConsoleLog()
    phone = new_page(browser, log, viewport=PHONE)
    try:
        log_in(phone, server, "a-owner")
        assert phone.locator("tr.calls-row").count() >= 1
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing sticks out sideways
        screenshot(phone, "calls-list-phone")
        phone.locator("a.calls-open").first.click()
        phone.wait_for_url("**/console/calls/*")
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(phone, "calls-call-phone")
    finally:
        phone.context.close()
    assert not log.problems, log.problems


def test_company_b_gets_404_and_none_of_as_data(page: Page, console_log: ConsoleLog, server: ServeProcess,
                                                recorded_call: dict[str, Any]) -> None:
    log_in(page, server, "b-owner")
    response = page.goto(server.url(f"/console/calls/{UNIQUEID}?source={recorded_call['source']}"))
    assert response is not None and response.status == 404
    text = page.inner_text("body")
    assert "13912345678" not in text and "李娜" not in text and "张伟" not in text and "找不到" in text
    screenshot(page, "calls-other-tenant-404")
    for path in (f"/console/calls/{UNIQUEID}/recording?source=", f"/console/calls/{UNIQUEID}/recording/download?source=",
                 f"/console/calls?number={NUMBER_A}"):
        r = page.request.get(server.url(path), headers={"Range": "bytes=0-"})
        assert r.status == 404 and b"RIFF" not in r.body(), path
    page.goto(server.url("/console/calls"))
    assert page.locator("tr.calls-row").count() == 0 and "13912345678" not in page.inner_text("main")
    only_404s(console_log)


def test_a_viewer_without_download_sees_no_link_and_is_refused(page: Page, console_log: ConsoleLog, server: ServeProcess,
                                                               recorded_call: dict[str, Any]) -> None:
    log_in(page, server, "a-viewer")
    page.goto(server.url(f"/console/calls/{UNIQUEID}?source={recorded_call['source']}"))
    assert page.locator("audio.call-player").count() == 1  # listening is allowed
    assert page.locator("a.call-download").count() == 0 and "下载录音" not in page.inner_text("main")
    r = page.request.get(server.url(f"/console/calls/{UNIQUEID}/recording/download?source={recorded_call['source']}"))
    assert r.status in (403, 404) and b"RIFF" not in r.body()
    assert not console_log.problems, console_log.problems
