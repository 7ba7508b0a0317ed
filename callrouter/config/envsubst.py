"""`${NAME}` in a configured header value comes from the environment: secrets stay out of config.yaml."""

from __future__ import annotations

import re
from typing import Mapping

_ENV = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


class MissingEnvironment(Exception):
    """A header names an environment variable that is not set."""


def expand_headers(headers: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        missing = [m for m in _ENV.findall(value) if m not in environ]
        if missing:
            raise MissingEnvironment(f"header {name}: environment variable {missing[0]} is not set")
        out[name] = _ENV.sub(lambda m: environ[m.group(1)], value)
    return out
