"""号码 Numbers: what happens when someone calls our number?

Each plan of the tenant, validated (config/plan.NumberPlan), drawn on the server as SVG: business hours per
weekday with holidays and special days, the call flow (blacklist, hours, greeting, the IVR tree of menu →
key → action), and each hunt group with its lines in answer order; the same facts as tables for screen
readers and phones. A GET form runs the dry run (routing/explain.py, as `callrouter explain` does) and
shows who would ring, in Chinese. Another tenant's number answers 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from typing import Callable, Mapping

from aiohttp import web

from callrouter.config.plan import Action, HuntGroup, Line, NumberPlan
from callrouter.config.service import ServiceConfig
from callrouter.console.lines import line_summaries
from callrouter.console.context import console_deps, nav_items, not_found, render, require
from callrouter.console.i18n import pick_language, translator
from callrouter.console.numbers_svg import FONT, LINE, Circle, Drawing, Path, Rect, Text, num, text_units, wrap
from callrouter.model.record import RouteResult
from callrouter.routing.dryrun import LineOutcome
from callrouter.routing.explain import Question, explain, local_time, plan_zone, split_digits
from callrouter.routing.health import plan_keys
from callrouter.store.line_health import read_lines
from callrouter.store.tenants import PLANS, READ, Scope

T = Callable[..., str]
WIDTH = 640  # every picture's viewBox width; the stylesheet scales it to the page
WEEKDAYS = range(7)
MAX_DIGITS_FIELD = 60
_KEYS = re.compile(r"[0-9*#]{0,20}\Z")
_PHONE = re.compile(r"\+?[0-9][0-9 \-]{0,30}\Z")

# Colours of the pictures, by what a box is (presentation attributes; the page's palette).
INK, MUTED, RAIL = "#1f2933", "#616e7c", "#9aa5b1"
KIND_COLOURS: Mapping[str, tuple[str, str]] = {  # fill, stroke
    "start": ("#0b6bcb", "#0b6bcb"),
    "blocked": ("#fef3f2", "#b42318"),
    "closed": ("#f1f3f5", "#868e96"),
    "open": ("#e7f5ff", "#1c7ed6"),
    "menu": ("#fff9db", "#f08c00"),
    "hunt": ("#ebfbee", "#2f9e44"),
    "voicemail": ("#f3f0ff", "#7048e8"),
    "end": ("#f8f9fa", "#adb5bd"),
}


# -- words for plan parts ---------------------------------------------------------------------------


def mask_phone(number: str) -> str:
    """138****8001: enough to tell lines apart, not enough to copy someone's mobile off the screen."""
    digits = "".join(ch for ch in number if ch.isdigit())
    if len(digits) < 7:
        return number
    return f"{digits[:3]}****{digits[-4:]}"


def line_name(line: Line) -> str:
    return line.name or line.id


def line_phone(line: Line, t: T) -> str:
    if line.number is not None:
        return mask_phone(line.number)
    return t("numbers.extension", target=line.target or "")


def prompt_text(plan: NumberPlan | None, prompt: str) -> str:
    """What a prompt says (the plan's `prompts` table), else its name."""
    if plan is None:
        return prompt
    return plan.prompts.get(prompt) or prompt


def describe_action(action: Action | None, t: T, plan: NumberPlan | None) -> str:
    """One action in words: 转接坐席组「sales」：张伟 → 李娜, 播放「…」后挂机, ..."""
    if action is None or action.kind == "hangup":
        return t("numbers.action.hangup")
    target = action.target or ""
    if action.kind == "hunt":
        group = plan.hunt_groups.get(target) if plan is not None else None
        names = " → ".join(line_name(line) for line in group.lines if line.enabled) if group else target
        if group is not None and group.strategy == "ring_all":
            names = t("numbers.sep.list").join(line_name(line) for line in group.lines if line.enabled)
        return t("numbers.action.hunt", name=target, lines=names)
    if action.kind == "menu":
        return t("numbers.action.menu", name=target)
    if action.kind == "play":
        return t("numbers.action.play", text=prompt_text(plan, target))
    if action.kind == "voicemail":
        box = plan.voicemail.get(target) if plan is not None else None
        return t("numbers.action.voicemail", seconds=box.max_seconds if box else "?")
    return t(f"numbers.action.{action.kind}")  # repeat, back


def _clock(value: time) -> str:
    return "24:00" if value == time.max else value.strftime("%H:%M")


def ranges_text(ranges: tuple[tuple[time, time], ...], t: T) -> str:
    if ranges == ((time(0), time.max),):
        return t("numbers.hours.all_day")
    return t("numbers.sep.list").join(f"{_clock(a)}-{_clock(b)}" for a, b in ranges) if ranges else t("numbers.hours.closed_day")


