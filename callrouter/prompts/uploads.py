"""Prompts made from the browser: an uploaded recording or espeak-ng speech, held aside until it is applied.

The audio goes through the same pipeline as `callrouter prompts build` (audio.decode, audio.render: mono,
trimmed silence, resampled by ffmpeg, normalised loudness; 8 kHz wav and, from wideband sound, sln16) or
`prompts tts` (tts.speak). What it makes waits in `<prompts_dir>/.pending/<number>/<id>.*` (a hidden folder
`callrouter check` and Asterisk's prompt list ignore) so it can be played before anything changes; `id` is
the hash of the files' bytes. Applying moves it to a content-addressed prompt name of its own,
`console/<number>/<slot>-<id>`: a name no other plan or number uses, never overwritten (the same bytes
make the same name), and never deleted, so restoring an older plan version plays the older audio again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from callrouter.prompts.audio import AudioError, Rendered, Settings, decode, render, require_ffmpeg
from callrouter.prompts.tts import require_espeak, speak

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a minute of 44.1 kHz stereo wav is 10 MB; a prompt is seconds long
MAX_SECONDS = 180.0  # longer is no prompt (a whole recording uploaded by mistake)
MAX_WORDING = 300
UPLOAD_TYPES = (".wav", ".mp3", ".m4a")
PENDING = ".pending"
PENDING_HOURS = 24  # pending prompts older than this are removed when the next one is made
_ID = re.compile(r"[0-9a-f]{16}\Z")
_SLOT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,72}\Z")


class UploadRefused(Exception):
    """Audio that cannot become a prompt. `reason` names the words key's last part (too_big, wrong_type,
    not_audio, unreadable, too_long, silent, empty, tools); `detail` is the tool's own word, if any."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Pending:
    """A prompt made and held aside: its id, the slot it was made for, what it says, where it came from."""

    id: str
    slot: str
    wording: str
    source: str  # "upload" or "tts"
    file_name: str  # the uploaded file's name, for the page
    seconds: float
    forms: tuple[str, ...]  # ".wav", ".sln16"


def kind_of(head: bytes) -> str | None:
    """The container the first bytes say (".wav", ".mp3", ".m4a"), whatever the file is called."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ".wav"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return ".mp3"
    if head[4:8] == b"ftyp":
        return ".m4a"
    return None


def check_upload(file_name: str, head: bytes) -> str:
    """The upload's type from its name and its bytes, or UploadRefused: only wav, mp3 and m4a, and the bytes
    must be that (ffmpeg reads many more formats; the console takes what phones and recorders make)."""
    suffix = Path(file_name).suffix.lower()
    if suffix not in UPLOAD_TYPES:
        raise UploadRefused("wrong_type", suffix or file_name[:40])
    if not head:
        raise UploadRefused("empty")
    kind = kind_of(head)
    if kind is None:
        raise UploadRefused("not_audio")
    return kind


def build_recording(upload: IO[bytes], file_name: str, settings: Settings | None = None) -> tuple[Rendered, ...]:
    """An uploaded recording (a file object, already within the size cap) as prompt files; blocking (ffmpeg)."""
    head = upload.read(16)
    kind = check_upload(file_name, head)
    try:
        require_ffmpeg()
    except AudioError as exc:
        raise UploadRefused("tools", str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="callrouter-upload-") as tmp:
        path = Path(tmp) / f"upload{kind}"
        with open(path, "wb") as out:
            out.write(head)
            shutil.copyfileobj(upload, out, 1 << 20)
        try:
            segment = decode(path)
        except AudioError as exc:
            raise UploadRefused("unreadable", str(exc).removeprefix(f"{path}: ")) from None
        if segment.duration_seconds > MAX_SECONDS:
            raise UploadRefused("too_long", f"{segment.duration_seconds:.0f}")
        try:
            renders, _, _ = render(segment, settings or Settings())
        except AudioError as exc:
            raise UploadRefused("silent" if "silent" in str(exc) else "unreadable", str(exc)) from None
    return renders


def build_speech(wording: str) -> tuple[Rendered, ...]:
    """A stand-in spoken by espeak-ng (Mandarin) from the wording; blocking."""
    text = wording.strip()
    if not text:
        raise UploadRefused("empty_wording")
    if len(text) > MAX_WORDING:
        raise UploadRefused("long_wording", str(MAX_WORDING))
    try:
        require_espeak()
        require_ffmpeg()
        return speak(text)
    except AudioError as exc:
        raise UploadRefused("tools", str(exc)) from None


def content_id(slot: str, renders: tuple[Rendered, ...]) -> str:
    """The hash of a slot's prompt files: the same audio for the same slot is the same prompt, and only it."""
    digest = hashlib.sha256(slot.encode() + b"\0")
    for item in renders:
        digest.update(item.format.extension.encode() + b"\0" + item.data)
    return digest.hexdigest()[:16]


