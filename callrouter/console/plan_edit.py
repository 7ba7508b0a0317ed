"""Editing a number's plan from the console (issue 14): a hunt group's lines, the hours, a menu, the greeting;
every version with its diff, and restore.

Each form is server-rendered and posts to its own page. The flow is form -> confirm -> apply:

* the form shows the plan as it is (the newest version, else the file) and remembers in a hidden field the
  version it was opened at;
* posting it ("check") writes the change into that YAML text with plans/edits.py (comments kept) and
  validates the result with `check_plan_text`, the validator of `callrouter check`; each issue is shown
  next to its field (the issue's YAML path -> the form field), the rest at the top;
* the confirm page shows the diff (plans/diff.py) and typical calls before and after (plans/impact.py),
  with the form's values in hidden fields; "apply" computes the same text again and saves it with
  `save_plan(expected_version=<the version the form was opened at>)`, so a save that someone else's came
  before is refused (`StaleVersion`): the page says who saved what meanwhile, and nothing changes.

Owner and admin of the tenant owning the number, and provider staff, edit (PLANS); a viewer gets 403 on
every edit page and POST; another tenant's number is 404. save_plan writes the audit log (bound here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiDictProxy

from callrouter.config.plan import NumberPlan
from callrouter.config.yamlsource import ConfigIssue
from callrouter.console.context import PREFIX, console_deps, nav_items, not_found, render, require, see_other
from callrouter.console.i18n import pick_language, translator
from callrouter.console.issue_words import issue_text
from callrouter.console.plan_access import editor_of as _editor, number_of as _number, plan_deps_for as _plan_deps
from callrouter.plans import edits
from callrouter.plans.diff import DiffHunk, DiffLine, line_diff, plan_changes, summary_text
from callrouter.plans.edits import ActionEdit, EditError, LineEdit
from callrouter.plans.impact import typical_calls
from callrouter.plans.service import (
    PlanRejected, StaleVersion, UnknownPlan, check_plan_text, current_text, file_text, save_plan,
)
from callrouter.store import plan_versions
from callrouter.store.plan_versions import PlanVersion
from callrouter.store.tenants import PLANS, READ

T = Callable[..., str]
Path = tuple[str | int, ...]
MAX_ROWS = edits.MAX_LINES
SPARE_ROWS = 2  # empty rows under a list (holidays, special days, menu keys) to add to it
MAX_FIELD = 500
_SPLIT = re.compile(r"[,，、;；\s]+")
_KEY = re.compile(r"[0-9*#]{1,20}\Z")
TOP = ""  # the field name of issues shown above the form


# -- who may see and edit ---------------------------------------------------------------------------


def _zone(request: web.Request) -> ZoneInfo:
    return ZoneInfo(console_deps(request).holder.current.service.timezone)


def _clock(value: datetime, zone: ZoneInfo, with_date: bool = True) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M")


# -- the forms --------------------------------------------------------------------------------------


def _text(post: Mapping[str, Any], name: str) -> str:
    value = post.get(name, "")
    return value.strip()[:MAX_FIELD] if isinstance(value, str) else ""


def _int(post: Mapping[str, Any], name: str, errors: dict[str, str], t: T, default: int | None = None) -> int | None:
    raw = _text(post, name)
    if not raw:
        if default is None:
            errors[name] = t("plan_edit.error.number")
        return default
    if not re.fullmatch(r"[0-9]{1,6}", raw):
        errors[name] = t("plan_edit.error.number")
        return default
    return int(raw)


@dataclass(frozen=True)
class Form:
    """One edit form: how to fill it from a plan, read it from a post, write it into the YAML text, and
    which field a YAML path belongs to."""

    kind: str  # group, hours, menu, greeting
    template: str
    title_key: str
    values: Callable[[NumberPlan, str, T], dict[str, Any]]  # the form's values from the running plan
    read: Callable[[MultiDictProxy[Any], NumberPlan, str, T], tuple[dict[str, Any], dict[str, str]]]  # values, errors
    write: Callable[[str, dict[str, Any], NumberPlan, str], str]  # text, values, plan, name -> the new text
    fields: Callable[[str, dict[str, Any]], Mapping[Path, str]]  # YAML path prefix -> field name
    exists: Callable[[NumberPlan, str], bool] = lambda plan, name: True


def field_for(path: Sequence[str | int], fields: Mapping[Path, str]) -> str:
    """The form field of a YAML path: its longest known prefix; TOP when none (shown above the form)."""
    for end in range(len(path), 0, -1):
        hit = fields.get(tuple(path[:end]))
        if hit is not None:
            return hit
    return TOP


def issues_by_field(issues: Iterable[ConfigIssue], fields: Mapping[Path, str], lang: str = "en") -> dict[str, list[str]]:
    """Each issue's message under its field, in the page's language (console/issue_words.py); the
    "schedule.weekly.sat.0: " a message starts with is the field's own place, so next to the field it is
    left out (above the form it stays)."""
    t = translator(lang)
    shown: dict[str, list[str]] = {}
    for issue in issues:
        field = field_for(issue.path, fields)
        where = ".".join(str(p) for p in issue.path) + ": "
        message = issue.message.removeprefix(where) if field != TOP and issue.path else issue.message
        shown.setdefault(field, []).append(issue_text(issue, lang, t, message))
    return shown


# -- hunt group ------------------------------------------------------------------------------------


def _group_values(plan: NumberPlan, group: str, t: T) -> dict[str, Any]:
    g = plan.hunt_groups[group]
    rows = [{"id": line.id, "name": line.name or "", "dest": line.number or line.target or "", "ring": str(line.ring_timeout),
             "calls": str(line.max_calls), "enabled": line.enabled} for line in g.lines]
    return {"strategy": g.strategy, "ring_budget": str(g.ring_budget), "rows": rows}


def _group_read(post: MultiDictProxy[Any], plan: NumberPlan, group: str, t: T) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    count = min(_int(post, "rows", errors, t, 0) or 0, MAX_ROWS + SPARE_ROWS + 1)
    errors.pop("rows", None)
    rows: list[dict[str, Any]] = []
    for i in range(count):
        row: dict[str, Any] = {"id": _text(post, f"line-{i}-id"), "name": _text(post, f"line-{i}-name")[:64], "dest": _text(post, f"line-{i}-dest"),
               "ring": _text(post, f"line-{i}-ring") or "20", "calls": _text(post, f"line-{i}-calls") or "1",
               "enabled": post.get(f"line-{i}-enabled") == "1"}
        if row["id"] or row["name"] or row["dest"]:
            rows.append(row)
    op = _text(post, "op")
    if m := re.fullmatch(r"(up|down|remove)-([0-9]{1,2})", op):
        i = int(m.group(2))
        if i < len(rows):
            if m.group(1) == "remove":
                rows.pop(i)
            else:
                j = i - 1 if m.group(1) == "up" else i + 1
                if 0 <= j < len(rows):
                    rows[i], rows[j] = rows[j], rows[i]
    elif op == "add":
        rows.append({"id": "", "name": "", "dest": "", "ring": "20", "calls": "1", "enabled": True})
    strategy = _text(post, "strategy")
    if strategy not in edits.STRATEGIES:
        errors["strategy"] = t("plan_edit.error.choice")
    values = {"strategy": strategy, "ring_budget": _text(post, "ring_budget"), "rows": rows}
    _int(post, "ring_budget", errors, t)
    for i, row in enumerate(rows):
        for key in ("ring", "calls"):
            if not re.fullmatch(r"[0-9]{1,5}", str(row[key])):
                errors[f"line-{i}-{key}"] = t("plan_edit.error.number")
    if not rows:
        errors["lines"] = t("plan_edit.error.no_lines")
    if len(rows) > MAX_ROWS:
        errors["lines"] = t("plan_edit.error.too_many_lines", count=MAX_ROWS)
    return values, errors


def _group_write(text: str, values: dict[str, Any], plan: NumberPlan, group: str) -> str:
    lines = [LineEdit(row["id"], row["name"], row["dest"], int(row["ring"]), int(row["calls"]), bool(row["enabled"])) for row in values["rows"]]
    text = edits.set_lines(text, group, lines)
    return edits.set_group_strategy(text, group, values["strategy"], int(values["ring_budget"]))


def _group_fields(group: str, values: dict[str, Any]) -> Mapping[Path, str]:
    base: Path = ("hunt_groups", group)
    fields: dict[Path, str] = {base: TOP, (*base, "strategy"): "strategy", (*base, "ring_budget"): "ring_budget", (*base, "lines"): "lines"}
    for i in range(len(values.get("rows", ()))):
        row: Path = (*base, "lines", i)
        fields[row] = f"line-{i}-dest"
        for key, name in (("name", "name"), ("number", "dest"), ("target", "dest"), ("ring_timeout", "ring"), ("max_calls", "calls"),
                          ("enabled", "enabled")):
            fields[(*row, key)] = f"line-{i}-{name}"
    return fields


# -- hours -----------------------------------------------------------------------------------------


def _ranges(text: str) -> list[str]:
    return [part for part in _SPLIT.split(text.replace("～", "-").replace("—", "-").replace("至", "-")) if part]


def _ranges_text(ranges: Iterable[tuple[Any, Any]]) -> str:
    def clock(v: Any) -> str:
        return "24:00" if v.hour == 23 and v.minute == 59 and v.second == 59 else v.strftime("%H:%M")
    return ", ".join(f"{clock(a)}-{clock(b)}" for a, b in ranges)


def action_choices(plan: NumberPlan, t: T, *, in_menu: bool = False) -> list[tuple[str, str]]:
    """(value, label) of an action select: each group, menu, voicemail box and prompt of the plan."""
    choices = [(f"hunt:{g}", t("plan_edit.action.hunt", name=g)) for g in plan.hunt_groups]
    choices += [(f"menu:{m}", t("plan_edit.action.menu", name=m)) for m in plan.menus]
    choices += [(f"voicemail:{v}", t("plan_edit.action.voicemail", name=v)) for v in plan.voicemail]
    choices += [(f"play:{p}", t("plan_edit.action.play", text=(plan.prompts.get(p) or p)[:40])) for p in plan.prompts]
    choices.append(("hangup", t("numbers.action.hangup")))
    if in_menu:
        choices += [("repeat", t("numbers.action.repeat")), ("back", t("numbers.action.back"))]
    return choices


def _action_value(action: Any) -> str:
    if action is None:
        return "hangup"
    return str(action.kind) if action.target is None else f"{action.kind}:{action.target}"


def _hours_values(plan: NumberPlan, _: str, t: T) -> dict[str, Any]:
    weekly = plan.schedule.weekly
    days = {day: _ranges_text(weekly.for_weekday(i)) if weekly else "" for i, day in enumerate(edits.WEEKDAYS)}
    return {"always_open": weekly is None, "days": days, "holidays": [d.isoformat() for d in sorted(plan.schedule.holidays)],
            "special": [{"date": d.isoformat(), "hours": _ranges_text(r)} for d, r in sorted(plan.schedule.special_days.items())],
            "after_hours": _action_value(plan.after_hours)}


def _hours_read(post: MultiDictProxy[Any], plan: NumberPlan, _: str, t: T) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    days = {day: _text(post, f"day-{day}") for day in edits.WEEKDAYS}
    holidays = [v.strip() for v in post.getall("holiday", []) if isinstance(v, str) and v.strip()][:200]
    special = [{"date": str(day).strip(), "hours": str(hours).strip()[:MAX_FIELD]}
               for day, hours in zip(post.getall("special-date", []), post.getall("special-hours", [])) if str(day).strip()][:200]
    for day in holidays:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", day):
            errors["holidays"] = t("plan_edit.error.date")
    for row in special:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", row["date"]):
            errors["special"] = t("plan_edit.error.date")
    if len({row["date"] for row in special}) != len(special):
        errors["special"] = t("plan_edit.error.date_twice")
    after = _text(post, "after_hours")
    if after not in {value for value, _ in action_choices(plan, t)}:
        errors["after_hours"] = t("plan_edit.error.choice")
    values = {"always_open": post.get("always_open") == "1", "days": days, "holidays": holidays, "special": special, "after_hours": after}
    return values, errors


def _hours_write(text: str, values: dict[str, Any], plan: NumberPlan, _: str) -> str:
    weekly = None if values["always_open"] else {day: _ranges(values["days"][day]) for day in edits.WEEKDAYS}
    text = edits.set_weekly(text, weekly)
    text = edits.set_holidays(text, values["holidays"])
    text = edits.set_special_days(text, {row["date"]: _ranges(row["hours"]) for row in values["special"]})
    return edits.set_after_hours(text, ActionEdit.parse(values["after_hours"]))


def _hours_fields(_: str, values: dict[str, Any]) -> Mapping[Path, str]:
    fields: dict[Path, str] = {("schedule",): TOP, ("schedule", "weekly"): "days", ("schedule", "holidays"): "holidays",
                               ("schedule", "special_days"): "special", ("after_hours",): "after_hours"}
    for day in edits.WEEKDAYS:
        fields[("schedule", "weekly", day)] = f"day-{day}"
    return fields


# -- menu ------------------------------------------------------------------------------------------


def _menu_values(plan: NumberPlan, menu: str, t: T) -> dict[str, Any]:
    m = plan.menus[menu]
    return {"wording": m.text or plan.prompts.get(m.prompt, ""), "timeout": f"{m.timeout:g}", "retries": str(m.retries),
            "options": [{"key": key, "action": _action_value(action)} for key, action in m.options.items()], "prompt": m.prompt}


def _menu_read(post: MultiDictProxy[Any], plan: NumberPlan, menu: str, t: T) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    keys = [str(v).strip() for v in post.getall("opt-key", [])][:40]
    actions = [str(v).strip() for v in post.getall("opt-action", [])][:40]
    allowed = {value for value, _ in action_choices(plan, t, in_menu=True)}
    options: list[dict[str, str]] = []
    for key, action in zip(keys, actions):
        if not key:
            continue
        if not _KEY.match(key):
            errors[f"opt-{len(options)}"] = t("plan_edit.error.key")
        elif action not in allowed:
            errors[f"opt-{len(options)}"] = t("plan_edit.error.choice")
        options.append({"key": key, "action": action})
    if len({o["key"] for o in options}) != len(options):
        errors["options"] = t("plan_edit.error.key_twice")
    if not options:
        errors["options"] = t("plan_edit.error.no_keys")
    values = {"wording": _text(post, "wording"), "timeout": _text(post, "timeout"), "retries": _text(post, "retries"),
              "options": options, "prompt": plan.menus[menu].prompt}
    _int(post, "timeout", errors, t)
    _int(post, "retries", errors, t)
    return values, errors


def _menu_write(text: str, values: dict[str, Any], plan: NumberPlan, menu: str) -> str:
    options = [(o["key"], ActionEdit.parse(o["action"])) for o in values["options"]]
    text = edits.set_menu(text, menu, wording=values["wording"], options=options, timeout=int(values["timeout"]), retries=int(values["retries"]))
    prompt = plan.menus[menu].prompt
    if prompt in plan.prompts and values["wording"]:  # the prompt's own wording says the same (generated prompts)
        text = edits.set_prompt_text(text, prompt, values["wording"])
    return text


def _menu_fields(menu: str, values: dict[str, Any]) -> Mapping[Path, str]:
    base: Path = ("menus", menu)
    fields: dict[Path, str] = {base: TOP, (*base, "text"): "wording", (*base, "timeout"): "timeout", (*base, "retries"): "retries",
                               (*base, "options"): "options", ("prompts",): "wording"}
    for i, option in enumerate(values.get("options", ())):
        fields[(*base, "options", option["key"])] = f"opt-{i}"
    return fields


# -- greeting and recording notice -----------------------------------------------------------------


def prompt_choices(plan: NumberPlan) -> list[str]:
    used = [plan.greeting, plan.recording.announcement]
    return sorted(set(plan.prompts) | {p for p in used if p})


def _greeting_values(plan: NumberPlan, _: str, t: T) -> dict[str, Any]:
    greeting, notice = plan.greeting or "", plan.recording.announcement or ""
    return {"greeting": greeting, "greeting_text": plan.prompts.get(greeting, "") if greeting else "",
            "notice": notice, "notice_text": plan.prompts.get(notice, "") if notice else "", "recording": plan.recording.enabled}


def _greeting_read(post: MultiDictProxy[Any], plan: NumberPlan, _: str, t: T) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    choices = set(prompt_choices(plan)) | {""}
    values: dict[str, Any] = {key: _text(post, key) for key in ("greeting", "greeting_text", "notice", "notice_text")}
    values["recording"] = plan.recording.enabled
    for key in ("greeting", "notice"):
        if values[key] not in choices:
            errors[key] = t("plan_edit.error.choice")
    if values["greeting"] and values["notice"] == values["greeting"] and values["greeting_text"] != values["notice_text"]:
        errors["notice_text"] = t("plan_edit.error.same_prompt")
    return values, errors


def _greeting_write(text: str, values: dict[str, Any], plan: NumberPlan, _: str) -> str:
    text = edits.set_greeting(text, values["greeting"] or None)
    text = edits.set_recording_announcement(text, values["notice"] or None)
    for prompt, wording in ((values["greeting"], values["greeting_text"]), (values["notice"], values["notice_text"])):
        if prompt and wording and wording != plan.prompts.get(prompt):
            text = edits.set_prompt_text(text, prompt, wording)
    return text


def _greeting_fields(_: str, values: dict[str, Any]) -> Mapping[Path, str]:
    fields: dict[Path, str] = {("greeting",): "greeting", ("recording",): "notice", ("recording", "announcement"): "notice"}
    for key in ("greeting", "notice"):
        if values.get(key):
            fields[("prompts", values[key])] = f"{key}_text"
    return fields


FORMS: Mapping[str, Form] = {
    "group": Form("group", "plan_edit_group.html", "plan_edit.group.title", _group_values, _group_read, _group_write, _group_fields,
                  lambda plan, name: name in plan.hunt_groups),
    "hours": Form("hours", "plan_edit_hours.html", "plan_edit.hours.title", _hours_values, _hours_read, _hours_write, _hours_fields),
    "menu": Form("menu", "plan_edit_menu.html", "plan_edit.menu.title", _menu_values, _menu_read, _menu_write, _menu_fields,
                 lambda plan, name: name in plan.menus),
    "greeting": Form("greeting", "plan_edit_greeting.html", "plan_edit.greeting.title", _greeting_values, _greeting_read, _greeting_write,
                     _greeting_fields),
}


# -- pages -----------------------------------------------------------------------------------------


def _name_of(request: web.Request) -> str:
    return request.match_info.get("name", "")


def _form_path(form: Form, number: str, name: str) -> str:
    tail = {"group": f"groups/{name}", "menu": f"menus/{name}", "hours": "hours", "greeting": "greeting"}[form.kind]
    return f"{PREFIX}/numbers/{number}/edit/{tail}"


def _base(request: web.Request, number: str, title: str) -> dict[str, Any]:
    scope = require(request, READ)
    return {"number": number, "title": title, "nav": nav_items(scope, pick_language(request), "numbers"),
            "number_href": f"{PREFIX}/numbers/{number}"}


def _render_form(request: web.Request, form: Form, number: str, name: str, plan: NumberPlan, values: dict[str, Any], version: int | None,
                 errors: Mapping[str, Sequence[str]] | None = None, *, status: int = 200, notice: str | None = None) -> web.Response:
    t = translator(pick_language(request))
    context = _base(request, number, t(form.title_key, name=name))
    context.update({"form_kind": form.kind, "name": name, "plan": plan, "values": values, "version": "" if version is None else str(version),
                    "errors": dict(errors or {}), "action": _form_path(form, number, name), "notice": notice,
                    "strategies": edits.STRATEGIES, "weekdays": list(enumerate(edits.WEEKDAYS)), "spare": SPARE_ROWS,
                    "actions": action_choices(plan, t), "menu_actions": action_choices(plan, t, in_menu=True),
                    "prompts": prompt_choices(plan), "max_rows": MAX_ROWS,
                    "zone": plan.timezone or console_deps(request).holder.current.service.timezone})
    return render(request, form.template, context, status=status)


def _form_of(request: web.Request) -> Form:
    form = FORMS.get(request.match_info.route.name.removeprefix("plan_edit_") if request.match_info.route.name else "")
    if form is None:  # pragma: no cover - every route below names its form
        raise not_found()
    return form


async def edit_page(request: web.Request) -> web.StreamResponse:
    scope, number, _ = _editor(request)
    form, name = _form_of(request), _name_of(request)
    deps = await _plan_deps(request, scope, number)
    try:
        text, version = await current_text(deps, number)
    except UnknownPlan:
        raise not_found() from None
    try:
        plan = check_plan_text(text, number, console_deps(request).holder.current)
    except PlanRejected as exc:
        return _broken(request, number, version, exc)
    if not form.exists(plan, name):
        raise not_found()
    t = translator(pick_language(request))
    return _render_form(request, form, number, name, plan, form.values(plan, name, t), version)


def _broken(request: web.Request, number: str, version: int | None, exc: PlanRejected) -> web.Response:
    """The plan's newest text does not validate any more (config.yaml changed since it was saved): no form
    can be built on it; the number keeps running what it ran, and ops or a restore must fix it."""
    t = translator(pick_language(request))
    context = _base(request, number, t("plan_edit.broken.title"))
    context.update({"message": t("plan_edit.broken", version=version if version is not None else "-"),
                    "issues": [str(issue) for issue in exc.issues], "back": f"{PREFIX}/numbers/{number}/versions"})
    return render(request, "plan_message.html", context, status=409)


def _version_field(post: Mapping[str, Any]) -> int | None:
    raw = _text(post, "version")
    if raw == "":
        return None
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise web.HTTPBadRequest()
    return int(raw)


def _hidden(post: MultiDictProxy[Any]) -> list[tuple[str, str]]:
    """The form's fields, carried by the confirm page back to apply (recomputed there, never trusted as YAML)."""
    return [(k, v) for k, v in post.items() if isinstance(v, str) and k not in ("csrf", "step", "op")][:400]