def weekly_ranges(plan: NumberPlan) -> list[tuple[tuple[time, time], ...]]:
    """Open ranges per weekday, Monday first; no weekly hours at all is open around the clock."""
    weekly = plan.schedule.weekly
    if weekly is None:
        return [((time(0), time.max),)] * 7
    return [weekly.for_weekday(day) for day in WEEKDAYS]


def hours_summary(plan: NumberPlan, t: T) -> str:
    """周一至周五 09:00-12:00、13:30-18:00；周六 10:00-16:00 (days with the same hours run together)."""
    if plan.schedule.weekly is None:
        return t("numbers.flow.always_open")
    ranges = weekly_ranges(plan)
    parts: list[str] = []
    day = 0
    while day < 7:
        end = day
        while end + 1 < 7 and ranges[end + 1] == ranges[day]:
            end += 1
        if ranges[day]:
            days = t(f"numbers.weekday.{day}") if end == day else t("numbers.hours.days", first=t(f"numbers.weekday.{day}"),
                                                                       last=t(f"numbers.weekday.{end}"))
            parts.append(f"{days} {ranges_text(ranges[day], t)}")
        day = end + 1
    return t("numbers.sep.clause").join(parts) or t("numbers.hours.closed_day")


# -- the pictures -----------------------------------------------------------------------------------


def hours_drawing(plan: NumberPlan, t: T) -> Drawing:
    """Seven bars of 24 hours, open ranges filled; holidays and special days written underneath."""
    left, right, top, row = 56.0, 16.0, 26.0, 28.0
    hour = (WIDTH - left - right) / 24
    rects: list[Rect] = []
    texts: list[Text] = [Text(left + h * hour, 16, f"{h}:00" if h < 24 else "24:00", fill=MUTED, size=11,
                              anchor="middle" if 0 < h < 24 else ("start" if h == 0 else "end")) for h in range(0, 25, 3)]
    paths: list[Path] = []
    for day in WEEKDAYS:
        rects.append(Rect(left, top + day * row + 2, hour * 24, row - 8, "#f1f3f5", rx=3))
    for h in range(0, 25, 6):  # hour lines under the bars, so a bar never looks cut in two
        rects.append(Rect(left + h * hour - 0.5, top, 1, 7 * row - 6, "#d9e2ec", rx=0))
    for day, ranges in zip(WEEKDAYS, weekly_ranges(plan)):
        y = top + day * row
        texts.append(Text(0, y + 15, t(f"numbers.weekday.{day}"), bold=True))
        for start, end in ranges:
            x0 = left + (start.hour + start.minute / 60) * hour
            x1 = left + (24 if end == time.max else end.hour + end.minute / 60) * hour
            rects.append(Rect(x0, y + 2, max(x1 - x0, 1.0), row - 8, "#1c7ed6", rx=3))
        if not ranges:
            texts.append(Text(left + 8, y + 15, t("numbers.hours.closed_day"), fill=MUTED, size=12))
    y = top + 7 * row + 22
    notes = _calendar_notes(plan, t)
    for label, lines in notes:
        texts.append(Text(0, y, label, bold=True))
        y += LINE
        for text in lines:
            texts.append(Text(12, y, text, fill=INK))
            y += LINE
        y += 4
    return Drawing(f"hours-{plan.number}", t("numbers.hours") + " · " + hours_summary(plan, t), WIDTH, y, tuple(rects), tuple(paths), (), tuple(texts))


def _calendar_notes(plan: NumberPlan, t: T) -> list[tuple[str, list[str]]]:
    notes: list[tuple[str, list[str]]] = []
    holidays = sorted(plan.schedule.holidays)
    if holidays:
        notes.append((t("numbers.hours.holidays"), wrap(t("numbers.sep.list").join(d.isoformat() for d in holidays), (WIDTH - 12) / FONT)))
    special = sorted(plan.schedule.special_days.items())
    if special:
        lines = [f"{d.isoformat()}：{ranges_text(r, t) if r else t('numbers.hours.special_closed')}" for d, r in special]
        notes.append((t("numbers.hours.special"), lines))
    return notes


@dataclass(frozen=True)
class FlowNode:
    """One box of the call-flow tree: how it is reached (label), what happens (text), what follows."""

    kind: str
    label: str
    text: str
    children: tuple["FlowNode", ...] = ()


