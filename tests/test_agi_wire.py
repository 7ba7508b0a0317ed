"""The AGI protocol state machine, fed byte by byte, and the one quoting function."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.agi import commands
from callrouter.agi.commands import Command, quote_arg
from callrouter.agi.errors import LocalProtocolError, RemoteProtocolError
from callrouter.agi.protocol import NEED_DATA, AgiConnection, ConnectionClosed, Environment, HangupNotice, Reply, State
from callrouter.emulator.agi_args import parse_args

ENV = (
    "agi_network: yes\nagi_network_script: route\nagi_request: agi://127.0.0.1:4573/route\n"
    "agi_channel: PJSIP/trunk-00000001\nagi_language: zh\nagi_type: PJSIP\nagi_uniqueid: 1700000000.1\n"
    "agi_version: 22.0.0\nagi_callerid: unknown\nagi_calleridname: 张三 \"VIP\" ${EVIL}\nagi_callingpres: 0\n"
    "agi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\nagi_dnid: 4008001234\nagi_rdnis: unknown\n"
    "agi_context: from-pstn\nagi_extension: 4008001234\nagi_priority: 1\nagi_enhanced: 0.0\nagi_accountcode: \n"
    "agi_threadid: 140000000000001\nagi_arg_1: 4008001234\nagi_arg_2: x y\n\n"
).encode()


def events(conn: AgiConnection, data: bytes, one_byte_at_a_time: bool) -> list[object]:
    out: list[object] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if one_byte_at_a_time else [data]
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            out.append(event)
    return out


def ready() -> AgiConnection:
    conn = AgiConnection()
    conn.receive_data(ENV)
    assert isinstance(conn.next_event(), Environment)
    return conn


@pytest.mark.parametrize("bytewise", [True, False])
def test_environment(bytewise: bool) -> None:
    conn = AgiConnection()
    (env,) = events(conn, ENV, bytewise)
    assert isinstance(env, Environment)
    assert env.callerid == "unknown" and env.calleridname == '张三 "VIP" ${EVIL}'
    assert env.script == "route" and env.dnid == "4008001234" and env.get("agi_accountcode") == ""
    assert env.args == ("4008001234", "x y")
    assert conn.state is State.IDLE


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"agi_network: yes\nthis is not a header\n\n", "line 2 is not 'agi_<name>: value'"),
        (b"AGI_NETWORK: yes\n\n", "line 1"),
        (b"agi_network: yes\nagi_network: no\n\n", "agi_network given twice"),
        (b"agi_x: " + b"a" * 20000 + b"\n\n", "longer than 8192"),
        (b"".join(b"agi_k%d: %s\n" % (i, b"v" * 100) for i in range(200)) + b"\n", "environment larger than 16384"),
        (b"HANGUP\n\n", "line 1"),
    ],
)
def test_bad_environment_is_a_remote_error_and_sticks(data: bytes, message: str) -> None:
    conn = AgiConnection()
    with pytest.raises(RemoteProtocolError, match=message):
        events(conn, data, one_byte_at_a_time=False)
    assert conn.state is State.ERROR
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_environment_is_bounded_while_it_arrives() -> None:
    conn = AgiConnection(max_environment_bytes=100)
    conn.receive_data(b"agi_a: " + b"x" * 200)  # no newline yet
    with pytest.raises(RemoteProtocolError, match="larger than 100"):
        conn.next_event()


def test_eof_inside_environment() -> None:
    conn = AgiConnection()
    conn.receive_data(b"agi_network: yes\n")
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="inside the AGI environment"):
        conn.next_event()


def test_invalid_utf8_never_crashes() -> None:
    conn = AgiConnection()
    (env,) = events(conn, b"agi_calleridname: \xff\xfe\xc3\n\n", one_byte_at_a_time=True)
    assert isinstance(env, Environment) and "\ufffd" in env.calleridname


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("200 result=0", Reply(200, "0", None, None)),
        ("200 result=-1", Reply(200, "-1", None, None)),
        ("200 result=49 endpos=12345", Reply(200, "49", None, 12345)),
        ("200 result=-1 endpos=0", Reply(200, "-1", None, 0)),
        ("200 result=1 (some value)", Reply(200, "1", "some value", None)),
        ("200 result= (timeout)", Reply(200, "", "timeout", None)),
        ("200 result=12 (timeout)", Reply(200, "12", "timeout", None)),
        ("200 result=0 (timeout) endpos=8000", Reply(200, "0", "timeout", 8000)),
        ("200 result=1 (a (b) c)", Reply(200, "1", "a (b) c", None)),
        ("200 result=1 (x endpos=5)", Reply(200, "1", "x endpos=5", None)),
        ("200 result=1 ()", Reply(200, "1", "", None)),
        ("510 Invalid or unknown command", Reply(510)),
        ("511 Command Not Permitted on a dead channel or intercept routine", Reply(511)),
        ("520 Invalid command syntax.  Proper usage not available.", Reply(520)),
    ],
)
@pytest.mark.parametrize("bytewise", [True, False])
def test_replies(line: str, reply: Reply, bytewise: bool) -> None:
    conn = ready()
    conn.send(commands.noop())
    (got,) = events(conn, line.encode() + b"\n", bytewise)
    assert isinstance(got, Reply)
    assert (got.code, got.result, got.data, got.endpos) == (reply.code, reply.result, reply.data, reply.endpos)
    assert got.lines == (line,)
    assert conn.state is State.IDLE and conn.pending is None


def test_reply_helpers() -> None:
    assert Reply(200, "49").result_int == 49 and Reply(200, "").result_int is None
    assert Reply(200, "", "timeout").timed_out and Reply(200, "1").ok and not Reply(511).ok


@pytest.mark.parametrize("bytewise", [True, False])
def test_multiline_520_is_one_reply_even_with_lines_that_look_like_others(bytewise: bool) -> None:
    conn = ready()
    conn.send(Command("SET VARIABLE", ("x",)))
    block = "520-Invalid command syntax.  Proper usage follows:\n200 result=1\nHANGUP\nUsage: SET VARIABLE\n520 End of proper usage.\n"
    (reply,) = events(conn, block.encode(), bytewise)
    assert isinstance(reply, Reply) and reply.code == 520 and len(reply.lines) == 5
    assert not conn.hung_up


@pytest.mark.parametrize("bytewise", [True, False])
def test_hangup_before_a_reply_keeps_replies_in_step(bytewise: bool) -> None:
    conn = ready()
    conn.send(commands.exec_app("Dial", "PJSIP/1,20,"))
    got = events(conn, b"HANGUP\n200 result=-1\n", bytewise)
    assert got == [HangupNotice(), Reply(200, "-1", lines=("200 result=-1",))]
    assert conn.hung_up and conn.state is State.IDLE
    conn.send(commands.get_variable("DIALSTATUS"))
    (reply,) = events(conn, b"200 result=1 (CANCEL)\n", bytewise)
    assert isinstance(reply, Reply) and reply.data == "CANCEL"


def test_hangup_while_idle_then_next_reply() -> None:
    conn = ready()
    assert events(conn, b"HANGUP\n", True) == [HangupNotice()]
    conn.send(commands.stream_file("x"))
    (reply,) = events(conn, b"511 Command Not Permitted on a dead channel or intercept routine\n", True)
    assert isinstance(reply, Reply) and reply.code == 511


def test_send_while_a_reply_is_pending_is_refused() -> None:
    conn = ready()
    conn.send(commands.answer())
    with pytest.raises(LocalProtocolError, match="awaiting reply"):
        conn.send(commands.answer())


def test_send_before_the_environment_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        AgiConnection().send(commands.answer())


@pytest.mark.parametrize("line", [b"200 result=0\n", b"garbage\n", b"200 result=1 trailing\n"])
def test_unexpected_lines_are_remote_errors(line: bytes) -> None:
    conn = ready()
    if line != b"200 result=0\n":
        conn.send(commands.noop())
    with pytest.raises(RemoteProtocolError):
        events(conn, line, False)
    assert conn.state is State.ERROR


def test_overlong_reply_line_is_bounded() -> None:
    conn = ready()
    conn.send(commands.noop())
    conn.receive_data(b"200 result=1 (" + b"x" * 9000)
    with pytest.raises(RemoteProtocolError, match="longer than 8192"):
        conn.next_event()


def test_eof_gives_connection_closed_once() -> None:
    conn = ready()
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() is NEED_DATA
    assert conn.state is State.CLOSED


def test_eof_mid_line_is_an_error() -> None:
    conn = ready()
    conn.send(commands.noop())
    conn.receive_data(b"200 res")
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a line"):
        conn.next_event()


# -- quoting ---------------------------------------------------------------------------------------


@settings(deadline=None)  # CI machines are slow and shared; correctness, not speed, is tested here
@given(st.text(max_size=1000).filter(lambda s: not any(c in s for c in "\n\r\0")))  # stays under 8192 bytes
def test_any_value_round_trips_through_asterisks_parser(value: str) -> None:
    line = Command("SET VARIABLE", ("X", value)).to_line()
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert parse_args(line.decode()[:-1]) == ["SET", "VARIABLE", "X", value]


@settings(deadline=None)
@given(st.text(max_size=200), st.sampled_from(["\n", "\r", "\0"]), st.text(max_size=200))
def test_values_with_line_breaks_are_refused(head: str, breaker: str, tail: str) -> None:
    with pytest.raises(LocalProtocolError):
        Command("SET VARIABLE", ("X", head + breaker + tail)).to_line()


@pytest.mark.parametrize(
    "hostile",
    ['Bob"\nHANGUP', 'x" ; EXEC System "rm -rf /', "\\", '\\"', '"', "a\tb  c", "${SHELL(reboot)}", "张三"],
)
def test_hostile_names_stay_one_argument(hostile: str) -> None:
    try:
        line = commands.set_variable("CALLERID(name)", hostile).to_line().decode()
    except LocalProtocolError:
        assert "\n" in hostile
        return
    assert parse_args(line[:-1]) == ["SET", "VARIABLE", "CALLERID(name)", hostile]


def test_quote_arg_shape() -> None:
    assert quote_arg('a"b\\c') == '"a\\"b\\\\c"'
    assert quote_arg("") == '""'


def test_command_renderings() -> None:
    assert commands.answer().to_line() == b"ANSWER\n"
    assert commands.get_data("menu", 5000, 1).to_line() == b'GET DATA "menu" "5000" "1"\n'
    assert commands.stream_file("x", "12#").to_line() == b'STREAM FILE "x" "12#"\n'
    assert commands.record_file("/v/1", "wav", "#", 120000, silence_s=5).to_line() == b'RECORD FILE "/v/1" "wav" "#" "120000" "BEEP" "s=5"\n'
    assert commands.exec_app("Dial", "PJSIP/1&PJSIP/2,20,t").to_line() == b'EXEC "Dial" "PJSIP/1&PJSIP/2,20,t"\n'
    assert parse_args(commands.get_full_variable("${DIALSTATUS}|${ANSWEREDTIME}").to_line().decode()[:-1])[3] == "${DIALSTATUS}|${ANSWEREDTIME}"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Command("set variable", ("x", "y")),
        lambda: Command("EXEC\nHANGUP"),
        lambda: commands.exec_app("Dial;System", "x"),
        lambda: commands.stream_file("x", "1a"),
        lambda: commands.get_data("x", -1, 1),
        lambda: Command("NOOP", tuple("a" for _ in range(200))),
        lambda: Command("NOOP", ("x" * 9000,)).to_line(),
    ],
)
def test_local_errors(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LocalProtocolError):
        build()


def test_environment_followed_by_data_in_the_same_read() -> None:
    conn = AgiConnection()
    conn.receive_data(ENV + b"HANGUP\n")
    assert isinstance(conn.next_event(), Environment)
    assert conn.next_event() == HangupNotice()


def test_empty_environment() -> None:
    conn = AgiConnection()
    conn.receive_data(b"\n\n")
    env = conn.next_event()
    assert isinstance(env, Environment) and env.variables == {}
    with pytest.raises(RemoteProtocolError, match="no command pending"):
        conn.next_event()  # the second blank line is not a reply to anything


def test_repeated_hangup_lines_keep_replies_in_step() -> None:
    # Seen on Asterisk 22.10: HANGUP once when run_agi notices the hangup and again after a later command.
    conn = ready()
    conn.send(commands.get_data("m", 5000, 1))
    assert events(conn, b"200 result=-1\nHANGUP\n", True) == [Reply(200, "-1", lines=("200 result=-1",)), HangupNotice()]
    conn.send(commands.set_variable("CALLROUTER_RESULT", "ROUTED"))
    got = events(conn, b"200 result=1\nHANGUP\n", False)
    assert got == [Reply(200, "1", lines=("200 result=1",)), HangupNotice()]
    assert conn.state is State.IDLE
