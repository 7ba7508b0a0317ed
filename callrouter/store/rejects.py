"""rejected.jsonl: spooled lines that cannot become a CDR, set aside with the reason, each exactly once.

A line is known by a digest of its bytes, so a retry while the database is away, or a restart that
replays a segment still on disk, finds it already set aside and writes no second copy. Two lines with the
same bytes are the same record (a replay), so one copy holds everything either had. Blocking: called in a
worker thread.
"""

from __future__ import annotations

import hashlib
import json
import os


def line_key(raw: bytes) -> str:
    """The key of a spooled line, without its newline."""
    return hashlib.sha256(raw).hexdigest()[:32]


class RejectedLines:
    def __init__(self, path: str) -> None:
        self.path = path
        self._keys: set[str] = set()

    def load(self) -> None:
        """The keys of the lines set aside by earlier runs (entries written before keys existed have none)."""
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    try:
                        key = json.loads(line).get("key")
                    except (ValueError, AttributeError):  # a torn last entry, or not an object
                        continue
                    if isinstance(key, str):
                        self._keys.add(key)
        except FileNotFoundError:
            return

    def remember(self, key: str) -> None:
        """Count a line as set aside without writing it (it went to the log instead)."""
        self._keys.add(key)

    def add(self, key: str, error: str, raw: bytes) -> bool:
        """Set the line aside unless it already is; True if it was written now."""
        if key in self._keys:
            return False
        entry = {"error": error, "key": key, "spooled": raw.decode("utf-8", "replace").rstrip("\n")}
        data = json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n"
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._keys.add(key)
        return True
