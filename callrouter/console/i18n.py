"""The console's words in Chinese (the default) and English: one table, looked up by key.

`?lang=en` (or `?lang=zh`) switches and is remembered in a cookie. A key missing from the table shows as
the key itself, so a forgotten entry is visible on the page rather than an error; tests/test_console_auth.py
checks that every key has both languages.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

from aiohttp import web

from callrouter.console.words import accounts, audit, blacklist, calls, lines, live, numbers, stats
from callrouter.console.words import plan_changes, plan_prompts
from callrouter.console.words import checks, plan_edit

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
LANG_COOKIE = "callrouter_lang"

# key -> (中文, English). Each page's own words are in console/words/<page>.py.
_BASE: dict[str, tuple[str, str]] = {
    "app.name": ("400 管理后台", "400 Console"),
    "lang.other": ("English", "中文"),
    "nav.label": ("主菜单", "Main menu"),
    "nav.overview": ("概览", "Overview"),
    "nav.calls": ("通话记录", "Calls"),
    "nav.stats": ("统计", "Statistics"),
    "nav.blacklist": ("黑名单", "Blacklist"),
    "nav.numbers": ("号码", "Numbers"),
    "nav.audit": ("审计", "Audit log"),
    "nav.tenants": ("租户", "Tenants"),
    "nav.users": ("用户", "Users"),
    "nav.logout": ("退出", "Log out"),
    "login.title": ("登录", "Log in"),
    "login.username": ("用户名", "Username"),
    "login.password": ("密码", "Password"),
    "login.submit": ("登录", "Log in"),
    "login.failed": ("用户名或密码错误。", "Wrong username or password."),
    "login.too_many": ("登录失败次数过多，请 {minutes} 分钟后再试。", "Too many failed logins: try again in {minutes} minutes."),
    "login.hint": ("账号由服务商或贵公司的管理员开通。", "Accounts are made by your provider or your company's owner."),
    "overview.title": ("概览", "Overview"),
    "overview.console_of": ("{name} 的管理后台", "Console of {name}"),
    "overview.provider": ("服务商管理后台", "Provider console"),
    "overview.numbers": ("400 号码", "400 numbers"),
    "overview.no_numbers": ("还没有分配号码，请联系服务商。", "No numbers yet: ask your provider."),
    "overview.tenants": ("租户数", "Tenants"),
    "overview.all_numbers": ("已分配号码数", "Numbers assigned"),
    "overview.role": ("角色", "Role"),
    "role.owner": ("所有者", "Owner"),
    "role.admin": ("管理员", "Admin"),
    "role.viewer": ("查看者", "Viewer"),
    "role.provider": ("服务商", "Provider staff"),
    "error.title": ("出错了", "Something went wrong"),
    "error.400": ("请求有误。", "The request is not valid."),
    "error.403": ("没有权限执行此操作。", "You may not do this."),
    "error.403.csrf": ("页面已过期或来源不明，请刷新页面后重试。", "This page has expired or the request came from elsewhere: reload the page and try again."),
    "error.404": ("找不到该页面或记录。", "No such page or record."),
    "error.405": ("不支持该操作。", "This action is not supported here."),
    "error.413": ("提交的内容太大。", "What was sent is too large."),
    "error.500": ("服务器内部错误，编号 {request_id}。", "Internal error, reference {request_id}."),
    "error.back": ("返回概览", "Back to the overview"),
    "error.login": ("重新登录", "Log in again"),
}


def _merge(*tables: Mapping[str, tuple[str, str]]) -> Mapping[str, tuple[str, str]]:
    merged: dict[str, tuple[str, str]] = {}
    for table in tables:
        twice = merged.keys() & table.keys()
        if twice:
            raise ValueError(f"console words defined twice: {sorted(twice)}")
        merged.update(table)
    return MappingProxyType(merged)


MESSAGES = _merge(_BASE, live.WORDS, calls.WORDS, stats.WORDS, blacklist.WORDS, numbers.WORDS, audit.WORDS, accounts.WORDS, lines.WORDS,
                  plan_changes.WORDS, plan_edit.WORDS, plan_prompts.WORDS, checks.WORDS)


def pick_language(request: web.Request) -> str:
    """`?lang=` first, then the cookie, then Chinese."""
    asked = request.query.get("lang")
    if asked in LANGS:
        return str(asked)
    remembered = request.cookies.get(LANG_COOKIE)
    return remembered if remembered in LANGS else DEFAULT_LANG


def translate(lang: str, key: str, **values: object) -> str:
    pair = MESSAGES.get(key)
    if pair is None:
        return key
    text = pair[0] if lang == "zh" else pair[1]
    return text.format(**values) if values else text


def translator(lang: str) -> Callable[..., str]:
    """`t("key", name=...)` for templates and handlers."""

    def t(key: str, **values: object) -> str:
        return translate(lang, key, **values)

    return t
