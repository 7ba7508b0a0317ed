"""Edits of a plan's YAML text that keep everything else of it: comments, quoting, order, blank lines.

Every function takes the whole document as ops wrote it and returns the whole document with one part
changed, through ruamel.yaml's round-trip loader (never by dumping the pydantic model, which would drop
the comments). Untouched parts come out byte for byte: the indentation is read from the text itself and
lines are never re-wrapped. The result is not validated here: the caller gives it to
`plans.service.check_plan_text` (the validator `callrouter check` uses), which says what is wrong and where.

Input that cannot be written at all (a group or menu the plan does not have, more than MAX_LINES lines, a
phone number that is no phone number) raises `EditError` with the YAML path it concerns, so a form can
show it next to its field just as it shows the validator's issues.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from callrouter.model.phone import normalize_number

MAX_LINES = 20  # the hunt group's limit (config/plan.HuntGroup.lines)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STRATEGIES = ("sequential", "round_robin", "random", "ring_all", "weighted", "least_recent")
TARGETLESS = ("hangup", "repeat", "back")
_MOBILE = re.compile(r"1[3-9][0-9]{9}\Z")
_LANDLINE = re.compile(r"0[1-9][0-9]{8,10}\Z")  # area code with its 0, then 7 or 8 digits
_SERVICE = re.compile(r"[48]00[0-9]{7}\Z")  # 400 / 800 numbers
_SIP = re.compile(r"[A-Za-z][A-Za-z0-9]{1,15}/\S+\Z")
_ID = re.compile(r"[^A-Za-z0-9_\-]+")

Path = tuple[str | int, ...]


class EditError(ValueError):
    """An edit that cannot be written as asked; `path` is the YAML location it concerns."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True)
class LineEdit:
    """One row of a hunt group's lines table. `id` is empty for a new row (one is made from the name)."""

    id: str
    name: str
    destination: str  # a phone number in any usual form, or a SIP/dial target such as PJSIP/8001
    ring_timeout: int
    max_calls: int = 1
    enabled: bool = True


@dataclass(frozen=True)
class ActionEdit:
    """What a key, a timeout or after-hours does: kind (hunt, menu, play, voicemail, hangup, repeat, back)
    and its target (a group, menu, prompt or voicemail box; empty for the targetless kinds)."""

    kind: str
    target: str = ""

    @classmethod
    def parse(cls, value: str) -> "ActionEdit":
        """'hunt:sales' or 'hangup' (a form's select value)."""
        kind, _, target = value.partition(":")
        return cls(kind.strip(), target.strip())


# -- the document ----------------------------------------------------------------------------------


def _guess_indents(text: str) -> tuple[int, int, int]:
    """(mapping indent, sequence indent, dash offset) as the file is written, so a dump changes no line."""
    mapping: int | None = None
    offset: int | None = None
    sequence = 4
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for line, nxt in zip(lines, lines[1:]):
        body = line.split(" #", 1)[0].rstrip()
        if not body.endswith(":") or line.lstrip().startswith("- "):
            continue  # only a "key:" whose value starts on the next line shows the indentation
        parent = len(line) - len(line.lstrip(" "))
        child = len(nxt) - len(nxt.lstrip(" "))
        if nxt.lstrip().startswith("- "):
            if offset is None and child >= parent:
                offset = child - parent
                item = nxt.lstrip()[1:]
                gap = len(item) - len(item.lstrip(" "))  # "-   id: a": the item's text 4 columns after the dash
                sequence = offset + 1 + gap
        elif child > parent and mapping is None:
            mapping = child - parent
        if mapping is not None and offset is not None:
            break
    if offset is None:
        offset, sequence = 2, 4
    return mapping or 2, max(sequence, offset + 2), offset


