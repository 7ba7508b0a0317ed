"""The AGI state machine: every input fed whole, one byte at a time and in odd chunks, with the same events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.agi import commands
from callrouter.agi.commands import Command
from callrouter.agi.errors import AgiProtocolError, LocalProtocolError, RemoteProtocolError
from callrouter.agi.protocol import NEED_DATA, AgiConnection, ConnectionClosed, Environment, HangupNotice, NeedData, Reply, State
from callrouter.emulator.agi_args import parse_args

ENV_LINES = [
    "agi_network: yes", "agi_network_script: route", "agi_request: agi://10.0.0.5:4573/route?4008001234",
    "agi_channel: PJSIP/trunk-0000002a", "agi_language: zh", "agi_type: PJSIP", "agi_uniqueid: 1700000000.42",
    "agi_version: 22.1.0", "agi_callerid: unknown", 'agi_calleridname: 张三 "VIP" ${EVIL} (boss)', "agi_callingpres: 0",
    "agi_callingani2: 0", "agi_callington: 0", "agi_callingtns: 0", "agi_dnid: 4008001234", "agi_rdnis: ",
    "agi_context: from-pstn", "agi_extension: 4008001234", "agi_priority: 1", "agi_enhanced: 0.0", "agi_accountcode:",
    "agi_threadid: 140234567890", "agi_arg_1: 4008001234", "agi_arg_2: two words: and a colon", "agi_arg_3: ",
]  # fmt: skip
ENV = ("\n".join(ENV_LINES) + "\n\n").encode()


@dataclass
class Run:
    """What one pass over a script produced."""

    events: list[object] = field(default_factory=list)
    answered: list[tuple[str, Reply]] = field(default_factory=list)  # (verb of the pending command, its reply)
    error: tuple[type, str] | None = None
    state: State | None = None
    hung_up: bool = False


Split = Callable[[bytes], list[bytes]]


def chunks(size: int) -> Split:
    return lambda data: [data[i : i + size] for i in range(0, len(data), size)] or [data]


def _play(steps: list[bytes | Command], split: Split, **limits: int) -> Run:
    """Send each Command, feed each bytes step in the given pieces (b"" is EOF), and record what happened."""
    conn, run = AgiConnection(**limits), Run()
    try:
        for step in steps:
            for piece in [] if isinstance(step, Command) else split(step):
                conn.receive_data(piece)
                while True:
                    pending, event = conn.pending, conn.next_event()
                    if event is NEED_DATA:
                        break
                    run.events.append(event)
                    if isinstance(event, Reply):
                        assert pending is not None
                        run.answered.append((pending.verb, event))
            if isinstance(step, Command):
                conn.send(step)
    except RemoteProtocolError as exc:
        run.error = (type(exc), str(exc))
        assert conn.state is State.ERROR
    run.state, run.hung_up = conn.state, conn.hung_up
    return run


def play(steps: list[bytes | Command], **limits: int) -> Run:
    """Run the script whole, byte by byte and in 3-byte chunks: all three must agree."""
    whole, bytewise, odd = (_play(steps, split, **limits) for split in (lambda data: [data], chunks(1), chunks(3)))
    assert bytewise == whole and odd == whole
    return whole


def ready() -> AgiConnection:
    conn = AgiConnection()
    conn.receive_data(ENV)
    assert isinstance(conn.next_event(), Environment)
    return conn


# -- environment -------------------------------------------------------------------------------------


def test_realistic_environment_then_a_hangup_in_the_same_read() -> None:
    run = play([ENV + b"HANGUP\n"])
    env, hangup = run.events
    assert isinstance(env, Environment) and hangup == HangupNotice() and run.hung_up and run.state is State.IDLE
    assert env.script == "route" and env.request.endswith("/route?4008001234")
    assert env.channel == "PJSIP/trunk-0000002a" and env.uniqueid == "1700000000.42"
    assert env.callerid == "unknown" and env.calleridname == '张三 "VIP" ${EVIL} (boss)'
    assert env.dnid == env.extension == "4008001234" and env.context == "from-pstn" and env.language == "zh"
    assert env.get("agi_rdnis", "x") == "" and env.get("agi_accountcode", "x") == "" and env.get("agi_nope") == ""
    assert env.args == ("4008001234", "two words: and a colon", "")
    assert env.variables["agi_arg_2"] == "two words: and a colon" and len(env.variables) == len(ENV_LINES)


def test_environment_is_immutable_and_kept() -> None:
    conn = ready()
    env = conn.environment
    assert env is not None
    with pytest.raises(TypeError):
        env.variables["agi_callerid"] = "1234"  # type: ignore[index]
    source = {"agi_callerid": "1"}
    built = Environment(source)
    source["agi_callerid"] = "2"
    assert built.callerid == "1" and built.args == ()


def test_environment_with_crlf_and_odd_spacing() -> None:
    data = b"agi_network: yes\r\nagi_a:tight\r\nagi_b:  two spaces\nagi_c: x: y\r\n\r\n"
    (env,) = play([data]).events
    assert isinstance(env, Environment)
    assert (env.get("agi_a"), env.get("agi_b"), env.get("agi_c")) == ("tight", " two spaces", "x: y")
    (env,) = play([b"agi_arg_1: a\nagi_arg_3: c\n\n"]).events  # args stop at the first gap
    assert isinstance(env, Environment) and env.args == ("a",) and env.get("agi_arg_3") == "c"


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"agi_network: yes\nthis is not a header\n\n", "line 2 is not 'agi_<name>: value'"),
     (b"agi_network yes\n\n", "line 1 is not"), (b"AGI_NETWORK: yes\n\n", "line 1 is not"),
     (b"agi-network: yes\n\n", "line 1 is not"), (b"agi_: yes\n\n", "line 1 is not"),
     (b"agi_Network: yes\n\n", "line 1 is not"), (b" agi_network: yes\n\n", "line 1 is not"),
     (b"agi_ne\xfftwork: yes\n\n", "line 1 is not"), (b"HANGUP\n", "line 1 is not"),
     (b"agi_network: yes\nagi_x: 1\nagi_network: no\n\n", "line 3: agi_network given twice"),
     (b"agi_network: yes\n200 result=0\n", "line 2 is not")],
)  # fmt: skip
def test_malformed_environment(data: bytes, message: str) -> None:
    run = play([data])
    assert run.events == [] and run.error is not None and run.state is State.ERROR
    assert run.error[0] is RemoteProtocolError and message in run.error[1]


def test_environment_size_limit() -> None:
    many = b"".join(b"agi_k%d: %s\n" % (i, b"v" * 100) for i in range(200)) + b"\n"
    error = play([many]).error
    assert error is not None and "environment larger than 16384" in error[1]
    data = b"agi_a: " + b"x" * 91 + b"\n\n"  # 100 bytes with both newlines
    assert len(data) == 100
    assert isinstance(play([data], max_environment_bytes=100).events[0], Environment)
    assert play([data], max_environment_bytes=99).error is not None


def test_environment_is_bounded_while_it_arrives() -> None:
    conn, fed = AgiConnection(max_environment_bytes=100), 0
    with pytest.raises(RemoteProtocolError, match="larger than 100"):
        for byte in b"agi_a: " + b"x" * 10_000:  # no newline ever comes
            conn.receive_data(bytes([byte]))
            fed += 1
            assert conn.next_event() is NEED_DATA
    assert fed == 101 and conn.buffered_bytes == 0


def test_a_line_is_bounded_while_it_arrives() -> None:
    conn = ready()
    conn.send(commands.noop())
    conn.receive_data(b"200 result=1 (" + b"x" * 8178)  # 8192 bytes: still allowed
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"x")
    with pytest.raises(RemoteProtocolError, match="longer than 8192"):
        conn.next_event()
    error = play([b"agi_network: yes\n\n", commands.noop(), b"200 result=1 (0123456789)\n"], max_line_bytes=20).error
    assert error is not None and "longer than 20" in error[1]


@pytest.mark.parametrize("data", [b"", b"agi_network: yes\n", b"agi_network: yes\nagi_chan", ENV[:-1]])
def test_eof_inside_environment(data: bytes) -> None:
    run = play([data, b""])
    assert run.error is not None and "inside the AGI environment" in run.error[1]


def test_invalid_utf8_is_replaced_never_raised() -> None:
    run = play([b"agi_calleridname: \xff\xfe\xc3(\xe4\xb8\n\n", Command("NOOP"), b"200 result=1 (\xc0\xaf)\n"])
    env, reply = run.events
    assert isinstance(env, Environment) and env.calleridname == "\ufffd\ufffd\ufffd(\ufffd"
    assert isinstance(reply, Reply) and reply.data == "\ufffd\ufffd"


# -- replies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "code", "result", "data", "endpos"),
    [("200 result=0", 200, "0", None, None), ("200 result=-1", 200, "-1", None, None),
     ("200 result=49 endpos=12345", 200, "49", None, 12345), ("200 result=-1 endpos=0", 200, "-1", None, 0),
     ("200 result=1 (some value)", 200, "1", "some value", None), ("200 result= (timeout)", 200, "", "timeout", None),
     ("200 result=", 200, "", None, None), ("200 result=12 (timeout)", 200, "12", "timeout", None),
     ("200 result=0 (timeout) endpos=8000", 200, "0", "timeout", 8000),
     ("200 result=-1 (hangup) endpos=16000", 200, "-1", "hangup", 16000),
     ("200 result=1 (a (b) c)", 200, "1", "a (b) c", None), ("200 result=1 ()", 200, "1", "", None),
     ("200 result=1 (x endpos=5)", 200, "1", "x endpos=5", None), ("200 result=1 (((()", 200, "1", "(((", None),
     ("200 result=1 (x) endpos=5)", 200, "1", "x) endpos=5", None),  # a GET VARIABLE value "x) endpos=5"
     ("510 Invalid or unknown command", 510, None, None, None),
     ("511 Command Not Permitted on a dead channel or intercept routine", 511, None, None, None),
     ("520 Invalid command syntax.  Proper usage not available.", 520, None, None, None)],
)  # fmt: skip
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_reply_forms(line: str, code: int, result: str | None, data: str | None, endpos: int | None, eol: bytes) -> None:
    command = commands.get_variable("X")
    run = play([ENV, command, line.encode() + eol])
    reply = run.events[1]
    assert reply == Reply(code, result, data, endpos, (line,))
    assert run.answered == [("GET VARIABLE", reply)] and run.state is State.IDLE


def test_reply_helpers() -> None:
    assert Reply(200, "49").result_int == 49 and Reply(200, "-1").result_int == -1
    assert Reply(200, "").result_int is None and Reply(200, "abc").result_int is None and Reply(510).result_int is None
    assert Reply(200, "", "timeout").timed_out and not Reply(200, "1", "timeout x").timed_out
    assert Reply(200, "1").ok and not Reply(510).ok and not Reply(511).ok and not Reply(520).ok
    with pytest.raises(LocalProtocolError):
        Reply(404)


USAGE = [
    "520-Invalid command syntax.  Proper usage follows:", "Usage: SET VARIABLE <variablename> <value>",
    "200 result=1", "HANGUP", "", "520 this is not the end", "520 End of proper usage.",
]  # fmt: skip


def test_multiline_520_is_one_reply_whatever_its_lines_look_like() -> None:
    block = ("\n".join(USAGE) + "\n").encode()
    run = play([ENV, commands.set_variable("X", "1"), block, commands.answer(), b"200 result=0\n"])
    usage, answer = run.events[1:]
    assert usage == Reply(520, lines=tuple(USAGE))
    assert run.answered == [("SET VARIABLE", usage), ("ANSWER", answer)]
    assert not run.hung_up and run.state is State.IDLE


def test_usage_block_is_bounded() -> None:
    flood = b"520-Invalid command syntax.  Proper usage follows:\n" + b"usage line\n" * 7000
    run = play([ENV, commands.noop(), flood])
    assert run.error is not None and "520 usage message longer than" in run.error[1]


@pytest.mark.parametrize(
    "line",
    ["200 result=1 trailing", "200result=0", "200 result=1  (x)", "200 result=1 (x", "200 result=1 endpos=abc",
     "200 result=1 endpos=5 (x)", "200 result=1 (digit) digit=5 endpos=100",  # SPEECH RECOGNIZE's form: never sent by us
     "201 result=0", "5100 x", "garbage", "", "hangup", "HANGUP ", "x" * 5000],
)  # fmt: skip
def test_malformed_replies_are_remote_errors(line: str) -> None:
    run = play([ENV, commands.noop(), line.encode() + b"\n"])
    assert run.error is not None and run.error[0] is RemoteProtocolError and len(run.error[1]) < 160
    assert run.state is State.ERROR


# -- HANGUP keeps replies in step -----------------------------------------------------------------------


def test_hangup_before_the_reply_is_not_the_reply() -> None:
    dial = commands.exec_app("Dial", "PJSIP/1001,20,t")
    run = play([ENV, dial, b"HANGUP\n", b"200 result=-1\n", commands.get_variable("DIALSTATUS"), b"200 result=1 (CANCEL)\n"])
    assert run.events[1:] == [HangupNotice(), Reply(200, "-1", lines=("200 result=-1",)),
                              Reply(200, "1", "CANCEL", lines=("200 result=1 (CANCEL)",))]  # fmt: skip
    assert [(verb, r.result) for verb, r in run.answered] == [("EXEC", "-1"), ("GET VARIABLE", "1")]
    assert run.hung_up and run.state is State.IDLE


def test_hangup_while_idle_then_511() -> None:
    run = play([ENV, b"HANGUP\n", commands.stream_file("welcome"), b"511 Command Not Permitted on a dead channel or intercept routine\n"])
    assert run.events[1] == HangupNotice() and [(verb, r.code) for verb, r in run.answered] == [("STREAM FILE", 511)]


def test_hangup_between_two_commands_and_repeated() -> None:
    run = play([ENV, commands.get_data("menu", 5000, 1), b"200 result=-1\nHANGUP\n",
                commands.set_variable("CALLROUTER_RESULT", "ROUTED"), b"HANGUP\n200 result=1\nHANGUP\n", b""])  # fmt: skip
    kinds = [type(e).__name__ for e in run.events]
    assert kinds == ["Environment", "Reply", "HangupNotice", "HangupNotice", "Reply", "HangupNotice", "ConnectionClosed"]
    assert [(verb, r.result) for verb, r in run.answered] == [("GET DATA", "-1"), ("SET VARIABLE", "1")]
    assert run.state is State.CLOSED


def test_pending_follows_the_command_in_flight() -> None:
    conn = ready()
    assert conn.pending is None
    command = commands.answer()
    assert conn.send(command) == b"ANSWER\n"
    assert conn.pending is command and conn.state is State.AWAITING_REPLY
    conn.receive_data(b"HANGUP\n")
    assert conn.next_event() == HangupNotice() and conn.pending is command and conn.state is State.AWAITING_REPLY
    conn.receive_data(b"200 result=0\n")
    assert isinstance(conn.next_event(), Reply) and conn.pending is None and conn.state is State.IDLE


# -- local misuse and sticky errors -------------------------------------------------------------------------


def test_send_while_a_reply_is_pending_is_refused_and_changes_nothing() -> None:
    conn = ready()
    first = commands.answer()
    conn.send(first)
    with pytest.raises(LocalProtocolError, match="awaiting reply.*no reply yet to ANSWER"):
        conn.send(commands.noop())
    assert conn.pending is first and conn.state is State.AWAITING_REPLY
    conn.receive_data(b"200 result=0\n")
    assert isinstance(conn.next_event(), Reply) and conn.send(commands.noop()) == b"NOOP\n"
    before = AgiConnection()
    before.receive_data(b"agi_network: yes\n")
    assert before.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError, match="state environment"):
        before.send(commands.answer())


def test_reply_while_idle_is_a_remote_error_and_error_is_sticky() -> None:
    conn = ready()
    conn.receive_data(b"200 result=0\n")
    with pytest.raises(RemoteProtocolError, match="reply with no command pending: '200 result=0'"):
        conn.next_event()
    assert conn.state is State.ERROR
    for _ in range(3):
        with pytest.raises(RemoteProtocolError, match="ERROR state"):
            conn.next_event()
    conn.receive_data(b"HANGUP\n")  # ignored: nothing more is parsed or buffered
    assert conn.buffered_bytes == 0 and not conn.hung_up
    with pytest.raises(LocalProtocolError):
        conn.send(commands.noop())
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


# -- end of connection ------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_command", [False, True])
def test_eof_gives_connection_closed_once(with_command: bool) -> None:
    conn = ready()
    if with_command:
        conn.send(commands.answer())
    conn.receive_data(b"")
    conn.receive_data(b"")  # connection_lost after eof_received: harmless
    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() is NEED_DATA and conn.state is State.CLOSED and conn.pending is None
    with pytest.raises(LocalProtocolError, match="state closed"):
        conn.send(commands.noop())
    with pytest.raises(LocalProtocolError, match="after EOF"):
        conn.receive_data(b"200 result=0\n")


@pytest.mark.parametrize(
    ("tail", "message"),
    [(b"200 res", "middle of a line"), (b"520-Invalid command syntax.  Proper usage follows:\nUsage\n", "inside a 520 usage")],
)
def test_eof_mid_reply_is_an_error(tail: bytes, message: str) -> None:
    run = play([ENV, commands.noop(), tail, b""])
    assert run.error is not None and message in run.error[1]


def test_need_data_sentinel_and_error_classes() -> None:
    assert isinstance(NEED_DATA, NeedData) and repr(NEED_DATA) == "NEED_DATA"
    assert AgiConnection().next_event() is NEED_DATA
    assert issubclass(RemoteProtocolError, AgiProtocolError) and issubclass(LocalProtocolError, AgiProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)


# -- properties --------------------------------------------------------------------------------------------


@settings(deadline=None)
@given(st.text(max_size=1000).filter(lambda s: not any(c in s for c in "\n\r\0")))
def test_a_value_set_then_read_back_through_a_fake_asterisk_is_unchanged(value: str) -> None:
    """Our quoting in, Asterisk's parse_args and `200 result=1 (%s)` out, our parser back: the same value."""
    conn = ready()
    # What Asterisk does with the bytes we send: parse_args() them, keep argv[3], answer `200 result=1 (%s)`.
    stored = parse_args(conn.send(commands.set_variable("CALLERID(name)", value)).decode()[:-1])[3]
    conn.receive_data(b"200 result=1\n")
    assert conn.next_event() == Reply(200, "1", lines=("200 result=1",))
    conn.send(commands.get_variable("CALLERID(name)"))
    conn.receive_data(f"200 result=1 ({stored})\n".encode())
    assert conn.next_event() == Reply(200, "1", value, lines=(f"200 result=1 ({value})",))


