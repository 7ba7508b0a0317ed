"""Asterisk's side of FastAGI, played over real TCP, faithful to res/res_agi.c as ../shared/AGI.md records it.

Asterisk is the TCP client: it connects, sends the agi_* environment, then reads one command per line,
splits it with parse_args() and answers with the exact reply lines Asterisk uses. The caller's behaviour
(digits, dial outcomes, when they hang up) comes from a CallScript; time is virtual (nothing sleeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections import Counter, deque
from typing import Awaitable, Callable

from callrouter.emulator.agi_args import parse_args
from callrouter.emulator.script import CallScript, CallTranscript, DialRecord

AGI_BUF_LEN = 8192
ENDPOS = 8000  # samples "played" by a STREAM FILE that ran to its end
DEAD_SAFE = ("EXEC", "GET VARIABLE", "GET FULL VARIABLE", "SET VARIABLE", "VERBOSE", "NOOP", "DATABASE", "ASYNCAGI BREAK",
             "SPEECH DESTROY", "SPEECH UNLOAD GRAMMAR")
# Known verbs, longest first so "GET FULL VARIABLE" wins over "GET VARIABLE"-like prefixes.
VERBS = sorted(
    ("ANSWER", "HANGUP", "STREAM FILE", "GET DATA", "GET VARIABLE", "GET FULL VARIABLE", "SET VARIABLE", "EXEC",
     "RECORD FILE", "VERBOSE", "NOOP", "WAIT FOR DIGIT", "CHANNEL STATUS", "DATABASE GET", "DATABASE PUT"),
    key=lambda v: -len(v.split()),
)
USAGE = {
    "SET VARIABLE": "Usage: SET VARIABLE <variablename> <value>\n Sets a variable to the current channel.",
    "GET VARIABLE": "Usage: GET VARIABLE <variablename>\n Returns 0 if <variablename> is not set.",
    "GET DATA": "Usage: GET DATA <file to be streamed> [timeout] [max digits]",
    "STREAM FILE": "Usage: STREAM FILE <filename> <escape digits> [sample offset]",
    "RECORD FILE": "Usage: RECORD FILE <filename> <format> <escape digits> <timeout> [offset samples] [BEEP] [s=silence]",
    "EXEC": "Usage: EXEC <application> <options>",
}
_FAILURE_RANK = ("BUSY", "CONGESTION", "CHANUNAVAIL")  # which failure a ring-all reports when all legs fail
_thread_ids = itertools.count(140000000000000)


def render_environment(script: CallScript, host: str, port: int) -> bytes:
    """The agi_* header exactly as setup_env() writes it for a FastAGI call."""
    if script.raw_environment is not None:
        return script.raw_environment
    tech = script.channel.split("/", 1)[0] if "/" in script.channel else "PJSIP"
    pairs = [
        ("agi_network", "yes"),
        ("agi_network_script", script.script),
        ("agi_request", f"agi://{host}:{port}/{script.script}"),
        ("agi_channel", script.channel),
        ("agi_language", script.language),
        ("agi_type", tech),
        ("agi_uniqueid", script.uniqueid),
        ("agi_version", "22.0.0"),
        ("agi_callerid", script.callerid or "unknown"),
        ("agi_calleridname", script.calleridname or "unknown"),
        ("agi_callingpres", "0"),
        ("agi_callingani2", "0"),
        ("agi_callington", "0"),
        ("agi_callingtns", "0"),
        ("agi_dnid", script.dnid or "unknown"),
        ("agi_rdnis", "unknown"),
        ("agi_context", script.context),
        ("agi_extension", script.extension),
        ("agi_priority", "1"),
        ("agi_enhanced", "0.0"),
        ("agi_accountcode", ""),
        ("agi_threadid", str(next(_thread_ids))),
    ]
    pairs += [(f"agi_arg_{i}", arg) for i, arg in enumerate(script.args, 1)]
    return "".join(f"{k}: {v}\n" for k, v in pairs).encode() + b"\n"


class _Call:
    """One emulated channel: its variables, its caller, and the command loop."""

    def __init__(self, script: CallScript, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.script, self.reader, self.writer = script, reader, writer
        self.t = CallTranscript()
        self.vars: dict[str, str] = dict(script.variables)
        self.vars.setdefault("CALLERID(num)", script.callerid)
        self.vars.setdefault("CALLERID(name)", script.calleridname)
        self.dtmf = deque(script.dtmf)
        self.dead = False
        # A command failed on a live channel (res_agi.c run_agi: its handler returned RESULT_FAILURE while
        # ast_check_hangup() was false): AGISTATUS is FAILURE at the end, even after a hang-up, and the
        # dialplan goes on after AGI(). Only a hang-up with no such failure before it gives HANGUP.
        self.failed = False
        self.notice_after_next = False  # HANGUP is owed after the next reply (an answered Dial ended)
        self.notice_before_next = False  # HANGUP is owed before the next reply (the caller hung up mid-command)
        self.now = script.start_epoch  # virtual time; the channel was created at start_epoch
        self.answered_at: float | None = None
        self.counts: Counter[str] = Counter()
        self.handlers: dict[str, Callable[[list[str]], Awaitable[None]]] = {
            "ANSWER": self.answer, "HANGUP": self.hangup, "STREAM FILE": self.stream_file, "GET DATA": self.get_data,
            "GET VARIABLE": self.get_variable, "GET FULL VARIABLE": self.get_full_variable,
            "SET VARIABLE": self.set_variable, "EXEC": self.exec, "RECORD FILE": self.record_file,
            "VERBOSE": self.verbose, "NOOP": self.noop, "WAIT FOR DIGIT": self.wait_for_digit,
            "CHANNEL STATUS": self.channel_status,
        }

    # -- output ---------------------------------------------------------------------------------

    def send(self, line: str) -> None:
        self.t.replies.append(line)
        self.writer.write(line.encode() + b"\n")

    def hang_up_now(self) -> None:
        """The caller's channel is gone: Asterisk tells a FastAGI session once, with a line HANGUP."""
        if not self.dead:
            self.dead = True
            self.t.hung_up = True
            self.send("HANGUP")

    def usage(self, verb: str) -> None:
        text = USAGE.get(verb)
        if text is None:
            self.send("520 Invalid command syntax.  Proper usage not available.")
            return
        self.send("520-Invalid command syntax.  Proper usage follows:")
        for line in text.split("\n"):
            self.send(line)
        self.send("520 End of proper usage.")

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, timeout: float, host: str, port: int) -> None:
        self.writer.write(render_environment(self.script, host, port))
        while True:
            try:
                raw = await asyncio.wait_for(self.reader.readuntil(b"\n"), timeout)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    self.t.error = f"connection closed inside a command line: {exc.partial[:80]!r}"
                break
            except asyncio.LimitOverrunError:
                chunk = await self.reader.read(AGI_BUF_LEN - 1)
                self.t.error = "command line longer than AGI_BUF_LEN"
                raw = chunk
            except asyncio.TimeoutError:
                self.t.error = f"router said nothing for {timeout}s"
                self.t.agi_status = "FAILURE"
                return
            except ConnectionError as exc:
                self.t.error = f"connection lost: {exc}"
                break
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            if line.endswith("\r"):
                line = line[:-1]
            await self.command(line)
            try:
                await self.writer.drain()
            except ConnectionError as exc:
                self.t.error = f"connection lost: {exc}"
                break
        self.t.agi_status = "FAILURE" if self.failed else "HANGUP" if self.dead else "SUCCESS"

    async def command(self, line: str) -> None:
        argv = parse_args(line)
        self.t.lines.append(line)
        self.t.commands.append(argv)
        words = [w.upper() for w in argv]
        verb = next((v for v in VERBS if words[: len(v.split())] == v.split()), None)
        if self.notice_before_next:
            # run_agi noticed the hangup before it read this command: the notice goes out first.
            self.notice_before_next = False
            self.send("HANGUP")
        if verb is None or verb not in self.handlers:
            self.send("510 Invalid or unknown command")
            return
        if self.notice_after_next:
            await self.run_dead_safe(verb, argv)
            return
        if self.dead and not any(verb == d or verb.startswith(d + " ") for d in DEAD_SAFE):
            self.send("511 Command Not Permitted on a dead channel or intercept routine")
            return
        key = verb if verb != "EXEC" or len(argv) < 2 else f"EXEC {argv[1].upper()}"
        self.counts[key] += 1
        hangup = self.script.hangup
        hit = hangup is not None and hangup.command.upper() == key and hangup.occurrence == self.counts[key] and not self.dead
        if hit and hangup is not None and hangup.mode == "notice_first":
            self.hang_up_now()
            self.failure_reply(verb, argv)
            return
        if hit and hangup is not None and hangup.mode == "during":
            self.failure_reply(verb, argv)
            self.dead = self.t.hung_up = True
            self.notice_before_next = True  # a separate write, after the router's next command
            return
        await self.handlers[verb](argv[len(verb.split()):])
        if hit:
            self.hang_up_now()

    async def run_dead_safe(self, verb: str, argv: list[str]) -> None:
        """The first command after an answered Dial ended: handled (if dead-safe), then HANGUP follows."""
        self.notice_after_next = False
        if any(verb == d or verb.startswith(d + " ") for d in DEAD_SAFE):
            await self.handlers[verb](argv[len(verb.split()):])
        else:
            self.send("511 Command Not Permitted on a dead channel or intercept routine")
        self.send("HANGUP")

    def failure_reply(self, verb: str, argv: list[str]) -> None:
        """What a command returns when the caller hangs up while it runs."""
        if verb == "STREAM FILE":
            self.send("200 result=-1 endpos=0")
        elif verb == "RECORD FILE":
            self.t.record_files.append(argv[2] if len(argv) > 2 else "")
            self.send(f"200 result=-1 (hangup) endpos={ENDPOS * 3}")  # handle_recordfile: -1, samples so far
        elif verb == "EXEC" and len(argv) > 1 and argv[1].upper() == "DIAL":
            parts = (argv[2] if len(argv) > 2 else "").split(",", 2)
            targets = parts[0].split("&")
            self.start_dial(parts[2] if len(parts) > 2 else "")
            self.now += 4  # the caller gave up after 4 s of ringing
            self.vars.update(DIALSTATUS="CANCEL")
            self.t.dials.append(DialRecord(targets, None, "", "CANCEL", None, 4, 0))
            self.send("200 result=-1")
        elif verb in ("GET DATA", "ANSWER", "WAIT FOR DIGIT"):
            self.send("200 result=-1")
        else:
            self.send("200 result=0")

    # -- commands -------------------------------------------------------------------------------

    async def answer(self, args: list[str]) -> None:
        self.t.answered = True
        if self.answered_at is None:
            self.answered_at = self.now
        self.send("200 result=0")

    async def channel_status(self, args: list[str]) -> None:
        self.send(f"200 result={6 if self.answered_at is not None else 4}")  # AST_STATE_UP / AST_STATE_RING

    async def hangup(self, args: list[str]) -> None:
        if args and args[0] != self.script.channel:
            self.send("200 result=-1")
            return
        self.send("200 result=1")
        self.hang_up_now()  # run_agi notices the hangup and tells the session

    def next_dtmf(self) -> str:
        return self.dtmf.popleft() if self.dtmf else ""

    async def stream_file(self, args: list[str]) -> None:
        if len(args) < 2:
            return self.usage("STREAM FILE")
        self.t.played.append(args[0])
        if args[0] in self.script.missing_files:
            self.failed = True  # handle_streamfile: the file cannot be opened -> RESULT_FAILURE
            return self.send(f"200 result=-1 endpos={args[2] if len(args) > 2 else 0}")
        self.now += self.script.prompt_seconds
        await self.playing()
        if args[1]:
            pressed = self.next_dtmf()
            if pressed and pressed[0] in args[1]:
                return self.send(f"200 result={ord(pressed[0])} endpos={ENDPOS // 2}")
        self.send(f"200 result=0 endpos={ENDPOS}")

    async def get_data(self, args: list[str]) -> None:
        if not args:
            return self.usage("GET DATA")
        self.t.played.append(args[0])
        if args[0] in self.script.missing_files:
            return self.send("200 result=-1")  # Asterisk 22: the prompt cannot be opened; the channel lives on
        max_digits = int(args[2]) if len(args) > 2 and args[2].isdigit() else 1024
        entry = self.next_dtmf()
        self.pass_time(entry, args[1] if len(args) > 1 else "", prompt=True)
        await self.playing()
        if "#" in entry:
            return self.send(f"200 result={entry.split('#', 1)[0][:max_digits]}")
        digits = entry[:max_digits]
        self.send(f"200 result={digits}" if len(digits) >= max_digits else f"200 result={digits} (timeout)")

    async def playing(self) -> None:
        """The prompt's real playing time, when the script asks for one (CallScript.prompt_wait)."""
        if self.script.prompt_wait > 0:
            await asyncio.sleep(self.script.prompt_wait)

    def pass_time(self, entry: str, timeout_ms: str, *, prompt: bool) -> None:
        """Virtual time for a prompt and the caller's answer to it (or the wait for one)."""
        self.now += self.script.prompt_seconds if prompt else 0.0
        if entry:
            self.now += self.script.press_seconds
        elif timeout_ms.lstrip("-").isdigit() and int(timeout_ms) > 0:
            self.now += int(timeout_ms) / 1000

    async def wait_for_digit(self, args: list[str]) -> None:
        pressed = self.next_dtmf()
        self.pass_time(pressed, args[0] if args else "", prompt=False)
        self.send(f"200 result={ord(pressed[0]) if pressed else 0}")

    async def get_variable(self, args: list[str]) -> None:
        if len(args) != 1:
            return self.usage("GET VARIABLE")
        value = self.vars.get(args[0])
        self.send("200 result=0" if value is None else f"200 result=1 ({value})")

    async def get_full_variable(self, args: list[str]) -> None:
        if not args:
            return self.usage("GET FULL VARIABLE")
        self.send(f"200 result=1 ({self.substitute(args[0])})")

    def substitute(self, text: str) -> str:
        """${NAME}, and the two functions the router reads: SHARED(NAME) and STRFTIME(,,%s.%3q)."""
        return re.sub(r"\$\{([^{}]*)\}", lambda m: self.expand(m.group(1)), text)

    def expand(self, name: str) -> str:
        if name.startswith("STRFTIME(") and name.endswith(")"):
            epoch, _, rest = name[len("STRFTIME("):-1].partition(",")
            _, _, fmt = rest.partition(",")
            if epoch == "" and fmt == "%s.%3q":
                return f"{self.now:.3f}"
            self.t.error = f"STRFTIME form the emulator does not know: {name[:60]!r}"
            return ""
        return self.vars.get(name, "")

    async def set_variable(self, args: list[str]) -> None:
        if len(args) != 2:
            return self.usage("SET VARIABLE")
        self.vars[args[0]] = args[1]
        self.send("200 result=1")

    async def verbose(self, args: list[str]) -> None:
        self.send("200 result=1")

    async def noop(self, args: list[str]) -> None:
        self.send("200 result=0")

    async def record_file(self, args: list[str]) -> None:
        if len(args) < 4:
            return self.usage("RECORD FILE")
        self.t.record_files.append(args[0])
        self.now += 4.0
        folder = args[0].rsplit("/", 1)[0] if "/" in args[0] else "."
        if self.script.existing_dirs is not None and folder not in self.script.existing_dirs:
            self.failed = True  # handle_recordfile returns RESULT_FAILURE after "(writefile)"
            return self.send("200 result=-1 (writefile)")  # ast_writefile() does not create folders
        self.send(f"200 result=0 (timeout) endpos={ENDPOS * 4}")

    async def exec(self, args: list[str]) -> None:
        if not args:
            return self.usage("EXEC")
        app, options = args[0], args[1] if len(args) > 1 else ""  # handle_exec passes argv[2] only
        if self.vars.get("AGIEXECFULL", "").lower() in ("yes", "true", "1", "on"):
            options = self.substitute(options)
        name = app.upper()
        if name == "DIAL":
            return await self.dial(options)
        if name == "MIXMONITOR":
            self.t.mixmonitor.append(options)
            self.vars["MIXMONITOR_FILENAME"] = options.split(",")[0]
        elif name == "PLAYBACK":
            self.t.played.extend(options.split(",")[0].split("&"))
        elif name == "SET":
            var, _, value = options.partition("=")
            self.vars[var] = value
        elif name not in ("WAIT", "VERBOSE", "NOOP"):
            return self.send("200 result=-2")  # "Could not find application"
        self.send("200 result=0")

    async def dial(self, options: str) -> None:
        parts = options.split(",", 2)
        targets = [t for t in parts[0].split("&") if t]
        timeout = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        flags = parts[2] if len(parts) > 2 else ""
        if not targets:
            self.vars.update(DIALSTATUS="INVALIDARGS")
            return self.send("200 result=-1")
        legs = [(t, self.script.dial.get(t, self.script.default_dial)) for t in targets]
        limit = timeout if timeout is not None else 10**6
        answering = sorted((d.ring_seconds, i) for i, (_, d) in enumerate(legs) if d.status == "ANSWER" and d.ring_seconds <= limit)
        hooks = self.start_dial(flags)
        if answering:
            ring, i = answering[0]
            target, leg = legs[i]
            self.now += ring
            if self.answered_at is None:
                self.answered_at = self.now  # Dial answers a caller nobody answered before, as the line does
            self.t.answered = True
            if "U" in hooks:
                self.run_hook(hooks["U"])
            self.now += leg.talk_seconds
            # end_bridge_callback: both from the CALLING channel: its up time and its age (app_dial.c).
            up_ms = int((self.now - (self.answered_at if self.answered_at is not None else self.now)) * 1000)
            age_ms = int((self.now - self.script.start_epoch) * 1000)
            # app_dial sets DIALEDPEERNUMBER to the dial string without its technology.
            self.vars.update(DIALSTATUS="ANSWER", ANSWEREDTIME=str(up_ms // 1000), ANSWEREDTIME_MS=str(up_ms),
                             DIALEDTIME=str(age_ms // 1000), DIALEDTIME_MS=str(age_ms),
                             DIALEDPEERNUMBER=target.split("/", 1)[-1])
            self.t.dials.append(DialRecord(targets, timeout, flags, "ANSWER", target, ring, leg.talk_seconds))
            if leg.hold is not None:
                await leg.hold.wait()
            # Dial returns -1 after a bridge however it ended (handle_exec passes it on; -1 is not
            # RESULT_FAILURE). If the caller hung up, the channel is gone: Asterisk 22 replies first and
            # run_agi sends HANGUP after the next command it handles. If the line hung up, the caller's
            # channel is still up and the AGI goes on as before.
            self.send("200 result=-1")
            if leg.ended_by == "caller":
                self.dead = self.t.hung_up = True
                self.notice_after_next = True
            return None
        statuses = [("NOANSWER" if d.status == "ANSWER" else d.status) for _, d in legs]
        if "NOANSWER" in statuses or "CANCEL" in statuses:
            status, ring = "NOANSWER", limit if timeout is not None else 60
        else:
            status = next(s for s in _FAILURE_RANK if s in statuses)
            ring = min(d.ring_seconds for _, d in legs)
        self.now += ring
        self.vars.update(DIALSTATUS=status)
        self.vars.pop("DIALEDPEERNUMBER", None)
        self.t.dials.append(DialRecord(targets, timeout, flags, status, None, ring, 0))
        self.send("200 result=0")

    def start_dial(self, flags: str) -> dict[str, str]:
        """What app_dial does before calling: clear the time variables, run b() on the new channels.

        Returns the b()/U() arguments found in the options (U() runs later, when a line answers).
        """
        for name in ("ANSWEREDTIME", "ANSWEREDTIME_MS", "DIALEDTIME", "DIALEDTIME_MS"):
            self.vars[name] = ""  # app_dial.c sets them empty at the start of every Dial
        hooks = {m.group(1): m.group(2) for m in re.finditer(r"([bU])\(((?:[^()]|\([^()]*\))*)\)", flags)}
        if "b" in hooks:
            self.run_hook(hooks["b"])
        return hooks

    def run_hook(self, location: str) -> None:
        """A b() or U() Gosub: what asterisk/extensions.conf's hook contexts do, if they are loaded.

        `b(ctx^s^1(arg1^arg2))` and `U(ctx^arg1^arg2)`; each context writes `<arg2>:<now>` into
        SHARED(<var>,<arg1>). A missing context is a failed Gosub: Asterisk logs it and the Dial goes on.
        """
        if "(" in location:
            head, _, rest = location.partition("(")
            context, args = head.split("^", 1)[0], rest.rstrip(")").split("^")
        else:
            context, *args = location.split("^")
        var = {"callrouter-dialing": "CALLROUTER_DIALING", "callrouter-answered": "CALLROUTER_ANSWERED"}.get(context)
        self.t.hooks.append(location)
        if not self.script.timing_hooks or var is None or len(args) < 2:
            return
        if args[0] == self.script.channel:  # SHARED() on another channel's name writes nothing here
            self.vars[f"SHARED({var})"] = f"{args[1]}:{self.now:.3f}"


async def run_call(host: str, port: int, script: CallScript, *, timeout: float = 10.0) -> CallTranscript:
    """Place one emulated call against a FastAGI server and return what happened."""
    reader, writer = await asyncio.open_connection(host, port, limit=AGI_BUF_LEN)
    call = _Call(script, reader, writer)
    try:
        await call.run(timeout, host, port)
    finally:
        call.t.variables = dict(call.vars)
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):  # the router may already have reset it
            await writer.wait_closed()
    return call.t