async def edit_submit(request: web.Request) -> web.StreamResponse:
    scope, number, _ = _editor(request)
    form, name = _form_of(request), _name_of(request)
    t = translator(pick_language(request))
    post = await request.post()
    base_version = _version_field(post)
    deps = await _plan_deps(request, scope, number)
    try:
        text, version = await current_text(deps, number)
    except UnknownPlan:
        raise not_found() from None
    config = console_deps(request).holder.current
    if version != base_version:
        return await _stale(request, number, base_version, form_href=_form_path(form, number, name))
    try:
        plan = check_plan_text(text, number, config)
    except PlanRejected as exc:
        return _broken(request, number, version, exc)
    if not form.exists(plan, name):
        raise not_found()
    values, errors = form.read(post, plan, name, t)
    step = _text(post, "step")
    if _text(post, "op") or step == "edit" or errors:  # moving rows, adding one, back from confirm, or input to fix
        shown = {k: [v] for k, v in errors.items()}
        return _render_form(request, form, number, name, plan, values, base_version, shown, status=422 if errors and not _text(post, "op") else 200)
    fields = form.fields(name, values)
    try:
        new_text = form.write(text, values, plan, name)
        new_plan = check_plan_text(new_text, number, config)
    except EditError as exc:
        return _render_form(request, form, number, name, plan, values, base_version, {field_for(exc.path, fields): [exc.message]}, status=422)
    except PlanRejected as exc:
        return _render_form(request, form, number, name, plan, values, base_version, issues_by_field(exc.issues, fields, pick_language(request)), status=422)
    if new_text == text:
        return _render_form(request, form, number, name, plan, values, base_version, notice=t("plan_edit.no_change"))
    summary = summary_text(plan_changes(plan, new_plan), translator("zh"))
    if step != "apply":
        return _confirm(request, number, text, new_text, plan, new_plan, _hidden(post), _form_path(form, number, name),
                        t(form.title_key, name=name), back_to_form=True)
    try:
        saved = await save_plan(deps, number, new_text, author=scope.username, origin="console", expected_version=base_version, summary=summary)
    except StaleVersion:
        return await _stale(request, number, base_version, form_href=_form_path(form, number, name))
    except PlanRejected as exc:  # config.yaml changed between the check and the save
        return _render_form(request, form, number, name, plan, values, base_version, issues_by_field(exc.issues, fields, pick_language(request)), status=422)
    return see_other(f"{PREFIX}/numbers/{number}?saved={saved.version}")


