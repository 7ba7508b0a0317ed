"""What an emulated call does (the script) and what it saw (the transcript).

A script is plain data so a scenario test can be written as a literal table: who calls which number,
which digits the caller presses, how each dialled target answers, and where the caller hangs up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal, Mapping

DIAL_STATUSES = ("ANSWER", "BUSY", "NOANSWER", "CHANUNAVAIL", "CONGESTION", "CANCEL")


@dataclass(frozen=True)
class DialScript:
    """How one dialled target behaves.

    status: the DIALSTATUS it produces. ANSWER whose ring_seconds exceed the Dial timeout becomes NOANSWER,
    as a phone that rings past the timeout does. NOANSWER rings for the whole timeout.
    hold: when given, an answered call stays bridged until the event is set (the benchmark holds calls open).
    ended_by: who hangs up an answered call. "caller": the caller's channel goes with the bridge (Dial
    replies -1, HANGUP follows the next command, AGISTATUS=HANGUP). "line": the line hangs up and the
    caller's channel stays up (Dial still replies -1, no HANGUP, AGISTATUS=SUCCESS), as Asterisk 22.10.1
    did (docs/asterisk-verification.md, session 14).
    """

    status: str = "ANSWER"
    ring_seconds: float = 3
    talk_seconds: float = 30
    hold: asyncio.Event | None = None
    ended_by: Literal["caller", "line"] = "caller"

    def __post_init__(self) -> None:
        if self.status not in DIAL_STATUSES:
            raise ValueError(f"unknown dial status {self.status!r}")


@dataclass(frozen=True)
class HangupAt:
    """Where the caller hangs up.

    command: the AGI verb as sent, upper-cased, with EXEC's application name, e.g. "GET DATA",
    "STREAM FILE", "EXEC DIAL", "ANSWER".
    occurrence: which occurrence of that command (1-based).
    mode: "during" - the caller hangs up while the command runs: the command's failure reply (for Dial:
    DIALSTATUS=CANCEL, result -1) in one write, then "HANGUP" in a separate one, as Asterisk 22.10 does;
    the emulator holds the notice back until the router's next command has arrived (the order a router
    sees when it is quicker than Asterisk's run_agi loop), then that command gets 511;
    "notice_first" - the same, with "HANGUP" before the reply (../shared/AGI.md: it may come at any moment);
    "after" - the command completes normally, then "HANGUP" is sent while no command is pending.
    """

    command: str
    occurrence: int = 1
    mode: Literal["during", "notice_first", "after"] = "during"


@dataclass(frozen=True)
class CallScript:
    """One inbound call as Asterisk would present it to `AGI(agi://host:port/<script>,<args>)`."""

    script: str = "route"
    args: tuple[str, ...] = ()
    callerid: str = "13912345678"
    calleridname: str = "unknown"
    dnid: str = "4008001234"
    extension: str = "4008001234"
    context: str = "from-pstn"
    channel: str = "PJSIP/trunk-00000001"
    uniqueid: str = "1700000000.1"
    language: str = "zh"
    # One entry per digit-collecting command (GET DATA, STREAM FILE with escape digits, WAIT FOR DIGIT),
    # in order: the digits the caller presses, "" for no input (timeout). When exhausted: no input.
    dtmf: tuple[str, ...] = ()
    # Dial outcome per target string as it appears inside Dial's first argument (e.g. "Local/138...@lines").
    dial: Mapping[str, DialScript] = field(default_factory=dict)
    default_dial: DialScript = DialScript(status="NOANSWER")
    hangup: HangupAt | None = None
    # Prompt files that do not exist on this "Asterisk" (STREAM FILE and GET DATA answer result=-1).
    missing_files: frozenset[str] = frozenset()
    # Folders that exist for RECORD FILE, which does not create folders; None: every folder exists.
    existing_dirs: frozenset[str] | None = None
    # Channel variables present before the AGI starts.
    variables: Mapping[str, str] = field(default_factory=dict)
    # Extra raw environment lines to send instead of the generated ones (protocol-abuse tests).
    raw_environment: bytes | None = None
    # Virtual time (nothing sleeps): the caller's channel is created at `start_epoch`; each prompt plays
    # for `prompt_seconds`, a caller presses digits `press_seconds` after a prompt ends (no input waits the
    # command's timeout), a Dial takes its lines' ring and talk seconds.
    start_epoch: float = 1_700_000_000.0
    prompt_seconds: float = 2.0
    press_seconds: float = 1.0
    # Real seconds each played prompt (STREAM FILE, GET DATA) takes before its reply, as playback does on
    # a real Asterisk: the bench's paced pass keeps many calls in progress without a saturating load.
    # 0 (the tests): nothing sleeps.
    prompt_wait: float = 0.0
    # asterisk/extensions.conf's [callrouter-dialing] and [callrouter-answered] are loaded: Dial's b()/U()
    # hooks stamp the clock onto the caller. False plays an older dialplan without them.
    timing_hooks: bool = True


@dataclass
class DialRecord:
    """One EXEC Dial as the emulator executed it."""

    targets: list[str]
    timeout: int | None
    options: str
    status: str
    answered_target: str | None
    ring_seconds: float
    talk_seconds: float


@dataclass
class CallTranscript:
    """Everything the emulated Asterisk saw and said during one call."""

    lines: list[str] = field(default_factory=list)  # raw command lines received, without newline
    commands: list[list[str]] = field(default_factory=list)  # each line split as Asterisk splits it
    replies: list[str] = field(default_factory=list)  # every line sent after the environment, HANGUP included
    variables: dict[str, str] = field(default_factory=dict)  # channel variables when the call ended
    dials: list[DialRecord] = field(default_factory=list)
    played: list[str] = field(default_factory=list)  # files streamed (STREAM FILE, GET DATA, EXEC Playback)
    mixmonitor: list[str] = field(default_factory=list)  # EXEC MixMonitor options (first is the file)
    record_files: list[str] = field(default_factory=list)  # RECORD FILE paths
    hooks: list[str] = field(default_factory=list)  # Dial b()/U() Gosub locations run, in order
    answered: bool = False
    hung_up: bool = False  # the caller's channel hung up (scripted, or the bridged call ended)
    agi_status: str = ""  # SUCCESS, HANGUP or FAILURE, as AGISTATUS would read after AGI() returns
    error: str | None = None  # a protocol problem the emulator met (e.g. an unparseable line)
