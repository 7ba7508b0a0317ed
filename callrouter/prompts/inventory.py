"""Which prompts the configuration uses, which have no file, and what each should say.

`prompt_uses` and `missing_prompts` are pure (a loaded RoutingConfig and a listing in, findings out);
`list_prompt_files` and `check_prompts` are the edges that read the prompts folder and the plan files,
for `callrouter check`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from callrouter.config.loader import RoutingConfig
from callrouter.config.plan import Action, NumberPlan
from callrouter.config.yamlsource import ConfigError, LocatedDocument, read_yaml
from callrouter.prompts.audio import PLAYABLE_EXTENSIONS, SOURCE_EXTENSIONS

GLOBAL = "*"  # the `number` of a use in config.yaml rather than in a plan

# Every model field that names a prompt, as (model, field). tests/test_prompts.py fails when a prompt
# field is added to the config models but not walked here, so `check` cannot miss a new kind of prompt.
PROMPT_FIELDS = frozenset(
    {
        ("NumberPlan", "greeting"),
        ("Recording", "announcement"),
        ("Menu", "prompt"),
        ("Menu", "invalid_prompt"),
        ("Menu", "timeout_prompt"),
        ("Voicemail", "prompt"),
        ("Voicemail", "thanks_prompt"),
        ("Action", "target"),  # {play: <prompt>}
    }
)


@dataclass(frozen=True)
class PromptUse:
    """One place that plays a prompt: the number whose plan it is in, and its YAML path there."""

    prompt: str
    number: str
    where: tuple[str, ...]

    def describe(self) -> str:
        return ".".join(self.where)


@dataclass(frozen=True)
class PromptFiles:
    """What the prompts folder holds: names Asterisk can play, and names that exist only as source audio."""

    playable: frozenset[str]
    sources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # name -> e.g. (".mp3",)


@dataclass(frozen=True)
class PromptTexts:
    """The text each prompt speaks, gathered from every plan, and the prompts given two different texts."""

    texts: Mapping[str, str]
    conflicts: tuple[str, ...]


def _action_prompts(action: Action | None, where: tuple[str, ...]) -> Iterator[tuple[str, tuple[str, ...]]]:
    if action is not None and action.kind == "play" and action.target is not None:
        yield action.target, (*where, "play")


def _plan_prompts(plan: NumberPlan) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every prompt the routing engine can play for this plan, in the order of the plan file."""
    if plan.greeting is not None:
        yield plan.greeting, ("greeting",)
    if plan.recording.enabled and plan.recording.announcement is not None:  # played only while recording is on
        yield plan.recording.announcement, ("recording", "announcement")
    yield from _action_prompts(plan.blacklist.action, ("blacklist", "action"))
    yield from _action_prompts(plan.after_hours, ("after_hours",))
    yield from _action_prompts(plan.entry, ("entry",))
    for name, menu in plan.menus.items():
        yield menu.prompt, ("menus", name, "prompt")
        if menu.invalid_prompt is not None:
            yield menu.invalid_prompt, ("menus", name, "invalid_prompt")
        if menu.timeout_prompt is not None:
            yield menu.timeout_prompt, ("menus", name, "timeout_prompt")
        for key, action in menu.options.items():
            yield from _action_prompts(action, ("menus", name, "options", key))
        yield from _action_prompts(menu.on_timeout, ("menus", name, "on_timeout"))
        yield from _action_prompts(menu.on_invalid, ("menus", name, "on_invalid"))
    for name, group in plan.hunt_groups.items():
        yield from _action_prompts(group.on_failure, ("hunt_groups", name, "on_failure"))
    for name, box in plan.voicemail.items():
        yield box.prompt, ("voicemail", name, "prompt")
        if box.thanks_prompt is not None:
            yield box.thanks_prompt, ("voicemail", name, "thanks_prompt")


