"""Words of the console's calls page: key -> (中文, English)."""

from __future__ import annotations

WORDS: dict[str, tuple[str, str]] = {}
