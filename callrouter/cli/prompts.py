"""`callrouter prompts build` (recordings into prompt files) and `callrouter prompts tts` (stand-ins from the plans' texts)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, TextIO

from callrouter.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, add_config_argument, load_config
from callrouter.config.loader import RoutingConfig
from callrouter.prompts.audio import (
    FORMATS,
    AudioError,
    OutputFormat,
    Rendered,
    Settings,
    convert,
    other_forms,
    require_ffmpeg,
    write_prompt,
)
from callrouter.prompts.inventory import list_prompt_files, prompt_texts, prompt_uses
from callrouter.prompts.sources import collect_jobs, job_errors
from callrouter.prompts.tts import DEFAULT_SPEED, DEFAULT_VOICE, require_espeak, speak

HELP = "make the prompt files Asterisk plays: build (recordings), tts (stand-ins)"


def bar_line(done: int, total: int, label: str, width: int = 30) -> str:
    """`[#######.......]  3/10  welcome.mp3`: the progress line, without the terminal control."""
    filled = width * done // total if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:>{len(str(total))}}/{total}  {label}"


class Progress:
    """A one-line bar on a terminal for runs of several files; silent when stderr is a file or a pipe."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.active = total > 1 and stream.isatty()
        self.shown = ""

    def start(self, label: str) -> None:
        if self.active:
            self._draw(bar_line(self.done, self.total, label))

    def finish_one(self) -> None:
        self.done += 1

    def say(self, line: str, out: TextIO) -> None:
        """Print a result line where the bar was; the next file draws it again below."""
        if self.active:
            self._draw("")
        print(line, file=out, flush=True)

    def close(self) -> None:
        if self.active:
            self._draw("")

    def _draw(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(len(self.shown)) + ("\r" if not text else ""))
        self.stream.flush()
        self.shown = text


def describe(name: str, renders: tuple[Rendered, ...], out_dir: Path) -> str:
    first = renders[0]
    forms = ", ".join(r.format.extension for r in renders)
    return f"{name}: {out_dir / name}{{{forms}}} {first.seconds:.2f} s, {first.level_dbfs:.1f} dBFS, peak {first.peak_dbfs:.1f} dBFS"


def parse_formats(text: str) -> tuple[OutputFormat, ...]:
    """`wav,sln16` into output formats (argparse type: a wrong name is a usage error)."""
    known = {f.extension.lstrip("."): f for f in FORMATS}
    names = [n.strip() for n in text.split(",") if n.strip()]
    wrong = [n for n in names if n not in known]
    if wrong or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(known)} (comma-separated)")
    return tuple(f for f in FORMATS if f.extension.lstrip(".") in names)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(loudness_dbfs=args.loudness, formats=args.formats)


def _out_dir(args: argparse.Namespace, config: RoutingConfig | None, err: TextIO) -> Path:
    if args.out:
        return Path(args.out)
    if config is None:
        config = load_config(args.config, err)
    return Path(config.path(config.service.prompts_dir))


def _warn_other_forms(out_dir: Path, name: str, err: TextIO) -> None:
    for path in other_forms(out_dir, name):
        print(f"warning: {path} also exists; Asterisk may play it instead of the new prompt: delete it if it is old", file=err)


