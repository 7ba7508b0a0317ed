"""What changed between two versions of a plan, for the people who approve it. Pure: no IO.

Two views of one change:

* `line_diff(old_text, new_text)`: the YAML documents line by line, as hunks of kept (" "), removed ("-")
  and added ("+") lines with their line numbers, for a template to colour (comments count: they are
  part of what ops wrote);
* `plan_changes(old, new)`: what changes *for callers*, one `Phrase` per change, said in the page's
  language with `phrase.say(t)`: "坐席组「sales」接听顺序：王芳、张伟、李娜（原为 张伟、李娜、王芳）",
  "周六 营业时间 10:00-16:00 → 休息", "语音菜单「main」按 3 → 坐席组「after_sales」（原为 坐席组「complaints」）".
  `summary_text(changes, t)` joins them for a version's `summary`.

Both take validated plans (config/plan.NumberPlan), so a default written out ("strategy: sequential")
or a reordered mapping is no change, and a phone written two ways is one number.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date, time
from typing import Any, Iterable, Literal

from callrouter.config.plan import Action, HuntGroup, Line, Menu, NumberPlan
from callrouter.plans.phrase import Joined, Part, Phrase, T
from callrouter.routing.health import masked

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAY: tuple[tuple[time, time], ...] = ((time(0), time.max),)
# Fields of a plan said as "其他设置已修改：…" (each is its own page or file section, not a call path).
OTHER_FIELDS = ("blacklist", "notify", "crm_lookup", "package", "line_health", "voicemail")


# -- the YAML, line by line -------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffLine:
    op: Literal[" ", "-", "+"]
    old_no: int | None  # 1-based line number in the old text (None for an added line)
    new_no: int | None  # in the new text (None for a removed line)
    text: str


@dataclass(frozen=True)
class DiffHunk:
    old_start: int  # first old line shown (1-based)
    new_start: int
    lines: tuple[DiffLine, ...]


def line_diff(old_text: str, new_text: str, context: int = 3) -> tuple[DiffHunk, ...]:
    """The changed lines with `context` unchanged lines around them; () when the texts are the same."""
    old, new = old_text.splitlines(), new_text.splitlines()
    hunks = []
    for group in difflib.SequenceMatcher(None, old, new, autojunk=False).get_grouped_opcodes(context):
        lines: list[DiffLine] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines.extend(DiffLine(" ", i + 1, j + 1, old[i]) for i, j in zip(range(i1, i2), range(j1, j2)))
                continue
            lines.extend(DiffLine("-", i + 1, None, old[i]) for i in range(i1, i2))
            lines.extend(DiffLine("+", None, j + 1, new[j]) for j in range(j1, j2))
        hunks.append(DiffHunk(group[0][1] + 1, group[0][3] + 1, tuple(lines)))
    return tuple(hunks)


# -- what changes for callers -----------------------------------------------------------------------


def quoted(text: str) -> Phrase:
    return Phrase.of("diff.quoted", text=text)


def prompt_words(plan: NumberPlan, prompt: str | None) -> Part:
    """A prompt as people know it: what it says (the plan's `prompts` wording), else its name."""
    if prompt is None:
        return Phrase("diff.none")
    return quoted(plan.prompts.get(prompt) or prompt)


def action_words(action: Action | None, plan: NumberPlan) -> Phrase:
    """An action, short: 坐席组「sales」, 语音菜单「main」, 播放「…」后挂机, 留言, 直接挂机."""
    if action is None or action.kind == "hangup":
        return Phrase("numbers.action.hangup")
    target = action.target or ""
    if action.kind == "hunt":
        return group_words(target)
    if action.kind == "menu":
        return Phrase.of("numbers.action.menu", name=target)
    if action.kind == "play":
        return Phrase.of("numbers.action.play", text=plan.prompts.get(target) or target)
    if action.kind == "voicemail":
        box = plan.voicemail.get(target)
        return Phrase.of("numbers.action.voicemail", seconds=str(box.max_seconds) if box else "?")
    return Phrase(f"numbers.action.{action.kind}")  # repeat, back


def group_words(name: str) -> Phrase:
    return Phrase.of("diff.group", name=name)


def menu_words(name: str) -> Phrase:
    return Phrase.of("diff.menu", name=name)


def weekday_words(day: int) -> Phrase:
    return Phrase(f"numbers.weekday.{day}")


def _clock(value: time) -> str:
    return "24:00" if value == time.max else value.strftime("%H:%M")


def ranges_words(ranges: tuple[tuple[time, time], ...]) -> Part:
    if ranges == ALL_DAY:
        return Phrase("numbers.hours.all_day")
    if not ranges:
        return Phrase("numbers.hours.closed_day")
    return Joined(tuple(f"{_clock(a)}-{_clock(b)}" for a, b in ranges))


def day_ranges(plan: NumberPlan) -> list[tuple[tuple[time, time], ...]]:
    """Open ranges per weekday, Monday first; no weekly hours at all is open around the clock."""
    weekly = plan.schedule.weekly
    return [ALL_DAY] * 7 if weekly is None else [weekly.for_weekday(d) for d in range(7)]


def seconds(value: float) -> Phrase:
    return Phrase.of("numbers.seconds", seconds=f"{value:g}")


def line_label(line: Line) -> str:
    return line.name or line.id


def line_phone(line: Line) -> str:
    return masked(line.number) if line.number is not None else line.target or ""


def _was(words: str, old: Part, new: Part, /, **where: Part) -> Phrase:
    """"… {old} → {new}" sentences: every change of a value reads the same way."""
    return Phrase.of(words, old=old, new=new, **where)


def plan_changes(old: NumberPlan | None, new: NumberPlan) -> tuple[Phrase, ...]:
    """Each change for callers, in the plan's order: hours, greeting, entry, menus, groups, prompts, the rest."""
    if old is None:
        return (Phrase("diff.change.first"),)
    out: list[Phrase] = []
    if old.name != new.name:
        out.append(_was("diff.change.name", old.name, new.name))
    if (old.timezone or "") != (new.timezone or ""):
        out.append(_was("diff.change.timezone", old.timezone or "-", new.timezone or "-"))
    out += _hours_changes(old, new)
    if old.after_hours != new.after_hours:
        out.append(_was("diff.change.after_hours", action_words(old.after_hours, old), action_words(new.after_hours, new)))
    out += _prompt_use("diff.change.greeting", "diff.change.greeting_audio", old, new, old.greeting, new.greeting)
    if old.recording.enabled != new.recording.enabled:
        out.append(Phrase("diff.change.recording_on" if new.recording.enabled else "diff.change.recording_off"))
    if new.recording.enabled:
        out += _prompt_use("diff.change.recording_notice", "diff.change.recording_notice_audio", old, new,
                           old.recording.announcement if old.recording.enabled else None, new.recording.announcement)
    if old.entry != new.entry:
        out.append(_was("diff.change.entry", action_words(old.entry, old), action_words(new.entry, new)))
    out += _named(old.menus, new.menus, "diff.change.menu_added", "diff.change.menu_removed", menu_words,
                  lambda name, a, b: _menu_changes(name, a, b, old, new))
    out += _named(old.hunt_groups, new.hunt_groups, "diff.change.group_added", "diff.change.group_removed", group_words,
                  lambda name, a, b: _group_changes(name, a, b, old, new))
    out += _prompt_texts(old, new, _told_by_menus(old, new))
    for field in OTHER_FIELDS:
        if getattr(old, field) != getattr(new, field):
            out.append(Phrase.of("diff.change.other", what=Phrase(f"diff.field.{field}")))
    return tuple(out)


def summary_text(changes: Iterable[Phrase], t: T) -> str:
    """The changes as one line ("…；…"), or "没有变化" / "no change"."""
    said = [change.say(t) for change in changes]
    return t("numbers.sep.clause").join(said) if said else t("diff.change.none")


def _hours_changes(old: NumberPlan, new: NumberPlan) -> list[Phrase]:
    out = []
    for day, (a, b) in enumerate(zip(day_ranges(old), day_ranges(new))):
        if a != b:
            out.append(_was("diff.change.day_hours", ranges_words(a), ranges_words(b), day=weekday_words(day)))
    added = sorted(set(new.schedule.holidays) - set(old.schedule.holidays))
    removed = sorted(set(old.schedule.holidays) - set(new.schedule.holidays))
    if added:
        out.append(Phrase.of("diff.change.holidays_added", dates=_dates(added)))
    if removed:
        out.append(Phrase.of("diff.change.holidays_removed", dates=_dates(removed)))
    before, after = old.schedule.special_days, new.schedule.special_days
    for when in sorted(before.keys() | after.keys()):
        if when not in before:
            out.append(Phrase.of("diff.change.special_added", date=when.isoformat(), hours=_special(after[when])))
        elif when not in after:
            out.append(Phrase.of("diff.change.special_removed", date=when.isoformat()))
        elif before[when] != after[when]:
            out.append(_was("diff.change.special_changed", _special(before[when]), _special(after[when]), date=when.isoformat()))
    return out


def _dates(days: list[date]) -> Joined:
    return Joined(tuple(d.isoformat() for d in days))


def _special(ranges: tuple[tuple[time, time], ...]) -> Part:
    return ranges_words(ranges) if ranges else Phrase("numbers.hours.special_closed")


def _prompt_use(words: str, audio_words: str, old: NumberPlan, new: NumberPlan, a: str | None, b: str | None, **where: Part) -> list[Phrase]:
    """A prompt slot (greeting, notice, a menu's prompt) now playing another prompt: by its wording, or,
    when the wording is the same, as a new recording ("改用新的录音")."""
    if a == b:
        return []
    if a is not None and b is not None and (old.prompts.get(a) or a) == (new.prompts.get(b) or b):
        return [Phrase.of(audio_words, old=a, new=b, **where)]
    return [_was(words, prompt_words(old, a), prompt_words(new, b), **where)]


def _named(old: dict[str, Any], new: dict[str, Any], added: str, removed: str, words: Any, changed: Any) -> list[Phrase]:
    """Added, removed and changed entries of a name -> part mapping (menus, hunt groups), old order first."""
    out: list[Phrase] = []
    for name in list(old) + [n for n in new if n not in old]:
        if name not in new:
            out.append(Phrase.of(removed, what=words(name)))
        elif name not in old:
            out.append(Phrase.of(added, what=words(name)))
        else:  # compared part by part (a menu's wording may change in `prompts:` alone)
            out += changed(name, old[name], new[name])
    return out


def _menu_changes(name: str, a: Menu, b: Menu, old: NumberPlan, new: NumberPlan) -> list[Phrase]:
    menu = menu_words(name)
    out: list[Phrase] = []
    said_a, said_b = a.text or old.prompts.get(a.prompt), b.text or new.prompts.get(b.prompt)
    if said_a != said_b:
        out.append(_was("diff.change.menu_text", quoted(said_a or a.prompt), quoted(said_b or b.prompt), menu=menu))
    elif a.prompt != b.prompt:
        out.append(Phrase.of("diff.change.menu_audio", menu=menu, old=a.prompt, new=b.prompt))
    for key in list(a.options) + [k for k in b.options if k not in a.options]:
        before, after = a.options.get(key), b.options.get(key)
        if after is None:
            out.append(Phrase.of("diff.change.key_removed", menu=menu, digit=key, old=action_words(before, old)))
        elif before is None:
            out.append(Phrase.of("diff.change.key_added", menu=menu, digit=key, new=action_words(after, new)))
        elif before != after:
            out.append(_was("diff.change.key", action_words(before, old), action_words(after, new), menu=menu, digit=key))
    if a.on_timeout != b.on_timeout:
        out.append(_was("diff.change.no_key", action_words(a.on_timeout, old), action_words(b.on_timeout, new), menu=menu))
    if (a.on_invalid or a.on_timeout) != (b.on_invalid or b.on_timeout):
        out.append(_was("diff.change.wrong_key", action_words(a.on_invalid or a.on_timeout, old),
                        action_words(b.on_invalid or b.on_timeout, new), menu=menu))
    if a.timeout != b.timeout:
        out.append(_was("diff.change.menu_timeout", seconds(a.timeout), seconds(b.timeout), menu=menu))
    if a.retries != b.retries:
        out.append(_was("diff.change.menu_retries", str(a.retries), str(b.retries), menu=menu))
    rest = ("max_digits", "invalid_prompt", "timeout_prompt")
    if any(getattr(a, f) != getattr(b, f) for f in rest):
        out.append(Phrase.of("diff.change.menu_other", menu=menu))
    return out


def _group_changes(name: str, a: HuntGroup, b: HuntGroup, old: NumberPlan, new: NumberPlan) -> list[Phrase]:
    group = group_words(name)
    out: list[Phrase] = []
    if a.strategy != b.strategy:
        out.append(_was("diff.change.strategy", Phrase(f"numbers.strategy.{a.strategy}"), Phrase(f"numbers.strategy.{b.strategy}"), group=group))
    before = {line.id: line for line in a.lines}
    after = {line.id: line for line in b.lines}
    kept_a = [i for i in before if i in after]
    kept_b = [i for i in after if i in before]
    if kept_a != kept_b:
        out.append(_was("diff.change.order", Joined(tuple(line_label(x) for x in a.lines)), Joined(tuple(line_label(x) for x in b.lines)),
                        group=group))
    for line in b.lines:
        if line.id not in before:
            out.append(Phrase.of("diff.change.line_added", group=group, line=line_label(line), phone=line_phone(line)))
    for line in a.lines:
        if line.id not in after:
            out.append(Phrase.of("diff.change.line_removed", group=group, line=line_label(line)))
    for line_id in kept_b:
        out += _line_changes(group, before[line_id], after[line_id])
    if a.ring_budget != b.ring_budget:
        out.append(_was("diff.change.budget", seconds(a.ring_budget), seconds(b.ring_budget), group=group))
    if a.on_failure != b.on_failure:
        out.append(_was("diff.change.on_failure", action_words(a.on_failure, old), action_words(b.on_failure, new), group=group))
    if a.failover_on != b.failover_on or a.dial_options != b.dial_options:
        out.append(Phrase.of("diff.change.group_other", group=group))
    return out


def _line_changes(group: Phrase, a: Line, b: Line) -> list[Phrase]:
    out: list[Phrase] = []
    who = line_label(b)
    if a.enabled != b.enabled:
        out.append(Phrase.of("diff.change.line_enabled" if b.enabled else "diff.change.line_disabled", group=group, line=who))
    if line_label(a) != who:
        out.append(_was("diff.change.line_name", line_label(a), who, group=group))
    if line_phone(a) != line_phone(b) or a.number != b.number:
        out.append(_was("diff.change.line_phone", line_phone(a), line_phone(b), group=group, line=who))
    if a.ring_timeout != b.ring_timeout:
        out.append(_was("diff.change.line_ring", seconds(a.ring_timeout), seconds(b.ring_timeout), group=group, line=who))
    if a.max_calls != b.max_calls:
        out.append(_was("diff.change.line_calls", str(a.max_calls), str(b.max_calls), group=group, line=who))
    if a.weight != b.weight:
        out.append(_was("diff.change.line_weight", str(a.weight), str(b.weight), group=group, line=who))
    return out


def _told_by_menus(old: NumberPlan, new: NumberPlan) -> dict[str, str]:
    """Prompt -> the new wording a menu's change already says ("语音菜单「main」提示语：…"), not to say it twice."""
    told: dict[str, str] = {}
    for name, b in new.menus.items():
        a = old.menus.get(name)
        said = b.text or new.prompts.get(b.prompt)
        if a is not None and a.prompt == b.prompt and said is not None and (a.text or old.prompts.get(a.prompt)) != said:
            told[b.prompt] = said
    return told


def _prompt_texts(old: NumberPlan, new: NumberPlan, told: dict[str, str]) -> list[Phrase]:
    out: list[Phrase] = []
    for name in list(old.prompts) + [n for n in new.prompts if n not in old.prompts]:
        a, b = old.prompts.get(name), new.prompts.get(name)
        if a == b or (b is not None and told.get(name) == b):
            continue
        if b is None:
            out.append(Phrase.of("diff.change.prompt_removed", name=name))
        elif a is None:
            out.append(Phrase.of("diff.change.prompt_added", name=name, new=quoted(b)))
        else:
            out.append(_was("diff.change.prompt_text", quoted(a), quoted(b), name=name))
    return out
