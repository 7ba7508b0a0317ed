"""The hunt's store question asked while Asterisk starts the recording (HuntAhead): the answer is used by
the hunt, and given back when the caller leaves before the hunt takes it."""

from __future__ import annotations

import asyncio

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript, HangupAt
from callrouter.fastagi.session import _give_back
from callrouter.routing.hunt_start import HuntStart
from callrouter.store.memory import MemoryRoutingState
from tests.harness import arun, running_router

SALES = ("Local/13800138001@callrouter-lines", "Local/13800138002@callrouter-lines", "Local/13800138003@callrouter-lines")


class Counting(MemoryRoutingState):
    """Memory state that counts hunt starts and notes the leases they took, and says it is remote (as the
    database is), so the session asks it ahead."""

    remote = True

    def __init__(self) -> None:
        super().__init__()
        self.hunts: list[HuntStart] = []

    async def start_hunt(self, turn_key: str | None, lines: tuple[tuple[str, int], ...], health: bool) -> HuntStart:
        got = await super().start_hunt(turn_key, lines, health)
        self.hunts.append(got)
        return got


def test_the_answer_asked_ahead_is_the_one_the_hunt_uses() -> None:
    async def body() -> None:
        state = Counting()
        async with running_router(state=state) as router:
            done = await run_call("127.0.0.1", router.port, CallScript(uniqueid="a.1", dtmf=("1",), default_dial=DialScript("ANSWER", 1, 3)))
            await router.settle(1)
        assert done.variables["CALLROUTER_RESULT"] == "ROUTED"
        assert len(state.hunts) == 1 and state.hunts[0].taken  # asked once, before MixMonitor; the Dial used its lease
        assert [d.targets for d in done.dials] == [[state.hunts[0].lease_key]]
        assert [await state.active(key) for key in SALES] == [0, 0, 0]
        assert router.sample("callrouter_state_wait_seconds_count") == 1  # the hunt's one wait on the store, measured

    arun(body())


def test_a_store_in_process_memory_is_not_timed() -> None:
    """Only a remote store's answer is waited for; memory answers at once and costs no histogram per call."""
    async def body() -> None:
        async with running_router() as router:
            done = await run_call("127.0.0.1", router.port, CallScript(uniqueid="m.1", dtmf=("1",), default_dial=DialScript("ANSWER", 1, 3)))
            await router.settle(1)
        assert done.variables["CALLROUTER_RESULT"] == "ROUTED"
        assert router.sample("callrouter_state_wait_seconds_count") == 0

    arun(body())


def test_a_caller_who_leaves_while_the_recording_starts_gives_the_lease_asked_ahead_back() -> None:
    async def body() -> None:
        state = Counting()
        async with running_router(state=state) as router:
            gone = await run_call("127.0.0.1", router.port, CallScript(
                uniqueid="b.1", dtmf=("1",), hangup=HangupAt("EXEC MIXMONITOR", 1, "notice_first"), default_dial=DialScript("ANSWER", 1, 3)))
            await router.settle(1)
        assert gone.dials == [] and router.sink.records[0].disposition == "abandoned"
        assert len(state.hunts) == 1 and state.hunts[0].taken  # asked ahead, leased, never dialled (Dial: 511)
        assert [await state.active(key) for key in SALES] == [0, 0, 0]  # and given back

    arun(body())


def test_an_answer_asked_ahead_and_not_taken_gives_its_lease_back_when_it_comes() -> None:
    """drop_asked's helper: the lease goes back once the answer comes (at once if it is there); a failed or
    cancelled question has nothing to give back."""
    async def body() -> None:
        state = MemoryRoutingState()
        loop = asyncio.get_running_loop()
        pending, failed, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
        for answer in (pending, failed, cancelled):
            _give_back(answer, state)
        assert await state.acquire(SALES[0], 2)
        pending.set_result(HuntStart((SALES[0],), 0, None, SALES[0], True))
        failed.set_exception(TimeoutError("no answer"))
        cancelled.cancel()
        await asyncio.sleep(0)  # done callbacks run on the loop
        assert await state.active(SALES[0]) == 0
        came = loop.create_future()
        assert await state.acquire(SALES[1], 2)
        came.set_result(HuntStart((SALES[1],), None, None, SALES[1], True))
        _give_back(came, state)  # already there
        await asyncio.sleep(0)
        assert await state.active(SALES[1]) == 0

    arun(body())
