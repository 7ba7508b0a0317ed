"""AGI commands: one quoting function, proved against a replica of Asterisk's parse_args()."""

from __future__ import annotations

import re
from dataclasses import FrozenInstanceError

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrouter.agi import commands
from callrouter.agi.commands import AGI_BUF_LEN, MAX_LINE_BYTES, MAX_WORDS, Command, quote_arg
from callrouter.agi.errors import LocalProtocolError
from callrouter.agi.protocol import AgiConnection, Environment, State
from callrouter.emulator.agi_args import parse_args

SAFE_TEXT = st.text(max_size=1000).filter(lambda s: not any(c in s for c in "\n\r\0"))  # under 8191 bytes quoted
HOSTILE_TEXT = st.text(alphabet=st.sampled_from(list(' \t"\\\n\r\0;$(){}&,|\'xé张\u2028')), max_size=60)


def argv(command: Command) -> list[str]:
    """What Asterisk's parse_args() makes of the line we render (newline removed, as run_agi does)."""
    line = command.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line and b"\0" not in line
    return parse_args(line.decode()[:-1])


def asterisk_reads(stream: bytes) -> list[bytes]:
    """Commands as run_agi() reads them: fgets() into char buf[AGI_BUF_LEN] until '\\n' or the buffer is full."""
    out: list[bytes] = []
    while stream:
        end = stream.find(b"\n")
        take = AGI_BUF_LEN - 1 if end < 0 else min(end + 1, AGI_BUF_LEN - 1)
        piece, stream = stream[:take], stream[take:]
        out.append(piece.removesuffix(b"\n"))
    return out


def recordfile_options(args: list[str]) -> tuple[bool, int]:
    """(beep, silence seconds) as handle_recordfile() reads argv[6..8] (res_agi.c)."""
    silence = 0
    found = next((a[a.index("s") :] for a in args[6:9] if "s" in a), None)  # strchr(argv[i], 's')
    if found is not None and len(found) > 2 and found.startswith("s="):
        silence = int(re.match(r"-?\d*", found[2:]).group() or 0)  # type: ignore[union-attr]
    looks_like_offset = len(args) > 6 and re.match(r"\s*[+-]?\d", args[6]) is not None
    beep = (len(args) > 6 and not looks_like_offset and not args[6].startswith("s=")) or (
        len(args) > 7 and not args[7].startswith("s=")
    )
    return beep, silence


# -- quote_arg ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("", '""'), ("abc", '"abc"'), ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"'), ('\\"', '"\\\\\\""'), ("a b\tc", '"a b\tc"')],
)
def test_quote_arg_shape(value: str, quoted: str) -> None:
    assert quote_arg(value) == quoted
    assert parse_args(quoted) == [value]


@pytest.mark.parametrize(("breaker", "name"), [("\n", "newline"), ("\r", "carriage return"), ("\0", "NUL")])
def test_quote_arg_refuses_line_breaks_and_names_the_problem_not_the_value(breaker: str, name: str) -> None:
    secret = "13800138000-" * 1000 + breaker + "HANGUP"
    with pytest.raises(LocalProtocolError, match=name) as info:
        quote_arg(secret)
    assert "13800138000" not in str(info.value) and len(str(info.value)) < 100
    assert "index 12000" in str(info.value)


@settings(deadline=None)
@given(SAFE_TEXT)
def test_any_value_round_trips_through_asterisks_parser(value: str) -> None:
    line = Command("SET VARIABLE", ("X", value)).to_line()
    assert line.count(b"\n") == 1
    assert parse_args(line.decode()[:-1]) == ["SET", "VARIABLE", "X", value]


@settings(deadline=None)
@given(st.lists(st.text(max_size=40).filter(lambda s: not any(c in s for c in "\n\r\0")), max_size=40))
def test_many_arguments_keep_their_boundaries(values: list[str]) -> None:
    assert argv(Command("NOOP", tuple(values))) == ["NOOP", *values]


@settings(deadline=None)
@given(HOSTILE_TEXT, HOSTILE_TEXT)
def test_hostile_values_never_make_a_second_line_or_an_extra_word(name: str, number: str) -> None:
    try:
        command = commands.exec_app("Dial", f"PJSIP/{number},20,t") if not name else commands.set_variable("CALLERID(name)", name)
    except LocalProtocolError:
        assert any(c in name + number for c in "\n\r\0")
        return
    words = argv(command)
    assert words == (["EXEC", "Dial", f"PJSIP/{number},20,t"] if not name else ["SET", "VARIABLE", "CALLERID(name)", name])


