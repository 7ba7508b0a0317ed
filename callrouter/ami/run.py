"""`callrouter test-call`: place a call through AMI into the inbound context and report what happened."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import uuid
from typing import Any, Sequence

from sqlalchemy.exc import SQLAlchemyError

from callrouter.ami.client import AmiOriginateRefused, AmiSession, AmiTimeout, AmiUnreachable
from callrouter.ami.testcall import PlacedCall, TestCallReport, originate_refusal, report
from callrouter.ami.values import caller_number
from callrouter.config.loader import RoutingConfig
from callrouter.routing.engine import dial_target
from callrouter.store.calls import StoredAttempt, StoredCall, find_call
from callrouter.store.db import StoreError, open_engine, resolve_url

log = logging.getLogger(__name__)

SECRET_ENV = "CALLROUTER_AMI_SECRET"
TEST_VARIABLE = "CALLROUTER_TEST_CALL"  # set on the test call's channels (Local/ copies it to the ;2 half)
CDR_WAIT = 5.0  # the CDR writer stores a record within its batch age (0.5 s); allow for a busy database
SETTLE = 2.0  # after the hang-up: how long the OriginateResponse (or our Hangup's end) may take to arrive
POLL = 0.1


def placed_call(config: RoutingConfig, number: str) -> PlacedCall:
    """The (empty) record of a test call to `number`, which `place` fills as Asterisk's events arrive."""
    return PlacedCall(channel_prefix=f"Local/{number}@{config.service.ami.inbound_context}-")


async def place(config: RoutingConfig, number: str, caller: str, timeout: float | None = None, call: PlacedCall | None = None) -> TestCallReport:
    """Originate a test call to `number` from `caller`; the report once it ended.

    ValueError: bad input (refused before connecting). AmiError subclasses: AMI could not be reached, refused
    the login or the Originate, or the call outlived `timeout` (default ami.call_timeout; then it is hung up).
    `call`: a `placed_call` the caller watches while it runs (the console shows which line rings, live).
    """
    settings = config.service.ami
    caller = caller_number(caller)
    timeout = settings.call_timeout if timeout is None else timeout
    if not 0 < timeout <= 600:
        raise ValueError(f"--timeout {timeout:g}: seconds, more than 0 and at most 600")
    if number not in config.plans:
        raise ValueError(f"no plan routes {number!r}; known: {', '.join(sorted(config.plans))}")
    secret = os.environ.get(SECRET_ENV) or settings.secret
    if not secret:
        raise ValueError(f"no AMI secret: set {SECRET_ENV} (or ami.secret) to the secret of [{settings.username}] in manager.conf")
    session = AmiSession(settings.host, settings.port, settings.username, secret)
    action_id = f"callrouter-test-{uuid.uuid4().hex}"
    call = call if call is not None else placed_call(config, number)
    try:
        await session.connect(settings.connect_timeout)
        answer = session.send(
            {
                "Action": "Originate",
                "ActionID": action_id,
                "Async": "true",
                "Channel": f"Local/{number}@{settings.inbound_context}",
                # The ;1 half only waits; the ;2 half runs the inbound context as a carrier call would.
                "Application": "Wait",
                "Data": str(math.ceil(timeout)),
                "Timeout": str(math.ceil(timeout * 1000)),
                "CallerID": f'"callrouter test" <{caller}>',
                "Variable": f"{TEST_VARIABLE}={action_id}",
            }
        )
        await follow(session, call, answer, timeout)
    finally:
        await session.close()
    cdr: StoredCall | None
    attempts: Sequence[StoredAttempt]
    if not call.inbound_uniqueid:
        cdr, attempts, note = None, [], "no call reached the router"
    elif call.variables.get("AGISTATUS") == "FAILURE":
        cdr, attempts, note = None, [], "none: Asterisk could not reach the router (AGISTATUS=FAILURE)"
    else:
        cdr, attempts, note = await fetch_cdr(config, call.inbound_uniqueid)
    return report(number, caller, call, cdr, attempts, note, line_ids(config, number))


def line_ids(config: RoutingConfig, number: str) -> dict[str, str]:
    """The plan's lines by the dial string AMI events show (the Dial target without its technology)."""
    template = config.service.dialing.template
    return {
        dial_target(line, template).split("/", 1)[-1]: line.id
        for group in config.plans[number].hunt_groups.values()
        for line in group.lines
    }


async def follow(session: AmiSession, call: PlacedCall, answer: asyncio.Future[Any], timeout: float) -> None:
    """Feed the call's events until its inbound half hung up; raise if Asterisk refused it or it ran too long."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not call.hung_up:
        if answer.done():
            refused = originate_refusal(answer.result())
            if refused:
                raise AmiOriginateRefused(f"Asterisk refused the Originate: {refused}")
        if session.lost and session.events.empty():
            raise AmiUnreachable(f"AMI at {session.where} closed the connection during the test call")
        remaining = deadline - loop.time()
        if remaining <= 0:
            await hang_up(session, call)
            raise AmiTimeout(
                f"the test call did not end within {timeout:g} s (--timeout, ami.call_timeout)"
                + ("; callrouter hung it up" if call.originator else "; Asterisk reported no channel of it")
            )
        try:
            call.feed(await asyncio.wait_for(session.events.get(), min(POLL, remaining)))
        except TimeoutError:
            continue
    # The OriginateResponse comes around the hang-up: a Local channel into a missing extension is created,
    # then fails before its ;2 half runs the dialplan.
    await asyncio.wait({answer}, timeout=SETTLE)
    if answer.done() and "CALLROUTER_RESULT" not in call.variables:
        refused = originate_refusal(answer.result())
        if refused:
            raise AmiOriginateRefused(f"Asterisk refused the Originate: {refused}")


async def hang_up(session: AmiSession, call: PlacedCall) -> None:
    """Hang up the ;1 half (Asterisk then ends the ;2 half and its dials); wait a little for it to go."""
    if not call.originator or session.lost:
        return
    done = session.send({"Action": "Hangup", "Channel": call.originator})
    try:
        async with asyncio.timeout(SETTLE):
            await done
            while not call.hung_up:
                call.feed(await session.events.get())
    except TimeoutError:
        log.warning("Asterisk did not confirm the hang-up of %s within %g s", call.originator, SETTLE)


async def fetch_cdr(config: RoutingConfig, uniqueid: str) -> tuple[StoredCall | None, Sequence[StoredAttempt], str]:
    """The router's CDR of the call, waiting a little for the writer's batch; (None, [], why) if not there."""
    try:
        engine = open_engine(resolve_url(config.service.store.url, config.base_dir), pool_size=1)
    except StoreError as exc:
        return None, [], f"database not usable ({exc})"
    loop = asyncio.get_running_loop()
    try:
        deadline = loop.time() + CDR_WAIT
        while True:
            found = await find_call(engine, uniqueid, numbers=None)  # the newest, if another Asterisk used the uniqueid too
            if found is not None:
                return found.call, found.attempts, ""
            if loop.time() > deadline:
                return None, [], f"not in the database after {CDR_WAIT:g} s (is this the router's database?)"
            await asyncio.sleep(0.2)
    except (OSError, SQLAlchemyError, TimeoutError) as exc:  # the report still stands on Asterisk's events
        log.warning("reading the CDR of %s failed: %s: %s", uniqueid, type(exc).__name__, exc)
        return None, [], f"database unreachable ({type(exc).__name__})"
    finally:
        await engine.dispose()