def cmd_build(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    jobs, errors = collect_jobs([Path(p) for p in args.sources], args.name)
    out_dir = _out_dir(args, None, err)
    errors += job_errors(jobs, out_dir)
    if errors:
        for line in errors:
            print(line, file=err)
        return EXIT_BAD_INPUT
    try:
        require_ffmpeg()
    except AudioError as exc:
        print(exc, file=err)
        return EXIT_BAD_INPUT
    settings = _settings(args)
    sources = {job.name: job.source for job in jobs}
    return _run([(job.name, str(job.source)) for job in jobs], lambda name: convert(sources[name], settings).renders, out_dir, out, err, False)


def _run(
    names: list[tuple[str, str]],
    make: Callable[[str], tuple[Rendered, ...]],
    out_dir: Path,
    out: TextIO,
    err: TextIO,
    name_errors: bool = True,
) -> int:
    """Make and write each (prompt, label) with a progress bar; a failure is reported and the others still run.

    `name_errors`: prefix an error with the prompt's name (a build error names its file already).
    """
    progress = Progress(len(names), err)
    failed = 0
    for name, label in names:
        progress.start(label)
        try:
            renders = make(name)
            write_prompt(out_dir, name, renders)
        except (AudioError, OSError) as exc:
            failed += 1
            progress.say(f"error: {name}: {exc}" if name_errors else f"error: {exc}", err)
        else:
            progress.say(describe(name, renders, out_dir), out)
            _warn_other_forms(out_dir, name, err)
        progress.finish_one()
    progress.close()
    if failed:
        print(f"{failed} of {len(names)} prompt(s) failed", file=err)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_tts(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    config = load_config(args.config, err)
    out_dir = _out_dir(args, config, err)
    found = prompt_texts(config)
    problems = list(found.conflicts)
    used = {use.prompt: use for use in prompt_uses(config)}
    for name in sorted(set(used) - set(found.texts)):
        use = used[name]
        problems.append(f"prompt {name!r} ({use.number} {use.describe()}) has no text: add `{name}: \"...\"` under `prompts:` in its plan")
    names = args.only or sorted(found.texts)
    unknown = [n for n in names if n not in found.texts]
    if unknown:
        print(f"no text for {', '.join(unknown)} in any plan", file=err)
        return EXIT_BAD_INPUT
    existing = list_prompt_files(out_dir).playable if out_dir.is_dir() else frozenset()
    todo = [n for n in names if args.force or n not in existing]
    for name in sorted(set(names) - set(todo)):
        print(f"{name}: kept, a file exists (--force replaces it)", file=out)
    for line in problems:
        print(f"warning: {line}", file=err)
    try:
        require_ffmpeg()
        require_espeak()
    except AudioError as exc:
        print(exc, file=err)
        return EXIT_BAD_INPUT
    settings = _settings(args)
    code = _run([(name, name) for name in todo], lambda name: speak(found.texts[name], args.voice, args.speed, settings), out_dir, out, err)
    return EXIT_FAILED if found.conflicts else code


def configure(parser: argparse.ArgumentParser) -> None:
    """`prompts build` and `prompts tts`."""
    sub = parser.add_subparsers(dest="prompts_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        add_config_argument(p, help="for prompts_dir (and, for tts, the plans' texts)")
        p.add_argument("--out", help="folder to write prompts to (default: prompts_dir of the config)")
        p.add_argument("--loudness", type=float, default=Settings().loudness_dbfs, help="active speech level in dBFS (default -20)")
        p.add_argument("--formats", type=parse_formats, default=FORMATS, help="wav (8 kHz) and/or sln16 (16 kHz, written only from wideband sources)")

    p = sub.add_parser("build", help="convert recordings (wav, mp3, m4a, ...) into 8 kHz wav + 16 kHz sln16, trimmed and normalised")
    p.add_argument("sources", nargs="+", help="audio files, or folders of them (a file's path in its folder names the prompt)")
    p.add_argument("--name", help="prompt name for a single source file (default: the file name without extension)")
    common(p)

    p = sub.add_parser("tts", help="speak the plans' prompt texts with espeak-ng, for prompts that have no recording yet")
    p.add_argument("--voice", default=DEFAULT_VOICE, help="espeak-ng voice (default cmn-latn-pinyin: Mandarin)")
    p.add_argument("--speed", type=int, default=DEFAULT_SPEED, help="words per minute")
    p.add_argument("--force", action="store_true", help="replace prompts that already have a file (recordings too)")
    p.add_argument("--only", action="append", help="only this prompt (repeatable)")
    common(p)


def run(args: argparse.Namespace) -> int:
    return cmd_build(args) if args.prompts_command == "build" else cmd_tts(args)

