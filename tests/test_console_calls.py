"""The console's calls page over real HTTP, on SQLite and Postgres: search, pages, one call's story, the
recording player (Range, one audited listen per session), downloads, the CSV export, and tenant isolation."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import re
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from callrouter.console.calls import decode_position, encode_position, menu_path, spoken_duration
from callrouter.console.i18n import translator
from callrouter.model.record import CallRecord
from callrouter.store.calls import StoredCall
from callrouter.store.schema import calls
from tests.cdrs import T0, record
from tests.consoles import NUMBER_A, NUMBER_B, Site, running_site
from tests.harness import arun
from tests.test_exporter import write

AUDIO = b"RIFF" + bytes(range(256)) * 20


def uniqueids(page: str) -> list[str]:
    """The calls a list page links to, in order."""
    return re.findall(r'href="/console/calls/([^"?]+)\?source=[^"#]*" class="calls-open"', page)


def a_call(i: int, answered: bool = True, **changes: object) -> CallRecord:
    return dataclasses.replace(record(i, number=NUMBER_A, answered=answered), **changes)  # type: ignore[arg-type]


async def recorded(site: Site, db_url: str) -> tuple[CallRecord, CallRecord]:
    """A's answered, recorded call through the main menu (with a CRM name), and B's call with its own recording."""
    rec_a = site.rec / NUMBER_A / "2026-11-24" / "1764000000.1.wav"
    rec_b = site.rec / NUMBER_B / "b.wav"
    for path, data in ((rec_a, AUDIO), (rec_b, b"AUDIO-OF-B" * 50)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    a = a_call(1, recording_file=str(rec_a), caller_name="王先生", caller_raw="+86 139-1234-5678",
               trace=("call to 4008001234 from 13912345678", "menu main: pressed 1 -> hunt: sales", "answered by li"))
    b = dataclasses.replace(record(2, number=NUMBER_B), recording_file=str(rec_b), caller_name="SECRET-B", caller="13700000002")
    await write(db_url, [a, b])
    return a, b


def test_the_list_searches_pages_and_shows_only_the_tenants_calls(db_url: str, tmp_path: Path) -> None:
    records = [a_call(i, started_at=T0 + timedelta(minutes=i), ended_at=T0 + timedelta(minutes=i, seconds=50),
                      caller="13900000001" if i % 10 == 0 else "13912345678") for i in range(60)]
    records = [dataclasses.replace(r, disposition="no_answer", answered_line=None, answered_at=None, talk_seconds=0) if i % 3 == 0 else r
               for i, r in enumerate(records)]
    records.append(dataclasses.replace(record(99, number=NUMBER_B), caller_name="SECRET-B", caller="13700000002"))

    async def body() -> None:
        await write(db_url, records)
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("a-owner"))[0] == 303
            status, page, _ = await site.get("/console/calls")
            assert status == 200 and "通话记录" in page and "共 60 通" in page
            first = uniqueids(page)
            newest = sorted(records[:60], key=lambda r: r.started_at, reverse=True)
            assert first == [r.uniqueid for r in newest[:50]]
            assert "SECRET-B" not in page and "13700000002" not in page and NUMBER_B not in page
            assert "已接听" in page and "未接" in page and "李娜" in page  # the plan's name of line li
            assert "2026-11-24 09:59:00" in page  # local time (Shanghai) of the newest call
            assert 'aria-current="page">通话记录' in page

            older = html.unescape(re.search(r'href="([^"]+)" rel="next"', page).group(1))  # type: ignore[union-attr]
            status, page2, _ = await site.get(older)
            assert status == 200 and uniqueids(page2) == [r.uniqueid for r in newest[50:]] and 'rel="next"' not in page2
            newer = html.unescape(re.search(r'href="([^"]+)" rel="prev"', page2).group(1))  # type: ignore[union-attr]
            status, back, _ = await site.get(newer)
            assert uniqueids(back) == first and 'rel="prev"' not in back

            status, page, _ = await site.get("/console/calls?caller=%2B86%20139-0000-0001")
            assert status == 200 and len(uniqueids(page)) == 6 and "共 6 通" in page
            status, page, _ = await site.get("/console/calls?disposition=no_answer")
            assert len(uniqueids(page)) == 20
            status, page, _ = await site.get("/console/calls?from=2026-11-24&to=2026-11-24")  # local dates, both included
            assert "共 60 通" in page
            status, page, _ = await site.get("/console/calls?from=2026-11-25")
            assert "没有符合条件的通话" in page
            status, page, _ = await site.get(f"/console/calls?number={NUMBER_A}&disposition=answered")
            assert len(uniqueids(page)) == 40 and f'value="{NUMBER_A}" selected' in page

            for bad, words in (("caller=abc", "来电号码只能包含"), ("from=yesterday", "日期格式"), ("from=2026-11-25&to=2026-11-24", "结束日期"),
                               ("disposition=bogus", "未知的通话结果"), ("number=12", "400 号码只能是数字")):
                status, page, _ = await site.get(f"/console/calls?{bad}")
                assert status == 400 and words in page and not uniqueids(page), bad
            assert (await site.get("/console/calls?after=nonsense"))[0] == 200  # a bad position is the first page

            # another tenant's number answers 404, as one that does not exist
            status, page, _ = await site.get(f"/console/calls?number={NUMBER_B}")
            assert status == 404 and "SECRET-B" not in page
            assert (await site.get(f"/console/calls.csv?number={NUMBER_B}"))[0] == 404

            status, page, _ = await site.get("/console/calls?lang=en")
            assert "Answered" in page and "60 calls" in page

            # the provider sees both tenants
            assert (await site.login("boss"))[0] == 303
            status, page, _ = await site.get("/console/calls")
            assert "共 61 通" in page
            status, page, _ = await site.get(f"/console/calls?number={NUMBER_B}")
            assert status == 200 and "SECRET-B" in page and "共 1 通" in page

    arun(body())


def test_one_calls_story_and_its_recording_with_range_audit_and_retention(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            a, _ = await recorded(site, db_url)
            assert (await site.login("a-owner"))[0] == 303
            url = f"/console/calls/{a.uniqueid}?source="
            status, page, _ = await site.get(url)
            assert status == 200
            assert "王先生" in page and "+86 139-1234-5678" in page and "示例科技" in page
            assert "主菜单按 1 → sales 组" in page
            assert re.search(r"<td>1</td><td>张伟</td><td>忙线</td><td>2 秒</td>", page)
            assert re.search(r"<td>2</td><td>李娜</td><td>已接听</td><td>6 秒</td><td>40 秒</td>", page)
            assert '<details class="call-trace">' in page and "menu main: pressed 1 -&gt; hunt: sales" in page
            assert f'<audio class="call-player" controls preload="none" src="/console/calls/{a.uniqueid}/recording?source="' in page
            assert f'href="/console/calls/{a.uniqueid}/recording/download?source="' in page
            # started T0, kept 180 days (config.yaml), the clock is T0 + 2h: 180 days left, deleted after 2027-05-23
            assert "还可保留 180 天，2027-05-23 后自动删除" in page

            listen = f"/console/calls/{a.uniqueid}/recording?source="
            status, data, r = await site.get(listen, headers={"Range": "bytes=0-3"})
            assert status == 206 and data.encode("latin-1", "replace")[:4] == b"RIFF" and r.headers["Content-Range"] == f"bytes 0-3/{len(AUDIO)}"
            assert r.headers["Content-Type"] == "audio/wav" and "attachment" not in r.headers.get("Content-Disposition", "")
            status, _, _ = await site.get(listen, headers={"Range": "bytes=100-"})  # a seek: the same listen
            assert status == 206
            listens = await site.audit("recording_listen")
            assert [(e.target, e.username, e.tenant_id, e.after["file"]) for e in listens] == [
                (a.uniqueid, "a-owner", site.seeded.tenant_a, f"{NUMBER_A}/2026-11-24/1764000000.1.wav")]
            status, _, _ = await site.get(listen)  # a whole GET is a listen of its own
            assert status == 200 and len(await site.audit("recording_listen")) == 2

            status, _, r = await site.get(f"/console/calls/{a.uniqueid}/recording/download?source=")
            assert status == 200 and r.headers["Content-Disposition"] == 'attachment; filename="4008001234_20261124_090001_1764000000.1.wav"'
            [download] = await site.audit("recording_download")
            assert download.target == a.uniqueid and download.username == "a-owner"

            # a viewer without the download permission: may listen, sees no download link, and the URL is refused
            assert (await site.login("a-viewer"))[0] == 303
            status, page, _ = await site.get(url)
            assert status == 200 and "call-player" in page and "recording/download" not in page and "下载录音" not in page
            assert (await site.get(f"/console/calls/{a.uniqueid}/recording/download?source="))[0] == 403
            assert (await site.get(listen, headers={"Range": "bytes=0-3"}))[0] == 206
            assert len(await site.audit("recording_download")) == 1

            # once the retention purge deleted it: the page says so and the file answers 410
            async with site.engine.begin() as conn:
                await conn.execute(update(calls).where(calls.c.uniqueid == a.uniqueid).values(recording_purged_at=site.clock()))
            status, page, _ = await site.get(url)
            assert "已被自动删除" in page and "call-player" not in page
            assert (await site.get(listen))[0] == 410

            # MixMonitor records only while connected: no file for an unanswered call is normal, for an answered one a fault
            gone = site.rec / NUMBER_A / "gone.wav"
            await write(db_url, [a_call(3, answered=False, recording_file=str(gone)), a_call(4, recording_file=str(gone))])
            status, page, _ = await site.get("/console/calls/1764000000.3?source=")
            assert "这通电话没有录音" in page and "找不到" not in page
            status, page, _ = await site.get("/console/calls/1764000000.4?source=")
            assert "录音文件找不到" in page and "call-player" not in page
            status, page, _ = await site.get("/console/calls")
            assert page.count("有录音") == 0  # A's recording was purged above, the others have no file

            assert (await site.get("/console/calls/1764000000.404?source="))[0] == 404
            assert (await site.get("/console/calls/" + "9" * 70))[0] == 404

    arun(body())


def test_another_tenants_call_and_recording_answer_404_with_none_of_its_data(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            a, b = await recorded(site, db_url)
            assert (await site.login("b-owner"))[0] == 303
            for path in (f"/console/calls/{a.uniqueid}?source=", f"/console/calls/{a.uniqueid}",
                         f"/console/calls/{a.uniqueid}/recording?source=", f"/console/calls/{a.uniqueid}/recording/download?source=",
                         f"/console/calls?number={NUMBER_A}"):
                status, page, _ = await site.get(path, headers={"Range": "bytes=0-3"})
                assert status == 404, path
                assert "王先生" not in page and "RIFF" not in page and "13912345678" not in page, path
            status, page, _ = await site.get("/console/calls")
            assert uniqueids(page) == [b.uniqueid] and "王先生" not in page
            assert await site.audit("recording_listen") == [] and await site.audit("recording_download") == []
            status, page, _ = await site.get(f"/console/calls/{b.uniqueid}?source=")
            assert status == 200 and "SECRET-B" in page and "录音文件找不到" not in page

    arun(body())


def test_the_csv_export_holds_the_filter_defuses_formulas_and_is_audited(db_url: str, tmp_path: Path) -> None:
    records = [a_call(i, started_at=T0 + timedelta(minutes=i), ended_at=T0 + timedelta(minutes=i, seconds=50)) for i in range(5)]
    records[2] = dataclasses.replace(records[2], caller_name='=HYPERLINK("http://evil","x")', caller="13900000001")
    records.append(dataclasses.replace(record(99, number=NUMBER_B), caller_name="SECRET-B"))

    async def body() -> None:
        await write(db_url, records)
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("a-owner"))[0] == 303
            status, page, _ = await site.get("/console/calls?caller=139-0000-0001")
            href = html.unescape(re.search(r'class="calls-export" href="([^"]+)"', page).group(1))  # type: ignore[union-attr]
            assert href == "/console/calls.csv?caller=139-0000-0001"
            async with site.http.get(site.base + "/console/calls.csv") as r:
                raw = await r.read()
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
                assert r.headers["Content-Disposition"].startswith('attachment; filename="calls-')
            assert raw.startswith(b"\xef\xbb\xbf")
            rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
            assert [row["uniqueid"] for row in rows] == [r.uniqueid for r in reversed(records[:5])]
            assert "SECRET-B" not in raw.decode("utf-8-sig")
            evil = next(row for row in rows if row["uniqueid"] == records[2].uniqueid)
            assert evil["caller_name"].startswith("'=")
            async with site.http.get(site.base + href) as r:
                rows = list(csv.DictReader(io.StringIO((await r.read()).decode("utf-8-sig"))))
            assert [row["caller"] for row in rows] == ["13900000001"]
            exports = await site.audit("calls_export")
            assert [(e.username, e.tenant_id, e.after["rows"], e.after["filter"]["caller"]) for e in exports] == [
                ("a-owner", site.seeded.tenant_a, 1, "13900000001"), ("a-owner", site.seeded.tenant_a, 5, None)]

    arun(body())


def test_page_positions_words_and_menu_paths() -> None:
    t = translator("zh")
    call = dataclasses.replace
    assert spoken_duration(5, t) == "5 秒" and spoken_duration(65, t) == "1 分 5 秒" and spoken_duration(3720, t) == "1 小时 2 分"

    stored = _stored()
    assert decode_position(encode_position(stored)) == (stored.started_at, stored.id)
    assert decode_position("12-x") is None and decode_position("") is None
    assert menu_path(call(stored, ivr_path="main:2>after_sales:-"), t) == "主菜单按 2 → after_sales 菜单未按键 → sales 组"
    assert menu_path(call(stored, ivr_path="", hunt_group=None, disposition="voicemail"), t) == "留言"
    assert menu_path(call(stored, ivr_path="", hunt_group=None), t) == "未经过语音导航"
    assert menu_path(call(stored, ivr_path="main:1"), translator("en")) == "Main menu: pressed 1 → group sales"


def _stored() -> StoredCall:
    return StoredCall(id=7, uniqueid="u", source="", number=NUMBER_A, caller="139", caller_raw="139", caller_name="",
                      started_at=T0.replace(microsecond=123456), answered_at=None, ended_at=T0,
                      duration_seconds=0, billable_seconds=0, ring_seconds=0, disposition="answered", reason="", ivr_path="",
                      hunt_group="sales", strategy=None, answered_line=None, recording_file=None, recording_purged_at=None,
                      voicemail_file=None, instance="", router_ms=0.0)

