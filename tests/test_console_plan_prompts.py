"""The prompts page over real HTTP (admin app + console, SQLite): uploads and generated prompts go through the
real ffmpeg / espeak-ng pipeline, are played before anything changes, and applying saves a plan version;
bad and huge files change nothing; the upload route's larger body cap loosens no other route."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from callrouter.store import plan_versions
from callrouter.store.plan_versions import PlanVersion
from tests.consoles import NUMBER_A, NUMBER_B, Site, csrf_in, running_site
from tests.databases import fresh_sqlite
from tests.harness import arun
from tests.test_process import ROOT
from tests.test_prompts import need

PAGE = f"/console/numbers/{NUMBER_A}/prompts"
MB = 1024 * 1024


@pytest.fixture
def tools() -> None:
    need("ffmpeg")
    need("ffprobe")
    need("espeak-ng")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return fresh_sqlite(str(tmp_path / "store.db"))


def tone(path: Path, rate: int = 16000, seconds: float = 1.0) -> Path:
    """A real recording: a little silence, a 440 Hz tone, a little silence (trimmed by the pipeline)."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=440:sample_rate={rate}:duration={seconds}", "-af", "adelay=200,apad=pad_dur=0.3",
                    "-ac", "1", "-ar", str(rate), str(path)], check=True)
    return path


def prompts_of(site: Site) -> Path:
    return site.config_path.parent / "ivr_prompts"


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


async def newest(site: Site) -> PlanVersion | None:
    async with site.engine.connect() as conn:
        return await plan_versions.newest(conn, NUMBER_A)


async def upload(site: Site, token: str, slot: str, name: str, data: bytes, content_type: str = "application/octet-stream",
                 path: str = PAGE) -> tuple[int, str, aiohttp.ClientResponse]:
    form = aiohttp.FormData()
    form.add_field("csrf", token)
    form.add_field("slot", slot)
    form.add_field("file", data, filename=name, content_type=content_type)
    return await site.post(path + "/upload", data=form)  # type: ignore[arg-type]


def pending_of(location: str) -> str:
    found = re.search(r"pending=([0-9a-f]{16})", location)
    assert found, location
    return found.group(1)


async def site_with_prompts(tmp_path: Path, db: str) -> AsyncIterator[Site]:
    async with running_site(tmp_path, db) as site:
        shutil.copytree(ROOT / "ivr_prompts", prompts_of(site))
        yield site


