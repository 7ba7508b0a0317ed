"""The OpenAPI 3.1 description of the admin API; a test checks it names exactly the routes the app serves."""

from __future__ import annotations

from typing import Any

from callrouter.model.record import DISPOSITIONS


def _q(name: str, description: str, schema: dict[str, Any] | None = None, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema or {"type": "string", "maxLength": 200}}


def _p(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_ERR = {"$ref": "#/components/responses/Error"}
_AUTH = {"401": {"$ref": "#/components/responses/Unauthorized"}}
_FILTERS = [
    _q("number", "400 number (digits)"),
    _q("caller", "caller number; normalised like the router does (+86 139... = 139...)"),
    _q("from", "start, ISO 8601; without a zone: the service's time zone"),
    _q("to", "end (exclusive), ISO 8601"),
    {
        "name": "disposition",
        "in": "query",
        "required": False,
        "description": "one or several: repeated, or comma-separated in one value",
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "items": {"type": "string", "enum": list(DISPOSITIONS)}},
    },
]

_SOURCE = _q("source", "which Asterisk, when two share the uniqueid; without it the newest such call", {"type": "string", "maxLength": 80})

CALL_PROPERTIES: dict[str, Any] = {
    "id": {"type": "integer"},
    "uniqueid": {"type": "string"},
    "source": {"type": "string", "description": "which Asterisk the call came from ('' if not known)"},
    "number": {"type": "string"},
    "caller": {"type": "string"},
    "caller_raw": {"type": "string"},
    "caller_name": {"type": "string"},
    "started_at": {"type": "string", "format": "date-time"},
    "answered_at": {"type": ["string", "null"], "format": "date-time"},
    "ended_at": {"type": "string", "format": "date-time"},
    "duration_seconds": {"type": "integer"},
    "billable_seconds": {"type": "integer"},
    "ring_seconds": {"type": "integer"},
    "disposition": {"type": "string", "enum": list(DISPOSITIONS)},
    "reason": {"type": "string"},
    "ivr_path": {"type": "array", "items": {"type": "string"}},
    "hunt_group": {"type": ["string", "null"]},
    "strategy": {"type": ["string", "null"]},
    "answered_line": {"type": ["string", "null"]},
    "recording_file": {"type": ["string", "null"]},
    "recording_purged_at": {"type": ["string", "null"], "format": "date-time", "description": "when retention deleted the recording"},
    "voicemail_file": {"type": ["string", "null"]},
    "instance": {"type": "string"},
    "router_ms": {"type": "number"},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callrouter admin API",
            "version": "1",
            "description": "Management back office of a 400-number service: call data, recordings, runtime blacklist, statistics, plans.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": _json("Error", "a bad request: the message says what to change"),
                "Unauthorized": _json("Error", "missing or wrong bearer token"),
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Call": {"type": "object", "properties": CALL_PROPERTIES},
                "CallDetail": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Call"},
                        {
                            "type": "object",
                            "properties": {
                                "trace": {"type": "array", "items": {"type": "string"}},
                                "attempts": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                    ]
                },
                "CallPage": {
                    "type": "object",
                    "properties": {
                        "calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}},
                        "next_cursor": {"type": ["string", "null"]},
                    },
                },
                "BlacklistEntry": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "scope": {"type": "string"},
                        "caller": {"type": "string"},
                        "reason": {"type": "string"},
                        "created_by": {"type": "string"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "expires_at": {"type": ["string", "null"], "format": "date-time"},
                    },
                },
                "NewBlacklistEntry": {
                    "type": "object",
                    "required": ["caller"],
                    "additionalProperties": False,
                    "properties": {
                        "caller": {"type": "string", "maxLength": 40},
                        "scope": {"type": "string", "default": "*", "description": "a 400 number, or * for all"},
                        "reason": {"type": "string", "maxLength": 200},
                        "expires_at": {"type": "string", "format": "date-time"},
                        "ttl_seconds": {"type": "integer", "minimum": 60},
                    },
                },
                "Report": {"type": "object", "description": "totals, days, hours, peak_hours and lines of one number"},
                "Plans": {"type": "object", "properties": {"plans": {"type": "array", "items": {"type": "object"}}}},
                "Lines": {
                    "type": "object",
                    "properties": {
                        "numbers": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "number": {"type": "string"},
                                    "name": {"type": "string"},
                                    "working": {"type": "integer", "description": "lines rung in their place (healthy or half-open)"},
                                    "total": {"type": "integer"},
                                    "lines": {"type": "array", "items": {"$ref": "#/components/schemas/LineStatus"}},
                                },
                            },
                        }
                    },
                },
                "LineStatus": {
                    "type": "object",
                    "properties": {
                        "number": {"type": "string"},
                        "line": {"type": "string", "description": "the line's id in the plan"},
                        "name": {"type": ["string", "null"]},
                        "phone": {"type": "string", "description": "its number or dial target, masked: 138****8001"},
                        "groups": {"type": "array", "items": {"type": "string"}},
                        "state": {"type": "string", "enum": ["healthy", "suspended", "half_open"]},
                        "working": {"type": "boolean"},
                        "unavailable": {"type": "integer", "description": "CHANUNAVAIL / CONGESTION since it last answered"},
                        "noanswer": {"type": "integer", "description": "NOANSWER since it last answered"},
                        "last_status": {"type": ["string", "null"]},
                        "since": {"type": ["string", "null"], "format": "date-time", "description": "first of those failures"},
                        "last_failure": {"type": ["string", "null"], "format": "date-time"},
                        "retry_at": {"type": ["string", "null"], "format": "date-time", "description": "when the cool-down ends (or ended)"},
                        "reason": {"type": "string"},
                    },
                },
                "PlanVersion": {
                    "type": "object",
                    "properties": {
                        "number": {"type": "string"},
                        "version": {"type": "integer"},
                        "author": {"type": "string"},
                        "origin": {"type": "string", "enum": ["file", "console", "api", "restore"]},
                        "summary": {"type": "string"},
                        "restored_from": {"type": ["integer", "null"]},
                        "created_at": {"type": "string", "format": "date-time"},
                        "text": {"type": "string", "description": "the YAML document (one version's GET only)"},
                    },
                },
                "PlanHistory": {
                    "type": "object",
                    "properties": {
                        "number": {"type": "string"},
                        "runs": {"type": ["integer", "null"], "description": "the version this router runs; null: its file"},
                        "file": {"type": ["string", "null"]},
                        "versions": {"type": "array", "items": {"$ref": "#/components/schemas/PlanVersion"}},
                    },
                },
                "PlanSave": {
                    "type": "object",
                    "required": ["text"],
                    "additionalProperties": False,
                    "properties": {"text": {"type": "string"}, "summary": {"type": "string", "maxLength": 500}},
                },
                "StalePlan": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "current_version": {"type": ["integer", "null"]},
                        "current": {"oneOf": [{"$ref": "#/components/schemas/PlanVersion"}, {"type": "null"}]},
                    },
                },
                "PlanIssues": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "issues": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "file": {"type": "string"}, "line": {"type": "integer"}, "message": {"type": "string"},
                                    "path": {"type": "array", "items": {"type": ["string", "integer"]}},
                                },
                            },
                        },
                    },
                },
                "ReloadIssues": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "issues": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"file": {"type": "string"}, "line": {"type": "integer"}, "message": {"type": "string"}},
                            },
                        },
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"summary": "the process is alive", "security": [], "responses": {"200": {"description": "alive"}}}},
            "/readyz": {
                "get": {
                    "summary": "database reachable and configuration loaded",
                    "security": [],
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready, with the reasons"}},
                }
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "text exposition format"}}}
            },
            "/openapi.json": {"get": {"summary": "this document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/api/calls": {
                "get": {
                    "summary": "search calls, newest first",
                    "parameters": _FILTERS
                    + [_q("limit", "page size", {"type": "integer", "minimum": 1}), _q("cursor", "next_cursor of the previous page (opaque and signed: an edited cursor gets 400)")],
                    "responses": {"200": _json("CallPage", "a page of calls"), "400": _ERR, **_AUTH},
                }
            },
            "/api/calls.csv": {
                "get": {
                    "summary": "export matching calls as CSV (streamed)",
                    "parameters": _FILTERS,
                    "responses": {
                        "200": {"description": "CSV with a header row", "content": {"text/csv": {}}},
                        "400": _ERR,
                        "413": {"description": "more rows match than admin.export_max_rows"},
                        **_AUTH,
                    },
                }
            },
            "/api/calls/{uniqueid}": {
                "get": {
                    "summary": "one call with its attempts and decision trace",
                    "parameters": [_p("uniqueid", "Asterisk's uniqueid"), _SOURCE],
                    "responses": {"200": _json("CallDetail", "the call"), "404": _ERR, **_AUTH},
                }
            },
            "/api/calls/{uniqueid}/recording": {
                "get": {
                    "summary": "the call's recording (HTTP Range supported)",
                    "parameters": [_p("uniqueid", "Asterisk's uniqueid"), _SOURCE],
                    "responses": {
                        "200": {"description": "audio"},
                        "206": {"description": "the requested range"},
                        "404": _ERR,
                        "410": _ERR,
                        "416": {"description": "range not satisfiable"},
                        **_AUTH,
                    },
                }
            },
            "/api/recordings/{path}": {
                "get": {
                    "summary": "a recording by its path inside the recordings folder (HTTP Range supported)",
                    "parameters": [_p("path", "relative path; '..', absolute paths and symlinks leading out are refused")],
                    "responses": {
                        "200": {"description": "audio"},
                        "206": {"description": "the requested range"},
                        "400": _ERR,
                        "403": _ERR,
                        "404": _ERR,
                        "416": {"description": "range not satisfiable"},
                        **_AUTH,
                    },
                }
            },
            "/api/blacklist": {
                "get": {
                    "summary": "live runtime blacklist entries",
                    "parameters": [_q("scope", "a 400 number or *")],
                    "responses": {"200": {"description": "{entries: [...]}"}, "400": _ERR, **_AUTH},
                },
                "post": {
                    "summary": "add or update an entry; every router applies it within store.blacklist_refresh",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewBlacklistEntry"}}},
                    },
                    "responses": {
                        "201": _json("BlacklistEntry", "the entry as stored"),
                        "400": _ERR,
                        "413": _ERR,
                        "415": _ERR,
                        "422": _ERR,
                        **_AUTH,
                    },
                },
            },
            "/api/blacklist/{scope}/{caller}": {
                "delete": {
                    "summary": "remove an entry",
                    "parameters": [_p("scope", "a 400 number or *"), _p("caller", "the caller number")],
                    "responses": {"204": {"description": "removed"}, "400": _ERR, "404": _ERR, **_AUTH},
                }
            },
            "/api/stats/{number}": {
                "get": {
                    "summary": "statistics by local day and hour of day, peak hours, per line",
                    "parameters": [
                        _p("number", "400 number"),
                        _q("from", "first local day, YYYY-MM-DD (default: 6 days before to)"),
                        _q("to", "last local day, YYYY-MM-DD (default: today)"),
                    ],
                    "responses": {"200": _json("Report", "the report"), "400": _ERR, **_AUTH},
                }
            },
            "/api/plans": {"get": {"summary": "loaded plans, each with the version it runs (null: its file)",
                                   "responses": {"200": _json("Plans", "summary of every plan"), **_AUTH}}},
            "/api/plans/{number}/versions": {
                "get": {
                    "summary": "every version of a number's plan, newest first (the newest is the one it runs)",
                    "parameters": [_p("number", "400 number")],
                    "responses": {"200": _json("PlanHistory", "the versions, without their text"), "400": _ERR, "404": _ERR, **_AUTH},
                }
            },
            "/api/plans/{number}/versions/{version}": {
                "get": {
                    "summary": "one version with its YAML text (Accept: application/yaml gives the text alone)",
                    "parameters": [_p("number", "400 number"), _p("version", "version, from 1")],
                    "responses": {"200": _json("PlanVersion", "the version; ETag is its number"), "400": _ERR, "404": _ERR, **_AUTH},
                }
            },
            "/api/plans/{number}": {
                "put": {
                    "summary": "save a new version: validated as `callrouter check` does, stored whole, every router runs it within 2 s",
                    "parameters": [
                        _p("number", "400 number"),
                        {"name": "If-Match", "in": "header", "required": True, "schema": {"type": "string"},
                         "description": 'the version the text was edited from, or "file" when the number has none yet'},
                        {"name": "X-Summary", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 500},
                         "description": "what changed, for the history (with a YAML body)"},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/yaml": {"schema": {"type": "string"}},
                            "application/json": {"schema": {"$ref": "#/components/schemas/PlanSave"}},
                        },
                    },
                    "responses": {
                        "201": _json("PlanVersion", "the version stored (without its text); ETag is its number"),
                        "400": _ERR, "404": _ERR, "413": _ERR, "415": _ERR,
                        "412": _json("StalePlan", "someone saved since that version: nothing stored; the current version"),
                        "422": _json("PlanIssues", "the text does not validate: nothing stored; every issue located"),
                        "428": _ERR,
                        **_AUTH,
                    },
                }
            },
            "/api/plans/{number}/restore/{version}": {
                "post": {
                    "summary": "store an older version again as the newest (If-Match optional, as for PUT)",
                    "parameters": [_p("number", "400 number"), _p("version", "the version to restore")],
                    "responses": {
                        "201": _json("PlanVersion", "the new version"),
                        "404": _ERR,
                        "412": _json("StalePlan", "someone saved since the If-Match version"),
                        "422": _json("PlanIssues", "that version no longer validates (config.yaml changed?)"),
                        **_AUTH,
                    },
                }
            },
            "/api/lines": {
                "get": {
                    "summary": "each line's health (working, suspended, half-open) and why, as the routers share it",
                    "parameters": [_q("number", "one 400 number (digits); default: every plan")],
                    "responses": {"200": _json("Lines", "the lines of each number"), "400": _ERR, "404": _ERR, **_AUTH},
                }
            },
            "/api/reload": {
                "post": {
                    "summary": "reload config.yaml and every plan: validated whole, then swapped in",
                    "responses": {
                        "200": {"description": "{reloaded: true, plans: N}"},
                        "422": _json("ReloadIssues", "refused; the running configuration is unchanged"),
                        **_AUTH,
                    },
                }
            },
        },
    }
