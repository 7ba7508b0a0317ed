"""Typical calls run on the old and the new plan, each said as a sentence: what a change does to callers. Pure.

`typical_calls(old, new, service, now)` dry-runs (routing/explain.py, as `callrouter explain` and the number
page's form do) a handful of calls a reviewer would think of, on both plans:

* each menu key path from the entry menu (into sub-menus), and a caller pressing nothing, on the next
  Tuesday at 10:30 (not a holiday or special day of either plan);
* a call outside hours (the first closed half hour from that Tuesday 20:00), if either plan has hours;
* for each weekday whose hours changed, the first half hour that is open in one plan and closed in the other;
* a holiday of the plans (the next one, or each holiday added or removed), at 10:30;

and says each: "按 1 的来电（周二 10:30）：原先依次呼叫 张伟、李娜；现在依次呼叫 王芳、张伟".

Deterministic: the clock (`now`) and the random seed are parameters; nobody answers (so the whole ring
order shows); every line counts as healthy; round robin is counted from line 1 of each group, as the
number page's form does, and a call that rings such a group carries a note saying so (likewise random
orders: one possible order).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Iterator
from zoneinfo import ZoneInfo

from callrouter.config.plan import NumberPlan
from callrouter.config.service import ServiceConfig
from callrouter.model.record import RouteResult
from callrouter.plans.diff import day_ranges, prompt_words
from callrouter.plans.phrase import Joined, Part, Phrase
from callrouter.routing.explain import Question, explain, plan_zone
from callrouter.routing.hours import check_hours

CALLER = "13912345678"
TUESDAY = 1
MAX_PATHS = 12  # key paths tried per plan (a deep IVR tree shows its first branches)
MAX_DATES = 3  # holidays / special days tried
_HALF_HOUR = timedelta(minutes=30)
_HUNT = re.compile(r"hunt group \S+: (\S+), ")  # the engine's trace of each hunt: its strategy
_NOTES = {"round_robin": "impact.note.round_robin", "random": "impact.note.random", "weighted": "impact.note.random",
          "least_recent": "impact.note.least_recent"}


@dataclass(frozen=True)
class Outcome:
    """What one call did on one plan (compared as a whole to tell a changed call)."""

    closed: bool  # outside hours
    rings: tuple[str, ...]  # line ids rung, in order
    together: bool  # rung at once (ring_all)
    end: str  # the action the call ended on: "voicemail", "play:<prompt>", "hangup", "answered", ...
    said: Phrase  # in words: 依次呼叫 张伟、李娜，无人接听则留言
    strategies: tuple[str, ...] = ()  # of the groups hunted (for the notes; not part of the comparison)


@dataclass(frozen=True)
class CallImpact:
    label: Phrase  # 按 1 的来电 / 不按键的来电 / 非工作时间的来电 / 节假日的来电
    at: datetime  # aware, the plan's time zone
    when: Phrase  # 周二 10:30 (with the date for holidays and special days)
    digits: tuple[str, ...]  # one entry per menu prompt
    before: Outcome | None  # None: there is no old plan
    after: Outcome
    changed: bool
    notes: tuple[Phrase, ...]  # e.g. "round robin counted from line 1"
    sentence: Phrase  # the whole sentence, said with `sentence.say(t)`


def typical_calls(old: NumberPlan | None, new: NumberPlan, service: ServiceConfig, now: datetime, *, seed: int = 0,
                  caller: str = CALLER) -> tuple[CallImpact, ...]:
    """The typical calls of both plans, changed ones included; `now` (aware) picks the dates."""
    zone = plan_zone(new, service)
    plans = [p for p in (old, new) if p is not None]
    today = now.astimezone(zone).date()
    tuesday = _plain_day(plans, _next_weekday(today, TUESDAY))
    at = datetime.combine(tuesday, time(10, 30), zone)
    calls: list[tuple[Phrase, datetime, Phrase, tuple[str, ...]]] = []
    paths: list[tuple[str, ...]] = []
    for plan in plans:
        for path in _key_paths(plan):
            if path not in paths:
                paths.append(path)
    for path in paths:
        calls.append((_keys_label(path), at, _when(at, False), path))
    if any(p.menus and p.entry.kind == "menu" for p in plans):
        calls.append((Phrase("impact.call.no_key"), at, _when(at, False), ()))
    elif not paths:
        calls.append((Phrase("impact.call.plain"), at, _when(at, False), ()))
    closed = _closed_slot(plans, datetime.combine(tuesday, time(20, 0), zone))
    if closed is not None:
        calls.append((Phrase("impact.call.after_hours"), closed, _when(closed, False), ()))
    if old is not None:
        for slot in _changed_hours(old, new, tuesday, zone):
            calls.append((Phrase("impact.call.hours_changed"), slot, _when(slot, False), ()))
    for day in _dates_to_try(old, new, today):
        slot = datetime.combine(day, time(10, 30), zone)
        calls.append((Phrase("impact.call.holiday"), slot, _when(slot, True), ()))
    return tuple(_impact(old, new, service, label, when_at, when, digits, seed, caller) for label, when_at, when, digits in calls)


def _impact(old: NumberPlan | None, new: NumberPlan, service: ServiceConfig, label: Phrase, at: datetime, when: Phrase,
            digits: tuple[str, ...], seed: int, caller: str) -> CallImpact:
    question = Question(caller=caller, at=at, digits=digits, seed=seed)
    after_result = explain(new, service, question)
    after = outcome(new, service, at, after_result)
    before = outcome(old, service, at, explain(old, service, question)) if old is not None else None
    changed = before is not None and _key(before) != _key(after)
    strategies = after.strategies + (before.strategies if before is not None else ())
    notes = tuple(Phrase(_NOTES[s]) for s in dict.fromkeys(strategies) if s in _NOTES)
    if before is None:
        sentence = Phrase.of("impact.sentence.new", label=label, when=when, now=after.said)
    elif changed:
        sentence = Phrase.of("impact.sentence.changed", label=label, when=when, was=before.said, now=after.said)
    else:
        sentence = Phrase.of("impact.sentence.same", label=label, when=when, now=after.said)
    return CallImpact(label, at, when, digits, before, after, changed, notes, sentence)


def _key(o: Outcome) -> tuple[bool, tuple[str, ...], bool, str]:
    return o.closed, o.rings, o.together, o.end


def outcome(plan: NumberPlan, service: ServiceConfig, at: datetime, result: RouteResult) -> Outcome:
    """A dry run's result in words: where the call went, who rang in which order, how it ended."""
    closed = not check_hours(plan.schedule, plan_zone(plan, service).key, at).open
    rung = tuple(a.line_id for a in result.attempts if a.status != "FULL")
    together = result.strategy == "ring_all" and bool(rung)
    end = _end(result)
    names = Joined(tuple(_name(plan, line_id) for line_id in dict.fromkeys(rung)))
    parts: list[Part] = []
    if closed:
        parts.append(Phrase("impact.out.closed"))
    if rung:
        parts.append(Phrase.of("impact.out.ring_all" if together else ("impact.out.ring_one" if len(names.parts) == 1 else "impact.out.rings"),
                               lines=names))
    parts.append(_end_words(plan, end, bool(rung)))
    strategies = tuple(m.group(1) for m in map(_HUNT.match, result.trace) if m is not None)
    return Outcome(closed, rung, together, end, Phrase.of("impact.out", parts=Joined(tuple(parts), "impact.sep")), strategies)