def test_wav_and_mp3_uploads_build_both_files_are_heard_first_and_apply_as_versions(tools: None, db: str, tmp_path: Path) -> None:
    wav = tone(tmp_path / "greeting.wav")
    mp3 = tone(tmp_path / "menu.mp3", rate=44100)

    async def body() -> None:
        async for site in site_with_prompts(tmp_path, db):
            folder = prompts_of(site)
            before = files_under(folder)
            assert (await site.login("a-owner"))[0] == 303
            status, html, _ = await site.get(PAGE)
            assert status == 200 and "欢迎语" in html and "语音菜单「main」" in html and "录音提示" in html
            assert f'src="{PAGE}/audio?prompt=welcome"' in html  # the current greeting, to listen to
            token = csrf_in(html)
            status, english, _ = await site.get(PAGE + "?lang=en")
            assert status == 200 and "Greeting" in english and "Upload and listen" in english
            assert not re.findall(r"(?<![\w/])(?:prompts|testcall)\.[a-z_.]+", english)  # no words key left untranslated
            await site.get(PAGE + "?lang=zh")  # (the language is remembered)

            status, _, r = await upload(site, token, "greeting", "问候.wav", wav.read_bytes(), "audio/wav")
            assert status == 303, r.headers
            held = pending_of(r.headers["Location"])
            status, html, _ = await site.get(r.headers["Location"].split("#")[0])
            assert status == 200 and f'src="{PAGE}/audio?pending={held}"' in html, html[html.find("slot-greeting"):][:3000]
            assert "问候.wav" in html, re.findall(r"来自上传的文件[^<]*", html)
            async with site.http.get(site.base + f"{PAGE}/audio?pending={held}", headers={"Range": "bytes=0-99"}) as audio:
                assert audio.status == 206 and audio.headers["Content-Type"] == "audio/wav" and len(await audio.read()) == 100
            async with site.http.get(site.base + f"{PAGE}/audio?prompt=welcome") as audio:
                assert audio.status == 200 and (await audio.read())[:4] == b"RIFF"
            assert await newest(site) is None  # heard, not applied: nothing changed yet

            status, _, r = await site.post(PAGE + "/apply", {"csrf": token, "pending": held, "version": ""})
            assert status == 303 and r.headers["Location"] == f"{PAGE}?applied=2", r.headers  # 1: the file, 2: this
            name = f"console/{NUMBER_A}/greeting-{held}"
            assert {f"{name}.wav", f"{name}.sln16"} <= files_under(folder) - before  # 16 kHz source: both forms
            with (folder / f"{name}.wav").open("rb") as fh:
                head = fh.read(44)
            assert head[:4] == b"RIFF" and int.from_bytes(head[24:28], "little") == 8000  # 8 kHz wav
            version = await newest(site)
            assert version is not None and version.version == 2 and version.author == "a-owner" and version.origin == "console"
            assert f"greeting: {name}" in version.text and "# 示例科技" in version.text  # a round-trip edit: comments kept
            assert f'{name}: "您好，欢迎致电示例科技。"' in version.text  # the wording goes with the new name
            assert "欢迎语改用新的录音" in version.summary
            status, html, _ = await site.get(PAGE)
            assert name in html and f'src="{PAGE}/audio?prompt={name}"' in html

            # an mp3 for the main menu: 44.1 kHz in, the same two forms out, version 3 from version 2
            status, _, r = await upload(site, token, "menu-main", "menu.mp3", mp3.read_bytes(), "audio/mpeg")
            assert status == 303
            menu_held = pending_of(r.headers["Location"])
            status, _, r = await site.post(PAGE + "/apply", {"csrf": token, "pending": menu_held, "version": "2"})
            assert status == 303 and r.headers["Location"].endswith("applied=3")
            version = await newest(site)
            assert version is not None and f"prompt: console/{NUMBER_A}/menu-main-{menu_held}" in version.text
            assert (folder / f"console/{NUMBER_A}/menu-main-{menu_held}.sln16").is_file()
            assert not (folder / ".pending" / NUMBER_A / f"{menu_held}.wav").exists()  # applied: no longer held

            # a stale apply (started from version 2, now 3) is refused and leaves nothing behind
            status, _, r = await upload(site, token, "greeting", "again.wav", tone(tmp_path / "again.wav", seconds=0.5).read_bytes())
            again = pending_of(r.headers["Location"])
            files = files_under(folder)
            status, html, _ = await site.post(PAGE + "/apply", {"csrf": token, "pending": again, "version": "2"})
            assert status == 409 and "a-owner 保存了第 3 版" in html
            assert files_under(folder) == files and (await newest(site)).version == 3  # type: ignore[union-attr]

            # restoring version 1 (the file) through the versions page plays the old greeting again: its file is still there
            status, _, r = await site.post(f"/console/numbers/{NUMBER_A}/versions/1/restore", {"csrf": token, "version": "3", "step": "apply"})
            assert status == 303, r.headers
            restored = await newest(site)
            assert restored is not None and restored.version == 4 and "greeting: welcome\n" in restored.text
            status, html, _ = await site.get(PAGE)
            assert f'src="{PAGE}/audio?prompt=welcome"' in html and (folder / "welcome.wav").is_file() and (folder / f"{name}.wav").is_file()

            audit = await site.audit()
            actions = [e.action for e in audit]
            assert actions.count("prompt_upload") == 3 and actions.count("plan_save") == 2 and actions.count("plan_restore") == 1
            upload_row = next(e for e in audit if e.action == "prompt_upload" and e.after and e.after.get("pending") == held)
            assert upload_row.username == "a-owner" and upload_row.target == NUMBER_A and upload_row.after["slot"] == "greeting"

    arun(body(), timeout=90)