_LINES = st.sampled_from(["HANGUP", "200 result=0", "200 result=1 (a (b) c)", "200 result= (timeout)", "510 Invalid or unknown command",
                          "200 result=0 (timeout) endpos=8000", "\n".join(USAGE)])  # fmt: skip


@settings(deadline=None)
@given(st.lists(_LINES, max_size=12), st.sets(st.integers(0, 1200), max_size=40))
def test_any_chunking_gives_the_same_events(lines: list[str], cuts: set[int]) -> None:
    steps: list[bytes | Command] = [ENV]
    for line in lines:  # every reply gets a command in flight; a HANGUP may come at any time
        steps += [line.encode() + b"\n"] if line == "HANGUP" else [commands.noop(), line.encode() + b"\n"]
    steps.append(b"")

    def split(data: bytes) -> list[bytes]:
        edges = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
        return [data[a:b] for a, b in zip(edges, edges[1:])] or [data]

    assert _play(steps, split) == _play(steps, lambda data: [data])


@settings(deadline=None)
@given(st.binary(max_size=3000), st.booleans())
def test_arbitrary_bytes_give_events_or_a_remote_error_and_nothing_else(data: bytes, after_environment: bool) -> None:
    conn = ready() if after_environment else AgiConnection()
    if after_environment:
        conn.send(commands.noop())
    try:
        for i in range(0, len(data), 7):
            conn.receive_data(data[i : i + 7])
            while conn.next_event() is not NEED_DATA:
                if conn.state is State.IDLE:
                    conn.send(commands.noop())
        conn.receive_data(b"")
        while conn.next_event() is not NEED_DATA:
            pass
        assert conn.state is State.CLOSED
    except RemoteProtocolError:
        assert conn.state is State.ERROR


