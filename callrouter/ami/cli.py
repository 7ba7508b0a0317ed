"""`callrouter test-call --number 400...`: does the number really ring? (开通后测试)"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

EXIT_CODES = "0 answered, 1 placed but not answered, 2 bad input, 3 AMI unreachable, 4 login refused, 5 Originate refused, 6 timeout"


def cmd_test_call(args: argparse.Namespace) -> int:
    from callrouter.ami.client import AmiError
    from callrouter.ami.run import place
    from callrouter.cli import _load

    config = _load(args.config)
    if config is None:
        return 2
    number = "".join(ch for ch in args.number if ch.isdigit())
    caller = args.caller or config.service.ami.test_caller
    try:
        result = asyncio.run(place(config, number, caller, args.timeout))
    except ValueError as exc:  # bad input or settings: refused before connecting
        print(f"callrouter test-call: {exc}", file=sys.stderr)
        return 2
    except AmiError as exc:
        print(f"callrouter test-call: {exc}", file=sys.stderr)
        return exc.exit_code
    print("\n".join(result.lines))
    return result.exit_code


def add_subcommand(sub: "argparse._SubParsersAction[Any]") -> None:
    p = sub.add_parser(
        "test-call",
        help="place a test call through Asterisk (AMI) into the inbound context and report who answered",
        description=f"Exit status: {EXIT_CODES}.",
    )
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--number", required=True, help="the 400 number to call")
    p.add_argument("--from", dest="caller", help="caller ID to present, digits with an optional + (default ami.test_caller)")
    p.add_argument("--timeout", type=float, help="seconds the call may take, ringing included (default ami.call_timeout)")
    p.set_defaults(func=cmd_test_call)
