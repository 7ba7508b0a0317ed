"""`callrouter test-call --number 400...`: does the number really ring? (开通后测试)"""

from __future__ import annotations

import argparse
import asyncio
import sys

from callrouter.cli.common import EXIT_BAD_INPUT, add_config_argument, load_config

HELP = "place a test call through Asterisk (AMI) into the inbound context and report who answered"
EXIT_CODES = "0 answered, 1 placed but not answered, 2 bad input, 3 AMI unreachable, 4 login refused, 5 Originate refused, 6 timeout"
DESCRIPTION = f"Exit status: {EXIT_CODES}."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    add_config_argument(parser)
    parser.add_argument("--number", required=True, help="the 400 number to call")
    parser.add_argument("--from", dest="caller", help="caller ID to present, digits with an optional + (default ami.test_caller)")
    parser.add_argument("--timeout", type=float, help="seconds the call may take, ringing included (default ami.call_timeout)")


def run(args: argparse.Namespace) -> int:
    """The report's own status (0 or 1); 2 for bad input, 3 to 6 from the AMI error (`AmiError.exit_code`)."""
    from callrouter.ami.client import AmiError
    from callrouter.ami.run import place

    config = load_config(args.config)
    number = "".join(ch for ch in args.number if ch.isdigit())
    caller = args.caller or config.service.ami.test_caller
    try:
        result = asyncio.run(place(config, number, caller, args.timeout))
    except ValueError as exc:  # bad input or settings: refused before connecting
        print(f"callrouter test-call: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except AmiError as exc:
        print(f"callrouter test-call: {exc}", file=sys.stderr)
        return exc.exit_code
    print("\n".join(result.lines))
    return result.exit_code