def prompt_uses(config: RoutingConfig) -> list[PromptUse]:
    """Every use of a prompt in the configuration: the global blacklist's, then each plan's by number."""
    uses = [PromptUse(p, GLOBAL, w) for p, w in _action_prompts(config.service.blacklist.action, ("blacklist", "action"))]
    for number in sorted(config.plans):
        uses.extend(PromptUse(p, number, w) for p, w in _plan_prompts(config.plans[number]))
    return uses


def missing_prompts(config: RoutingConfig, files: PromptFiles) -> list[PromptUse]:
    """The uses whose prompt has no playable file, each prompt reported at every place that plays it."""
    return [use for use in prompt_uses(config) if use.prompt not in files.playable]


def prompt_texts(config: RoutingConfig) -> PromptTexts:
    """What each prompt says: a plan's `prompts:` entry, else the `text` of the menu that plays it.

    The prompts folder is shared by every plan, so one name must say one thing everywhere; a name given
    two texts is a conflict and is left out.
    """
    found: dict[str, tuple[str, str]] = {}  # prompt -> (text, where it was written)
    conflicts: dict[str, str] = {}
    for number in sorted(config.plans):
        plan = config.plans[number]
        written = [(name, text, f"{number} prompts.{name}") for name, text in plan.prompts.items()]
        written += [(m.prompt, m.text, f"{number} menus.{key}.text") for key, m in plan.menus.items() if m.text is not None]
        for name, text, where in written:
            text = text.strip()
            previous = found.get(name)
            if previous is None:
                found[name] = (text, where)
            elif previous[0] != text and name not in conflicts:
                conflicts[name] = f"prompt {name!r} has two texts: {previous[1]} says {previous[0]!r}, {where} says {text!r}"
    texts = {name: text for name, (text, _) in found.items() if name not in conflicts and text}
    return PromptTexts(texts=texts, conflicts=tuple(conflicts[name] for name in sorted(conflicts)))


def list_prompt_files(directory: Path) -> PromptFiles:
    """The prompt names in a folder (sub-folders give names like `holidays/newyear`); hidden files skipped."""
    playable: set[str] = set()
    sources: dict[str, list[str]] = {}
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel_root = Path(root).relative_to(directory)
        for file_name in names:
            if file_name.startswith("."):
                continue
            stem, ext = os.path.splitext(file_name)
            name = (rel_root / stem).as_posix()
            if ext in PLAYABLE_EXTENSIONS:
                playable.add(name)
            elif ext.lower() in SOURCE_EXTENSIONS:
                sources.setdefault(name, []).append(ext)
    return PromptFiles(frozenset(playable), {name: tuple(sorted(exts)) for name, exts in sources.items()})


def check_prompts(config: RoutingConfig) -> list[str]:
    """`file:line: message` for every use of a prompt that has no file in `prompts_dir` (empty: all present)."""
    directory = Path(config.path(config.service.prompts_dir))
    if not directory.is_dir():
        return [f"{config.config_path}:1: prompts_dir {str(directory)!r} is not a folder; no prompt can be checked"]
    files = list_prompt_files(directory)
    documents: dict[str, LocatedDocument | None] = {}
    messages = []
    for use in missing_prompts(config, files):
        source = config.config_path if use.number == GLOBAL else config.sources[use.number]
        if source not in documents:
            documents[source] = _located(source)
        doc = documents[source]
        line = 1 if doc is None else doc.line_of(use.where)
        hint = "record it and run `callrouter prompts build`, or `callrouter prompts tts` for a stand-in"
        found = files.sources.get(use.prompt)
        if found:
            hint = f"found {use.prompt}{found[0]}, which Asterisk cannot play: run `callrouter prompts build`"
        messages.append(f"{source}:{line}: {use.describe()}: prompt {use.prompt!r} has no file in {directory} ({hint})")
    return messages


def _located(path: str) -> LocatedDocument | None:
    """The file's line map; a file changed since loading still gets its message, at line 1."""
    try:
        return read_yaml(path)
    except ConfigError:
        return None
