"""The service's own settings (config.yaml): where to listen, limits, timeouts, paths, the store."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from callrouter.config.plan import Blacklist, Frozen
from callrouter.config.types import TimeZoneName


class Listen(Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=4573, ge=0, le=65535)


class Timeouts(Frozen):
    """Seconds. A silent or stuck peer must never hold a session slot forever."""

    environment: float = Field(default=5.0, gt=0, le=120)  # to receive the agi_* block
    command: float = Field(default=30.0, gt=0, le=600)  # for an ordinary command's reply
    max_call: float = Field(default=4 * 3600.0, gt=0, le=48 * 3600.0)  # an answered call's whole length
    drain: float = Field(default=30.0, ge=0, le=3600)  # SIGTERM: how long calls in progress may finish


class Dialing(Frozen):
    """How a line's `number` becomes a Dial target (through the dialplan context in asterisk/)."""

    template: str = "Local/{number}@callrouter-lines"

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        if value.count("{number}") != 1:
            raise ValueError("template must contain {number} exactly once")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{1,15}/[A-Za-z0-9_\-.@:+/]*\{number\}[A-Za-z0-9_\-.@:+/]*", value):
            raise ValueError("template must look like TECH/{number}@context, with no , & ( ) $ or spaces")
        return value


class Records(Frozen):
    """Where finished call records go until the CDR store takes over (JSON lines, append-only)."""

    jsonl_path: str | None = "var/calls.jsonl"


class ServiceConfig(Frozen):
    listen: Listen = Listen()
    max_sessions: int = Field(default=2000, ge=1, le=100_000)
    timezone: TimeZoneName = "Asia/Shanghai"
    dialplans_dir: str = "dialplans"
    prompts_dir: str = "ivr_prompts"  # our copy of the prompts (checked by `callrouter check`)
    asterisk_prompts_dir: str = Field(default="callrouter", pattern=r"^[A-Za-z0-9_\-./]{1,200}$")  # as Asterisk plays them
    recordings_dir: str = Field(default="/var/spool/asterisk/monitor/callrouter", pattern=r"^/[A-Za-z0-9_\-./]{1,200}$")
    voicemail_dir: str = Field(default="/var/spool/asterisk/callrouter-voicemail", pattern=r"^/[A-Za-z0-9_\-./]{1,200}$")
    timeouts: Timeouts = Timeouts()
    dialing: Dialing = Dialing()
    blacklist: Blacklist = Blacklist()  # applies to every number
    records: Records = Records()
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
