"""Recording downloads, confined to the recordings folder, streamed with HTTP Range (aiohttp's FileResponse)."""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from callrouter.api.calls import load_call
from callrouter.api.context import audit, deps_of, scope_of
from callrouter.api.errors import ApiError
from callrouter.store import recording_files
from callrouter.store.calls import call_with_recording
from callrouter.store.recording_files import stored_relative
from callrouter.store.tenants import DOWNLOAD


def confined(root: str, relative: str) -> Path:
    """The file `relative` names inside `root` (store/recording_files.py), or ApiError."""
    try:
        return recording_files.confined(root, relative)
    except recording_files.RecordingPathError as exc:
        raise ApiError(exc.status, exc.message) from None


def file_response(path: Path) -> web.FileResponse:
    return web.FileResponse(path, headers={"Content-Type": recording_files.content_type(path),
                                           "Content-Disposition": f'attachment; filename="{recording_files.download_name(path.name)}"'})


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
