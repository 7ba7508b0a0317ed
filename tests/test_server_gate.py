"""Who may connect, and what an idle connection may hold: `listen.allow` and the pending-header limit, over real TCP."""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import asynccontextmanager
from ipaddress import ip_network
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest

from callrouter.config.loader import RoutingConfig, load_config
from callrouter.config.service import Listen
from callrouter.config.yamlsource import ConfigError
from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, DialScript
from callrouter.config.holder import ConfigHolder
from callrouter.metrics import RouterMetrics
from callrouter.store.memory import MemorySink
from callrouter.fastagi.server import AgiServer
from callrouter.fastagi.session import SessionDeps
from callrouter.store.memory import MemoryRoutingState
from tests.harness import Router, arun, running_router, sample_config
from tests.planning import NOW

HEADER = b"agi_network: yes\nagi_network_script: route\nagi_uniqueid: 9.9\nagi_callerid: 139\nagi_dnid: 4008001234\n\n"
ANSWERED = CallScript(dtmf=("1",), default_dial=DialScript("ANSWER", 1, 5))


async def what_a_connection_hears(port: int, host: str = "127.0.0.1", send: bytes = HEADER) -> bytes:
    """Everything the server sends until it closes (a reset counts as nothing sent)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(send)
        return await asyncio.wait_for(reader.read(), 2)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check() and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert check(), "condition not reached"


def allowing(*entries: str) -> Listen:
    """listen.allow set to `entries` (already-parsed networks, as the validated config holds them)."""
    return Listen().model_copy(update={"allow": tuple(ip_network(e) for e in entries)})


def refused(router: Router, reason: str) -> float:
    return router.sample("callrouter_agi_connections_refused_total", reason=reason)


# -- listen.allow ----------------------------------------------------------------------------------

def test_a_connection_from_outside_listen_allow_hears_nothing_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        config = sample_config(listen=allowing("10.0.0.0/8"))  # 127.0.0.1 is then an outsider
        async with running_router(config) as router:
            with caplog.at_level(logging.WARNING, logger="callrouter.fastagi.server"):
                assert await what_a_connection_hears(router.port) == b""
                assert await what_a_connection_hears(router.port) == b""
            await until(lambda: refused(router, "not_allowed") == 2)
            assert router.sample("callrouter_sessions_started_total") == 0 and not router.sink.records
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "listen.allow" in r.getMessage()]
            assert len(warnings) == 1 and "127.0.0.1" in warnings[0].getMessage()  # one per source per minute

    arun(body())


def test_a_connection_from_inside_listen_allow_is_served() -> None:
    async def body() -> None:
        async with running_router(sample_config(listen=allowing("10.0.0.0/8", "127.0.0.1/32"))) as router:
            t = await run_call("127.0.0.1", router.port, ANSWERED)
            assert t.variables["CALLROUTER_RESULT"] == "ROUTED"
            assert refused(router, "not_allowed") == 0

    arun(body())


def test_the_default_allows_loopback_only() -> None:
    from callrouter.fastagi.server import peer_allowed

    assert [str(n) for n in Listen().allow] == ["127.0.0.0/8", "::1/128"]
    allow = Listen().allow
    assert peer_allowed(("127.0.0.1", 4000), allow) and peer_allowed(("127.9.8.7", 4000), allow)
    assert peer_allowed(("::1", 4000, 0, 0), allow)
    assert peer_allowed(("::ffff:127.0.0.1", 4000, 0, 0), allow)  # IPv4 on a dual-stack socket
    assert not peer_allowed(("10.0.0.5", 4000), allow)
    assert not peer_allowed(("::ffff:10.0.0.5", 4000, 0, 0), allow)
    assert not peer_allowed(("2001:db8::1", 4000, 0, 0), allow)
    assert not peer_allowed(None, allow) and not peer_allowed(("not-an-address", 1), allow)


def test_ipv6_entries_and_mapped_ipv4_addresses() -> None:
    from callrouter.fastagi.server import peer_allowed

    allow = Listen.model_validate({"allow": ["10.1.0.0/16", "2001:db8::/32", "fe80::/10"]}).allow
    assert peer_allowed(("::ffff:10.1.2.3", 4000, 0, 0), allow)
    assert peer_allowed(("2001:db8:1::5", 4000, 0, 0), allow)
    assert peer_allowed(("fe80::1%lo", 4000, 0, 1), allow)
    assert not peer_allowed(("10.2.0.1", 4000), allow)
    assert Listen.model_validate({"allow": ["192.168.1.10"]}).allow == (ip_network("192.168.1.10/32"),)


@asynccontextmanager
async def router_on(host: str, config: RoutingConfig) -> AsyncIterator[Router]:
    """Like tests.harness.running_router, on another loopback address (::1)."""
    metrics, sink, state = RouterMetrics(), MemorySink(), MemoryRoutingState()
    deps = SessionDeps(state=state, sink=sink, metrics=metrics, clock=lambda: NOW, rng=random.Random(5), instance="test")
    server = AgiServer(ConfigHolder(config, metrics), deps)
    try:
        await server.start(host, 0)
    except OSError as exc:
        pytest.skip(f"cannot listen on {host}: {exc}")
    try:
        yield Router(server, sink, state, metrics)
    finally:
        await server.drain(2.0)


def test_ipv6_peers_are_checked_too() -> None:
    async def body() -> None:
        async with router_on("::1", sample_config(listen=allowing("::1"))) as router:
            t = await run_call("::1", router.port, ANSWERED)
            assert t.variables["CALLROUTER_RESULT"] == "ROUTED"
        async with router_on("::1", sample_config(listen=allowing("127.0.0.0/8", "2001:db8::/32"))) as router:
            assert await what_a_connection_hears(router.port, host="::1") == b""
            await until(lambda: refused(router, "not_allowed") == 1)

    arun(body())


def test_the_refusal_log_is_bounded_per_source_and_in_size() -> None:
    from callrouter.fastagi.server import RefusalLog

    log = RefusalLog(window=60.0, max_sources=2)
    assert log.should_warn("a", 0.0) and not log.should_warn("a", 59.9) and log.should_warn("a", 60.0)
    assert log.should_warn("b", 61.0)
    assert not log.should_warn("c", 61.0)  # the table is full: a scan of many addresses stays quiet
    assert log.should_warn("c", 121.0)  # ...until the old entries age out


@pytest.mark.parametrize(
    "entry,message",
    [
        ("10.0.0.300/8", "'10.0.0.300/8' is not an IP address or network"),
        ("10.1.2.3/8", "'10.1.2.3/8' has host bits set; the network is 10.0.0.0/8"),
        ("example.com", "'example.com' is not an IP address or network"),
    ],
)
def test_a_bad_allow_entry_is_a_config_error_with_its_line(tmp_path: Path, entry: str, message: str) -> None:
    root = Path(__file__).resolve().parent.parent
    text = (root / "config.yaml").read_text()
    lines = text.splitlines()
    allow_line = next(i for i, line in enumerate(lines, 1) if line.lstrip().startswith("allow:"))
    lines[allow_line - 1] = f'  allow: ["127.0.0.1", "{entry}"]'
    (tmp_path / "config.yaml").write_text("\n".join(lines) + "\n")
    (tmp_path / "dialplans").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "config.yaml"))
    (issue,) = caught.value.issues
    assert str(issue).startswith(f"{tmp_path / 'config.yaml'}:{allow_line}: listen.allow.1: {message}")


def test_an_empty_allow_list_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="would refuse every call"):
        Listen.model_validate({"allow": []})


# -- connections still in their AGI header ---------------------------------------------------------

def test_silent_sockets_do_not_take_the_places_of_calls() -> None:
    async def body() -> None:
        timeouts = sample_config().service.timeouts.model_copy(update={"environment": 5.0})
        async with running_router(sample_config(max_sessions=3, timeouts=timeouts)) as router:
            silent = [await asyncio.open_connection("127.0.0.1", router.port) for _ in range(3)]
            await until(lambda: router.sample("callrouter_sessions_started_total") == 3)
            t = await run_call("127.0.0.1", router.port, ANSWERED)
            assert t.variables["CALLROUTER_RESULT"] == "ROUTED" and t.dials[0].status == "ANSWER"
            assert router.sample("callrouter_sessions_ended_total", outcome="rejected_busy") == 0
            for _, writer in silent:
                writer.close()

    arun(body())


def test_connections_beyond_the_pending_header_limit_are_closed_at_once_and_counted() -> None:
    async def body() -> None:
        timeouts = sample_config().service.timeouts.model_copy(update={"environment": 5.0})
        async with running_router(sample_config(max_pending_headers=2, timeouts=timeouts)) as router:
            silent = [await asyncio.open_connection("127.0.0.1", router.port) for _ in range(2)]
            await until(lambda: router.sample("callrouter_agi_pending_headers") == 2)
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await what_a_connection_hears(router.port) == b""
            assert loop.time() - started < 1.0  # closed at once, not after the header timeout
            await until(lambda: refused(router, "too_many_pending") == 1)
            for _, writer in silent:
                writer.close()
            await until(lambda: router.sample("callrouter_agi_pending_headers") == 0)
            t = await run_call("127.0.0.1", router.port, ANSWERED)  # the places are free again
            assert t.variables["CALLROUTER_RESULT"] == "ROUTED"
            assert router.sample("callrouter_active_sessions") == 0

    arun(body())


def test_the_pending_header_limit_defaults_from_max_sessions() -> None:
    assert sample_config(max_sessions=3).service.pending_header_limit == 16
    assert sample_config(max_sessions=2000).service.pending_header_limit == 500
    assert sample_config(max_sessions=2000, max_pending_headers=7).service.pending_header_limit == 7


def test_the_gate_remembers_per_host_and_allow_list_and_stays_bounded() -> None:
    """The verdict is remembered per peer host, but a reload's new allow list is asked afresh (a cached
    "allowed" must never outlive the list that allowed it), and a scan of many hosts cannot grow it."""
    from callrouter.fastagi.server import PeerGate

    gate = PeerGate(max_hosts=8)
    loopback = Listen().allow
    elsewhere = Listen.model_validate({"allow": ["10.0.0.0/8"]}).allow
    assert gate.verdict(("127.0.0.1", 4000), loopback) == ("127.0.0.1", True)
    assert gate.verdict(("127.0.0.1", 4001), elsewhere) == ("127.0.0.1", False)  # the list changed: refused
    assert gate.verdict(("127.0.0.1", 4002), loopback) == ("127.0.0.1", True)
    assert gate.verdict(("::ffff:10.1.2.3", 4000, 0, 0), elsewhere) == ("10.1.2.3", True)
    assert gate.verdict(None, loopback) == ("", False) and gate.verdict(("nonsense", 1), loopback) == ("", False)
    for i in range(100):
        assert gate.verdict((f"10.9.{i}.1", 4000), loopback) == (f"10.9.{i}.1", False)
    assert len(gate._known) <= 8
