"""The `callrouter` command: the parser built from the table of commands, and `main`, the entry point."""

from __future__ import annotations

import argparse
from types import MappingProxyType
from typing import Callable, Mapping, Protocol, Sequence

from callrouter.cli import (
    blacklist,
    check,
    db,
    explain,
    exporter,
    lines,
    plans,
    probe,
    prompts,
    recordings,
    serve,
    simulate,
    stats,
    tenants,
    testcall,
    tokens,
    usage,
    users,
)
from callrouter.cli.common import add_command, run_command


class Command(Protocol):
    """What a command module provides: its one-line help, its flags, and what it does (returning the exit status)."""

    HELP: str

    @property
    def configure(self) -> Callable[[argparse.ArgumentParser], None]: ...

    @property
    def run(self) -> Callable[[argparse.Namespace], int]: ...


# name -> module, in the order `callrouter --help` lists them
COMMANDS: Mapping[str, Command] = MappingProxyType({
    "serve": serve,
    "check": check,
    "explain": explain,
    "probe": probe,
    "simulate": simulate,
    "db": db,
    "stats": stats,
    "blacklist": blacklist,
    "prompts": prompts,
    "recordings": recordings,
    "exporter": exporter,
    "test-call": testcall,
    "usage": usage,
    "lines": lines,
    "tenants": tenants,
    "users": users,
    "tokens": tokens,
    "plans": plans,
})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callrouter", description="FastAGI call router for 400 numbers")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        add_command(sub, name, command.HELP, command.configure, command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`callrouter ...` and `python -m callrouter ...`: the exit status of the command."""
    return run_command(build_parser().parse_args(argv))