@pytest.mark.parametrize(
    "hostile",
    [
        'Bob"\nHANGUP',
        'x" ; EXEC System "rm',
        'x" ; EXEC System "rm -rf /',
        "\\",
        '\\"',
        '"',
        '""',
        "a\tb  c",
        "${SHELL(reboot)}",
        "张三\u2028李四",
        "Bob\r\nEXEC System reboot",
        "Bob\0EXEC",
    ],
)
def test_hostile_caller_names(hostile: str) -> None:
    if any(c in hostile for c in "\n\r\0"):
        conn = AgiConnection()
        conn.receive_data(b"agi_network: yes\n\n")
        assert isinstance(conn.next_event(), Environment)
        with pytest.raises(LocalProtocolError):
            conn.send(commands.set_variable("CALLERID(name)", hostile))
        assert conn.state is State.IDLE and conn.pending is None  # nothing was sent
        return
    assert argv(commands.set_variable("CALLERID(name)", hostile)) == ["SET", "VARIABLE", "CALLERID(name)", hostile]


def test_a_lone_surrogate_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="UTF-8"):
        commands.set_variable("X", "bad\udcff")


# -- Command --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["ANSWER", "STREAM FILE", "GET FULL VARIABLE", "SPEECH ACTIVATE GRAMMAR"])
def test_good_verbs(verb: str) -> None:
    assert Command(verb).to_line() == verb.encode() + b"\n"


@pytest.mark.parametrize(
    "verb",
    ["", "answer", "Set Variable", "SET  VARIABLE", "SET VARIABLE ", " ANSWER", "A B C D", "EXEC\nHANGUP", "EXEC\tX", "NOOP1", "ÀNSWER", "GET-DATA"],
)
def test_bad_verbs(verb: str) -> None:
    with pytest.raises(LocalProtocolError, match="not an AGI verb"):
        Command(verb)


def test_arguments_must_be_text() -> None:
    with pytest.raises(TypeError):
        Command("NOOP", (5,))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Command("NOOP", (b"x",))  # type: ignore[arg-type]


def test_a_str_subclass_is_quoted_as_the_plain_text_it_holds() -> None:
    """A subclass could answer replace(), find() or formatting with anything, a newline included: the
    command copies it to plain str first, so what is sent is its text, quoted like any other."""

    class Sly(str):
        def replace(self, *args: object) -> str:  # type: ignore[override]
            return 'x" \nEXEC System "rm'

        def __format__(self, spec: str) -> str:
            return "x\nEXEC System rm"

        def find(self, *args: object) -> int:  # type: ignore[override]
            return -1

    assert commands.set_variable("CALLERID(name)", Sly('say "hi"')).to_line() == b'SET VARIABLE "CALLERID(name)" "say \\"hi\\""\n'
    with pytest.raises(LocalProtocolError, match="newline"):
        commands.set_variable("X", Sly("a\nb"))


def test_command_is_a_frozen_value() -> None:
    command = Command("SET VARIABLE", ["X", "1"])  # type: ignore[arg-type]
    assert command.args == ("X", "1") and command == Command("SET VARIABLE", ("X", "1"))
    assert hash(command) == hash(Command("SET VARIABLE", ("X", "1"))) and "_line" not in repr(command)
    with pytest.raises(FrozenInstanceError):
        command.verb = "EXEC"  # type: ignore[misc]


def test_line_length_limit_is_what_fgets_can_hold() -> None:
    overhead = len(b'NOOP ""\n')
    longest = Command("NOOP", ("x" * (MAX_LINE_BYTES - overhead),)).to_line()
    assert len(longest) == MAX_LINE_BYTES == 8191 and asterisk_reads(longest) == [longest[:-1]]
    with pytest.raises(LocalProtocolError, match="8192 bytes is over"):
        Command("NOOP", ("x" * (MAX_LINE_BYTES - overhead + 1),))
    # Why 8191 and not 8192: Asterisk would read an 8192-byte line as two commands and answer twice.
    too_long = b'NOOP "' + b"x" * (AGI_BUF_LEN - overhead) + b'"\n'
    assert len(too_long) == AGI_BUF_LEN and asterisk_reads(too_long) == [too_long[:-1], b""]


def test_line_length_counts_utf8_bytes_and_escapes() -> None:
    Command("NOOP", ("张" * 2727,))  # 8181 bytes + 8: fits
    with pytest.raises(LocalProtocolError):
        Command("NOOP", ("张" * 2728,))
    with pytest.raises(LocalProtocolError):
        Command("NOOP", ('"' * 4092,))  # 8184 bytes once escaped


def test_word_limit() -> None:
    fits = Command("NOOP", tuple("a" for _ in range(MAX_WORDS - 1)))
    assert MAX_WORDS == 127 and len(argv(fits)) == 127
    assert len(argv(Command("SET VARIABLE", ("x",) * (MAX_WORDS - 2)))) == 127
    with pytest.raises(LocalProtocolError, match="128 words"):
        Command("NOOP", tuple("a" for _ in range(MAX_WORDS)))
    with pytest.raises(LocalProtocolError, match="200 words"):
        Command("GET FULL VARIABLE", ("a",) * 197)


