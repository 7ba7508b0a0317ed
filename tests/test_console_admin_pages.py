"""The console's blacklist, numbers, audit, tenants and users pages over real HTTP, on SQLite and Postgres:
what each shows, who may change what, that every change is audited, and that another tenant's objects answer
404 and never show their data. (tests/browser/test_admin_pages.py drives the same pages in a real browser.)"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from callrouter.config.loader import load_config
from callrouter.console.i18n import translator
from callrouter.console.numbers import hours_summary, mask_phone, trace_step
from callrouter.console.numbers_svg import text_units, wrap
from callrouter.routing.blacklist import blacklist_match
from callrouter.routing.caller import caller_from
from callrouter.routing.explain import Question, explain, local_time, plan_zone
from callrouter.store.audit import audit_entries
from callrouter.store.blacklist import BlacklistInputError, BlacklistStore, normalize_prefix
from callrouter.store.tenants import add_number, find_user, get_tenant
from tests.consoles import NUMBER_A, NUMBER_B, PASSWORD, Site, csrf_in, running_site
from tests.harness import arun
from tests.test_process import ROOT

ZH = translator("zh")


async def csrf(site: Site, path: str = "/console/") -> str:
    return csrf_in((await site.get(path))[1])


def add_form(token: str, caller: str, **extra: str) -> dict[str, str]:
    return {"csrf": token, "caller": caller, "kind": "exact", "reason": "", "expires": "never", "scope": NUMBER_A, **extra}


# -- blacklist --------------------------------------------------------------------------------------


def test_the_blacklist_page_lists_adds_and_removes_with_audit_and_permissions(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            store = BlacklistStore(site.engine)
            assert (await site.login("a-owner"))[0] == 303
            status, html, _ = await site.get("/console/blacklist")
            assert status == 200 and "还没有添加黑名单" in html and 'class="form-grid blacklist-form"' in html
            assert "13000000000" in html and "00 开头的号码" in html  # the plan's YAML blacklist, read only
            token = csrf_in(html)

            status, _, r = await site.post("/console/blacklist", add_form(token, "+86 139-0000-7777", reason="骚扰", expires="7d"))
            assert status == 303 and r.headers["Location"] == "/console/blacklist?done=added"
            status, _, _ = await site.post("/console/blacklist", add_form(token, "0755", kind="prefix", reason="推销"))
            assert status == 303
            entries = await store.entries(site.clock(), numbers=frozenset({NUMBER_A}))
            assert {(e.caller, e.reason, e.created_by) for e in entries} == {("13900007777", "骚扰", "a-owner"), ("0755*", "推销", "a-owner")}
            week = next(e for e in entries if e.caller == "13900007777")
            assert week.expires_at == site.clock() + timedelta(days=7)
            snapshot = await store.snapshot(site.clock())
            assert blacklist_match(caller_from("075588886666"), ("runtime", snapshot.for_number(NUMBER_A))) == ("runtime", "runtime blacklist: prefix 0755")

            status, html, _ = await site.get("/console/blacklist?done=added")
            assert "已加入黑名单" in html and "13900007777" in html and "0755 开头的号码" in html and "骚扰" in html
            # the same caller again: updated, and the audit keeps the value before
            await site.post("/console/blacklist", add_form(token, "13900007777", reason="骚扰电话"))
            adds = await site.audit("blacklist_add")
            assert len(adds) == 3 and adds[0].before["reason"] == "骚扰" and adds[0].after["reason"] == "骚扰电话"
            assert adds[0].tenant_id == site.seeded.tenant_a and adds[0].username == "a-owner" and adds[0].target == f"{NUMBER_A}/13900007777"

            for bad, message in ((add_form(token, "139x"), "请填写正确的号码"), (add_form(token, "7", kind="prefix"), "号段至少 2 位"),
                                 (add_form(token, "13900001111", scope=NUMBER_B), "请选择一个 400 号码"),
                                 (add_form(token, "13900001111", scope="*"), "请选择一个 400 号码"),
                                 (add_form(token, "13900001111", expires="forever"), "请选择有效期"),
                                 (add_form(token, "13900001111", reason="长" * 201), "原因最多 200 个字")):
                status, html, _ = await site.post("/console/blacklist", bad)
                assert status == 422 and message in html, (bad, html[-800:])
            assert len(await store.entries(site.clock(), numbers=None)) == 2

            # without the CSRF token, or from another origin: refused, nothing stored
            no_token = add_form(token, "13900002222")
            del no_token["csrf"]
            assert (await site.post("/console/blacklist", no_token))[0] == 403
            assert (await site.post("/console/blacklist", add_form(token, "13900002222"), headers={"Origin": "http://evil.example"}, origin=False))[0] == 403
            assert await store.find(NUMBER_A, "13900002222", numbers=None) is None

            status, _, r = await site.post("/console/blacklist/remove", {"csrf": token, "scope": NUMBER_A, "caller": "0755*"})
            assert status == 303 and r.headers["Location"] == "/console/blacklist?done=removed"
            [removed] = await site.audit("blacklist_remove")
            assert removed.before["caller"] == "0755*" and removed.after is None
            assert (await site.post("/console/blacklist/remove", {"csrf": token, "scope": NUMBER_A, "caller": "0755*"}))[0] == 404

            # a viewer sees the list, no form, and may not post
            assert (await site.login("a-viewer"))[0] == 303
            status, html, _ = await site.get("/console/blacklist")
            assert status == 200 and "13900007777" in html and "blacklist-form" not in html and "/console/blacklist/remove" not in html
            assert "只能查看黑名单" in html
            token = csrf_in(html)
            assert (await site.post("/console/blacklist", add_form(token, "13900003333")))[0] == 403
            assert (await site.post("/console/blacklist/remove", {"csrf": token, "scope": NUMBER_A, "caller": "13900007777"}))[0] == 403
            assert await store.find(NUMBER_A, "13900007777", numbers=None) is not None

    arun(body())


def test_another_tenant_never_sees_or_touches_our_blacklist(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            store = BlacklistStore(site.engine)
            await store.add(NUMBER_A, "13900007777", "甲的原因", "a-owner", now=site.clock(), numbers=None)
            await store.add("*", "13900009999", "全局", "ops", now=site.clock(), numbers=None)
            assert (await site.login("b-owner"))[0] == 303
            status, html, _ = await site.get("/console/blacklist")
            assert status == 200 and "13900007777" not in html and "甲的原因" not in html and "13900009999" not in html
            assert "示例科技" not in html  # nor A's plan and its YAML blacklist
            token = csrf_in(html)
            status, html, _ = await site.post("/console/blacklist/remove", {"csrf": token, "scope": NUMBER_A, "caller": "13900007777"})
            assert status == 404 and "甲的原因" not in html
            assert (await site.post("/console/blacklist/remove", {"csrf": token, "scope": "*", "caller": "13900009999"}))[0] == 404
            assert len(await store.entries(site.clock(), numbers=None)) == 2
            assert (await site.post("/console/blacklist", add_form(token, "13900001111", scope=NUMBER_B)))[0] == 303
            assert [e.scope for e in await store.entries(site.clock(), numbers=frozenset({NUMBER_B}))] == [NUMBER_B]

            # two numbers: "all our numbers" writes one entry for each
            await add_number(site.engine, site.seeded.tenant_b, "4008005679", now=site.clock())
            status, html, _ = await site.get("/console/blacklist")
            assert '<option value="all"' in html
            assert (await site.post("/console/blacklist", add_form(csrf_in(html), "13900004444", scope="all")))[0] == 303
            mine = await store.entries(site.clock(), numbers=frozenset({NUMBER_B, "4008005679"}))
            assert sorted(e.scope for e in mine if e.caller == "13900004444") == [NUMBER_B, "4008005679"]

            # the provider sees every entry and may block on every number ('*'); its change for A shows in A's log
            assert (await site.login("boss"))[0] == 303
            status, html, _ = await site.get("/console/blacklist")
            assert "13900007777" in html and "13900009999" in html and "所有号码" in html
            token = csrf_in(html)
            assert (await site.post("/console/blacklist", add_form(token, "13900005555", scope="*")))[0] == 303
            assert (await site.post("/console/blacklist", add_form(token, "13900006666", scope=NUMBER_A)))[0] == 303
            by_boss = [e for e in await site.audit("blacklist_add") if e.username == "boss"]
            assert {(e.target, e.tenant_id) for e in by_boss} == {("*/13900005555", None), (f"{NUMBER_A}/13900006666", site.seeded.tenant_a)}

    arun(body())


def test_prefix_entries_are_normalised_and_refused_when_malformed() -> None:
    assert [normalize_prefix(p) for p in ("0755", "+852", "+86 755", "+86139", "00852")] == ["0755", "00852", "0755", "139", "00852"]
    from callrouter.store.blacklist import check_entry

    assert check_entry(NUMBER_A, "+86 755*", "", "") == (NUMBER_A, "0755*")
    for bad in ("7*", "abc*", "*", "13*9"):
        with pytest.raises(BlacklistInputError):
            check_entry(NUMBER_A, bad, "", "")


# -- numbers ----------------------------------------------------------------------------------------


def test_the_numbers_page_draws_the_plan_and_runs_the_dry_run(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("a-owner"))[0] == 303
            status, html, _ = await site.get("/console/numbers")
            assert status == 200 and f'href="/console/numbers/{NUMBER_A}"' in html and NUMBER_B not in html
            assert "周一至周五 09:00-12:00、13:30-18:00；周六 10:00-16:00" in html

            status, html, _ = await site.get(f"/console/numbers/{NUMBER_A}")
            assert status == 200 and 'aria-current="page">号码' in html
            for svg in (f'id="flow-{NUMBER_A}"', f'id="hours-{NUMBER_A}"', f'id="group-{NUMBER_A}-sales"'):
                assert svg in html
            sales = html[html.index(f'id="group-{NUMBER_A}-sales"'):]
            sales = sales[:sales.index("</svg>")]
            assert re.findall(r'class="group-line">([^<]+)<', sales) == ["张伟", "李娜", "王芳"]
            assert "轮循" in sales and "138****8001" in sales
            assert "13800138001" not in html and "01088886666" not in html  # masked everywhere
            assert "style=" not in html and "<script" not in html  # the CSP allows neither
            assert "2026-10-01" in html and "2026-10-11" in html and "请来电者留言（最长 120 秒）" in html

            when = "2026-11-24T10:30"
            status, html, _ = await site.get(f"/console/numbers/{NUMBER_A}?caller=13912345678&at={when}&digits=1&answer=none")
            assert status == 200
            rings = html[html.index('id="explain-rings"'):html.index("</table>", html.index('id="explain-rings"'))]
            assert re.findall(r'data-label="姓名">([^<]+)<', rings) == ["张伟", "李娜", "王芳"]
            assert '<dd class="outcome">留言</dd>' in html and "菜单「main」：按了 1" in html
            status, html, _ = await site.get(f"/console/numbers/{NUMBER_A}?caller=13912345678&at=2026-11-24T20:30")
            assert '<dd class="outcome">非工作时间</dd>' in html and "非工作时间" in html
            status, html, _ = await site.get(f"/console/numbers/{NUMBER_A}?caller=&at={when}")
            assert '<dd class="outcome">黑名单拦截</dd>' in html  # withheld numbers are refused by this plan
            await BlacklistStore(site.engine).add(NUMBER_A, "13900007777", "", "t", now=site.clock(), numbers=None)
            status, html, _ = await site.get(f"/console/numbers/{NUMBER_A}?caller=13900007777&at={when}&digits=1")
            assert '<dd class="outcome">黑名单拦截</dd>' in html  # the database's entries count too
            for bad, message in (("at=tomorrow", "请填写正确的时间"), ("at=2026-11-24T10:30&caller=13x", "只能包含数字"),
                                 ("at=2026-11-24T10:30&digits=9a", "按键只能是")):
                status, html, _ = await site.get(f"/console/numbers/{NUMBER_A}?{bad}")
                assert status == 422 and message in html, bad

            # another tenant's number: 404, as one that does not exist, never its plan
            for path in (f"/console/numbers/{NUMBER_B}", "/console/numbers/4009999999", "/console/numbers/abc"):
                status, html, _ = await site.get(path)
                assert status == 404 and "示例科技" not in html.split("<main")[1]
            assert (await site.login("b-owner"))[0] == 303
            status, html, _ = await site.get(f"/console/numbers/{NUMBER_A}?caller=13912345678&at={when}")
            assert status == 404 and "张伟" not in html and "示例科技" not in html
            status, html, _ = await site.get(f"/console/numbers/{NUMBER_B}")
            assert status == 200 and "尚未配置路由方案" in html
            assert (await site.login("boss"))[0] == 303
            assert (await site.get(f"/console/numbers/{NUMBER_A}"))[0] == 200
            assert (await site.get(f"/console/numbers/{NUMBER_B}"))[0] == 404  # no plan: nothing to draw

    arun(body())


def test_the_plan_words_and_the_trace_in_chinese() -> None:
    config = load_config(str(ROOT / "config.yaml"))
    plan = config.plans[NUMBER_A]
    assert [mask_phone(n) for n in ("13800138001", "01088886666", "8001")] == ["138****8001", "010****6666", "8001"]
    assert hours_summary(plan, ZH) == "周一至周五 09:00-12:00、13:30-18:00；周六 10:00-16:00"
    assert hours_summary(plan, translator("en")) == "Mon–Fri 09:00-12:00, 13:30-18:00; Sat 10:00-16:00"
    assert wrap("咨询产品请按1，售后服务请按2", 6) == ["咨询产品请按", "1，售后服务", "请按2"] and text_units("ab中") == pytest.approx(2.16)
    zone = plan_zone(plan, config.service)
    for when, digits, answer in (("2026-11-24T10:30", ("2", "1"), "NOANSWER"), ("2026-11-24T10:30", ("3",), "BUSY"),
                                 ("2026-11-24T10:30", ("", "", ""), "ANSWER"), ("2026-10-01T10:30", (), "NOANSWER"),
                                 ("2026-10-11T10:30", ("9", "9", "9"), "NOANSWER")):
        from callrouter.routing.dryrun import LineOutcome

        result = explain(plan, config.service, Question(caller="13912345678", at=local_time(when, zone), digits=digits,
                                                        default_line=LineOutcome.parse(answer)))
        for step in result.trace:
            shown = trace_step(step, plan, ZH)
            assert not re.search(r"[a-z]{4,}", re.sub(r"「[^」]*」|Example Tech|Asia/Shanghai", "", shown)), (step, shown)
    assert trace_step("hours: 2026-10-01 Thu 10:30 Asia/Shanghai: holiday, closed", plan, ZH) == "2026-10-01 周四 10:30：节假日休息"
    assert trace_step("line zhang (Local/13800138001@callrouter-lines, 20s): BUSY after 1s ringing", plan, ZH) == "张伟 响铃 1 秒：占线"
    assert "13800138001" not in trace_step("line 张伟 (zhang) something new about Local/13800138001", plan, ZH)


# -- audit ------------------------------------------------------------------------------------------


def test_the_audit_page_shows_our_rows_in_chinese_filtered_and_paged(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("a-owner"))[0] == 303
            token = await csrf(site, "/console/blacklist")
            await site.post("/console/blacklist", add_form(token, "13900007777", reason="骚扰"))
            assert (await site.login("b-owner"))[0] == 303
            assert (await site.login("a-owner"))[0] == 303
            status, html, _ = await site.get("/console/audit")
            assert status == 200 and "添加黑名单" in html and "登录" in html and f"{NUMBER_A} · 13900007777" in html
            assert "来电号码" in html and "骚扰" in html and "b-owner" not in html  # another tenant's rows never show
            rows = re.findall(r'<tr data-action="([a-z_]+)">', html)
            assert rows == ["login", "blacklist_add", "login"]  # newest first

            status, html, _ = await site.get("/console/audit?action=blacklist_add")
            assert re.findall(r'<tr data-action="([a-z_]+)">', html) == ["blacklist_add"]
            status, html, _ = await site.get("/console/audit?user=A-OWNER&action=login")
            assert re.findall(r'<tr data-action="([a-z_]+)">', html) == ["login", "login"]
            day = site.clock().strftime("%Y-%m-%d")
            status, html, _ = await site.get(f"/console/audit?from={day}&to={day}")
            assert len(re.findall(r"<tr data-action=", html)) == 3
            status, html, _ = await site.get("/console/audit?from=2020-01-01&to=2020-01-02")
            assert "没有符合条件的记录" in html
            assert (await site.get("/console/audit?from=yesterday"))[0] == 422

            for i in range(55):  # a second page
                await site.post("/console/blacklist", add_form(await csrf(site, "/console/blacklist"), f"1390000{i:04d}"))
            status, html, _ = await site.get("/console/audit?action=blacklist_add")
            assert len(re.findall(r"<tr data-action=", html)) == 50 and "更早的记录" in html
            older = re.search(r'href="/console/audit\?([^"]+)" rel="next"', html)
            assert older is not None
            status, html, _ = await site.get("/console/audit?" + older.group(1).replace("&amp;", "&"))
            assert len(re.findall(r"<tr data-action=", html)) == 6 and "更早的记录" not in html and "回到最新" in html

            # the provider: every tenant's rows, and a tenant filter
            assert (await site.login("boss"))[0] == 303
            status, html, _ = await site.get("/console/audit?action=login")
            assert "b-owner" in html and "a-owner" in html and "乙公司" in html
            status, html, _ = await site.get(f"/console/audit?action=login&tenant={site.seeded.tenant_b}")
            assert "b-owner" in html and "a-owner" not in html

    arun(body())


def test_audit_entries_filter_by_user_and_time_in_the_store(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("a-owner"))[0] == 303
            site.clock.advance(hours=1)
            assert (await site.login("a-viewer"))[0] == 303
            at = site.clock()
            found = await audit_entries(site.engine, tenant_id=site.seeded.tenant_a, limit=10, username="A-Viewer")
            assert [e.username for e in found] == ["a-viewer"]
            assert [e.username for e in await audit_entries(site.engine, tenant_id=None, limit=10, since=at)] == ["a-viewer"]
            assert [e.username for e in await audit_entries(site.engine, tenant_id=None, limit=10, until=at)] == ["a-owner"]

    arun(body())


# -- tenants and users ------------------------------------------------------------------------------


def test_the_provider_manages_tenants_and_numbers(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("a-owner"))[0] == 303
            assert (await site.get("/console/tenants"))[0] == 403  # the provider's page
            token = await csrf(site)
            assert (await site.post("/console/tenants", {"csrf": token, "name": "丙公司"}))[0] == 403

            assert (await site.login("boss"))[0] == 303
            status, html, _ = await site.get("/console/tenants")
            assert status == 200 and "甲公司" in html and "乙公司" in html and NUMBER_A in html
            assert re.search(r"甲公司</strong></td>.*?data-label=\"账号数\">2 ·", html, re.S)
            token = csrf_in(html)
            status, _, r = await site.post("/console/tenants", {"csrf": token, "name": "丙公司"})
            assert status == 303 and "done=added" in r.headers["Location"]
            assert (await site.post("/console/tenants", {"csrf": token, "name": "丙公司"}))[0] == 422
            assert (await site.post("/console/tenants", {"csrf": token, "name": ""}))[0] == 422
            [added] = await site.audit("tenant_add")
            tenant_c = added.tenant_id
            assert tenant_c is not None and added.username == "boss"

            path = f"/console/tenants/{tenant_c}/numbers"
            assert (await site.post(path, {"csrf": token, "number": "400-800-9999"}))[0] == 303
            status, html, _ = await site.post(path, {"csrf": token, "number": NUMBER_A})
            assert status == 422 and "已属于另一个租户" in html
            assert (await site.post(path, {"csrf": token, "number": "40x"}))[0] == 422
            tenant = await get_tenant(site.engine, tenant_c)
            assert tenant is not None and tenant.numbers == {"4008009999"}
            assert (await site.post(f"{path}/remove", {"csrf": token, "number": NUMBER_A}))[0] == 404  # not this tenant's
            assert (await site.post(f"{path}/remove", {"csrf": token, "number": "4008009999"}))[0] == 303
            assert (await site.post("/console/tenants/999999/numbers", {"csrf": token, "number": "4008007777"}))[0] == 404
            assert [(e.action, e.target, e.tenant_id) for e in await site.audit() if e.action.startswith("tenant_number")] == [
                ("tenant_number_remove", "4008009999", tenant_c), ("tenant_number_add", "4008009999", tenant_c)]

    arun(body())


def test_owners_manage_their_own_users_only(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("a-viewer"))[0] == 303
            assert (await site.get("/console/users"))[0] == 403
            assert (await site.login("a-owner"))[0] == 303
            status, html, _ = await site.get("/console/users")
            assert status == 200 and "a-viewer" in html and "b-owner" not in html and "boss" not in html
            token = csrf_in(html)
            new = {"csrf": token, "username": "a-new", "password": "a-new-password", "role": "viewer", "listen": "on"}
            for bad, message in (({**new, "password": "short"}, "密码至少 10 个字符"), ({**new, "username": "坏 名字"}, "用户名为"),
                                 ({**new, "role": "provider"}, "请选择角色"), ({**new, "username": "a-viewer"}, "已被使用")):
                status, html, _ = await site.post("/console/users", bad)
                assert status == 422 and message in html and "a-new-password" not in html, bad
            status, _, r = await site.post("/console/users", {**new, "tenant": str(site.seeded.tenant_b)})  # the tenant field is ignored
            assert status == 303 and "done=added" in r.headers["Location"]
            found = await find_user(site.engine, "a-new")
            assert found is not None and found.user.tenant_id == site.seeded.tenant_a and found.user.role == "viewer"
            assert found.user.can_listen and not found.user.can_download
            user_id = found.user.id
            [added] = await site.audit("user_add")
            assert added.after == {"username": "a-new", "role": "viewer", "tenant": "甲公司", "can_listen": True, "can_download": False,
                                   "disabled": False}
            assert "password" not in str(added.after) and "argon2" not in str(added.after)

            assert (await site.post(f"/console/users/{user_id}/role", {"csrf": token, "role": "admin", "download": "on"}))[0] == 303
            [role] = await site.audit("user_role")
            assert (role.before["role"], role.after["role"], role.after["can_listen"], role.after["can_download"]) == ("viewer", "admin", False, True)

            # the new user logs in; disabling ends the session at once; enabling lets them in again
            assert (await site.login("a-new", "a-new-password"))[0] == 303
            session = site.cookie()
            assert session is not None
            assert (await site.login("a-owner"))[0] == 303
            token = await csrf(site, "/console/users")
            assert (await site.post(f"/console/users/{user_id}/disable", {"csrf": token}))[0] == 303
            assert await site.get_as(session) == 303
            assert (await site.login("a-new", "a-new-password"))[0] == 401
            assert (await site.login("a-owner"))[0] == 303
            token = await csrf(site, "/console/users")
            assert "已停用" in (await site.get("/console/users"))[1]
            assert (await site.post(f"/console/users/{user_id}/enable", {"csrf": token}))[0] == 303
            assert (await site.login("a-new", "a-new-password"))[0] == 303
            session = site.cookie()
            assert (await site.login("a-owner"))[0] == 303
            token = await csrf(site, "/console/users")
            status, _, r = await site.post(f"/console/users/{user_id}/revoke", {"csrf": token})
            assert status == 303 and "count=1" in r.headers["Location"]
            assert session is not None and await site.get_as(session) == 303
            assert [e.action for e in await site.audit() if e.target == "a-new"] == [
                "user_revoke_sessions", "login", "user_enable", "login_failed", "user_disable", "login", "user_role", "user_add"]

            # not oneself, and never another company's user (404, as if there were none)
            me = await find_user(site.engine, "a-owner")
            other = await find_user(site.engine, "b-owner")
            assert me is not None and other is not None
            status, html, _ = await site.post(f"/console/users/{me.user.id}/disable", {"csrf": token})
            assert status == 422 and "不能停用自己" in html
            for action in ("disable", "enable", "revoke", "role"):
                status, html, _ = await site.post(f"/console/users/{other.user.id}/{action}", {"csrf": token, "role": "viewer"})
                assert status == 404 and "b-owner" not in html
            assert (await site.post("/console/users/99999/disable", {"csrf": token}))[0] == 404
            still = await find_user(site.engine, "b-owner")
            assert still is not None and still.user.disabled_at is None and still.user.role == "owner"

    arun(body())


def test_the_provider_manages_any_companys_users_and_the_company_sees_it(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url) as site:
            assert (await site.login("boss"))[0] == 303
            status, html, _ = await site.get("/console/users")
            assert status == 200 and all(name in html for name in ("boss", "a-owner", "a-viewer", "b-owner"))
            status, html, _ = await site.get(f"/console/users?tenant={site.seeded.tenant_b}")
            assert "b-owner" in html and "a-owner" not in html
            assert (await site.get("/console/users?tenant=99999"))[0] == 404
            token = csrf_in(html)
            new = {"csrf": token, "username": "b-new", "password": "b-new-password", "role": "admin"}
            assert (await site.post("/console/users", new))[0] == 422  # which company?
            status, _, r = await site.post(f"/console/users?tenant={site.seeded.tenant_b}", {**new, "tenant": str(site.seeded.tenant_b)})
            assert status == 303 and f"tenant={site.seeded.tenant_b}" in r.headers["Location"]
            found = await find_user(site.engine, "b-new")
            assert found is not None and found.user.tenant_id == site.seeded.tenant_b and found.user.role == "admin"
            boss = await find_user(site.engine, "boss")
            assert boss is not None
            assert (await site.post(f"/console/users/{boss.user.id}/role", {"csrf": token, "role": "owner"}))[0] == 422

            assert (await site.login("b-owner", PASSWORD))[0] == 303
            status, html, _ = await site.get("/console/audit")
            assert "新建用户" in html and "b-new" in html and "boss" in html

    arun(body())


def test_the_api_takes_prefix_entries_too(db_url: str, tmp_path: Path) -> None:
    async def body() -> None:
        async with running_site(tmp_path, db_url, token="test-token-0123456789abcdef") as site:
            headers = {"Authorization": "Bearer test-token-0123456789abcdef"}
            async with site.http.post(site.base + "/api/blacklist", json={"caller": "+852*", "scope": NUMBER_A}, headers=headers) as r:
                assert r.status == 201 and (await r.json())["caller"] == "00852*"
            async with site.http.post(site.base + "/api/blacklist", json={"caller": "8*", "scope": NUMBER_A}, headers=headers) as r:
                assert r.status == 422
            snapshot = await BlacklistStore(site.engine).snapshot(site.clock())
            assert snapshot.for_number(NUMBER_A).prefixes == ("00852",)
            async with site.http.delete(site.base + f"/api/blacklist/{NUMBER_A}/00852*", headers=headers) as r:
                assert r.status == 204

    arun(body())
