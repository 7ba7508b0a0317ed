"""Recording files on disk as a CDR names them: where one lies inside the recordings folder, and its type.

Shared by the admin API (api/recordings.py) and the console's player, so both refuse the same paths:
no '..', no absolute path, no symlink leading out of the folder. Errors carry the HTTP status each
caller answers with; the messages name no path outside the folder.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path, PurePosixPath

_TYPES = {".wav": "audio/wav", ".wav49": "audio/wav", ".gsm": "audio/x-gsm", ".mp3": "audio/mpeg", ".sln16": "audio/L16;rate=16000"}


class RecordingPathError(Exception):
    """A recording path refused (400, 403) or not there (404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def confined(root: str, relative: str) -> Path:
    """The file `relative` names inside `root`: no '..', no absolute path, no symlink leading out."""
    if not relative or len(relative) > 255:
        raise RecordingPathError(400, "path: 1 to 255 characters")
    if "\x00" in relative or "\\" in relative:
        raise RecordingPathError(400, "path: NUL and backslashes are not allowed")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or any(part in ("..", ".") for part in relative.split("/")):
        raise RecordingPathError(400, "path: must be relative to the recordings folder, without '..'")
    base = Path(root).resolve()
    try:
        target = (base / pure).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise RecordingPathError(404, "no such recording") from None
    except (OSError, RuntimeError):  # a symlink loop
        raise RecordingPathError(404, "no such recording") from None
    if not target.is_relative_to(base):
        raise RecordingPathError(403, "path: leads outside the recordings folder")
    if not target.is_file():
        raise RecordingPathError(404, "no such recording")
    return target


def stored_relative(stored: str, root: str) -> str | None:
    """A CDR's recording_file relative to the folder, or None when it lies elsewhere. The router writes it
    absolute under recordings_dir as configured (the resolved folder is accepted too); a relative one is
    relative to the folder. confined() still checks what is left."""
    for prefix in {root.rstrip("/"), os.path.realpath(root)}:
        if stored.startswith(prefix + "/"):
            return stored[len(prefix) + 1:]
    return None if stored.startswith("/") else stored


def recording_of_call(stored: str, root: str) -> Path:
    """The file a CDR's recording_file names, confined to the folder (404 when it lies elsewhere)."""
    relative = stored_relative(stored, root)
    if relative is None:
        raise RecordingPathError(404, "the recording is not in the configured recordings folder")
    return confined(root, relative)


def content_type(path: Path) -> str:
    return _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def download_name(name: str) -> str:
    """A file name safe in a Content-Disposition header (ASCII letters, digits, . _ -)."""
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_" for ch in name)[:100]
