"""Asterisk's side of AMI, for tests: a real TCP server speaking the manager protocol as Asterisk does.

Written from Asterisk's documented behaviour (main/manager.c and the manager event documentation), and
checked against a test call through a real Asterisk 22.10.1 (docs/asterisk-verification.md): the
banner line, `Key: Value` packets ended by an empty line, Login answered `Authentication accepted` (then
the connection gets events) or `Authentication failed` (then the connection is closed), `Permission
denied` for actions before login or beyond the user's write classes, Originate with Async answered
`Originate successfully queued` and later the OriginateResponse event, Hangup answered `Channel Hungup` (or
`No such channel`), Logoff answered `Goodbye`. An Originate into `Local/<exten>@<context>` plays
the call for real: the inbound half runs the FastAGI emulator against the router, and the events
(Newchannel, VarSet, DialBegin, DialEnd, Hangup) are those of what the AGI session actually did. The
Originate's `Variable` headers are set on the `;1` half and copied to the `;2` half, as core_unreal does.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass, field
from typing import Mapping

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
_LOCAL = re.compile(r"Local/([0-9+*#]+)@([A-Za-z0-9_\-]+)\Z")
_CALLERID = re.compile(r'\s*(?:"?([^"<]*)"?\s*)?<([^>]*)>\s*\Z')
HANGUP_CAUSES = {"ANSWER": ("16", "Normal Clearing"), "BUSY": ("17", "User busy"), "NOANSWER": ("19", "No answer"),
                 "CHANUNAVAIL": ("20", "Subscriber absent"), "CONGESTION": ("34", "Circuit/channel congestion")}


def packet(fields: Mapping[str, str] | list[tuple[str, str]]) -> bytes:
    items = fields.items() if isinstance(fields, Mapping) else fields
    return "".join(f"{k}: {v}\r\n" for k, v in items).encode() + b"\r\n"


@dataclass
class AmiPeer:
    """The emulated Asterisk: credentials, the router its inbound context calls, how each line answers."""

    username: str
    secret: str
    agi_host: str
    agi_port: int
    contexts: frozenset[str] = frozenset({"from-pstn-400"})
    lines: Mapping[str, DialScript] = field(default_factory=dict)  # dial target -> behaviour
    default_line: DialScript = DialScript("NOANSWER", ring_seconds=1)
    originate_permitted: bool = True  # False: the user lacks the `originate` write class
    received: list[dict[str, str]] = field(default_factory=list)  # every action packet, in order
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _server: asyncio.AbstractServer | None = None
    _hangups: dict[str, asyncio.Event] = field(default_factory=dict)  # channel of a call in progress -> hang it up

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._session, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        authenticated = False
        calls: set[asyncio.Task[None]] = set()
        try:
            while True:
                action = await self._read_packet(reader)
                if action is None:
                    break
                self.received.append(action)
                name = action.get("action", "").lower()
                reply = {"ActionID": action["actionid"]} if "actionid" in action else {}
                if name == "login":
                    if action.get("username") == self.username and action.get("secret") == self.secret:
                        authenticated = True
                        writer.write(packet({"Response": "Success", **reply, "Message": "Authentication accepted"}))
                        writer.write(packet({"Event": "FullyBooted", "Privilege": "system,all", "Uptime": "42", "LastReload": "42", "Status": "Fully Booted"}))
                    else:
                        writer.write(packet({"Response": "Error", **reply, "Message": "Authentication failed"}))
                        await writer.drain()
                        break  # Asterisk ends the session after a failed login
                elif not authenticated:
                    writer.write(packet({"Response": "Error", **reply, "Message": "Permission denied"}))
                elif name == "logoff":
                    writer.write(packet({"Response": "Goodbye", **reply, "Message": "Thanks for all the fish."}))
                    await writer.drain()
                    break
                elif name == "ping":
                    writer.write(packet({"Response": "Success", **reply, "Ping": "Pong", "Timestamp": "1764000000.000000"}))
                elif name == "hangup":
                    hangup = self._hangups.get(action.get("channel", ""))
                    if hangup is None:
                        writer.write(packet({"Response": "Error", **reply, "Message": "No such channel"}))
                    else:
                        hangup.set()
                        writer.write(packet({"Response": "Success", **reply, "Message": "Channel Hungup"}))
                elif name == "originate" and not self.originate_permitted:
                    writer.write(packet({"Response": "Error", **reply, "Message": "Permission denied"}))
                elif name == "originate":
                    error = self._check_originate(action)
                    if error:
                        writer.write(packet({"Response": "Error", **reply, "Message": error}))
                    else:
                        writer.write(packet({"Response": "Success", **reply, "Message": "Originate successfully queued"}))
                        task = asyncio.create_task(self._play(action, writer))
                        calls.add(task)
                        task.add_done_callback(calls.discard)
                else:
                    writer.write(packet({"Response": "Error", **reply, "Message": "Invalid/unknown command"}))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; its calls end with the session below
        finally:
            for task in calls:
                task.cancel()
            writer.close()

    async def _read_packet(self, reader: asyncio.StreamReader) -> dict[str, str] | None:
        fields: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if not line:
                return None
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if not text:
                if fields:
                    return fields
                continue
            key, _, value = text.partition(":")
            key, value = key.strip().lower(), value.strip()
            fields[key] = f"{fields[key]},{value}" if key == "variable" and key in fields else value  # repeatable

    def _check_originate(self, action: Mapping[str, str]) -> str | None:
        if action.get("async", "").lower() != "true":
            return "this emulator plays only Async originates"
        match = _LOCAL.match(action.get("channel", ""))
        if not match:
            return "Channel must be Local/<exten>@<context>"
        if not action.get("application") and not action.get("exten"):
            return "Exten not specified"
        return None

    async def _play(self, action: Mapping[str, str], writer: asyncio.StreamWriter) -> None:
        exten, context = _LOCAL.match(action["channel"]).groups()  # type: ignore[union-attr]
        action_id = action.get("actionid", "")
        n = next(self._ids)
        base = f"Local/{exten}@{context}-{n:08x}"
        one, two = f"1764000000.{n * 10}", f"1764000000.{n * 10 + 1}"
        name_match = _CALLERID.match(action.get("callerid", ""))
        cid_name, cid_num = (name_match.group(1) or "", name_match.group(2)) if name_match else ("", action.get("callerid", ""))

        def event(name: str, channel: str, uniqueid: str, **extra: str) -> None:
            writer.write(packet([("Event", name), ("Privilege", "call,all"), ("Channel", channel), ("ChannelState", "6"),
                                 ("CallerIDNum", cid_num), ("CallerIDName", cid_name), ("Context", context), ("Exten", exten),
                                 ("Uniqueid", uniqueid), ("Linkedid", one), *extra.items()]))

        set_vars = {name: value for name, _, value in (v.partition("=") for v in action.get("variable", "").split(",") if "=" in v)}
        event("Newchannel", f"{base};1", one)
        event("Newchannel", f"{base};2", two)
        for name, value in set_vars.items():
            event("VarSet", f"{base};1", one, Variable=name, Value=value)
        # The originate itself: a dial with no calling channel (as Asterisk 22 reports it).
        originate = [("DestChannel", f"{base};1"), ("DestUniqueid", one), ("DestLinkedid", one), ("DialString", f"{exten}@{context}")]
        writer.write(packet([("Event", "DialBegin"), ("Privilege", "call,all"), *originate]))
        if context not in self.contexts:
            event("Hangup", f"{base};2", two, Cause="1", **{"Cause-txt": "Unallocated (unassigned) number"})
            event("Hangup", f"{base};1", one, Cause="1", **{"Cause-txt": "Unallocated (unassigned) number"})
            writer.write(packet({"Event": "OriginateResponse", "Privilege": "call,all", "ActionID": action_id, "Response": "Failure",
                                 "Channel": action["channel"], "Reason": "0", "Uniqueid": "<null>"}))
            await writer.drain()
            return
        event("VarSet", f"{base};2", two, Variable="CALLROUTER_RESULT")  # the dialplan's Set(CALLROUTER_RESULT=): no Value
        script = CallScript(callerid=cid_num, calleridname=cid_name or "unknown", dnid=exten, extension=exten, context=context,
                            channel=f"{base};2", uniqueid=two, dial=dict(self.lines), default_dial=self.default_line,
                            variables=set_vars)
        hangup = self._hangups[f"{base};1"] = self._hangups[f"{base};2"] = asyncio.Event()
        agi = asyncio.create_task(run_call(self.agi_host, self.agi_port, script, timeout=30))
        stop = asyncio.create_task(hangup.wait())
        try:
            done, _ = await asyncio.wait({agi, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not agi.done():
                agi.cancel()  # hung up by a Hangup action (or the AMI session ended): the router sees the AGI close
            del self._hangups[f"{base};1"], self._hangups[f"{base};2"]
        if agi not in done:
            await asyncio.wait({agi})
            for channel, uniqueid in ((f"{base};2", two), (f"{base};1", one)):
                event("Hangup", channel, uniqueid, Cause="16", **{"Cause-txt": "Normal Clearing"})
            writer.write(packet({"Event": "OriginateResponse", "Privilege": "call,all", "ActionID": action_id, "Response": "Failure",
                                 "Channel": action["channel"], "Context": context, "Exten": exten, "Reason": "1", "Uniqueid": one}))
            await writer.drain()
            return
        try:
            t = agi.result()
            variables = {"AGISTATUS": t.agi_status, **t.variables}
        except OSError:  # the router cannot be reached: AGI() fails, the dialplan falls back
            t, variables = None, {"AGISTATUS": "FAILURE"}
        if t is not None and t.answered:
            writer.write(packet([("Event", "DialEnd"), ("Privilege", "call,all"), *originate, ("DialStatus", "ANSWER")]))
            writer.write(packet({"Event": "OriginateResponse", "Privilege": "call,all", "ActionID": action_id, "Response": "Success",
                                 "Channel": f"{base};1", "Context": context, "Exten": exten, "Reason": "4", "Uniqueid": one}))
        for i, dial in enumerate(t.dials if t is not None else []):
            for j, target in enumerate(dial.targets):
                dest = f"1764000000.{n * 10 + 2 + i * 20 + j}"
                dest_channel = f"{target}-{n:04x}{i:02x}{j:02x};1" if target.startswith("Local/") else f"{target}-{n:08x}"
                common = {"DestChannel": dest_channel, "DestUniqueid": dest, "DestLinkedid": one}
                event("DialBegin", f"{base};2", two, **common, DialString=target.split("/", 1)[1])
                status = "ANSWER" if dial.answered_target == target else ("CANCEL" if dial.status == "ANSWER" else dial.status)
                event("DialEnd", f"{base};2", two, **common, DialStatus=status)
        for var in ("CALLROUTER_RESULT", "AGISTATUS"):  # the router's last word, then AGI()'s own status
            if var in variables:
                event("VarSet", f"{base};2", two, Variable=var, Value=variables[var])
        cause, text = HANGUP_CAUSES.get(t.dials[-1].status if t is not None and t.dials else "ANSWER", ("16", "Normal Clearing"))
        event("Hangup", f"{base};2", two, Cause=cause, **{"Cause-txt": text})
        event("Hangup", f"{base};1", one, Cause=cause, **{"Cause-txt": text})
        if t is None or not t.answered:
            writer.write(packet({"Event": "OriginateResponse", "Privilege": "call,all", "ActionID": action_id, "Response": "Failure",
                                 "Channel": action["channel"], "Context": context, "Exten": exten, "Reason": "1", "Uniqueid": one}))
        await writer.drain()
