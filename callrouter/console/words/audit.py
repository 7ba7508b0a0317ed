"""Words of the console's audit page: key -> (中文, English)."""

from __future__ import annotations

WORDS: dict[str, tuple[str, str]] = {}