def flow_tree(plan: NumberPlan, t: T) -> FlowNode:
    """The call flow as a tree: blacklist, hours, greeting, then the entry action's menus and groups."""
    branches: list[FlowNode] = []
    bl = plan.blacklist
    if bl.numbers or bl.prefixes or bl.anonymous:
        branches.append(FlowNode("blocked", t("numbers.flow.blacklisted"), describe_action(bl.action, t, plan)))
    always = plan.schedule.weekly is None and not plan.schedule.holidays and not plan.schedule.special_days
    if not always:
        branches.append(FlowNode("closed", t("numbers.flow.closed"), describe_action(plan.after_hours, t, plan),
                                 _action_children(plan.after_hours, plan, t, set(), ())))
    intro = []
    if plan.greeting:
        intro.append(t("numbers.flow.greeting", text=prompt_text(plan, plan.greeting)))
    if plan.recording.enabled:
        notice = plan.recording.announcement
        intro.append(t("numbers.flow.recording", text=prompt_text(plan, notice)) if notice else t("numbers.flow.recording_silent"))
    seen: set[str] = set()
    entry = _action_node(plan.entry, "", plan, t, seen, ())
    label = t("numbers.flow.always_open") if always else t("numbers.flow.open")
    if intro:
        branches.append(FlowNode("open", label, "\n".join(intro), (entry,)))
    else:
        branches.append(FlowNode(entry.kind, label, entry.text, entry.children))
    return FlowNode("start", "", t("numbers.flow.incoming", number=plan.number) + f" · {plan.name}", tuple(branches))


def _kind(action: Action | None) -> str:
    if action is None:
        return "end"
    return {"menu": "menu", "hunt": "hunt", "voicemail": "voicemail"}.get(action.kind, "end")


def _action_node(action: Action | None, label: str, plan: NumberPlan, t: T, seen: set[str], menus: tuple[str, ...]) -> FlowNode:
    if action is not None and action.kind == "menu" and action.target in menus:
        return FlowNode("menu", label, t("numbers.action.menu_again", name=action.target))
    text = describe_action(action, t, plan)
    if action is not None and action.kind == "menu" and action.target in plan.menus:
        menu = plan.menus[action.target]
        text += t("numbers.sep.colon") + (menu.text or prompt_text(plan, menu.prompt))
    repeated = action is not None and action.kind == "hunt" and action.target in seen
    children = _action_children(action, plan, t, seen, menus)
    if repeated:
        text += t("numbers.flow.same_as_above_note")
    return FlowNode(_kind(action), label, text, children)


def _action_children(action: Action | None, plan: NumberPlan, t: T, seen: set[str], menus: tuple[str, ...]) -> tuple[FlowNode, ...]:
    if action is None:
        return ()
    if action.kind == "menu" and action.target in plan.menus:
        name = action.target
        menu = plan.menus[name]
        inside = menus + (name,)
        kids = [_action_node(a, t("numbers.flow.key", digit=key), plan, t, seen, inside) for key, a in menu.options.items()]
        kids.append(_action_node(menu.on_timeout, t("numbers.flow.no_key"), plan, t, seen, inside))
        if menu.on_invalid is not None and menu.on_invalid != menu.on_timeout:
            kids.append(_action_node(menu.on_invalid, t("numbers.flow.wrong_key"), plan, t, seen, inside))
        elif menu.on_invalid is None or menu.on_invalid == menu.on_timeout:
            kids[-1] = FlowNode(kids[-1].kind, f"{t('numbers.flow.no_key')} / {t('numbers.flow.wrong_key')}", kids[-1].text, kids[-1].children)
        return tuple(kids)
    if action.kind == "hunt" and action.target in plan.hunt_groups:
        if action.target in seen:
            return ()  # drawn once; the box says "if nobody answers: as above"
        seen.add(action.target)
        failure = plan.hunt_groups[action.target].on_failure
        return (_action_node(failure, t("numbers.flow.nobody"), plan, t, seen, menus),)
    return ()