@dataclass(frozen=True)
class ImpactRow:
    label: str
    sentence: str
    changed: bool
    notes: tuple[str, ...]


def _impacts(request: web.Request, old: NumberPlan | None, new: NumberPlan, t: T) -> list[ImpactRow]:
    deps = console_deps(request)
    rows = [ImpactRow(c.label.say(t), c.sentence.say(t), c.changed, tuple(n.say(t) for n in c.notes))
            for c in typical_calls(old, new, deps.holder.current.service, deps.now())]
    return sorted(rows, key=lambda r: not r.changed)  # the calls that change first


def _changes(old: NumberPlan | None, new: NumberPlan, t: T) -> list[str]:
    return [change.say(t) for change in plan_changes(old, new)]


def _confirm(request: web.Request, number: str, old_text: str, new_text: str, old: NumberPlan | None, new: NumberPlan,
             hidden: list[tuple[str, str]], action: str, what: str, *, back_to_form: bool) -> web.Response:
    t = translator(pick_language(request))
    context = _base(request, number, t("plan_edit.confirm.title"))
    context.update({"what": what, "hunks": line_diff(old_text, new_text), "changes": _changes(old, new, t), "impacts": _impacts(request, old, new, t),
                    "hidden": hidden, "action": action, "back_to_form": back_to_form})
    return render(request, "plan_confirm.html", context)