def _pending_dir(prompts_dir: Path, number: str) -> Path:
    return prompts_dir / PENDING / number


def stage(prompts_dir: Path, number: str, slot: str, renders: tuple[Rendered, ...], *, wording: str, source: str,
          file_name: str = "", now: float | None = None) -> Pending:
    """Hold the prompt files aside for `number` (and forget pending ones older than a day)."""
    if not _SLOT.match(slot):
        raise ValueError(f"bad slot {slot!r}")
    folder = _pending_dir(prompts_dir, number)
    folder.mkdir(parents=True, exist_ok=True)
    _prune(folder, time.time() if now is None else now)
    pending = Pending(content_id(slot, renders), slot, wording.strip(), source, file_name[:100], renders[0].seconds,
                      tuple(r.format.extension for r in renders))
    for item in renders:
        _write(folder / f"{pending.id}{item.format.extension}", item.data)
    _write(folder / f"{pending.id}.json", json.dumps(pending.__dict__, ensure_ascii=False).encode())
    return pending


def _write(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def _prune(folder: Path, now: float) -> None:
    for path in folder.iterdir():
        try:
            if path.is_file() and now - path.stat().st_mtime > PENDING_HOURS * 3600:
                path.unlink()
        except FileNotFoundError:
            continue  # another request pruned it first


def pending(prompts_dir: Path, number: str, pending_id: str) -> Pending | None:
    """A prompt held aside for this number, or None (unknown, expired, or not an id at all)."""
    if not _ID.match(pending_id):
        return None
    try:
        raw: dict[str, Any] = json.loads((_pending_dir(prompts_dir, number) / f"{pending_id}.json").read_text("utf-8"))
        found = Pending(**{**raw, "forms": tuple(raw["forms"])})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if found.id != pending_id or not all((_pending_dir(prompts_dir, number) / f"{pending_id}{f}").is_file() for f in found.forms):
        return None
    return found


def pending_wav(prompts_dir: Path, number: str, pending_id: str) -> Path | None:
    found = pending(prompts_dir, number, pending_id)
    return _pending_dir(prompts_dir, number) / f"{found.id}.wav" if found is not None and ".wav" in found.forms else None


def prompt_name(number: str, slot: str, pending_id: str) -> str:
    """The content-addressed name the prompt gets when applied (a valid PromptName)."""
    return f"console/{number}/{slot}-{pending_id}"


def promote(prompts_dir: Path, number: str, found: Pending) -> tuple[str, list[Path]]:
    """Copy a pending prompt to its own name; (name, the files this call created: remove them if the save
    that points at them fails). An existing file of that name has the same bytes by construction; one that
    does not is refused rather than overwritten."""
    name = prompt_name(number, found.slot, found.id)
    created: list[Path] = []
    folder = _pending_dir(prompts_dir, number)
    target_base = prompts_dir / name
    target_base.parent.mkdir(parents=True, exist_ok=True)
    try:
        for form in found.forms:
            data = (folder / f"{found.id}{form}").read_bytes()
            target = target_base.with_name(target_base.name + form)
            if target.exists():
                if target.read_bytes() != data:
                    raise FileExistsError(f"{target} exists with other audio; not overwritten")
                continue
            _write(target, data)
            created.append(target)
    except BaseException:
        unpromote(created)
        raise
    return name, created


def unpromote(created: list[Path]) -> None:
    for path in created:
        path.unlink(missing_ok=True)


def forget(prompts_dir: Path, number: str, found: Pending) -> None:
    """Remove a pending prompt once applied (its copy under its own name stays)."""
    folder = _pending_dir(prompts_dir, number)
    for suffix in (*found.forms, ".json"):
        (folder / f"{found.id}{suffix}").unlink(missing_ok=True)


def prompt_wav(prompts_dir: Path, name: str) -> Path | None:
    """The 8 kHz wav of a prompt, confined to the prompts folder; None if there is none."""
    base = prompts_dir.resolve()
    path = (prompts_dir / f"{name}.wav").resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path

