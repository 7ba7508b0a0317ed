"""Ring and talk time of one Dial, measured on Asterisk's own clock. Pure: strings in, numbers out.

Dial's own `ANSWEREDTIME` and `DIALEDTIME` are not the bound line's figures: `app_dial.c`
`end_bridge_callback` sets them from the *calling* channel (`ast_channel_get_up_time_ms(chan)`,
`ast_channel_get_duration_ms(chan)`), so once the router has answered for its IVR they include the menu
and every earlier attempt, and after a Dial nobody answered they are empty. So the router asks Asterisk
to stamp its clock at the two moments that matter, with two Dial options that run a tiny Gosub
(`asterisk/extensions.conf`):

- `b(callrouter-dialing^s^1(<caller>^<seq>))` on each line's new channel just before Asterisk calls it;
- `U(callrouter-answered^<caller>^<seq>)` on the line that answered, before it is bridged to the caller.

Each writes `<seq>:<epoch with ms>` onto the caller's channel with `SHARED()`. After Dial the router reads
both back with Asterisk's "now" (`STRFTIME`) in the same dead-safe `GET FULL VARIABLE` it already sends:
ring = answered - dialing, talk = end of the bridge - answered. `<seq>` numbers the Dials of one call, so
a stamp left by an earlier attempt is never taken for this one. Without the hooks (an older dialplan) the
router falls back to its own clock, and says so (`timed_by`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

DIALING_CONTEXT = "callrouter-dialing"
ANSWERED_CONTEXT = "callrouter-answered"
DIALING_VAR = "CALLROUTER_DIALING"
ANSWERED_VAR = "CALLROUTER_ANSWERED"
# DIALEDPEERNUMBER comes last: it is the only part that is not ours, split off with maxsplit.
SUMMARY_EXPRESSION = (
    f"${{DIALSTATUS}}|${{SHARED({DIALING_VAR})}}|${{SHARED({ANSWERED_VAR})}}|${{STRFTIME(,,%s.%3q)}}|${{DIALEDPEERNUMBER}}"
)
# A channel name goes into a Dial option, where `,` `^` `(` `)` `|` and `$` change the meaning: only names
# made of these characters are given the hooks (Asterisk's own names always are: PJSIP/trunk-0000001a,
# Local/4008001234@from-pstn-400-00000003;2).
_SAFE_CHANNEL = re.compile(r"[A-Za-z0-9_./@:;+#=~-]{1,120}\Z")
# DIALSTATUS values app_dial.c documents; anything else is stored as OTHER (a bounded label everywhere).
KNOWN_STATUSES = frozenset(
    {"ANSWER", "BUSY", "NOANSWER", "CANCEL", "CONGESTION", "CHANUNAVAIL", "DONTCALL", "TORTURE", "INVALIDARGS"}
)


def hook_options(caller_channel: str, seq: int) -> str:
    """The Dial options that stamp Asterisk's clock, or "" when the caller's name cannot be passed safely."""
    if not _SAFE_CHANNEL.match(caller_channel):
        return ""
    return f"b({DIALING_CONTEXT}^s^1({caller_channel}^{seq}))U({ANSWERED_CONTEXT}^{caller_channel}^{seq})"


def normal_status(status: str) -> str:
    """DIALSTATUS as stored and counted: Asterisk's documented values, "" as CHANUNAVAIL, the rest OTHER."""
    if not status:
        return "CHANUNAVAIL"  # Dial failed before it set a status (e.g. no such application option)
    return status if status in KNOWN_STATUSES else "OTHER"


def whole_seconds(seconds: float) -> int:
    """Seconds for the CDR's integer columns: to the nearest second, halves up (never banker's rounding)."""
    return max(0, math.floor(seconds + 0.5))


@dataclass(frozen=True, slots=True)
class DialTiming:
    status: str  # DIALSTATUS as Asterisk set it (normal_status() maps it for storage)
    peer: str  # DIALEDPEERNUMBER: the dial string that answered, without its technology
    ring_seconds: float  # from the Dial's start until the line answered (or until Dial gave up)
    talk_seconds: float  # from the line's answer until the bridge ended; 0 unless answered
    timed_by: str  # "asterisk": both figures from the hooks' stamps; "router": our own clock (no hooks)


def _stamp(value: str, seq: int) -> float | None:
    tag, sep, epoch = value.partition(":")
    if not sep or tag != str(seq):
        return None
    try:
        stamp = float(epoch)
    except ValueError:
        return None
    return stamp if math.isfinite(stamp) and stamp > 0 else None


def parse_summary(summary: str, seq: int, elapsed: float, gap: float) -> DialTiming:
    """Ring and talk time from the post-Dial summary (SUMMARY_EXPRESSION as Asterisk expanded it).

    `elapsed`: the router's own measure of the Dial (command sent to reply read), the fallback.
    `gap`: router seconds between reading the Dial's reply and sending the summary request, taken off
    Asterisk's "now" to get the moment the Dial returned.
    """
    parts = summary.split("|", 4)
    parts += [""] * (5 - len(parts))
    status, dialing, answered, now_text, peer = parts
    dialed_at = _stamp(dialing, seq)
    answered_at = _stamp(answered, seq)
    try:
        now = float(now_text)
    except ValueError:
        now = math.nan
    if math.isfinite(now) and now > 0:
        ended = now - max(0.0, gap)
        if status == "ANSWER" and answered_at is not None:
            talk = max(0.0, ended - answered_at)
            ring = max(0.0, answered_at - dialed_at) if dialed_at is not None else max(0.0, elapsed - talk)
            return DialTiming(status, peer, ring, talk, "asterisk")
        if status != "ANSWER" and dialed_at is not None:
            return DialTiming(status, peer, max(0.0, ended - dialed_at), 0.0, "asterisk")
    if status == "ANSWER":
        return DialTiming(status, peer, 0.0, max(0.0, elapsed), "router")  # cannot be split without the U() stamp
    return DialTiming(status, peer, max(0.0, elapsed), 0.0, "router")