def flow_drawing(plan: NumberPlan, t: T) -> Drawing:
    """The tree drawn top to bottom, each level indented, with a rail from each box to its children."""
    rects: list[Rect] = []
    texts: list[Text] = []
    paths: list[Path] = []
    indent, pad, gap = 26.0, 9.0, 10.0
    y = 4.0

    def place(node: FlowNode, depth: int) -> float:
        """Draws the node and its children; returns the middle of the node's first line (where rails end)."""
        nonlocal y
        x = 4.0 + depth * indent
        w = WIDTH - x - 4.0
        label_w = text_units(node.label) * FONT * 1.05 + 10 if node.label else 0.0  # bold runs a little wider
        lines = [part for paragraph in node.text.split("\n") for part in wrap(paragraph, (w - 2 * pad - label_w) / FONT)]
        h = pad * 2 + LINE * len(lines) - 4
        top = y
        fill, stroke = KIND_COLOURS[node.kind]
        rects.append(Rect(x, top, w, h, fill, stroke))
        ty = top + pad + FONT - 1
        if node.label:
            texts.append(Text(x + pad, ty, node.label, fill=stroke if node.kind != "end" else MUTED, bold=True, css="flow-label"))
        colour = "#ffffff" if node.kind == "start" else INK
        for i, line in enumerate(lines):
            texts.append(Text(x + pad + label_w, ty + i * LINE, line, fill=colour, bold=node.kind == "start"))
        y = top + h + gap
        rail = x + 12
        for child in node.children:
            child_mid = place(child, depth + 1)
            paths.append(Path(f"M{num(rail)},{num(top + h)} V{num(child_mid)} H{num(rail + indent - 12)}", arrow=True))
        return top + pad + FONT / 2

    place(flow_tree(plan, t), 0)
    title = t("numbers.picture") + " · " + plan.number
    return Drawing(f"flow-{plan.number}", title, WIDTH, y, tuple(rects), tuple(paths), (), tuple(texts))


def group_drawing(plan: NumberPlan, name: str, group: HuntGroup, t: T) -> Drawing:
    """One hunt group: a header, its lines numbered in answer order, and what happens when nobody answers."""
    rects: list[Rect] = []
    texts: list[Text] = []
    paths: list[Path] = []
    circles: list[Circle] = []
    fill, stroke = KIND_COLOURS["hunt"]
    together = group.strategy == "ring_all"
    head = f"{t('numbers.group.title', name=name)} · {t('numbers.strategy.' + group.strategy)} · " \
           f"{t('numbers.group.budget')} {t('numbers.group.budget_value', seconds=group.ring_budget)}"
    hint = wrap(t("numbers.strategy_hint." + group.strategy), (WIDTH - 24) / 13)
    header_h = 16 + LINE * (1 + len(hint))
    rects.append(Rect(0, 0, WIDTH, header_h, fill, stroke))
    texts.append(Text(12, 22, head, bold=True))
    for i, words in enumerate(hint):
        texts.append(Text(12, 22 + LINE * (i + 1), words, fill=MUTED, size=13))
    y = float(header_h + 14)
    row, step = 36.0, 22.0
    for i, line in enumerate(group.lines, 1):
        cy = y + row / 2
        if not together:
            circles.append(Circle(22, cy, 13, stroke if line.enabled else RAIL))
            texts.append(Text(22, cy + 5, str(i), fill="#ffffff", bold=True, anchor="middle"))
        rects.append(Rect(44, y, WIDTH - 44, row, "#ffffff" if line.enabled else "#f1f3f5", stroke if line.enabled else RAIL))
        facts = [line_phone(line, t), t("numbers.group.ring_value", seconds=line.ring_timeout)]
        if group.strategy == "weighted":
            facts.append(t("numbers.group.weight", weight=line.weight))
        if not line.enabled:
            facts.append(t("numbers.group.disabled"))
        texts.append(Text(56, cy + 5, line_name(line), bold=True, css="group-line"))
        texts.append(Text(200, cy + 5, " · ".join(facts), fill=MUTED if line.enabled else RAIL, size=13))
        y += row
        if i < len(group.lines):
            if together:
                y += 6
            else:
                paths.append(Path(f"M22,{num(y - row / 2 + 13)} V{num(y + step - 2 + row / 2 - 13)}", stroke=stroke, arrow=True))
                texts.append(Text(44, y + step / 2 + 5, t("numbers.group.then"), fill=MUTED, size=12))
                y += step
    if together:
        paths.append(Path(f"M30,{num(header_h + 14)} H22 V{num(y)} H30", stroke=stroke))
        texts.append(Text(8, header_h + 10, t("numbers.group.together"), fill=stroke, size=12, bold=True))
    y += 14
    end_fill, end_stroke = KIND_COLOURS[_kind(group.on_failure)]
    text = f"{t('numbers.group.failure')}：{describe_action(group.on_failure, t, plan)}"
    end_lines = wrap(text, (WIDTH - 24) / FONT)
    h = 16 + LINE * len(end_lines)
    rects.append(Rect(0, y, WIDTH, h, end_fill, end_stroke))
    for i, words in enumerate(end_lines):
        texts.append(Text(12, y + 23 + LINE * i, words))
    y += h + 2
    return Drawing(f"group-{plan.number}-{name}", head, WIDTH, y, tuple(rects), tuple(paths), tuple(circles), tuple(texts))


# -- the same facts as tables -----------------------------------------------------------------------


@dataclass(frozen=True)
class MenuRow:
    key: str
    action: str