async def _text_of(request: web.Request, number: str, version: int | None) -> str | None:
    """The text of a version, or (None) of the file."""
    if version is None:
        return file_text(number, console_deps(request).holder.current)
    async with console_deps(request).engine.connect() as conn:
        found = await plan_versions.get(conn, number, version)
    return found.text if found else None


async def _stale(request: web.Request, number: str, base_version: int | None, *, form_href: str) -> web.Response:
    """Someone saved since this form was opened: who, when, what changed; nothing is stored (409)."""
    t = translator(pick_language(request))
    config = console_deps(request).holder.current
    async with console_deps(request).engine.connect() as conn:
        newest = await plan_versions.newest(conn, number)
    before_text = await _text_of(request, number, base_version)
    changes: list[str] = []
    hunks: tuple[DiffHunk, ...] = ()
    if newest is not None and before_text is not None:
        hunks = line_diff(before_text, newest.text)
        changes = _changes(_plan_or_none(before_text, number, config), _plan_or_none(newest.text, number, config) or config.plans[number], t)
    context = _base(request, number, t("plan_edit.stale.title"))
    context.update({"newest": newest, "when": _clock(newest.created_at, _zone(request), with_date=False) if newest else "",
                    "changes": changes, "hunks": hunks, "form_href": form_href})
    return render(request, "plan_stale.html", context, status=409)