def _end(result: RouteResult) -> str:
    """The last action the trace shows that ends a call (after any hunts), or the disposition."""
    if result.disposition == "answered":
        return "answered"
    final = "hangup"
    for step in result.trace:
        if step.startswith("action: voicemail"):
            final = "voicemail"
        elif step.startswith("action: play: "):
            final = "play:" + step.removeprefix("action: play: ")
        elif step.startswith("action: hangup"):
            final = "hangup"
        elif step.startswith("action: hunt"):
            final = "hangup"  # a hunt nobody answers ends the call unless another action follows
    if final == "voicemail" and result.disposition not in ("voicemail", "after_hours"):
        final = "hangup"
    return final


def _end_words(plan: NumberPlan, end: str, rang: bool) -> Phrase:
    prefix = "impact.end.after_rings." if rang else "impact.end."
    if end.startswith("play:"):
        return Phrase.of(prefix + "play", text=prompt_words(plan, end.removeprefix("play:")))
    return Phrase(prefix + end)


def _name(plan: NumberPlan, line_id: str) -> str:
    for group in plan.hunt_groups.values():
        for line in group.lines:
            if line.id == line_id:
                return line.name or line.id
    return line_id


# -- which calls -----------------------------------------------------------------------------------


def _key_paths(plan: NumberPlan) -> list[tuple[str, ...]]:
    """Key paths from the entry menu to each destination (sub-menus followed; repeat and back are no destination)."""
    found: list[tuple[str, ...]] = []
    if plan.entry.kind != "menu" or plan.entry.target not in plan.menus:
        return found

    def walk(menu: str, path: tuple[str, ...], seen: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        for key, action in plan.menus[menu].options.items():
            if action.kind in ("repeat", "back"):
                continue
            if action.kind == "menu" and action.target in plan.menus and action.target not in seen:
                yield from walk(action.target, path + (key,), seen + (action.target,))
            else:
                yield path + (key,)

    for path in walk(plan.entry.target, (), (plan.entry.target,)):
        if len(found) == MAX_PATHS:
            break
        found.append(path)
    return found


def _keys_label(path: tuple[str, ...]) -> Phrase:
    return Phrase.of("impact.call.keys", keys=Joined(path, "impact.sep.then"))


def _when(at: datetime, with_date: bool) -> Phrase:
    clock = at.strftime("%H:%M")
    day = Phrase(f"numbers.weekday.{at.weekday()}")
    if with_date:
        return Phrase.of("impact.when.dated", date=at.date().isoformat(), day=day, clock=clock)
    return Phrase.of("impact.when", day=day, clock=clock)


def _next_weekday(day: date, weekday: int) -> date:
    return day + timedelta(days=(weekday - day.weekday()) % 7 or 7)


def _special(plans: list[NumberPlan], day: date) -> bool:
    return any(day in p.schedule.holidays or day in p.schedule.special_days for p in plans)


def _plain_day(plans: list[NumberPlan], day: date) -> date:
    """`day`, or the same weekday of a later week, that is no holiday or special day of any plan."""
    for _ in range(52):
        if not _special(plans, day):
            return day
        day += timedelta(days=7)
    return day


def _open(plan: NumberPlan, at: datetime) -> bool:
    return check_hours(plan.schedule, str(at.tzinfo), at).open


def _closed_slot(plans: list[NumberPlan], start: datetime) -> datetime | None:
    """The first half hour of the week from `start` closed in the new plan (else in the old), not on a special date."""
    if all(p.schedule.weekly is None for p in plans):
        return None
    for plan in reversed(plans):  # the new plan first
        slot = start
        for _ in range(7 * 48):
            if not _special(plans, slot.date()) and not _open(plan, slot):
                return slot
            slot += _HALF_HOUR
    return None


def _changed_hours(old: NumberPlan, new: NumberPlan, tuesday: date, zone: ZoneInfo) -> list[datetime]:
    """For each weekday whose hours differ, the first half hour open in one plan and closed in the other."""
    slots: list[datetime] = []
    for weekday, (a, b) in enumerate(zip(day_ranges(old), day_ranges(new))):
        if a == b:
            continue
        day = _plain_day([old, new], tuesday + timedelta(days=(weekday - TUESDAY) % 7))
        slot = datetime.combine(day, time(0), zone)
        for _ in range(48):
            if _open(old, slot) != _open(new, slot):
                slots.append(slot)
                break
            slot += _HALF_HOUR
    return slots


def _dates_to_try(old: NumberPlan | None, new: NumberPlan, today: date) -> list[date]:
    """Holidays and special days added, removed or changed; else the plan's next holiday (or its last)."""
    if old is not None:
        changed = sorted(set(old.schedule.holidays) ^ set(new.schedule.holidays))
        both = old.schedule.special_days.keys() | new.schedule.special_days.keys()
        changed += sorted(d for d in both if old.schedule.special_days.get(d) != new.schedule.special_days.get(d))
        if changed:
            return list(dict.fromkeys(changed))[:MAX_DATES]
    holidays = sorted(set(new.schedule.holidays) | set(old.schedule.holidays if old is not None else ()))
    if not holidays:
        return []
    coming = [d for d in holidays if d >= today]
    return [coming[0] if coming else holidays[-1]]