@dataclass(frozen=True)
class MenuView:
    name: str
    says: str
    rows: tuple[MenuRow, ...]


@dataclass(frozen=True)
class LineRow:
    order: int
    name: str
    phone: str
    ring: str
    enabled: bool
    weight: int


@dataclass(frozen=True)
class GroupView:
    name: str
    strategy: str
    strategy_hint: str
    budget: str
    lines: tuple[LineRow, ...]
    failure: str
    drawing: Drawing


@dataclass(frozen=True)
class PlanView:
    number: str
    name: str
    zone: str
    hours_summary: str
    days: tuple[tuple[str, str], ...]  # weekday, ranges
    holidays: tuple[str, ...]
    special_days: tuple[tuple[str, str], ...]
    after_hours: str
    always_open: bool
    blocked: str | None
    entry: str
    menus: tuple[MenuView, ...]
    groups: tuple[GroupView, ...]
    hours_drawing: Drawing
    flow_drawing: Drawing


def plan_view(plan: NumberPlan, service: ServiceConfig, t: T) -> PlanView:
    schedule = plan.schedule
    menus = []
    for name, menu in plan.menus.items():
        rows = [MenuRow(key, describe_action(a, t, plan)) for key, a in menu.options.items()]
        rows.append(MenuRow(t("numbers.flow.no_key"), describe_action(menu.on_timeout, t, plan)))
        rows.append(MenuRow(t("numbers.flow.wrong_key"), describe_action(menu.on_invalid or menu.on_timeout, t, plan)))
        menus.append(MenuView(name, menu.text or prompt_text(plan, menu.prompt), tuple(rows)))
    groups = []
    for name, group in plan.hunt_groups.items():
        lines = tuple(LineRow(i, line_name(line), line_phone(line, t), t("numbers.group.ring_value", seconds=line.ring_timeout),
                              line.enabled, line.weight) for i, line in enumerate(group.lines, 1))
        groups.append(GroupView(name, t("numbers.strategy." + group.strategy), t("numbers.strategy_hint." + group.strategy),
                                t("numbers.group.budget_value", seconds=group.ring_budget), lines,
                                describe_action(group.on_failure, t, plan), group_drawing(plan, name, group, t)))
    bl = plan.blacklist
    always = schedule.weekly is None and not schedule.holidays and not schedule.special_days
    return PlanView(
        number=plan.number, name=plan.name, zone=plan.timezone or service.timezone, hours_summary=hours_summary(plan, t),
        days=tuple((t(f"numbers.weekday.{d}"), ranges_text(r, t)) for d, r in zip(WEEKDAYS, weekly_ranges(plan))),
        holidays=tuple(d.isoformat() for d in sorted(schedule.holidays)),
        special_days=tuple((d.isoformat(), ranges_text(r, t) if r else t("numbers.hours.special_closed"))
                           for d, r in sorted(schedule.special_days.items())),
        after_hours=describe_action(plan.after_hours, t, plan), always_open=always,
        blocked=describe_action(bl.action, t, plan) if (bl.numbers or bl.prefixes or bl.anonymous) else None,
        entry=describe_action(plan.entry, t, plan), menus=tuple(menus), groups=tuple(groups),
        hours_drawing=hours_drawing(plan, t), flow_drawing=flow_drawing(plan, t),
    )


# -- the dry run, in words --------------------------------------------------------------------------


@dataclass(frozen=True)
class RingRow:
    order: int
    name: str
    phone: str
    status: str
    ring: str


@dataclass(frozen=True)
class ExplainView:
    outcome: str
    answered_by: str | None
    path: str
    rings: tuple[RingRow, ...]
    steps: tuple[str, ...]


def _lines_by_id(plan: NumberPlan) -> dict[str, Line]:
    found: dict[str, Line] = {}
    for group in plan.hunt_groups.values():
        for line in group.lines:
            found.setdefault(line.id, line)
    return found


def _who(plan: NumberPlan, line_id: str) -> str:
    line = _lines_by_id(plan).get(line_id)
    return line_name(line) if line is not None else line_id


def _masked_everywhere(plan: NumberPlan, text: str) -> str:
    """A trace line left in English still shows no line's full phone number."""
    for line in _lines_by_id(plan).values():
        if line.number:
            text = text.replace(line.number, mask_phone(line.number))
    return text


def _when(stamp: str, t: T) -> str:
    """'2026-11-24 Tue 10:30 Asia/Shanghai' with the weekday in the page's language."""
    parts = stamp.split(" ")
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    if len(parts) >= 3 and parts[1] in days:
        parts[1] = t(f"numbers.weekday.{days.index(parts[1])}")
    return " ".join(parts[:3])