def _plan_or_none(text: str, number: str, config: Any) -> NumberPlan | None:
    try:
        return check_plan_text(text, number, config)
    except PlanRejected:
        return None


# -- versions --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionRow:
    version: int
    author: str
    when: str
    origin: str
    summary: str
    restored_from: int | None
    newest: bool


async def versions_page(request: web.Request) -> web.StreamResponse:
    scope = require(request, READ)
    number, _ = _number(request, scope)
    t = translator(pick_language(request))
    zone = _zone(request)
    async with console_deps(request).engine.connect() as conn:
        found = await plan_versions.history(conn, number, limit=500)
    rows = [VersionRow(v.version, v.author, _clock(v.created_at, zone), t(f"plan_edit.origin.{v.origin}"), _summary(v, t), v.restored_from, i == 0)
            for i, v in enumerate(found)]
    context = _base(request, number, t("plan_edit.versions.title"))
    context.update({"rows": rows, "can_edit": scope.can(PLANS), "source": console_deps(request).holder.current.sources.get(number, "")})
    return render(request, "plan_versions.html", context)


def _summary(v: PlanVersion, t: T) -> str:
    """A version's summary; the file's text stored before the first change is said in words (its summary
    names the server's path of the file, which is no business of the company's)."""
    return t("plan_edit.versions.file_summary") if v.origin == "file" else v.summary