def test_send_before_the_environment_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        AgiConnection().send(commands.answer())


def test_an_empty_environment_then_a_blank_line_that_answers_nothing() -> None:
    conn = AgiConnection()
    conn.receive_data(b"\n\n")
    env = conn.next_event()
    assert isinstance(env, Environment) and env.variables == {}
    with pytest.raises(RemoteProtocolError, match="no command pending"):
        conn.next_event()  # the second blank line is not a reply to anything


_ENV_NAMES = st.sampled_from(["agi_request", "agi_channel", "agi_arg_1", "agi_arg_2", "agi_callerid", "agi_x9_", "agi_", "AGI_UPPER", "agi-dash", "request", "agi_channel"])
_ENV_VALUES = st.binary(max_size=40).filter(lambda b: b"\n" not in b)


@given(st.lists(st.tuples(_ENV_NAMES, st.sampled_from([b":", b": ", b":  ", b""]), _ENV_VALUES), max_size=12),
       st.booleans(), st.sampled_from([b"\n", b"\r\n"]))
def test_the_header_read_at_once_is_the_header_read_line_by_line(lines: list[tuple[str, bytes, bytes]], crlf: bool, blank: bytes) -> None:
    """The whole-header pass (one regex over the block) and the line path give the same environment or
    the same kind of error, for good, odd and broken headers: names, spaces, CRs and bytes that are not UTF-8."""
    end = b"\r\n" if crlf else b"\n"
    data = b"".join(name.encode() + colon + value + end for name, colon, value in lines) + blank

    def read(chunks: list[bytes]) -> object:
        conn = AgiConnection()
        try:
            for chunk in filter(None, chunks):  # b"" would mean the peer closed
                conn.receive_data(chunk)
                if (event := conn.next_event()) is not NEED_DATA:
                    return event
            conn.receive_data(b"")
            return conn.next_event()
        except RemoteProtocolError:
            return RemoteProtocolError

    whole = read([data])
    assert whole == read([data[i : i + 1] for i in range(len(data))])
    if isinstance(whole, Environment):
        assert whole == read([data[: len(data) // 2], data[len(data) // 2 :]])