def _yaml(text: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line (a wording, a comment)
    mapping, sequence, offset = _guess_indents(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def edit(text: str, change: Callable[[CommentedMap], None]) -> str:
    """Load `text` round-trip, let `change` alter the document in place, write it back."""
    yaml = _yaml(text)
    doc = yaml.load(text)
    if not isinstance(doc, CommentedMap):
        raise EditError((), "the plan is not a YAML mapping")
    change(doc)
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def q(value: str) -> DoubleQuotedScalarString:
    """A quoted string, as the files write phone numbers, times, dates and keys (never read as a number)."""
    quoted: DoubleQuotedScalarString = DoubleQuotedScalarString(value)
    return quoted


def _section(doc: CommentedMap, key: str) -> CommentedMap:
    """doc[key] as a mapping, made (block style) when the plan has none yet."""
    value = doc.get(key)
    if not isinstance(value, CommentedMap):
        value = CommentedMap()
        doc[key] = value
    return value


def _named(doc: CommentedMap, section: str, name: str) -> CommentedMap:
    table = doc.get(section)
    value = table.get(name) if isinstance(table, CommentedMap) else None
    if not isinstance(value, CommentedMap):
        raise EditError((section, name), f"the plan has no {section} entry named {name!r}")
    return value


def _tail_of(node: CommentedMap, key: Any) -> str:
    """The blank lines a scalar's end-of-line comment carries after itself (ruamel keeps them there)."""
    entry = node.ca.items.get(key)
    token = entry[2] if entry and len(entry) > 2 else None
    if token is None:
        return ""
    own, newline, tail = token.value.partition("\n")
    return tail if newline else ""


def _give_tail(node: CommentedMap, key: Any, tail: str) -> None:
    """Add blank lines after `key`'s line (when its value is a scalar: that is where ruamel writes them)."""
    if not tail or isinstance(node[key], (CommentedMap, CommentedSeq)):
        return
    entry = node.ca.items.get(key)
    token = entry[2] if entry and len(entry) > 2 else None
    if token is not None:
        token.value = token.value.rstrip("\n") + "\n" + tail if "\n" in token.value else token.value + "\n" + tail
    else:
        node.yaml_add_eol_comment("#", key)  # makes the token; it is then only the line's end and the blank lines
        fresh = node.ca.items[key][2]
        fresh.value = "\n" + tail


def _take_tail(node: CommentedMap, key: Any) -> str:
    tail = _tail_of(node, key)
    if tail:
        token = node.ca.items[key][2]
        own = token.value[: token.value.index("\n") + 1]
        if own.strip():
            token.value = own
        else:
            node.ca.items[key][2] = None
    return tail


def _drop(node: CommentedMap, key: Any) -> None:
    """Remove key; when it was the last one, the blank lines after it stay (after the new last key)."""
    if key not in node:
        return
    keys = list(node)
    tail = _take_tail(node, key) if keys[-1] == key and len(keys) > 1 else ""
    node.pop(key)
    if tail:
        _give_tail(node, keys[-2], tail)


def _set(node: CommentedMap, key: Any, value: Any) -> None:
    """Set key; a new key goes last, and the blank lines that followed the old last key follow it."""
    if key in node:
        node[key] = value
        return
    keys = list(node)
    tail = _take_tail(node, keys[-1]) if keys else ""
    node[key] = value
    if tail:
        _give_tail(node, key, tail)


def _set_or_drop(node: CommentedMap, key: str, value: Any, default: Any = None) -> None:
    """Write `key: value`, or remove the key when value is the default and the key was not written before."""
    if value == default and key not in node:
        return
    if value is None:
        _drop(node, key)
    else:
        _set(node, key, value)


def _flow_like(siblings: Sequence[Any], node: CommentedMap | CommentedSeq) -> CommentedMap | CommentedSeq:
    """A new node in the style of its siblings (flow `{...}` when they are)."""
    first = next((s for s in siblings if isinstance(s, (CommentedMap, CommentedSeq))), None)
    if first is None or first.fa.flow_style():
        node.fa.set_flow_style()
    return node


def _replace_items(seq: CommentedSeq, order: Sequence[int | None], new_items: Sequence[Any]) -> None:
    """seq's items become new_items; item `order[i]` of the old list moves its comment with it (None: new).

    The comment after the old last item also carries the blank lines before the next key: it stays last."""
    old = dict(seq.ca.items)
    last = len(seq) - 1
    seq[:] = list(new_items)
    seq.ca.items.clear()
    for new_index, old_index in enumerate(order):
        if old_index is not None and old_index in old and old_index != last:
            seq.ca.items[new_index] = old[old_index]
    if last in old and len(seq):
        seq.ca.items[len(seq) - 1] = old[last]


# -- hunt groups -----------------------------------------------------------------------------------


def parse_destination(raw: str, path: Path = ()) -> tuple[Literal["number", "target"], str]:
    """A form's phone field as the plan writes it: a mobile (+86 138-0013-8001 -> 13800138001), a landline
    with its area code (010 8888 6666 -> 01088886666), a 400/800 number, or a dial target (PJSIP/8001)."""
    text = raw.strip()
    if not text:
        raise EditError(path, "请填写电话号码 / a phone number is needed")
    if "/" in text:
        if not _SIP.match(text):
            raise EditError(path, "SIP 地址写作 PJSIP/8001 / write a SIP target as PJSIP/8001")
        return "target", text
    if re.search(r"[^0-9+\-() ]", text):
        raise EditError(path, "号码只能包含数字 / a phone number has digits only")
    digits = normalize_number(text)
    if _MOBILE.match(digits) or _LANDLINE.match(digits) or _SERVICE.match(digits):
        return "number", digits
    if digits.startswith("1"):
        raise EditError(path, "手机号是 11 位数字 / a mobile number has 11 digits")
    raise EditError(path, "固定电话请加区号，如 01088886666 / a landline needs its area code, e.g. 01088886666")


def _new_line_id(name: str, destination: str, taken: set[str]) -> str:
    base = _ID.sub("_", name).strip("_-").lower()[:40] or "line_" + re.sub(r"[^0-9]", "", destination)[-4:]
    base = base if base and base != "line_" else "line"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate)
    return candidate


def set_lines(text: str, group: str, lines: Sequence[LineEdit]) -> str:
    """The group's lines become `lines`, in that order: rows with a known id keep their map (and its other
    keys, such as weight), new rows get an id; lines left out are removed."""
    if len(lines) > MAX_LINES:
        raise EditError(("hunt_groups", group, "lines"), f"一个坐席组最多 {MAX_LINES} 条线路 / at most {MAX_LINES} lines in a group")
    parsed = [parse_destination(line.destination, ("hunt_groups", group, "lines", i, "number")) for i, line in enumerate(lines)]

    def change(doc: CommentedMap) -> None:
        node = _named(doc, "hunt_groups", group)
        seq = node.get("lines")
        if not isinstance(seq, CommentedSeq):
            seq = CommentedSeq()
            node["lines"] = seq
        old = {str(item.get("id")): (i, item) for i, item in enumerate(seq) if isinstance(item, CommentedMap)}
        taken = {line.id for line in lines if line.id in old}
        order: list[int | None] = []
        items: list[CommentedMap] = []
        for line, (kind, dest) in zip(lines, parsed):
            if line.id in old:
                index, item = old[line.id]
                order.append(index)
            else:
                item = _flow_like(list(seq), CommentedMap())  # type: ignore[assignment]
                item["id"] = _new_line_id(line.id or line.name, dest, taken)
                order.append(None)
            _write_line(item, line, kind, dest)
            items.append(item)
        _replace_items(seq, order, items)

    return edit(text, change)


def _write_line(item: CommentedMap, line: LineEdit, kind: str, dest: str) -> None:
    name = line.name.strip()
    if name:
        if "name" not in item:
            item.insert(1, "name", q(name))
        elif item["name"] != name:
            item["name"] = q(name)
    else:
        item.pop("name", None)
    other = "target" if kind == "number" else "number"
    if item.get(kind) != dest:
        if other in item:  # the destination keeps its place in the map
            position = list(item).index(other)
            item.pop(other)
            item.insert(position, kind, q(dest))
        else:
            item[kind] = q(dest)
    item.pop(other, None)
    if item.get("ring_timeout") != line.ring_timeout:
        item["ring_timeout"] = line.ring_timeout
    _set_or_drop(item, "max_calls", line.max_calls, 1)
    if line.enabled:
        if "enabled" in item:
            item["enabled"] = True
    else:
        item["enabled"] = False


def add_line(text: str, group: str, line: LineEdit) -> str:
    """Append one line to the group (the form's 添加线路)."""
    return set_lines(text, group, [*current_lines(text, group), line])


def remove_line(text: str, group: str, line_id: str) -> str:
    return set_lines(text, group, [line for line in current_lines(text, group) if line.id != line_id])


def move_line(text: str, group: str, line_id: str, step: int) -> str:
    """Move a line up (step -1) or down (+1) in the answer order."""
    lines = list(current_lines(text, group))
    index = next((i for i, line in enumerate(lines) if line.id == line_id), None)
    if index is None:
        raise EditError(("hunt_groups", group, "lines"), f"no line {line_id!r} in {group}")
    target = max(0, min(len(lines) - 1, index + step))
    lines.insert(target, lines.pop(index))
    return set_lines(text, group, lines)


def set_line_enabled(text: str, group: str, line_id: str, enabled: bool) -> str:
    lines = [LineEdit(line.id, line.name, line.destination, line.ring_timeout, line.max_calls, enabled if line.id == line_id else line.enabled)
             for line in current_lines(text, group)]
    return set_lines(text, group, lines)


def current_lines(text: str, group: str) -> tuple[LineEdit, ...]:
    """The group's lines as form rows (what `set_lines` takes back)."""
    doc = _yaml(text).load(text)
    node = _named(doc, "hunt_groups", group)
    rows = []
    for item in node.get("lines") or ():
        if isinstance(item, CommentedMap):
            rows.append(LineEdit(
                id=str(item.get("id", "")), name=str(item.get("name") or ""),
                destination=str(item.get("number") if item.get("number") is not None else item.get("target") or ""),
                ring_timeout=int(item.get("ring_timeout", 20)), max_calls=int(item.get("max_calls", 1)),
                enabled=item.get("enabled", True) is not False,
            ))
    return tuple(rows)


def set_group_strategy(text: str, group: str, strategy: str, ring_budget: int | None = None) -> str:
    """The answer order (顺序 sequential, 轮循 round_robin, 随机 random, ...) and the group's ring budget."""
    if strategy not in STRATEGIES:
        raise EditError(("hunt_groups", group, "strategy"), f"unknown strategy {strategy!r}")

    def change(doc: CommentedMap) -> None:
        node = _named(doc, "hunt_groups", group)
        if node.get("strategy", "sequential") != strategy or "strategy" in node:
            _put_near(node, "strategy", strategy, before="lines")
        if ring_budget is not None and node.get("ring_budget") != ring_budget:
            _put_near(node, "ring_budget", ring_budget, before="lines")

    return edit(text, change)


def _put_near(node: CommentedMap, key: str, value: Any, *, before: str) -> None:
    """Set key; a key not written yet goes before `before` (where a reader looks for it)."""
    if key in node:
        node[key] = value
    elif before in node:
        node.insert(list(node).index(before), key, value)
    else:
        _set(node, key, value)


# -- hours -----------------------------------------------------------------------------------------


def _ranges(values: Sequence[str], like: Any = None) -> CommentedSeq:
    seq = like if isinstance(like, CommentedSeq) else CommentedSeq()
    if not isinstance(like, CommentedSeq):
        seq.fa.set_flow_style()
    seq[:] = [q(v.strip()) for v in values]
    return seq


def set_weekly(text: str, weekly: Mapping[str, Sequence[str]] | None) -> str:
    """Open ranges per weekday ("09:00-12:00"); a day without ranges is closed. None: open around the clock."""
    for day in weekly or {}:
        if day not in WEEKDAYS:
            raise EditError(("schedule", "weekly", day), f"unknown weekday {day!r}")

    def change(doc: CommentedMap) -> None:
        schedule = _section(doc, "schedule")
        if weekly is None:
            _drop(schedule, "weekly")
            return
        node = schedule.get("weekly")
        if not isinstance(node, CommentedMap):
            node = CommentedMap()
            schedule.insert(0, "weekly", node)
        for day in WEEKDAYS:
            ranges = list(weekly.get(day, ()))
            if not ranges:
                _drop(node, day)
            elif day in node:
                if [str(v) for v in node[day] or ()] != ranges:
                    node[day] = _ranges(ranges, node[day])
            else:
                position = sum(1 for d in WEEKDAYS[:WEEKDAYS.index(day)] if d in node)
                node.insert(position, day, _ranges(ranges))

    return edit(text, change)


def set_holidays(text: str, holidays: Sequence[str]) -> str:
    """Days closed all day ("2026-10-01"), written in date order."""
    days = sorted({d.strip() for d in holidays if d.strip()})

    def change(doc: CommentedMap) -> None:
        schedule = _section(doc, "schedule")
        node = schedule.get("holidays")
        if not days:
            _drop(schedule, "holidays")
            return
        if isinstance(node, CommentedSeq):
            if [str(v) for v in node] != days:
                old = {str(v): i for i, v in enumerate(node)}
                _replace_items(node, [old.get(d) for d in days], [q(d) for d in days])
        else:
            seq = CommentedSeq([q(d) for d in days])
            _put_near(schedule, "holidays", seq, before="special_days")

    return edit(text, change)


def set_special_days(text: str, special: Mapping[str, Sequence[str]]) -> str:
    """Dates with their own hours (调休 working weekends, half days); an empty list closes that day."""
    wanted = {d.strip(): list(r) for d, r in sorted(special.items()) if d.strip()}

    def change(doc: CommentedMap) -> None:
        schedule = _section(doc, "schedule")
        if not wanted:
            _drop(schedule, "special_days")
            return
        node = schedule.get("special_days")
        if not isinstance(node, CommentedMap):
            node = CommentedMap()
            schedule["special_days"] = node
        for day in [str(k) for k in node if str(k) not in wanted]:
            _drop(node, next(k for k in node if str(k) == day))
        for day, ranges in wanted.items():
            existing = next((k for k in node if str(k) == day), None)
            if existing is not None:
                if [str(v) for v in node[existing] or ()] != ranges:
                    node[existing] = _ranges(ranges, node[existing])
            else:
                position = sum(1 for k in node if str(k) < day)
                node.insert(position, q(day), _ranges(ranges))

    return edit(text, change)


def _action_value(action: ActionEdit | None, like: Any = None, sibling: Any = None) -> Any:
    """An action as the files write it: a word (hangup), or `kind: target` in place of `like` (the value it
    replaces), in the style of `like` or else of a `sibling` (flow `{hunt: sales}` among flow ones)."""
    if action is None:
        return None
    if action.kind in TARGETLESS:
        return action.kind
    if isinstance(like, CommentedMap) and len(like) == 1:
        if list(like) == [action.kind] and like[action.kind] == action.target:
            return like
        old_key = next(iter(like))
        comment = like.ca.items.pop(old_key, None)
        like.clear()
        like[action.kind] = action.target
        if comment is not None:
            like.ca.items[action.kind] = comment
        return like
    node = CommentedMap()
    node[action.kind] = action.target
    style = like if isinstance(like, CommentedMap) else sibling
    if isinstance(style, CommentedMap) and style.fa.flow_style():
        node.fa.set_flow_style()
    return node


def set_after_hours(text: str, action: ActionEdit | None) -> str:
    """What callers outside business hours get (None: hang up, the default)."""

    def change(doc: CommentedMap) -> None:
        if action is None:
            _drop(doc, "after_hours")
            return
        value = _action_value(action, doc.get("after_hours"))
        if value is not doc.get("after_hours"):
            _put_near(doc, "after_hours", value, before="greeting")

    return edit(text, change)


# -- menus, greeting, prompts ----------------------------------------------------------------------


def set_menu(text: str, menu: str, *, wording: str | None = None, options: Sequence[tuple[str, ActionEdit]] | None = None,
             timeout: float | None = None, retries: int | None = None) -> str:
    """A menu's wording (`text`), its keys (key -> action, in that order), timeout and retries; None keeps."""

    def change(doc: CommentedMap) -> None:
        node = _named(doc, "menus", menu)
        if wording is not None:
            if wording.strip():
                if node.get("text") != wording.strip():
                    _put_near(node, "text", q(wording.strip()), before="timeout")
            else:
                _drop(node, "text")
        if timeout is not None and node.get("timeout") != timeout:
            _put_near(node, "timeout", int(timeout) if float(timeout).is_integer() else timeout, before="options")
        if retries is not None and node.get("retries") != retries:
            _put_near(node, "retries", retries, before="options")
        if options is not None:
            _write_options(node, options)

    return edit(text, change)


def _write_options(node: CommentedMap, options: Sequence[tuple[str, ActionEdit]]) -> None:
    old = node.get("options")
    if not isinstance(old, CommentedMap):
        old = CommentedMap()
        node["options"] = old
    keys = [key for key, _ in options]
    if len(set(keys)) != len(keys):
        raise EditError(("menus", "options"), "每个按键只能用一次 / each key once")
    same_order = [str(k) for k in old] == keys
    values = {str(k): old[k] for k in old}
    comments = {str(k): old.ca.items.get(k) for k in old}
    sibling = next((v for v in values.values() if isinstance(v, CommentedMap)), None)
    new = [(key, _action_value(action, values.get(key), sibling)) for key, action in options]
    if same_order:
        for k, (_, value) in zip(list(old), new):
            if old[k] is not value:
                old[k] = value
        return
    for k in list(old):
        old.pop(k)
    for key, value in new:
        old[q(key)] = value
        if comments.get(key) is not None:
            old.ca.items[key] = comments[key]


def set_greeting(text: str, prompt: str | None) -> str:
    """The prompt played once before the menu (None: no greeting)."""

    def change(doc: CommentedMap) -> None:
        if prompt is None:
            _drop(doc, "greeting")
        elif doc.get("greeting") != prompt:
            _put_near(doc, "greeting", prompt, before="blacklist" if "blacklist" in doc else "entry")

    return edit(text, change)


def set_recording_announcement(text: str, prompt: str | None, *, enabled: bool | None = None) -> str:
    """The notice played before a recorded call (本通话可能会被录音); None: no notice. `enabled` turns
    recording on or off (None keeps it)."""

    def change(doc: CommentedMap) -> None:
        node = _section(doc, "recording")
        if enabled is not None and node.get("enabled", False) != enabled:
            _put_near(node, "enabled", enabled, before="announcement")
        if prompt is None:
            _drop(node, "announcement")
        elif node.get("announcement") != prompt:
            _put_near(node, "announcement", prompt, before="file_template")

    return edit(text, change)


def set_prompt_text(text: str, prompt: str, wording: str) -> str:
    """What a prompt says (`prompts:`, the wording generated prompts are spoken from); empty removes it."""

    def change(doc: CommentedMap) -> None:
        node = _section(doc, "prompts")
        if not wording.strip():
            _drop(node, prompt)
        elif node.get(prompt) != wording.strip():
            _set(node, prompt, q(wording.strip()))

    return edit(text, change)