def _whole(text: str) -> tuple[DiffHunk, ...]:
    """A first version's text, every line kept (no predecessor to compare with)."""
    return (DiffHunk(1, 1, tuple(DiffLine(" ", i, i, line) for i, line in enumerate(text.splitlines(), 1))),)


def _version_number(request: web.Request) -> int:
    raw = request.match_info["version"]
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise not_found()
    return int(raw)


async def _version_pair(request: web.Request, number: str, version: int) -> tuple[PlanVersion, PlanVersion | None, PlanVersion]:
    """The version, its predecessor (None for the first) and the newest; 404 when there is no such version."""
    async with console_deps(request).engine.connect() as conn:
        this = await plan_versions.get(conn, number, version)
        before = await plan_versions.get(conn, number, version - 1) if version > 1 else None
        newest = await plan_versions.newest(conn, number)
    if this is None or newest is None:
        raise not_found()
    return this, before, newest


async def version_page(request: web.Request) -> web.StreamResponse:
    scope = require(request, READ)
    number, _ = _number(request, scope)
    this, before, newest = await _version_pair(request, number, _version_number(request))
    t = translator(pick_language(request))
    config = console_deps(request).holder.current
    new_plan = _plan_or_none(this.text, number, config)
    old_plan = _plan_or_none(before.text, number, config) if before else None
    context = _base(request, number, t("plan_edit.version.title", version=this.version))
    context.update({
        "v": VersionRow(this.version, this.author, _clock(this.created_at, _zone(request)), t(f"plan_edit.origin.{this.origin}"), _summary(this, t),
                        this.restored_from, this.version == newest.version),
        "hunks": line_diff(before.text, this.text) if before else _whole(this.text), "first": before is None,
        "changes": _changes(old_plan, new_plan, t) if new_plan else [], "can_restore": scope.can(PLANS) and this.version != newest.version,
        "newest_version": newest.version,
    })
    return render(request, "plan_version.html", context)


