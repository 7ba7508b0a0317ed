"""What a test does when this machine lacks something it needs: skip here, fail on CI.

A missing tool, browser or database on CI is a failure, never a green skip (CI=true; `.ci/run` installs
what the tests need)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def on_ci() -> bool:
    return os.environ.get("CI") == "true"


def missing(message: str, must_run: str) -> NoReturn:
    """Skip with `message`; with CI=true fail with it instead, saying what must run there."""
    if on_ci():
        pytest.fail(f"{message}; CI=true: {must_run} must run", pytrace=False)
    pytest.skip(message)
