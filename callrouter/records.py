"""Where finished call records go: an interface, an in-memory sink for tests, an append-only JSONL file.

The Postgres CDR writer (a later issue) implements the same interface. A sink must never make a call
fail: the session logs and counts a sink error and moves on.
"""

from __future__ import annotations

import json
import os
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


class JsonlSink:
    """One JSON object per line, appended and flushed per record (readable by `jq`, tail -f, and replay)."""

    def __init__(self, path: str) -> None:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the process lifetime

    async def submit(self, record: CallRecord) -> None:
        self._file.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        self._file.flush()

    async def close(self) -> None:
        self._file.close()