async def restore_submit(request: web.Request) -> web.StreamResponse:
    scope, number, running = _editor(request)
    version = _version_number(request)
    this, _, newest = await _version_pair(request, number, version)
    post = await request.post()
    base_version = _version_field(post)
    config = console_deps(request).holder.current
    t = translator(pick_language(request))
    restore_href = f"{PREFIX}/numbers/{number}/versions/{version}"
    if base_version != newest.version:
        return await _stale(request, number, base_version, form_href=restore_href)
    new_plan = _plan_or_none(this.text, number, config)
    if new_plan is None:
        context = _base(request, number, t("plan_edit.version.title", version=version))
        context.update({"message": t("plan_edit.restore.invalid", version=version), "issues": [], "back": restore_href})
        return render(request, "plan_message.html", context, status=422)
    if _text(post, "step") != "apply":
        return _confirm(request, number, newest.text, this.text, _plan_or_none(newest.text, number, config) or running, new_plan,
                        [("version", str(newest.version))], f"{restore_href}/restore", t("plan_edit.restore.what", version=version),
                        back_to_form=False)
    deps = await _plan_deps(request, scope, number)
    zh = translator("zh")  # summaries are stored in Chinese, as the console speaks first
    summary = zh("plan_edit.restore.summary", version=version,
                 changes=summary_text(plan_changes(_plan_or_none(newest.text, number, config), new_plan), zh))
    try:
        saved = await save_plan(deps, number, this.text, author=scope.username, origin="restore", expected_version=base_version,
                                summary=summary, restored_from=version)
    except StaleVersion:
        return await _stale(request, number, base_version, form_href=restore_href)
    return see_other(f"{PREFIX}/numbers/{number}?saved={saved.version}")


def add_routes(app: web.Application) -> None:
    """The edit pages under /numbers/{number}/ (console/app.py calls this)."""
    for kind, tail in (("group", "/edit/groups/{name}"), ("hours", "/edit/hours"), ("menu", "/edit/menus/{name}"), ("greeting", "/edit/greeting")):
        resource = app.router.add_resource("/numbers/{number}" + tail, name=f"plan_edit_{kind}")
        resource.add_route("GET", edit_page)
        resource.add_route("POST", edit_submit)
    app.router.add_get("/numbers/{number}/versions", versions_page, name="plan_versions")
    app.router.add_get("/numbers/{number}/versions/{version}", version_page, name="plan_version")
    app.router.add_post("/numbers/{number}/versions/{version}/restore", restore_submit, name="plan_restore")


