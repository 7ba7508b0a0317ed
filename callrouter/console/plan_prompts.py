"""提示音 Prompts of a number from the browser: upload a recording or generate a stand-in, listen, then apply.

Each of the plan's prompt slots (the greeting, the recording notice, each menu's prompt) shows what plays
now, with a player. An upload (wav, mp3, m4a; at most MAX_UPLOAD_BYTES, a larger body refused before it is
read: the admin app's BodyCap for this one route) or a generated stand-in goes through the prompt pipeline
(prompts/uploads.py over prompts/audio.py and tts.py) and is held aside, to be played next to the current
one. Apply gives it a content-addressed name of its own and saves the plan with the slot pointing at it as
a new version (plans/service.save_plan: validated, concurrent saves refused, every router told); restoring
an older version plays the older audio again. A bad or huge file changes nothing: no file, no version.

Who: anyone who may read the number listens; owner/admin of its tenant and provider staff change (PLANS,
else 403); another tenant's number is 404. Uploads, generated prompts and saves are audited.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote
from typing import Any, Callable

from aiohttp import web
from aiohttp.web_request import FileField
from ruamel.yaml.comments import CommentedMap

from callrouter.api.app import BODY_CAPS, BodyCap
from callrouter.config.plan import NumberPlan
from callrouter.console.context import PREFIX, audit, console_deps, nav_items, not_found, render, require, see_other
from callrouter.console.plan_access import editor_of, number_of, owner_of, plan_deps_for
from callrouter.console.i18n import pick_language, translate, translator
from callrouter.plans import edits
from callrouter.plans.diff import plan_changes, summary_text
from callrouter.plans.service import PlanRejected, StaleVersion, UnknownPlan, check_plan_text, current_text, save_plan
from callrouter.prompts.uploads import (
    MAX_SECONDS,
    MAX_UPLOAD_BYTES,
    MAX_WORDING,
    Pending,
    UploadRefused,
    build_recording,
    build_speech,
    forget,
    pending,
    pending_wav,
    promote,
    prompt_wav,
    stage,
    unpromote,
)
from callrouter.store.tenants import PLANS, READ, Scope

log = logging.getLogger(__name__)
T = Callable[..., str]
MB = MAX_UPLOAD_BYTES // (1024 * 1024)
BUILDS = web.AppKey("prompt_builds", asyncio.Semaphore)  # ffmpeg / espeak-ng runs at once in this process
MAX_BUILDS = 2
UPLOAD_ROUTE = "number_prompts_upload"


def prompts_dir(request: web.Request) -> Path:
    config = console_deps(request).holder.current
    return Path(config.path(config.service.prompts_dir))


# -- the slots --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    key: str  # greeting, notice, menu-<name>
    title: str
    prompt: str | None
    wording: str


def slots(plan: NumberPlan, t: T) -> list[Slot]:
    """The prompts a caller hears on the way in: the greeting, the recording notice (when recording), each menu's."""
    found = [Slot("greeting", t("prompts.slot.greeting"), plan.greeting, plan.prompts.get(plan.greeting or "", ""))]
    if plan.recording.enabled:
        notice = plan.recording.announcement
        found.append(Slot("notice", t("prompts.slot.notice"), notice, plan.prompts.get(notice or "", "")))
    for name, menu in plan.menus.items():
        found.append(Slot(f"menu-{name}", t("prompts.slot.menu", name=name), menu.prompt, menu.text or plan.prompts.get(menu.prompt, "")))
    return found


def point_slot(text: str, plan: NumberPlan, slot: str, name: str, wording: str) -> str:
    """The plan's YAML text with `slot` playing prompt `name` (comments kept), and `name`'s wording written."""
    if slot == "greeting":
        text = edits.set_greeting(text, name)
    elif slot == "notice":
        text = edits.set_recording_announcement(text, name)
    else:
        menu = slot.removeprefix("menu-")

        def change(doc: CommentedMap) -> None:
            doc["menus"][menu]["prompt"] = name

        text = edits.edit(text, change)
        if plan.menus[menu].text is not None and wording and plan.menus[menu].text != wording:
            text = edits.set_menu(text, menu, wording=wording)
    return edits.set_prompt_text(text, name, wording) if wording else text


# -- the page ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotView:
    slot: Slot
    current_url: str | None  # the player's source, when the prompt has a file
    pending: Pending | None
    pending_url: str | None


