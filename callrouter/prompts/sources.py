"""Which recordings make which prompts: the files and folders given to `prompts build`, checked before any audio is read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from callrouter.config.types import PromptName
from callrouter.prompts.audio import FORMATS, SOURCE_EXTENSIONS


@dataclass(frozen=True)
class Job:
    """One prompt to build: its name and the recording it comes from."""

    name: str
    source: Path


def prompt_name_error(name: str) -> str | None:
    """Why `name` cannot be a prompt name (the plans' own rule), or None."""
    try:
        TypeAdapter(PromptName).validate_python(name)
    except ValidationError as exc:
        return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    return None


def collect_jobs(paths: list[Path], name: str | None) -> tuple[list[Job], list[str]]:
    """Files named on the command line, and the audio files under folders (named by their path in the folder)."""
    jobs: list[Job] = []
    errors: list[str] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SOURCE_EXTENSIONS and not p.name.startswith("."))
            if not found:
                errors.append(f"{path}: no audio files ({', '.join(SOURCE_EXTENSIONS)}) in this folder")
            jobs.extend(Job(p.relative_to(path).with_suffix("").as_posix(), p) for p in found)
        elif path.exists():
            jobs.append(Job(path.stem, path))
        else:
            errors.append(f"{path}: no such file or folder")
    if name is not None:
        if len(jobs) != 1:
            errors.append(f"--name {name!r} names one prompt, but {len(jobs)} source files were given")
        else:
            jobs = [Job(name, jobs[0].source)]
    return jobs, errors


def job_errors(jobs: list[Job], out_dir: Path) -> list[str]:
    """Problems found before any audio is read: bad names, two sources for one prompt, a source its own output."""
    errors: list[str] = []
    seen: dict[str, Path] = {}
    outputs = {(out_dir / job.name).with_name(Path(job.name).name + fmt.extension).resolve() for job in jobs for fmt in FORMATS}
    for job in jobs:
        reason = prompt_name_error(job.name)
        if reason is not None:
            errors.append(f"{job.source}: {reason}; rename the file, or give --name for a single file")
        elif job.name in seen:
            errors.append(f"{job.source}: prompt {job.name!r} also comes from {seen[job.name]}; keep one")
        seen.setdefault(job.name, job.source)
        if job.source.resolve() in outputs:
            errors.append(f"{job.source}: would be overwritten by its own output; keep recordings in their own folder (e.g. recordings/)")
    return errors
