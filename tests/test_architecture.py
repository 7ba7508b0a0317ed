"""The import rules of docs/architecture.md hold: import-linter's contracts in pyproject.toml.

Layers (the command line and the wiring on top, leaf types at the bottom, siblings independent) and
no IO in the AGI protocol, the routing decision and the leaf types. A new import that breaks them
fails here, with import-linter's explanation of the chain.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken." in done.stdout
