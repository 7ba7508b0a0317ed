"""The floor: a bare panoramisk FastAGI app that sends the benchmark call's command lines and nothing else.

`bench/run.py` captures the lines callrouter sent for one benchmark call (from the emulator's transcript of
a real call, so they follow callrouter whenever it changes), writes them to a JSON file and starts this
script with it. Every call then gets exactly those lines, one after the other, each after the reply to the
one before; no parsing, routing, state or record. The server's CPU per call here is what any Python AGI
server built on panoramisk needs for the same conversation: the floor callrouter's cost is read against.

Shims for panoramisk 1.4 on Python 3.11 (../shared/AGI.md, "Library notes"), kept out of its code:
- `Application.add_route` wraps a plain function in `asyncio.coroutine`, which 3.11 removed: the endpoint
  is an `async def`, so that path is never taken (and `asyncio.coroutine` is provided anyway, should a
  later panoramisk take it at import).
- `Request.send_command` takes the `HANGUP` notice Asterisk sends after an ended Dial as the reply to the
  pending command and then stays one reply behind: the endpoint reads on past a HANGUP line.
- The header is read in 100-byte chunks with no end if the peer closes early; the emulator always sends
  the whole header, so that fault is not met here.

Prints `floor FastAGI listening on 127.0.0.1:<port>` then `floor ready` on stderr; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import types
from pathlib import Path
from typing import Any

if not hasattr(asyncio, "coroutine"):  # removed in Python 3.11; panoramisk 1.4 still names it
    asyncio.coroutine = types.coroutine  # type: ignore[attr-defined]

from panoramisk.fast_agi import Application  # noqa: E402


def endpoint(lines: list[str]) -> Any:
    """The route: each captured line in turn, as panoramisk sends a command."""
    commands = tuple(lines)

    async def call(request: Any) -> None:
        for command in commands:
            reply = await request.send_command(command)
            if reply.get("error") == "AGIResultHangup":  # a notice, not the reply: the reply follows
                reply = await request._read_result()
            if reply.get("error") == "AGIResultHangup":
                return

    return call


async def serve(lines_file: Path, host: str, port: int) -> None:
    spec = json.loads(lines_file.read_text())
    app = Application()
    app.add_route(spec["script"], endpoint(spec["lines"]))
    server = await asyncio.start_server(app.handler, host, port)
    bound = server.sockets[0].getsockname()
    print(f"floor FastAGI listening on {bound[0]}:{bound[1]} ({len(spec['lines'])} command lines per call)", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("floor ready", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", required=True, type=Path, help='JSON {"script": <agi_network_script>, "lines": [command line, ...]}')
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto", help="the same loop as the server it is compared with")
    args = parser.parse_args()
    use_uvloop = args.event_loop == "uvloop"
    if args.event_loop == "auto":
        try:
            import uvloop  # noqa: F401
            use_uvloop = True
        except ImportError:
            use_uvloop = False
    if use_uvloop:
        import uvloop

        uvloop.run(serve(args.lines, args.host, args.port))
    else:
        asyncio.run(serve(args.lines, args.host, args.port))


if __name__ == "__main__":
    main()
