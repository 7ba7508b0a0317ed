"""`callrouter probe`: the health check over FastAGI itself (the Docker HEALTHCHECK)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from callrouter.cli.common import EXIT_FAILED, EXIT_OK

HELP = "health check: run the FastAGI 'health' script against a server"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4573)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--admin", metavar="URL", help="also require GET URL/healthz of the admin API to answer 200, e.g. http://127.0.0.1:8080")


def run(args: argparse.Namespace) -> int:
    """Liveness over the real protocol: connect as Asterisk would, run the `health` script."""
    from callrouter.emulator.asterisk import run_call
    from callrouter.emulator.script import CallScript

    try:
        t = asyncio.run(run_call(args.host, args.port, CallScript(script="health", callerid="", dnid=""), timeout=args.timeout))
    except OSError as exc:
        print(f"unhealthy: cannot connect to {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if t.variables.get("CALLROUTER_RESULT") != "HEALTHY":
        print(f"unhealthy: {t.error or 'no HEALTHY answer'}", file=sys.stderr)
        return EXIT_FAILED
    if args.admin:
        problem = probe_http(args.admin.rstrip("/") + "/healthz", args.timeout)
        if problem:
            print(f"unhealthy: admin API: {problem}", file=sys.stderr)
            return EXIT_FAILED
    print("healthy")
    return EXIT_OK


def probe_http(url: str, timeout: float) -> str | None:
    """None when the URL answers 200, else why not. Plain urllib: a health check should not need the event loop."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return None if response.status == 200 else f"{url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"cannot reach {url}: {getattr(exc, 'reason', exc)}"
