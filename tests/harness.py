"""A real FastAGI server on a loopback port, with in-memory state and sink, for integration tests."""

from __future__ import annotations

import asyncio
import random
import shutil
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, TypeVar

from callrouter.config.loader import RoutingConfig, load_config
from callrouter.crm.client import CrmClient
from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, CallTranscript, DialScript
from callrouter.config.holder import ConfigHolder
from callrouter.metrics import RouterMetrics
from callrouter.store.memory import MemorySink
from callrouter.fastagi.server import AgiServer
from callrouter.fastagi.session import SessionDeps
from callrouter.store.memory import MemoryRoutingState
from callrouter.fastagi.ports import LiveCalls, RoutingState
from callrouter.routing.health import LineChange
from tests.planning import NOW

T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one async test body with a hard limit, so a hang fails instead of stalling CI."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def sample_config(**service_changes: Any) -> RoutingConfig:
    config = load_config("config.yaml")
    service = config.service.model_copy(update=service_changes)
    return RoutingConfig(service=service, plans=config.plans, sources=config.sources, config_path=config.config_path, base_dir=config.base_dir)


def config_with_plan(tmp_path: Path, plan_yaml: str) -> RoutingConfig:
    """The sample config.yaml with a single plan of the test's own."""
    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "dialplans").mkdir()
    (tmp_path / "dialplans" / "plan.yaml").write_text(plan_yaml)
    return load_config(str(tmp_path / "config.yaml"))


class Router:
    """The running server plus the parts a test inspects."""

    def __init__(self, server: AgiServer, sink: MemorySink, state: RoutingState, metrics: RouterMetrics) -> None:
        self.server, self.sink, self.state, self.metrics = server, sink, state, metrics

    @property
    def port(self) -> int:
        return self.server.port

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def settle(self, count: int, timeout: float = 5.0) -> None:
        """Wait until `count` records were written (the session writes after the socket closes) and what the calls left behind ran."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.sink.records) < count and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert len(self.sink.records) >= count, f"{len(self.sink.records)} records, expected {count}"
        assert await self.server.background_done(max(deadline - loop.time(), 0.1)), "line-health messages still being queued"


async def call_held_in_dial(router: Router, target: str, digits: str, uniqueid: str = "1700000000.1") -> tuple[asyncio.Task[CallTranscript], asyncio.Event]:
    """A call answered by `target` and kept bridged until the returned event is set."""
    hold = asyncio.Event()
    script = CallScript(uniqueid=uniqueid, dtmf=(digits,), dial={target: DialScript("ANSWER", 1, 30, hold=hold)})
    task = asyncio.create_task(run_call("127.0.0.1", router.port, script))
    while not await router.state.active(target):
        await asyncio.sleep(0.01)
    return task, hold


@asynccontextmanager
async def running_router(
    config: RoutingConfig | None = None, state: RoutingState | None = None, crm: CrmClient | None = None, metrics: RouterMetrics | None = None,
    line_alerts: Callable[[LineChange], Awaitable[None]] | None = None, live: LiveCalls | None = None,
) -> AsyncIterator[Router]:
    config = config or sample_config()
    metrics = metrics or RouterMetrics()
    sink = MemorySink()
    state = state or MemoryRoutingState()
    deps = SessionDeps(
        state=state, sink=sink, metrics=metrics, clock=lambda: NOW, rng=random.Random(5), instance="test", crm=crm, line_alerts=line_alerts,
        live=live,
    )
    server = AgiServer(ConfigHolder(config, metrics), deps)
    await server.start("127.0.0.1", 0)
    try:
        yield Router(server, sink, state, metrics)
    finally:
        await server.drain(2.0)
