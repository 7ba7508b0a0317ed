"""The Asterisk emulator answers with the exact lines res_agi.c uses (checked with a raw socket server)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, CallTranscript, DialScript, HangupAt
from tests.harness import arun


async def scripted(script: CallScript, lines: list[bytes], pause: float | None = None) -> tuple[CallTranscript, list[str], dict[str, str]]:
    """A raw FastAGI server that sends fixed command lines and records every line it gets back."""
    received: list[str] = []
    env: dict[str, str] = {}
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (line := (await reader.readline()).decode().rstrip("\n")) != "":
            key, _, value = line.partition(": ")
            env[key] = value
        for command in lines:
            writer.write(command)
            await writer.drain()
            await asyncio.sleep(0.02)  # let every reply arrive
        while True:
            try:
                chunk = await asyncio.wait_for(reader.readline(), 0.05)
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            received.append(chunk.decode().rstrip("\n"))
        if pause is None:
            writer.close()
        else:
            await asyncio.sleep(pause)
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transcript = await run_call("127.0.0.1", port, script, timeout=0.5 if pause else 5)
    await done.wait()
    server.close()
    return transcript, transcript.replies, env


def test_environment_block() -> None:
    _, _, env = arun(scripted(CallScript(args=("4008001234", "a b"), callerid=""), []))
    assert env["agi_network"] == "yes" and env["agi_network_script"] == "route"
    assert env["agi_callerid"] == "unknown" and env["agi_arg_2"] == "a b" and env["agi_type"] == "PJSIP"


def test_exact_replies() -> None:
    script = CallScript(dtmf=("12", "", "5", "7#"), variables={"FOO": "a (b) c"})
    t, replies, _ = arun(scripted(script, [
        b"ANSWER\n", b'GET DATA "menu" "5000" "2"\n', b'GET DATA "menu" "5000" "2"\n', b'GET DATA "menu" "5000" "3"\n',
        b'STREAM FILE "x" "78"\n', b'GET VARIABLE "FOO"\n', b'GET VARIABLE "NOPE"\n', b'SET VARIABLE "A" "1"\n',
        b"FROBNICATE\n", b'SET VARIABLE "only-one"\n',
    ]))
    assert replies == [
        "200 result=0",
        "200 result=12",
        "200 result= (timeout)",
        "200 result=5 (timeout)",
        "200 result=55 endpos=4000",  # '7' pressed during the file: ascii 55
        "200 result=1 (a (b) c)",
        "200 result=0",
        "200 result=1",
        "510 Invalid or unknown command",
        "520-Invalid command syntax.  Proper usage follows:",
        "Usage: SET VARIABLE <variablename> <value>",
        " Sets a variable to the current channel.",
        "520 End of proper usage.",
    ]
    assert t.answered


def test_answered_dial_ends_then_hangup_notice_then_dead_channel() -> None:
    script = CallScript(dial={"PJSIP/1": DialScript("ANSWER", 3, 40)})
    t, replies, _ = arun(scripted(script, [
        b'EXEC "Dial" "PJSIP/1,20,"\n', b'GET FULL VARIABLE "${DIALSTATUS}|${ANSWEREDTIME}|${DIALEDTIME}|${DIALEDPEERNUMBER}"\n',
        b'STREAM FILE "x" ""\n',
    ]))
    # As Asterisk 22 does it: Dial's reply first, HANGUP once run_agi notices (after the next command),
    # and DIALEDPEERNUMBER without the technology.
    assert replies == ["200 result=-1", "200 result=1 (ANSWER|40|43|1)", "HANGUP",
                       "511 Command Not Permitted on a dead channel or intercept routine"]
    assert t.agi_status == "HANGUP" and t.dials[0].ring_seconds == 3


def test_dial_failures_and_ring_all() -> None:
    script = CallScript(dial={"A/1": DialScript("BUSY"), "A/2": DialScript("ANSWER", 30), "A/3": DialScript("CHANUNAVAIL")})
    t, replies, _ = arun(scripted(script, [
        b'EXEC "Dial" "A/1,20,"\n', b'EXEC "Dial" "A/2,20,"\n', b'GET VARIABLE "DIALSTATUS"\n',
        b'EXEC "Dial" "A/1&A/3,20,"\n', b'GET VARIABLE "DIALSTATUS"\n',
    ]))
    assert replies == ["200 result=0", "200 result=0", "200 result=1 (NOANSWER)", "200 result=0", "200 result=1 (BUSY)"]
    assert [d.status for d in t.dials] == ["BUSY", "NOANSWER", "BUSY"]  # rang past the timeout: NOANSWER


def test_scripted_hangup_during_get_data() -> None:
    commands = [b'GET DATA "m" "5000" "1"\n', b'SET VARIABLE "R" "x"\n', b"ANSWER\n"]
    _, replies, _ = arun(scripted(CallScript(hangup=HangupAt("GET DATA")), commands))
    assert replies == ["200 result=-1", "HANGUP", "200 result=1",  # as Asterisk 22.10 orders them
                       "511 Command Not Permitted on a dead channel or intercept routine"]
    _, replies, _ = arun(scripted(CallScript(hangup=HangupAt("GET DATA", mode="notice_first")), commands))
    assert replies[:2] == ["HANGUP", "200 result=-1"]


def test_scripted_hangup_after_a_command_arrives_while_idle() -> None:
    _, replies, _ = arun(scripted(CallScript(hangup=HangupAt("ANSWER", mode="after")), [b"ANSWER\n"]))
    assert replies == ["200 result=0", "HANGUP"]


def test_agiexecfull_substitution_only_when_set() -> None:
    plain, _, _ = arun(scripted(CallScript(variables={"X": "boom"}), [b'EXEC "Set" "V=${X}"\n', b'GET VARIABLE "V"\n']))
    assert plain.replies[-1] == "200 result=1 (${X})"
    full, _, _ = arun(scripted(CallScript(variables={"X": "boom", "AGIEXECFULL": "yes"}), [b'EXEC "Set" "V=${X}"\n', b'GET VARIABLE "V"\n']))
    assert full.replies[-1] == "200 result=1 (boom)"


def test_a_newline_inside_a_value_becomes_a_second_command() -> None:
    # This is why the router refuses CR/LF in values: Asterisk reads the rest as the next command.
    t, _, _ = arun(scripted(CallScript(), [b'SET VARIABLE "CALLERID(name)" "Bob\nHANGUP"\n']))
    assert t.commands == [["SET", "VARIABLE", "CALLERID(name)", "Bob"], ["HANGUP"]]
    assert t.hung_up  # the injected HANGUP really hung the call up


def test_silent_router_is_a_failure() -> None:
    t, _, _ = arun(scripted(CallScript(), [], pause=1.0))
    assert t.agi_status == "FAILURE" and t.error is not None


def test_get_data_with_a_missing_prompt_fails_on_a_live_channel() -> None:
    t, replies, _ = arun(scripted(CallScript(missing_files=frozenset({"menu"}), dtmf=("4",)), [
        b'GET DATA "menu" "5000" "1"\n', b'WAIT FOR DIGIT "5000"\n',
    ]))
    assert replies == ["200 result=-1", "200 result=52"]
    assert not t.hung_up


def test_agistatus_is_failure_after_a_command_failed_on_a_live_channel_even_when_the_caller_hangs_up_later() -> None:
    """res_agi.c run_agi: a handler's RESULT_FAILURE while the channel is up makes AGISTATUS FAILURE for good
    (STREAM FILE of a missing file, RECORD FILE's writefile); GET DATA of a missing prompt is not one; a
    hang-up with no failure before it gives HANGUP."""
    dial = [b'EXEC "Dial" "PJSIP/1,20,"\n', b'GET VARIABLE "DIALSTATUS"\n']
    missing = CallScript(missing_files=frozenset({"gone", "menu"}), dial={"PJSIP/1": DialScript("ANSWER", 1, 5)})
    cases = [
        ([b'STREAM FILE "gone" ""\n', *dial], "FAILURE"),
        ([b'GET DATA "menu" "5000" "1"\n', *dial], "HANGUP"),
        ([b'STREAM FILE "here" ""\n', *dial], "HANGUP"),
        ([b'RECORD FILE "/no/such/dir/x" "wav" "#" "1000"\n'], "FAILURE"),
        ([b'GET DATA "menu" "5000" "1"\n'], "SUCCESS"),
    ]
    for lines, status in cases:
        script = replace(missing, existing_dirs=frozenset()) if b"RECORD" in lines[0] else missing
        t, replies, _ = arun(scripted(script, lines))
        assert t.agi_status == status, (lines[0], replies)
        assert t.hung_up == (len(lines) > 2), replies  # the answered Dial ended the call


def test_a_routed_call_with_a_missing_prompt_reads_routed_and_failure() -> None:
    """What the dialplan sees then: CALLROUTER_RESULT decides, AGISTATUS says FAILURE (docs/asterisk.md)."""
    from tests.harness import running_router

    async def body() -> CallTranscript:
        async with running_router() as router:
            return await run_call("127.0.0.1", router.port, CallScript(missing_files=frozenset({"callrouter/welcome"}), dtmf=("1",),
                                                                       default_dial=DialScript("ANSWER", 2, 5)))

    t = arun(body())
    assert t.variables["CALLROUTER_RESULT"] == "ROUTED" and t.agi_status == "FAILURE" and t.hung_up


def test_prompt_wait_plays_each_prompt_in_real_time_and_changes_nothing_else() -> None:
    """The bench's paced pass: each STREAM FILE and GET DATA replies only after `prompt_wait` real seconds
    (a sleep: a lower bound, never a speed claim); the conversation and its virtual clock stay the same."""
    import time

    from tests.harness import running_router

    async def one(prompt_wait: float) -> tuple[CallTranscript, float]:
        async with running_router() as router:  # a fresh router each: the same round-robin turn
            started = time.perf_counter()
            script = CallScript(uniqueid="1.1", dtmf=("1",), default_dial=DialScript("ANSWER", 2, 5), prompt_wait=prompt_wait)
            return await run_call("127.0.0.1", router.port, script), time.perf_counter() - started

    plain, _ = arun(one(0.0))
    paced, elapsed = arun(one(0.1))
    assert len(paced.played) == len(plain.played) >= 2
    assert elapsed >= 0.1 * len(paced.played)
    assert (paced.commands, paced.replies) == (plain.commands, plain.replies)
    assert paced.variables["CALLROUTER_RESULT"] == "ROUTED"