def _page_url(number: str) -> str:
    return f"{PREFIX}/numbers/{number}/prompts"


async def _page(request: web.Request, scope: Scope, number: str, plan: NumberPlan, *, error: str | None = None,
                error_slot: str | None = None, status: int = 200) -> web.Response:
    t = translator(pick_language(request))
    folder = prompts_dir(request)
    asked_slot, asked = request.query.get("slot", ""), request.query.get("pending", "")
    views = []
    for slot in slots(plan, t):
        held = pending(folder, number, asked) if asked and asked_slot == slot.key else None
        if held is not None and held.slot != slot.key:
            held = None
        has_file = slot.prompt is not None and prompt_wav(folder, slot.prompt) is not None
        views.append(SlotView(slot, f"{_page_url(number)}/audio?prompt={slot.prompt}" if has_file else None, held,
                              f"{_page_url(number)}/audio?pending={held.id}" if held else None))
    version: int | None = None
    try:
        _, version = await current_text(await plan_deps_for(request, scope, number), number)
    except UnknownPlan:
        version = None
    done = request.query.get("applied", "")
    return render(request, "numbers_prompts.html", {
        "number": number, "plan_name": plan.name, "views": views, "can_edit": scope.can(PLANS), "error": error,
        "error_slot": error_slot, "version": "" if version is None else str(version), "mb": MB, "max_bytes": MAX_UPLOAD_BYTES,
        "max_seconds": int(MAX_SECONDS), "max_wording": MAX_WORDING, "applied": done if done.isdigit() else "",
        "nav": nav_items(scope, pick_language(request), "numbers"),
    }, status=status)


async def prompts_page(request: web.Request) -> web.StreamResponse:
    scope = require(request, READ)
    number, plan = number_of(request, scope)
    return await _page(request, scope, number, plan)


def refused_too_big(request: web.Request) -> web.Response:
    """The admin app's answer to an upload over the cap, before any of it is read (BodyCap.refuse)."""
    lang = pick_language(request)
    number = request.match_info.get("number", "")
    return render(request, "numbers_prompts_refused.html", {"number": number if number.isdigit() else "",
                                                            "message": translate(lang, "prompts.error.too_big", mb=MB)}, status=413)


def _refusal(t: T, exc: UploadRefused) -> str:
    return t(f"prompts.error.{exc.reason}", detail=exc.detail, mb=MB, seconds=int(MAX_SECONDS))


async def _build(request: web.Request, work: Callable[[], Any]) -> Any:
    """Run a blocking build (ffmpeg, espeak-ng) off the event loop, at most MAX_BUILDS at once."""
    builds = request.app[BUILDS]
    if builds.locked():
        raise UploadRefused("busy")
    async with builds:
        return await asyncio.to_thread(work)


def _slot_of(plan: NumberPlan, raw: object) -> str | None:
    keys = {s.key for s in slots(plan, translator("zh"))}
    return raw if isinstance(raw, str) and raw in keys else None


async def prompt_upload(request: web.Request) -> web.StreamResponse:
    scope, number, plan = editor_of(request)
    t = translator(pick_language(request))
    post = await request.post()  # within the route's cap (aiohttp writes the file part to a temporary file)
    slot = _slot_of(plan, post.get("slot"))
    if slot is None:
        raise web.HTTPBadRequest()
    field = post.get("file")
    if not isinstance(field, FileField) or not field.filename:
        return await _page(request, scope, number, plan, error=t("prompts.error.no_file"), error_slot=slot, status=422)
    name = unquote(field.filename)  # some clients percent-encode a non-ASCII file name
    current = next(s for s in slots(plan, t) if s.key == slot)
    try:
        renders = await _build(request, lambda: build_recording(field.file, name))
        held = stage(prompts_dir(request), number, slot, renders, wording=current.wording, source="upload", file_name=name)
    except UploadRefused as exc:
        log.info("console: prompt upload for %s refused: %s", number, exc)
        return await _page(request, scope, number, plan, error=_refusal(t, exc), error_slot=slot, status=422)
    await audit(request, "prompt_upload", number, after={"slot": slot, "file": name[:100], "pending": held.id,
                                                         "seconds": round(held.seconds, 2)}, for_tenant=await owner_of(request, scope, number))
    return see_other(f"{_page_url(number)}?slot={slot}&pending={held.id}#slot-{slot}")


