"""The one module that talks to panoramisk: connect with a time budget, log in, send actions, collect events.

panoramisk's Manager reconnects forever (after a refused connect as after a dropped one) and pings on a
timer, which suits a long-running listener but not a one-shot tool: the subclass here never reconnects
and never pings, so a refused login or a closed port ends in a clear error instead of a retry loop.
panoramisk writes header values as given: every value passes `ami_value` first (no CR/LF injection).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from panoramisk import Manager
from panoramisk.message import Message

from callrouter.ami.values import ami_name, ami_value

log = logging.getLogger(__name__)


class AmiError(Exception):
    """Talking to Asterisk failed; `exit_code` is the one `callrouter test-call` exits with."""

    exit_code = 3


class AmiUnreachable(AmiError):
    exit_code = 3


class AmiLoginRefused(AmiError):
    exit_code = 4


class AmiOriginateRefused(AmiError):
    exit_code = 5


class AmiTimeout(AmiError):
    exit_code = 6


class _OneShotManager(Manager):  # type: ignore[misc]
    """No reconnects, no pings: one session, closed by us."""

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if f.cancelled() or f.exception() is not None:
            return  # the caller awaits the same task and reports the failure; Manager would retry forever
        super().connection_made(f)

    def connection_lost(self, exc: Any) -> None:
        self._connected = False
        self.lost.set()

    def ping(self) -> None:
        return None


class AmiSession:
    def __init__(self, host: str, port: int, username: str, secret: str) -> None:
        self.host, self.port = host, port
        self.where = f"{host}:{port}"
        self.events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._manager = _OneShotManager(
            host=host, port=port, username=ami_value(username, "username"), secret=ami_value(secret, "secret"),
            loop=asyncio.get_running_loop(), ping_delay=3600, log=log,
        )
        self._manager.lost = asyncio.Event()
        self._manager.register_event("*", self._on_event)

    def _on_event(self, _manager: Manager, event: Message) -> None:
        self.events.put_nowait({str(k): str(v) for k, v in event.items()})

    async def connect(self, timeout: float) -> None:
        """Connect and log in within `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._manager.connect()
                await asyncio.sleep(0)  # panoramisk sends Login from a done-callback of the connection
                login = self._manager.authenticated_future
                if login is None:
                    raise AmiUnreachable(f"cannot reach AMI at {self.where}: the connection closed at once")
                lost = asyncio.ensure_future(self._manager.lost.wait())
                done, _ = await asyncio.wait({login, lost}, return_when=asyncio.FIRST_COMPLETED)
                lost.cancel()
                if login not in done:
                    raise AmiUnreachable(f"AMI at {self.where} closed the connection before answering the login")
                response = login.result()
        except TimeoutError:  # before OSError, its base class
            if self._manager.protocol is None:
                raise AmiUnreachable(f"cannot reach AMI at {self.where}: no connection within {timeout:g} s") from None
            raise AmiTimeout(f"AMI at {self.where} did not answer the login within {timeout:g} s (is it Asterisk?)") from None
        except OSError as exc:
            raise AmiUnreachable(f"cannot reach AMI at {self.where}: {exc.strerror or exc}") from None
        if not response.success:
            raise AmiLoginRefused(f"AMI at {self.where} refused the login: {response.get('Message', 'no reason given')}")

    def send(self, action: Mapping[str, str | list[str]]) -> asyncio.Future[Any]:
        """Send one action, every value checked. The future resolves with the response Message, or for an
        action Asterisk answers with a list (an async Originate), with [queued, final event]."""
        checked: dict[str, str | list[str]] = {}
        for key, value in action.items():
            checked[ami_name(key)] = [ami_value(v, key) for v in value] if isinstance(value, list) else ami_value(value, key)
        future: asyncio.Future[Any] = self._manager.send_action(checked)
        return future

    @property
    def lost(self) -> bool:
        return bool(self._manager.lost.is_set())

    async def close(self) -> None:
        try:
            if self._manager.protocol is not None and not self._manager.lost.is_set():
                self._manager.send_action({"Action": "Logoff"})
                await asyncio.sleep(0)
        finally:
            self._manager.close()
