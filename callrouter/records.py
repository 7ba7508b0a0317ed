"""Where finished call records go: the interface, and an in-memory sink for tests.

The CDR writer (`callrouter.store.cdr_writer`) implements it for production. A sink must never make a
call fail: the session logs and counts a sink error and moves on.
"""

from __future__ import annotations

from typing import Protocol

from callrouter.routing.record import CallRecord


class RecordSink(Protocol):
    async def submit(self, record: CallRecord) -> None: ...

    async def close(self) -> None: ...


class MemorySink:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    async def submit(self, record: CallRecord) -> None:
        self.records.append(record)

    async def close(self) -> None:
        return None
