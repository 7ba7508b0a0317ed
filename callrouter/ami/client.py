"""The one module that talks to panoramisk: connect with a time budget, log in, originate, collect events.

panoramisk's Manager reconnects forever when a connection drops, which suits a long-running listener but
not a one-shot tool: the subclass here never reconnects, so a refused login or a closed port ends in a
clear error instead of a retry loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from panoramisk import Manager
from panoramisk.message import Message

from callrouter.ami.values import ami_value

log = logging.getLogger(__name__)


class AmiError(Exception):
    exit_code = 5


class AmiUnreachable(AmiError):
    exit_code = 3


class AmiLoginRefused(AmiError):
    exit_code = 4


class _OneShotManager(Manager):  # type: ignore[misc]
    """No reconnects, no pings: one session, closed by us."""

    def connection_lost(self, exc: Any) -> None:
        self._connected = False
        self.lost.set()

    def ping(self) -> None:
        return None


class AmiSession:
    def __init__(self, host: str, port: int, username: str, secret: str) -> None:
        self.host, self.port = host, port
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
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(timeout):
                await self._manager.connect()
                await asyncio.sleep(0)  # panoramisk sends Login from a done-callback of the connection
                login = self._manager.authenticated_future
                if login is None:
                    raise AmiUnreachable(f"cannot reach AMI at {where}: the connection closed at once")
                lost = asyncio.ensure_future(self._manager.lost.wait())
                done, _ = await asyncio.wait({login, lost}, return_when=asyncio.FIRST_COMPLETED)
                lost.cancel()
                if login not in done:
                    raise AmiUnreachable(f"AMI at {where} closed the connection before answering the login")
                response = login.result()
        except OSError as exc:
            raise AmiUnreachable(f"cannot reach AMI at {where}: {exc.strerror or exc}") from None
        except TimeoutError:
            raise AmiUnreachable(f"AMI at {where} did not answer within {timeout:g} s") from None
        if not response.success:
            raise AmiLoginRefused(f"AMI at {where} refused the login: {response.get('Message', 'no reason given')}")

    def originate(self, fields: Mapping[str, str]) -> asyncio.Future[Any]:
        """Send Originate (async). The future resolves with the refusal (one Message) at once, or with
        [queued, OriginateResponse] once Asterisk has placed the call (answered or failed)."""
        action = {"Action": "Originate", "Async": "true", **{k: ami_value(v, k) for k, v in fields.items()}}
        future: asyncio.Future[Any] = self._manager.send_action(action)
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