def _describe_text(described: str, plan: NumberPlan, t: T) -> str:
    """An action as the engine's trace writes it ('hunt: sales', 'repeat') in the page's words."""
    kind, _, target = described.partition(": ")
    try:
        return describe_action(Action(kind=kind, target=target or None), t, plan)  # type: ignore[arg-type]
    except ValueError:
        return described


def _status(status: str, t: T) -> str:
    word = t(f"numbers.status.{status}")
    return status if word == f"numbers.status.{status}" else word


def trace_step(step: str, plan: NumberPlan, t: T) -> str:
    """One line of the engine's trace in the page's language where it is known; else as written, masked."""
    for pattern, words in _TRACE:
        m = pattern.match(step)
        if m is not None:
            return words(m, plan, t)
    return _masked_everywhere(plan, step)


def _hours_words(m: re.Match[str], plan: NumberPlan, t: T) -> str:
    when, rest = _when(m.group(1), t), m.group(2)
    if rest.startswith("special day"):
        return t("numbers.trace.special_open" if rest.endswith("open") else "numbers.trace.special_closed", when=when)
    if rest.startswith("holiday"):
        return t("numbers.trace.holiday", when=when)
    if rest.startswith("no weekly hours"):
        return t("numbers.trace.always_open", when=when)
    return t("numbers.trace.hours_open" if rest.startswith("open") else "numbers.trace.hours_closed", when=when)


def _blacklisted_words(m: re.Match[str], plan: NumberPlan, t: T) -> str:
    why = m.group(1)
    if "withheld" in why:
        return t("numbers.trace.blacklisted", why=t("numbers.trace.withheld"))
    hit = re.search(r"(number|prefix) (\S+)", why)
    if hit is None:
        return t("numbers.trace.blacklisted", why=why)
    kind = t("blacklist.exact_badge") if hit.group(1) == "number" else t("blacklist.prefix_badge")
    return t("numbers.trace.blacklisted", why=f"{kind} {hit.group(2)}")


_TRACE: tuple[tuple[re.Pattern[str], Callable[[re.Match[str], NumberPlan, T], str]], ...] = (
    (re.compile(r"call to (\S+) \((.*)\) from (.+)\Z"),
     lambda m, p, t: t("numbers.trace.call", number=m.group(1), name=m.group(2),
                       caller=t("numbers.trace.withheld") if m.group(3) == "withheld caller ID" else m.group(3))),
    (re.compile(r"blacklist: not listed\Z"), lambda m, p, t: t("numbers.trace.not_listed")),
    (re.compile(r"blacklisted: (.*)\Z"), _blacklisted_words),
    (re.compile(r"hours: (.+?): (.*)\Z"), _hours_words),
    (re.compile(r"answer\Z"), lambda m, p, t: t("numbers.trace.answer")),
    (re.compile(r"play (\S+), then hang up\Z"), lambda m, p, t: t("numbers.trace.play_hangup", prompt=prompt_text(p, m.group(1)))),
    (re.compile(r"play (\S+)\Z"), lambda m, p, t: t("numbers.trace.play", prompt=prompt_text(p, m.group(1)))),
    (re.compile(r"action: (.+)\Z"), lambda m, p, t: t("numbers.trace.action", what=_describe_text(m.group(1), p, t))),
    (re.compile(r"menu (\S+): no input \(try (\d+) of (\d+)\)\Z"),
     lambda m, p, t: t("numbers.trace.menu_silent", menu=m.group(1), n=m.group(2), of=m.group(3))),
    (re.compile(r"menu (\S+): pressed (\S+) -> (.+)\Z"),
     lambda m, p, t: t("numbers.trace.menu_pressed", menu=m.group(1), digit=m.group(2)) + " → " + _describe_text(m.group(3), p, t)),
    (re.compile(r"menu (\S+): pressed (\S+), not an option \(try (\d+) of (\d+)\)\Z"),
     lambda m, p, t: t("numbers.trace.menu_wrong", menu=m.group(1), digit=m.group(2), n=m.group(3), of=m.group(4))),
    (re.compile(r"round robin: turn (\d+), starting at (\S+)\Z"),
     lambda m, p, t: t("numbers.trace.round_robin", turn=int(m.group(1)) + 1, line=_who(p, m.group(2)))),
    (re.compile(r"least recent: (.+)\Z"),
     lambda m, p, t: t("numbers.trace.least_recent", lines=t("numbers.sep.list").join(_who(p, x.strip()) for x in m.group(1).split(",")))),
    (re.compile(r"recording to .+\Z"), lambda m, p, t: t("numbers.trace.recording")),
    (re.compile(r"recording could not be started"), lambda m, p, t: t("numbers.trace.recording_failed")),
    (re.compile(r"hunt group (\S+): (\S+), (\d+) lines"),
     lambda m, p, t: t("numbers.trace.hunt", group=m.group(1), strategy=_strategy_word(m.group(2), t), count=m.group(3))),
    (re.compile(r"ring budget of (\d+)s spent\Z"), lambda m, p, t: t("numbers.trace.budget", seconds=m.group(1))),
    (re.compile(r"line (\S+): at its limit of (\d+) calls, skipped\Z"),
     lambda m, p, t: t("numbers.trace.full", line=_who(p, m.group(1)), calls=m.group(2))),
    (re.compile(r"line (\S+) \(.*, \d+s\): (\S+) after (\d+)s ringing"),
     lambda m, p, t: t("numbers.trace.dial", line=_who(p, m.group(1)), ring=m.group(3), status=_status(m.group(2), t))),
    (re.compile(r"ring all (\d+) lines \(\d+s\): (\S+) after (\d+)s\Z"),
     lambda m, p, t: t("numbers.trace.ring_all", count=m.group(1), ring=m.group(3), status=_status(m.group(2), t))),
    (re.compile(r"(\S+) does not fail over in this group\Z"), lambda m, p, t: t("numbers.trace.no_failover", status=_status(m.group(1), t))),
    (re.compile(r"no line answered: (\S+)\Z"),
     lambda m, p, t: _word(t, f"numbers.trace.nobody.{m.group(1)}", m.group(0))),
    (re.compile(r"voicemail (\S+): play \S+, record up to (\d+)s\Z"), lambda m, p, t: t("numbers.trace.voicemail", seconds=m.group(2))),
    (re.compile(r"no message recorded\Z"), lambda m, p, t: t("numbers.trace.no_message")),
    (re.compile(r"more than \d+ steps"), lambda m, p, t: t("numbers.trace.too_many")),
    (re.compile(r"result: (\S+) \(.*\)\Z"), lambda m, p, t: t("numbers.trace.result", what=_disposition(m.group(1), t))),
)