async def prompt_generate(request: web.Request) -> web.StreamResponse:
    scope, number, plan = editor_of(request)
    t = translator(pick_language(request))
    post = await request.post()
    slot = _slot_of(plan, post.get("slot"))
    if slot is None:
        raise web.HTTPBadRequest()
    raw = post.get("wording")
    wording = raw.strip() if isinstance(raw, str) else ""
    try:
        renders = await _build(request, lambda: build_speech(wording))
        held = stage(prompts_dir(request), number, slot, renders, wording=wording, source="tts")
    except UploadRefused as exc:
        return await _page(request, scope, number, plan, error=_refusal(t, exc), error_slot=slot, status=422)
    await audit(request, "prompt_generate", number, after={"slot": slot, "wording": wording, "pending": held.id},
                for_tenant=await owner_of(request, scope, number))
    return see_other(f"{_page_url(number)}?slot={slot}&pending={held.id}#slot-{slot}")


async def prompt_apply(request: web.Request) -> web.StreamResponse:
    scope, number, plan = editor_of(request)
    t = translator(pick_language(request))
    post = await request.post()
    folder = prompts_dir(request)
    held = pending(folder, number, str(post.get("pending", "")))
    if held is None or _slot_of(plan, held.slot) is None:
        return await _page(request, scope, number, plan, error=t("prompts.error.gone"), status=409)
    raw_version = str(post.get("version", ""))
    expected = int(raw_version) if raw_version.isdigit() else None
    deps = await plan_deps_for(request, scope, number)
    text, _ = await current_text(deps, number)
    name, created = promote(folder, number, held)
    try:
        new_text = point_slot(text, plan, held.slot, name, held.wording)
        new_plan = check_plan_text(new_text, number, deps.holder.current)
        summary = summary_text(plan_changes(plan, new_plan), translator("zh"))
        saved = await save_plan(deps, number, new_text, author=scope.username, origin="console", expected_version=expected, summary=summary)
    except StaleVersion as exc:
        unpromote(created)
        who, version = (exc.current.author, exc.current.version) if exc.current else ("-", "-")
        return await _page(request, scope, number, plan, error=t("prompts.error.stale", who=who, version=version), error_slot=held.slot, status=409)
    except (PlanRejected, edits.EditError) as exc:
        unpromote(created)
        return await _page(request, scope, number, plan, error=t("prompts.error.rejected", issues=str(exc)[:500]), error_slot=held.slot,
                           status=422)
    except BaseException:
        unpromote(created)
        raise
    forget(folder, number, held)
    return see_other(f"{_page_url(number)}?applied={saved.version}")


async def prompt_audio(request: web.Request) -> web.StreamResponse:
    """A prompt's 8 kHz wav for the player, with HTTP Range: one the plan uses, or one held aside for it."""
    scope = require(request, READ)
    number, plan = number_of(request, scope)
    folder = prompts_dir(request)
    asked_prompt, asked_pending = request.query.get("prompt"), request.query.get("pending")
    path: Path | None = None
    if asked_prompt is not None:
        uses = {s.prompt for s in slots(plan, translator("zh")) if s.prompt} | set(plan.prompts)
        path = prompt_wav(folder, asked_prompt) if asked_prompt in uses else None
    elif asked_pending is not None:
        path = pending_wav(folder, number, asked_pending)
    if path is None:
        raise not_found()
    return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Content-Disposition": "inline"})


def add_routes(app: web.Application) -> None:
    """The prompts page, its forms, the player's source; the upload route's larger body cap."""
    app.router.add_get("/numbers/{number}/prompts", prompts_page, name="number_prompts")
    app.router.add_post("/numbers/{number}/prompts/upload", prompt_upload, name=UPLOAD_ROUTE)
    app.router.add_post("/numbers/{number}/prompts/generate", prompt_generate, name="number_prompts_generate")
    app.router.add_post("/numbers/{number}/prompts/apply", prompt_apply, name="number_prompts_apply")
    app.router.add_get("/numbers/{number}/prompts/audio", prompt_audio, name="number_prompts_audio")
    app[BODY_CAPS] = {UPLOAD_ROUTE: BodyCap(MAX_UPLOAD_BYTES + 64 * 1024, refused_too_big)}  # the file and the form's fields
    app[BUILDS] = asyncio.Semaphore(MAX_BUILDS)
