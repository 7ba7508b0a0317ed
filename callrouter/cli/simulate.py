"""`callrouter simulate`: emulated Asterisk calls against a running server."""

from __future__ import annotations

import argparse

HELP = "place emulated Asterisk calls against a running server"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4573)
    parser.add_argument("--number", required=True)
    parser.add_argument("--caller", default="13912345678")
    parser.add_argument("--caller-name", default="unknown")
    parser.add_argument("--digits", action="append", default=[], help="digits per prompt, comma-separated; '' = silence")
    parser.add_argument("--target", action="append", default=[], help="DIAL_TARGET=STATUS[:ring[:talk]] as Asterisk sees the target")
    parser.add_argument("--default", default="NOANSWER", help="outcome of targets not given with --target")
    parser.add_argument("--hangup", help="COMMAND[:N[:during|notice_first|after]], e.g. 'GET DATA:1' or 'EXEC DIAL:2'")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--quiet", action="store_true", help="summary only, no transcript")


def run(args: argparse.Namespace) -> int:
    from callrouter.emulator.simulate import simulate_main

    return simulate_main(args)
