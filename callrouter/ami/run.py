"""`callrouter test-call`: place a call through AMI into the inbound context and report what happened."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Mapping, Sequence

from sqlalchemy import select

from callrouter.ami.client import AmiError, AmiSession
from callrouter.ami.testcall import PlacedCall, CallReport, originate_refusal, report
from callrouter.ami.values import caller_number
from callrouter.config.loader import RoutingConfig
from callrouter.store.db import open_engine, resolve_url
from callrouter.store.schema import call_attempts, calls

SECRET_ENV = "CALLROUTER_AMI_SECRET"
CDR_WAIT = 5.0  # the CDR writer stores a record within its batch age (0.5 s); allow for a busy database


async def place(config: RoutingConfig, number: str, caller: str) -> CallReport:
    settings = config.service.ami
    caller = caller_number(caller)
    if number not in config.plans:
        raise AmiError(f"no plan routes {number}; known: {', '.join(sorted(config.plans))}")
    secret = os.environ.get(SECRET_ENV) or settings.secret
    if not secret:
        raise AmiError(f"no AMI secret: set {SECRET_ENV} (or ami.secret) to the secret of [{settings.username}] in manager.conf")
    session = AmiSession(settings.host, settings.port, settings.username, secret)
    await session.connect(settings.connect_timeout)
    call = PlacedCall(channel_prefix=f"Local/{number}@{settings.inbound_context}-")
    refused: str | None = None
    try:
        answer = session.originate(
            {
                "Channel": f"Local/{number}@{settings.inbound_context}",
                "Application": "Wait",
                "Data": str(int(settings.call_timeout)),
                "CallerID": f'"callrouter test" <{caller}>',
                "Timeout": str(int(settings.call_timeout * 1000)),
            }
        )
        deadline = time.monotonic() + settings.call_timeout
        while not call.hung_up:
            if answer.done() and not isinstance(answer.result(), list):
                refused = originate_refusal(answer.result())
                if refused:
                    break
            if session.lost:
                raise AmiError("AMI closed the connection during the test call")
            if time.monotonic() > deadline:
                raise AmiError(f"the test call did not end within {settings.call_timeout:g} s (ami.call_timeout)")
            try:
                call.feed(await asyncio.wait_for(session.events.get(), 0.1))
            except TimeoutError:
                continue
        if refused is None and answer.done() and call.inbound == "":
            refused = originate_refusal(answer.result())
    finally:
        await session.close()
    cdr: Mapping[str, Any] | None
    attempts: Sequence[Mapping[str, Any]]
    if not call.inbound_uniqueid:
        cdr, attempts, note = None, [], "no call reached the router"
    elif call.variables.get("AGISTATUS") == "FAILURE":
        cdr, attempts, note = None, [], "none: Asterisk could not reach the router (AGISTATUS=FAILURE)"
    else:
        cdr, attempts, note = await fetch_cdr(config, call.inbound_uniqueid)
    return report(number, caller, call, refused, cdr, attempts, note)


async def fetch_cdr(config: RoutingConfig, uniqueid: str) -> tuple[Mapping[str, Any] | None, Sequence[Mapping[str, Any]], str]:
    """The router's CDR of the call, waiting a little for the writer's batch; (None, [], why) if not there."""
    engine = open_engine(resolve_url(config.service.store.url, config.base_dir), pool_size=1)
    try:
        deadline = time.monotonic() + CDR_WAIT
        while True:
            async with engine.connect() as conn:
                row = (await conn.execute(select(calls).where(calls.c.uniqueid == uniqueid))).first()
                if row is not None:
                    rows = await conn.execute(
                        select(call_attempts).where(call_attempts.c.call_uniqueid == uniqueid).order_by(call_attempts.c.seq)
                    )
                    return dict(row._mapping), [dict(a._mapping) for a in rows.all()], ""
            if time.monotonic() > deadline:
                return None, [], f"not in the database after {CDR_WAIT:g} s (is this the router's database?)"
            await asyncio.sleep(0.2)
    except Exception as exc:  # the report still stands on Asterisk's events; say why the CDR is missing
        return None, [], f"database unreachable ({type(exc).__name__})"
    finally:
        await engine.dispose()
