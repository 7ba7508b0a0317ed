"""Plan versions over the API (issue 14): the history of a number's plan, one version's text, a save with
If-Match (the version the editor started from), a restore. The same save as the console and the CLI
(plans/service.py): validated as `callrouter check` does, stored whole, run by every router within 2 s.
"""

from __future__ import annotations

from typing import Any, Mapping

from aiohttp import web

from callrouter.api import params
from callrouter.api.blacklist import read_json
from callrouter.api.context import audit, deps_of, scope_of
from callrouter.api.errors import ApiError
from callrouter.config.yamlsource import ConfigIssue
from callrouter.plans.service import PlanDeps, PlanRejected, StaleVersion, UnknownPlan, current_text, restore_plan, save_plan, version_json
from callrouter.store import plan_versions
from callrouter.store.plan_versions import PlanVersion

MAX_SUMMARY = 500
FILE_TAG = "file"  # If-Match: file — the editor started from the file (the number has no version yet)


def _number(request: web.Request) -> str:
    """The path's number, 404 unless the token may see it and a plan exists for it (a file or versions)."""
    number = params.number(request.match_info["number"])
    deps, _ = deps_of(request)
    if not scope_of(request).allows(number) or number not in deps.holder.current.plans:
        raise ApiError(404, f"no number {number}")
    return number


def _plan_deps(request: web.Request) -> PlanDeps:
    deps, _ = deps_of(request)

    async def audited(action: str, target: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> None:
        await audit(request, action, target, before=dict(before) if before else None, after=dict(after) if after else None)

    return PlanDeps(deps.engine, deps.holder, deps.clock, audited)


def _author(request: web.Request) -> str:
    return f"{scope_of(request).username}@{request.remote or '?'}"[:120]


def issue_json(issue: ConfigIssue) -> dict[str, Any]:
    return {"file": issue.file, "line": issue.line, "message": issue.message, "path": list(issue.path)}


def _etag(version: int | None) -> str:
    return f'"{version if version is not None else FILE_TAG}"'


async def history(request: web.Request) -> web.Response:
    number = _number(request)
    deps, _ = deps_of(request)
    async with deps.engine.connect() as conn:
        versions = await plan_versions.history(conn, number)
    return web.json_response({
        "number": number,
        "runs": deps.holder.current.version_of(number),  # what this router runs (None: its file)
        "file": deps.holder.current.sources.get(number),
        "versions": [version_json(v) for v in versions],
    })


async def one_version(request: web.Request) -> web.Response:
    number = _number(request)
    version = _version_arg(request)
    deps, _ = deps_of(request)
    async with deps.engine.connect() as conn:
        found = await plan_versions.get(conn, number, version)
    if found is None:
        raise ApiError(404, f"plan {number} has no version {version}")
    if "yaml" in request.headers.get("Accept", ""):
        return web.Response(text=found.text, content_type="application/yaml", headers={"ETag": _etag(found.version)})
    return web.json_response(version_json(found, with_text=True), headers={"ETag": _etag(found.version)})


def _version_arg(request: web.Request) -> int:
    raw = request.match_info["version"]
    if not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise ApiError(400, "version: a whole number from 1")
    return int(raw)


def _expected(request: web.Request) -> int | None:
    """If-Match: the version the text was edited from ("3" or "file"); 428 without it, so two editors
    can never overwrite each other by leaving it out."""
    raw = request.headers.get("If-Match")
    if raw is None:
        raise ApiError(428, 'send If-Match with the version you edited (from GET /api/plans/{number}/versions, or "file")')
    tag = raw.strip().removeprefix("W/").strip('"')
    if tag == FILE_TAG:
        return None
    if not tag.isdigit() or len(tag) > 9:
        raise ApiError(400, 'If-Match: a version number, or "file" for a number that runs from its file')
    return int(tag)


async def _body(request: web.Request) -> tuple[str, str]:
    """(text, summary): a YAML body as it is, or JSON {"text": ..., "summary": ...}."""
    if request.content_type == "application/json":
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not isinstance(body.get("summary", ""), str):
            raise ApiError(422, 'body: a JSON object like {"text": "<the plan as YAML>", "summary": "what changed"}')
        if set(body) - {"text", "summary"}:
            raise ApiError(422, f"body: unknown key(s) {', '.join(sorted(set(body) - {'text', 'summary'}))}")
        return body["text"], body.get("summary", "")[:MAX_SUMMARY]
    if request.content_type not in ("application/yaml", "application/x-yaml", "text/yaml", "text/plain"):
        raise ApiError(415, "send the plan as YAML (Content-Type: application/yaml) or JSON {\"text\": ...}")
    raw = await request.read()
    try:
        return raw.decode("utf-8"), request.headers.get("X-Summary", "")[:MAX_SUMMARY]
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 text") from None


def _stale(exc: StaleVersion) -> ApiError:
    current: PlanVersion | None = exc.current
    return ApiError(412, str(exc), current_version=current.version if current else None,
                    current=version_json(current) if current else None)


def _rejected(exc: PlanRejected) -> ApiError:
    return ApiError(422, f"the plan does not validate: {len(exc.issues)} problem(s); nothing was stored",
                    issues=[issue_json(i) for i in exc.issues])


async def save(request: web.Request) -> web.Response:
    number = _number(request)
    expected = _expected(request)
    text, summary = await _body(request)
    try:
        version = await save_plan(_plan_deps(request), number, text, author=_author(request), origin="api",
                                  expected_version=expected, summary=summary or "changed over the API")
    except StaleVersion as exc:
        raise _stale(exc) from None
    except PlanRejected as exc:
        raise _rejected(exc) from None
    return web.json_response(version_json(version), status=201, headers={"ETag": _etag(version.version)})


async def restore(request: web.Request) -> web.Response:
    number = _number(request)
    version = _version_arg(request)
    deps = _plan_deps(request)
    if "If-Match" in request.headers:
        expected = _expected(request)
    else:
        try:
            expected = (await current_text(deps, number))[1]
        except UnknownPlan:
            raise ApiError(404, f"no number {number}") from None
    try:
        stored = await restore_plan(deps, number, version, author=_author(request), expected_version=expected)
    except StaleVersion as exc:
        raise _stale(exc) from None
    except PlanRejected as exc:
        raise _rejected(exc) from None
    except LookupError:
        raise ApiError(404, f"plan {number} has no version {version}") from None
    return web.json_response(version_json(stored), status=201, headers={"ETag": _etag(stored.version)})