def _word(t: T, key: str, fallback: str) -> str:
    word = t(key)
    return fallback if word == key else word


def _strategy_word(strategy: str, t: T) -> str:
    word = t("numbers.strategy." + strategy)
    return strategy if word.startswith("numbers.") else word


def _disposition(disposition: str, t: T) -> str:
    word = t("numbers.disposition." + disposition)
    return disposition if word.startswith("numbers.") else word


def _ivr_path(path: tuple[str, ...], t: T) -> str:
    steps = []
    for step in path:
        menu, _, key = step.partition(":")
        steps.append(f"{menu} · " + (t("numbers.flow.no_key") if key == "-" else t("numbers.flow.key", digit=key)))
    return " → ".join(steps)


def explain_view(result: RouteResult, plan: NumberPlan, t: T) -> ExplainView:
    lines = _lines_by_id(plan)
    rings = []
    for i, a in enumerate(result.attempts, 1):
        line = lines.get(a.line_id)
        rings.append(RingRow(i, line_name(line) if line else a.line_id, line_phone(line, t) if line else "",
                             _status(a.status, t), t("numbers.seconds", seconds=a.ring_seconds)))
    return ExplainView(
        outcome=_disposition(result.disposition, t),
        answered_by=_who(plan, result.answered_line) if result.answered_line else None,
        path=_ivr_path(result.ivr_path, t),
        rings=tuple(rings),
        steps=tuple(trace_step(step, plan, t) for step in _told_once(result.trace)),
    )


def _told_once(trace: tuple[str, ...]) -> list[str]:
    """The trace without an "action: X" that only repeats the menu choice just before it ("pressed 1 -> X")."""
    kept: list[str] = []
    for step in trace:
        if step.startswith("action: ") and kept and kept[-1].endswith(" -> " + step.removeprefix("action: ")):
            continue
        kept.append(step)
    return kept


@dataclass(frozen=True)
class ExplainForm:
    caller: str
    at: str
    digits: str
    answer: str


def _form_of(request: web.Request, plan: NumberPlan, service: ServiceConfig, now: datetime) -> ExplainForm:
    q = request.query
    default_at = now.astimezone(plan_zone(plan, service)).strftime("%Y-%m-%dT%H:%M")
    return ExplainForm(caller=q.get("caller", "")[:41].strip(), at=q.get("at", default_at)[:40].strip() or default_at,
                       digits=q.get("digits", "")[:MAX_DIGITS_FIELD + 1].strip(), answer="first" if q.get("answer") == "first" else "none")


