"""Words of the console's numbers page: key -> (中文, English)."""

from __future__ import annotations

WORDS: dict[str, tuple[str, str]] = {}
