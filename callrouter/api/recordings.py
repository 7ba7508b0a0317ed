"""Recording downloads, confined to the recordings folder, streamed with HTTP Range (aiohttp's FileResponse)."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path, PurePosixPath

from aiohttp import web

from callrouter.api.calls import load_call
from callrouter.api.context import audit, deps_of, scope_of
from callrouter.api.errors import ApiError
from callrouter.store.calls import call_with_recording
from callrouter.store.tenants import DOWNLOAD

_TYPES = {".wav": "audio/wav", ".wav49": "audio/wav", ".gsm": "audio/x-gsm", ".mp3": "audio/mpeg", ".sln16": "audio/L16;rate=16000"}


def confined(root: str, relative: str) -> Path:
    """The file `relative` names inside `root`, or ApiError: no '..', no absolute path, no symlink leading out."""
    if not relative or len(relative) > 255:
        raise ApiError(400, "path: 1 to 255 characters")
    if "\x00" in relative or "\\" in relative:
        raise ApiError(400, "path: NUL and backslashes are not allowed")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or any(part in ("..", ".") for part in relative.split("/")):
        raise ApiError(400, "path: must be relative to the recordings folder, without '..'")
    base = Path(root).resolve()
    try:
        target = (base / pure).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise ApiError(404, "no such recording") from None
    except (OSError, RuntimeError):  # a symlink loop
        raise ApiError(404, "no such recording") from None
    if not target.is_relative_to(base):
        raise ApiError(403, "path: leads outside the recordings folder")
    if not target.is_file():
        raise ApiError(404, "no such recording")
    return target


def file_response(path: Path) -> web.FileResponse:
    content_type = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.FileResponse(
        path, headers={"Content-Type": content_type, "Content-Disposition": f'attachment; filename="{_safe_name(path.name)}"'}
    )


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._-") else "_" for ch in name)[:100]


def _may_download(request: web.Request) -> None:
    if not scope_of(request).can(DOWNLOAD):
        raise ApiError(403, "this user or token may not download recordings")


async def by_path(request: web.Request) -> web.StreamResponse:
    """The provider reads any file in the folder; a tenant only the recording of one of its calls."""
    deps, _ = deps_of(request)
    _may_download(request)
    root = deps.holder.current.service.recordings_dir
    relative = request.match_info["path"]
    path = confined(root, relative)
    scope = scope_of(request)
    if scope.numbers is not None:
        names = {relative, f"{root.rstrip('/')}/{relative}", f"{os.path.realpath(root)}/{relative}", str(path)}
        if await call_with_recording(deps.engine, sorted(names), numbers=scope.numbers) is None:
            raise ApiError(404, "no such recording")
    await audit(request, "recording_download", relative)
    return file_response(path)


async def by_call(request: web.Request) -> web.StreamResponse:
    deps, _ = deps_of(request)
    _may_download(request)
    call = await load_call(request)
    stored = call["recording_file"]
    if not stored:
        raise ApiError(404, "this call was not recorded")
    if call.get("recording_purged_at"):
        raise ApiError(410, "the recording was deleted by the retention policy")
    root = deps.holder.current.service.recordings_dir
    relative = stored_relative(stored, root)
    if relative is None:
        raise ApiError(404, "the recording is not in the configured recordings folder")
    path = confined(root, relative)
    await audit(request, "recording_download", f"{call['uniqueid']}", after={"source": call["source"], "file": relative})
    return file_response(path)


def stored_relative(stored: str, root: str) -> str | None:
    """A CDR's recording_file relative to the folder, or None when it lies elsewhere. The router writes it
    absolute under recordings_dir as configured (the resolved folder is accepted too); a relative one is
    relative to the folder. confined() still checks what is left."""
    for prefix in {root.rstrip("/"), os.path.realpath(root)}:
        if stored.startswith(prefix + "/"):
            return stored[len(prefix) + 1:]
    return None if stored.startswith("/") else stored