def _question(form: ExplainForm, plan: NumberPlan, service: ServiceConfig) -> tuple[str | None, Question | None]:
    """(error key, None) or (None, the question for the dry run)."""
    caller = form.caller
    if caller and not _PHONE.match(caller):
        return "numbers.explain.bad_caller", None
    try:
        at = local_time(form.at, plan_zone(plan, service))
    except ValueError:
        return "numbers.explain.bad_time", None
    if len(form.digits) > MAX_DIGITS_FIELD:
        return "numbers.explain.bad_digits", None
    digits = split_digits([form.digits.replace("，", ",")]) if form.digits else ()
    if any(not _KEYS.match(d) for d in digits):
        return "numbers.explain.bad_digits", None
    outcome = LineOutcome.parse("ANSWER" if form.answer == "first" else "NOANSWER")
    return None, Question(caller=caller or "unknown", at=at, digits=digits, default_line=outcome)


async def _run(request: web.Request, plan: NumberPlan, service: ServiceConfig, question: Question) -> RouteResult:
    """The dry run with what the routers know now: the database's blacklist and each line's health."""
    deps = console_deps(request)
    snapshot = await deps.admin.blacklist.snapshot(question.at)
    keys = plan_keys(plan, service.dialing.template)
    health = await deps.admin.line_health(keys) if deps.admin.line_health is not None else await read_lines(deps.engine, keys)
    return explain(plan, service, Question(
        caller=question.caller, at=question.at, digits=question.digits, default_line=question.default_line,
        runtime_blacklist=snapshot.for_number(plan.number), health=dict(health),
    ))


# -- handlers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberCard:
    number: str
    name: str | None  # None: no plan loaded for it
    hours: str
    entry: str
    groups: tuple[str, ...]


def _visible(scope: Scope, plans: Mapping[str, NumberPlan]) -> list[str]:
    if scope.numbers is None:
        return sorted(plans)
    return sorted(scope.numbers)


async def numbers_page(request: web.Request) -> web.StreamResponse:
    scope = require(request, READ)
    config = console_deps(request).holder.current
    t = translator(pick_language(request))
    cards = []
    for number in _visible(scope, config.plans):
        plan = config.plans.get(number)
        if plan is None:
            cards.append(NumberCard(number, None, "", "", ()))
            continue
        groups = tuple(f"{name}（{t('numbers.strategy.' + g.strategy)}）" for name, g in plan.hunt_groups.items())
        cards.append(NumberCard(number, plan.name, hours_summary(plan, t), describe_action(plan.entry, t, plan), groups))
    return render(request, "numbers.html", {"cards": cards})


async def number_page(request: web.Request) -> web.StreamResponse:
    scope = require(request, READ)
    number = request.match_info["number"]
    deps = console_deps(request)
    config = deps.holder.current
    if not (number.isdigit() and len(number) <= 20 and scope.allows(number)):
        raise not_found()  # another tenant's number: the same as one that does not exist
    plan = config.plans.get(number)
    if plan is None:
        if scope.numbers is None:
            raise not_found()
        return render(request, "numbers_plan.html", await _with_lines(request, number, _detail_context(request, number, None, None, None, None)))
    t = translator(pick_language(request))
    form = _form_of(request, plan, config.service, deps.now())
    error = result = None
    if "at" in request.query or "caller" in request.query:
        error_key, question = _question(form, plan, config.service)
        if error_key is not None:
            error = t(error_key)
        elif question is not None:
            result = explain_view(await _run(request, plan, config.service, question), plan, t)
    view = plan_view(plan, config.service, t)
    return render(request, "numbers_plan.html", await _with_lines(request, number, _detail_context(request, number, view, form, error, result)),
                  status=422 if error else 200)


async def _with_lines(request: web.Request, number: str, context: dict[str, object]) -> dict[str, object]:
    """The number's line health (issue 16) beside its picture: "5 条线路中 4 条正常"."""
    return {**context, "lines": await line_summaries(request, [number])}


def _detail_context(request: web.Request, number: str, view: PlanView | None, form: ExplainForm | None, error: str | None,
                    result: ExplainView | None) -> dict[str, object]:
    scope = require(request, READ)
    saved = request.query.get("saved", "")
    return {"number": number, "view": view, "form": form, "error": error, "result": result, "num": num,
            "nav": nav_items(scope, pick_language(request), "numbers"),
            # issue 14: edit links for who may change the plan, "已生效（版本 N）" after a save, the version it runs
            "can_edit": scope.can(PLANS) and view is not None, "saved": saved if saved.isdigit() and len(saved) < 10 else None,
            "running_version": console_deps(request).holder.current.version_of(number)}