# -- constructors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "line"),
    [
        (commands.answer(), b"ANSWER\n"),
        (commands.hangup(), b"HANGUP\n"),
        (commands.hangup("PJSIP/1001-00000001"), b'HANGUP "PJSIP/1001-00000001"\n'),
        (commands.stream_file("welcome"), b'STREAM FILE "welcome" ""\n'),
        (commands.stream_file("menu", "12#*", offset=8000), b'STREAM FILE "menu" "12#*" "8000"\n'),
        (commands.get_data("menu", 5000, 1), b'GET DATA "menu" "5000" "1"\n'),
        (commands.wait_for_digit(3000), b'WAIT FOR DIGIT "3000"\n'),
        (commands.get_variable("DIALSTATUS"), b'GET VARIABLE "DIALSTATUS"\n'),
        (commands.get_full_variable("${DIALSTATUS}|${ANSWEREDTIME}"), b'GET FULL VARIABLE "${DIALSTATUS}|${ANSWEREDTIME}"\n'),
        (commands.get_full_variable("${X}", "PJSIP/a-1"), b'GET FULL VARIABLE "${X}" "PJSIP/a-1"\n'),
        (commands.set_variable("CALLERID(name)", '张三 "VIP"'), 'SET VARIABLE "CALLERID(name)" "张三 \\"VIP\\""\n'.encode()),
        (commands.exec_app("Dial", "PJSIP/1&PJSIP/2,20,t"), b'EXEC "Dial" "PJSIP/1&PJSIP/2,20,t"\n'),
        (commands.exec_app("MixMonitor", "/var/spool/x y.wav,b"), b'EXEC "MixMonitor" "/var/spool/x y.wav,b"\n'),
        (commands.exec_app("Playback", ""), b'EXEC "Playback" ""\n'),
        (commands.verbose("routing done"), b'VERBOSE "routing done" "1"\n'),
        (commands.verbose("x", 3), b'VERBOSE "x" "3"\n'),
        (commands.noop(), b"NOOP\n"),
        (commands.noop("still here"), b'NOOP "still here"\n'),
    ],
)
def test_renderings(command: Command, line: bytes) -> None:
    assert command.to_line() == line
    assert argv(command)[: len(command.verb.split())] == command.verb.split()
    assert argv(command)[len(command.verb.split()) :] == list(command.args)


def test_exec_options_stay_one_argument() -> None:
    options = 'PJSIP/1001,20,tU(sub^arg "q")'
    assert argv(commands.exec_app("Dial", options)) == ["EXEC", "Dial", options]


@pytest.mark.parametrize("app", ["", "Dial;System", "Dial System", "Dial\n", "Dial(x)", "Di-al", "张"])
def test_exec_app_name_is_validated(app: str) -> None:
    with pytest.raises(LocalProtocolError, match="application name"):
        commands.exec_app(app, "x")


@pytest.mark.parametrize(
    ("kwargs", "tail", "beep", "silence"),
    [
        ({}, ["BEEP"], True, 0),
        ({"silence_s": 5}, ["BEEP", "s=5"], True, 5),
        ({"beep": False}, [], False, 0),
        ({"beep": False, "silence_s": 3}, ["s=3"], False, 3),
    ],
)
def test_record_file_arguments_are_read_as_meant(kwargs: dict[str, object], tail: list[str], beep: bool, silence: int) -> None:
    words = argv(commands.record_file("/var/spool/voicemail/4001/1700000000.42", "wav", "#", 120000, **kwargs))  # type: ignore[arg-type]
    assert words == ["RECORD", "FILE", "/var/spool/voicemail/4001/1700000000.42", "wav", "#", "120000", *tail]
    assert recordfile_options(words) == (beep, silence)


@pytest.mark.parametrize(
    "build",
    [
        lambda: commands.stream_file("x", "1a"),
        lambda: commands.stream_file("x", "1 2"),
        lambda: commands.stream_file("x", "\n"),
        lambda: commands.stream_file("x", "12", offset=-1),
        lambda: commands.get_data("x", -1, 1),
        lambda: commands.get_data("x", 1000, -1),
        lambda: commands.get_data("x", 1.5, 1),  # type: ignore[arg-type]
        lambda: commands.get_data("x", True, 1),
        lambda: commands.get_data("x", "5000", 1),  # type: ignore[arg-type]
        lambda: commands.get_data("x", 2**31, 1),
        lambda: commands.wait_for_digit(-1),
        lambda: commands.record_file("x", "wav", "A", 1000),
        lambda: commands.record_file("x", "wav", "#", -5),
        lambda: commands.record_file("x", "wav", "#", 1000, silence_s=-1),
        lambda: commands.verbose("x", -1),
    ],
)
def test_numbers_and_escape_digits_are_validated(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LocalProtocolError):
        build()


def test_all_escape_digits_and_limits_accepted() -> None:
    assert argv(commands.stream_file("x", "0123456789*#"))[3] == "0123456789*#"
    assert argv(commands.get_data("x", 2**31 - 1, 0))[2:] == ["x", "2147483647", "0"]
