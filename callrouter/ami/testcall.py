"""What a test call showed: AMI events and the router's CDR folded into a report. Pure: no IO.

The Originate places `Local/<400 number>@<inbound context>`: its `;1` half waits, its `;2` half runs the
inbound context exactly as a carrier call would (AGI to the router, the fallback if the router fails).
Every channel of the call shares the `;1` half's uniqueid as Linkedid; the `;2` half's uniqueid is the
one the router's CDR is stored under.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

from callrouter.store.calls import StoredAttempt, StoredCall

ORIGINATE_REASONS = {
    "0": "no such extension or context",
    "1": "the call was hung up before it was answered",
    "3": "nobody answered",
    "4": "answered",
    "5": "busy",
    "8": "congestion (the channel could not be placed)",
}


@dataclass
class DialSeen:
    target: str  # the DialString (as the router built it)
    status: str = ""  # DialStatus once DialEnd came


@dataclass
class PlacedCall:
    """The channels of one test call, followed through the event stream."""

    channel_prefix: str  # "Local/4008001234@from-pstn-400-"
    linkedid: str = ""
    originator: str = ""  # the ;1 channel name (the one to hang up)
    inbound: str = ""  # the ;2 channel name
    inbound_uniqueid: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    dials: dict[str, DialSeen] = field(default_factory=dict)  # dest uniqueid -> dial
    hung_up: bool = False
    cause: str = ""

    def feed(self, event: Mapping[str, str]) -> None:
        name = event.get("Event", "")
        channel = event.get("Channel", "")
        if name == "Newchannel" and not self.linkedid and channel.startswith(self.channel_prefix) and channel.endswith(";1"):
            self.originator, self.linkedid = channel, event.get("Uniqueid", "")
        if not self.linkedid or event.get("Linkedid") != self.linkedid:
            return
        if name == "Newchannel" and channel.startswith(self.channel_prefix) and channel.endswith(";2"):
            self.inbound, self.inbound_uniqueid = channel, event.get("Uniqueid", "")
        elif name == "VarSet" and channel == self.inbound:  # the dialplan first clears CALLROUTER_RESULT (no Value)
            self.variables[event.get("Variable", "")] = event.get("Value", "")
        elif name == "DialBegin" and channel == self.inbound:
            self.dials[event.get("DestUniqueid", "")] = DialSeen(event.get("DialString", event.get("DestChannel", "")))
        elif name == "DialEnd" and channel == self.inbound:
            seen = self.dials.setdefault(event.get("DestUniqueid", ""), DialSeen(event.get("DestChannel", "")))
            seen.status = event.get("DialStatus", "")
        elif name == "Hangup" and channel == self.inbound:
            self.hung_up = True
            self.cause = event.get("Cause-txt", "")


@dataclass(frozen=True)
class TestCallReport:
    """What one placed test call showed (the Originate was accepted)."""

    __test__: ClassVar[bool] = False  # a name pytest would otherwise try to collect

    number: str
    caller: str
    uniqueid: str
    answered: bool
    lines: list[str]  # the report, for a human
    answered_line: str = ""  # the line id that answered, when known (the CDR's, else the events')
    rung: tuple[tuple[str, str], ...] = ()  # (line id or dial string, status) in order, for a page

    @property
    def exit_code(self) -> int:
        return 0 if self.answered else 1


def report(
    number: str,
    caller: str,
    call: PlacedCall,
    cdr: StoredCall | None,
    attempts: Sequence[StoredAttempt],
    cdr_note: str,
    line_ids: Mapping[str, str] | None = None,
) -> TestCallReport:
    """The human report. The CDR is the definitive word when there is one; AMI events fill in otherwise
    (`line_ids`: the plan's lines by dial string as the events show it, "13800000001@callrouter-lines")."""
    out = [f"test call to {number} from {caller or 'a withheld number'}" + (f" (uniqueid {call.inbound_uniqueid})" if call.inbound_uniqueid else "")]
    if not call.inbound:
        out.append("Asterisk placed the call but the inbound context never ran: check the context name (ami.inbound_context)")
        return TestCallReport(number, caller, "", False, out)
    result = call.variables.get("CALLROUTER_RESULT", "")
    agi_status = call.variables.get("AGISTATUS", "")
    if result == "ROUTED":
        out.append("router: handled the call (CALLROUTER_RESULT=ROUTED)")
    else:
        why = f"CALLROUTER_RESULT={result or '(not set)'}" + (f", AGISTATUS={agi_status}" if agi_status else "")
        out.append(f"router: did NOT route the call ({why}); the dialplan's fallback line rang instead")
    answered, by = False, ""
    rung: list[tuple[str, str]] = []
    if cdr is not None:
        out.append(f"disposition: {cdr.disposition} - {cdr.reason}")
        if cdr.ivr_path:
            out.append(f"IVR: {cdr.ivr_path}")
        for a in attempts:
            out.append(f"  line {a.line_id:<16} {a.target:<40} {a.status:<12} rang {a.ring_seconds} s")
            rung.append((a.line_id, a.status))
        if cdr.disposition == "answered":
            answered, by = True, cdr.answered_line or ""
            out.append(f"answered by line {cdr.answered_line}")
        elif cdr.disposition == "after_hours":
            out.append("not answered: the number is closed at this time (schedule); check business hours and holidays")
        elif cdr.disposition == "blacklisted":
            out.append("not answered: the caller is blacklisted for this number")
        elif attempts:
            statuses = ", ".join(f"{a.line_id} {a.status}" for a in attempts)
            out.append(f"not answered: every line failed ({statuses})")
        else:
            out.append("not answered")
    else:
        out.append(f"router's CDR: {cdr_note}; from Asterisk's events:")
        for seen in call.dials.values():
            line = (line_ids or {}).get(seen.target, "")
            out.append(f"  dialled {seen.target:<40} {f'line {line}' if line else '':<22} {seen.status or '(no result)'}")
            rung.append((line or seen.target, seen.status))
            if seen.status == "ANSWER":
                answered, by = True, line
        out.append((f"answered by line {by}" if by else "answered") if answered else "not answered" + (f" ({call.cause})" if call.cause else ""))
    return TestCallReport(number, caller, call.inbound_uniqueid, answered, out, by, tuple(rung))


def originate_refusal(response: Any) -> str | None:
    """None when Asterisk placed the call; else its reason (the Originate's own error, or OriginateResponse)."""
    if isinstance(response, list):
        final = response[-1]
        if str(final.get("Response", "")) == "Success":
            return None
        reason = str(final.get("Reason", ""))
        if reason in ("1", "3", "5", "8"):
            return None  # placed, then not answered by the inbound half: the events and the CDR say why
        return ORIGINATE_REASONS.get(reason, f"OriginateResponse reason {reason or '?'}")
    if str(response.get("Response", "")) != "Success":
        return str(response.get("Message", "refused"))
    return None