def test_bad_and_huge_files_are_refused_with_a_message_and_change_nothing(tools: None, db: str, tmp_path: Path) -> None:
    async def body() -> None:
        async for site in site_with_prompts(tmp_path, db):
            folder = prompts_of(site)
            before = files_under(folder)
            await site.login("a-owner")
            token = csrf_in((await site.get(PAGE))[1])
            cases = [
                ("notes.wav", b"this is a text file, not a recording\n" * 20, "不是音频文件"),
                ("notes.txt", b"plain text", "只能上传 wav、mp3 或 m4a 文件"),
                ("broken.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 200, "无法读取这个文件中的声音"),
                ("empty.mp3", b"", "文件是空的"),
            ]
            for name, data, message in cases:
                status, html, _ = await upload(site, token, "greeting", name, data)
                assert status == 422 and message in html and "没有做任何修改" in html, (name, html[-1500:])
                assert 'role="alert"' in html

            # 50 MB declared: refused before a byte of it is read, with the page's own message
            host, port = site.base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            cookie = "; ".join(f"{c.key}={c.value}" for c in site.http.cookie_jar)
            writer.write((f"POST {PAGE}/upload HTTP/1.1\r\nHost: {host}:{port}\r\nOrigin: {site.base}\r\nCookie: {cookie}\r\n"
                          f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {50 * MB}\r\n\r\n").encode())
            await writer.drain()
            head = (await asyncio.wait_for(reader.read(65536), 10)).decode("utf-8", "replace")
            writer.close()
            assert head.startswith("HTTP/1.1 413") and "文件太大：最大 20 MB" in head, head[:600]

            # 50 MB sent chunked (no length given): read up to the cap, then refused
            sent = 0

            async def chunks(csrf_token: str = token) -> AsyncIterator[bytes]:
                nonlocal sent
                yield f"--x\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf_token}\r\n".encode()
                yield b'--x\r\nContent-Disposition: form-data; name="slot"\r\n\r\ngreeting\r\n'
                yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\nContent-Type: audio/wav\r\n\r\n'
                for _ in range(50):
                    sent += MB
                    yield b"\0" * MB

            try:
                async with site.http.post(site.base + PAGE + "/upload", data=chunks(), headers={**site.origin, "Content-Type": "multipart/form-data; boundary=x"},
                                          allow_redirects=False) as r:
                    assert r.status == 413 and "提交的内容太大" in await r.text()
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                pass  # the server may close while the client still writes; what was sent is what counts
            assert sent < 50 * MB

            assert files_under(folder) == before  # no file left, not even held aside
            assert await newest(site) is None  # no version
            assert [e for e in await site.audit() if e.action == "prompt_upload"] == []

    arun(body(), timeout=90)


def test_the_larger_cap_is_for_the_upload_route_only(db: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db) as site:
            await site.login("a-owner")
            token = csrf_in((await site.get("/console/blacklist"))[1])
            big = "x" * (100 * 1024)
            for path in ("/console/blacklist", f"{PAGE}/apply", f"{PAGE}/generate", f"/console/numbers/{NUMBER_A}/test-call"):
                status, _, _ = await site.post(path, {"csrf": token, "caller": "13900001111", "pending": big})
                assert status == 413, path
            status, _, _ = await site.post("/api/reload", {"x": big})
            assert status == 413

    arun(body(), timeout=60)


def test_a_generated_prompt_is_spoken_heard_and_applied(tools: None, db: str, tmp_path: Path) -> None:
    async def body() -> None:
        async for site in site_with_prompts(tmp_path, db):
            await site.login("boss")  # provider staff may change any number
            token = csrf_in((await site.get(PAGE))[1])
            status, html, _ = await site.post(PAGE + "/generate", {"csrf": token, "slot": "greeting", "wording": ""})
            assert status == 422 and "请填写提示语文字" in html
            status, _, r = await site.post(PAGE + "/generate", {"csrf": token, "slot": "greeting", "wording": "您好，这里是示例科技，新年快乐。"})
            assert status == 303
            held = pending_of(r.headers["Location"])
            status, html, _ = await site.get(r.headers["Location"].split("#")[0])
            assert "由文字生成" in html and "新年快乐" in html
            status, _, r = await site.post(PAGE + "/apply", {"csrf": token, "pending": held, "version": ""})
            assert status == 303
            version = await newest(site)
            name = f"console/{NUMBER_A}/greeting-{held}"
            assert version is not None and f'{name}: "您好，这里是示例科技，新年快乐。"' in version.text and version.author == "boss"
            assert (prompts_of(site) / f"{name}.wav").is_file()
            audit = await site.audit("prompt_generate")
            assert len(audit) == 1 and audit[0].tenant_id == site.seeded.tenant_a  # the company sees it in its own log

    arun(body(), timeout=90)


def test_viewers_listen_only_and_another_tenant_gets_404(tools: None, db: str, tmp_path: Path) -> None:
    wav = tone(tmp_path / "g.wav", seconds=0.5)

    async def body() -> None:
        async for site in site_with_prompts(tmp_path, db):
            await site.login("a-owner")
            token = csrf_in((await site.get(PAGE))[1])
            _, _, r = await upload(site, token, "greeting", "g.wav", wav.read_bytes())
            held = pending_of(r.headers["Location"])

            await site.login("a-viewer")
            status, html, _ = await site.get(PAGE)
            assert status == 200 and "upload-form" not in html and "修改提示音需要所有者或管理员权限" in html
            assert (await site.get(f"{PAGE}/audio?prompt=welcome"))[0] == 200
            token = csrf_in(html)
            assert (await upload(site, token, "greeting", "g.wav", wav.read_bytes()))[0] == 403
            assert (await site.post(PAGE + "/apply", {"csrf": token, "pending": held, "version": ""}))[0] == 403
            assert (await site.post(PAGE + "/generate", {"csrf": token, "slot": "greeting", "wording": "x"}))[0] == 403

            await site.login("b-owner")
            token = csrf_in((await site.get("/console/"))[1])
            for path in (PAGE, f"{PAGE}/audio?prompt=welcome", f"{PAGE}/audio?pending={held}"):
                assert (await site.get(path))[0] == 404, path
            assert (await upload(site, token, "greeting", "g.wav", wav.read_bytes()))[0] == 404
            assert (await site.post(PAGE + "/apply", {"csrf": token, "pending": held, "version": ""}))[0] == 404
            # nor through another number's page, nor outside the prompts folder
            other = f"/console/numbers/{NUMBER_B}/prompts"
            for query in (f"pending={held}", "prompt=../config", "prompt=welcome/../../config", "prompt=welcome"):
                assert (await site.get(f"{other}/audio?{query}"))[0] == 404, query
            assert await newest(site) is None

    arun(body(), timeout=90)
