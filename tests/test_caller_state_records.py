"""Caller-ID normalisation, the in-memory routing state, and a record as spooled and as CDR rows."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from callrouter.store.cdr_rows import rows_from_spooled, spool_entry
from callrouter.routing.caller import caller_from
from callrouter.model.record import Attempt, CallRecord
from callrouter.store.memory import MemoryRoutingState
from tests.planning import NOW


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("13912345678", "13912345678"),
        ("+86 139-1234-5678", "13912345678"),
        ("008613912345678", "13912345678"),
        ("8613912345678", "13912345678"),
        ("013912345678", "13912345678"),
        ("01088886666", "01088886666"),
        ("+861088886666", "01088886666"),
        ("+14155550100", "0014155550100"),
        ("unknown", ""),
        ("Anonymous", ""),
        ("", ""),
        ("abc", ""),
        ('139"12345678 ${X}\r', "13912345678"),
        ("9" * 500, "9" * 32),
    ],
)
def test_caller_normalisation(raw: str, number: str) -> None:
    caller = caller_from(raw, "x" * 200)
    assert caller.number == number
    assert caller.anonymous is (number == "")
    assert len(caller.raw) <= 64 and len(caller.name) == 64


def test_memory_state_limits_and_releases() -> None:
    async def body() -> None:
        state = MemoryRoutingState()
        assert await state.acquire("a", 2) and await state.acquire("a", 2)
        assert not await state.acquire("a", 2)
        await state.release("a")
        assert await state.active("a") == 1
        assert await state.acquire("a", 2)
        for _ in range(3):
            await state.release("a")
        assert await state.active("a") == 0  # never negative
        assert [await state.next_turn("k") for _ in range(3)] == [0, 1, 2]
        assert await state.next_turn("other") == 0

    asyncio.run(body())


def test_a_record_survives_the_spool_line_and_becomes_cdr_rows() -> None:
    record = CallRecord(
        uniqueid="1.1", number="4008001234", caller="13912345678", caller_raw="+8613912345678",
        caller_name='张三 "VIP"', channel="PJSIP/x", started_at=NOW, ended_at=NOW + timedelta(seconds=42),
        answered_at=NOW + timedelta(seconds=5), disposition="answered", reason="answered by li",
        ivr_path=("main:1",), group="sales", strategy="round_robin",
        attempts=(Attempt("zhang", "Local/1@x", "BUSY", 1), Attempt("li", "Local/2@x", "ANSWER", 4, 37)),
        answered_line="li", talk_seconds=37, ring_seconds=5, recording_file=None, voicemail_file=None,
    )

    data, line = spool_entry(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == data
    assert data["caller_name"] == '张三 "VIP"' and data["duration_seconds"] == 42.0
    assert data["attempts"][1] == {"line_id": "li", "target": "Local/2@x", "status": "ANSWER", "ring_seconds": 4, "talk_seconds": 37}
    rows = rows_from_spooled(json.loads(line))
    assert rows.call["started_at"] == NOW and rows.call["duration_seconds"] == 42 and rows.call["billable_seconds"] == 37
    assert rows.call["ivr_path"] == "main:1" and rows.call["caller_name"] == '张三 "VIP"'
    assert [(a["seq"], a["line_id"], a["status"]) for a in rows.attempts] == [(1, "zhang", "BUSY"), (2, "li", "ANSWER")]

