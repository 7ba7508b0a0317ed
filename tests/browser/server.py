"""`callrouter serve` as a real child process for the browser tests: the sample plans, an SQLite file, free ports."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterator, TypeVar

import yaml

from callrouter.emulator.asterisk import run_call
from callrouter.emulator.script import CallScript, CallTranscript
from tests.test_process import ENV, workspace

T = TypeVar("T")
ADMIN_TOKEN = "browser-test-admin-token-0123456789"  # the provider's token, set as production would have one


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a coroutine to the end on an event loop of its own, in another thread.

    While a browser is up, Playwright's sync API keeps its event loop registered as running in the test's
    thread, so `asyncio.run` (`tests.harness.arun`) refuses there; the emulator's coroutines go through this.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="browser-test-async") as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coro, timeout)).result()


def browser_workspace(folder: Path) -> Path:
    """The sample config and plans (open around the clock) in `folder`, with a migrated SQLite database in var/.

    Recordings and voicemail go to folders of their own here, so a test can put recording files in place;
    the admin API has a token (`ADMIN_TOKEN`), as in production.
    """
    cfg = workspace(folder)
    doc = yaml.safe_load(cfg.read_text())
    doc["admin"] = {**doc.get("admin", {}), "token": ADMIN_TOKEN}
    for key, sub in (("recordings_dir", "rec"), ("voicemail_dir", "voicemail")):
        (folder / sub).mkdir()
        doc[key] = str(folder / sub)
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return cfg


class ServeProcess:
    """One `callrouter serve --port 0 --admin-port 0`; the ports are read from its log lines."""

    def __init__(self, config: Path, start_timeout: float = 30.0) -> None:
        self.config = config
        self.workdir = config.parent
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callrouter", "serve", "--config", str(config), "--port", "0", "--admin-port", "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=self.workdir, env=ENV, text=True, errors="replace",
        )
        self._reader = threading.Thread(target=self._read, name="serve-log", daemon=True)
        self._reader.start()
        try:
            self.agi_port = int(self.wait_for(r"FastAGI listening on 127\.0\.0\.1:(\d+)", start_timeout).group(1))
            self.admin_port = int(self.wait_for(r"admin API listening on 127\.0\.0\.1:(\d+)", start_timeout).group(1))
        except BaseException:
            self.stop()
            raise

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())

    def wait_for(self, pattern: str, timeout: float = 10.0, after: int = 0) -> re.Match[str]:
        """The first log line (from index `after`) matching `pattern`; fails with the whole log otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log[after:]:
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError(f"callrouter serve exited ({self.proc.returncode}) before logging {pattern!r}:\n" + "\n".join(self.log))
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r} within {timeout}s; log:\n" + "\n".join(self.log))
            time.sleep(0.02)

    @property
    def api_headers(self) -> dict[str, str]:
        """The provider's bearer token for /api/..., e.g. `page.set_extra_http_headers(server.api_headers)`."""
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def url(self, path: str = "/") -> str:
        """An address on the admin API's app (which also serves /console/)."""
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def place_call(self, script: CallScript, timeout: float = 20.0) -> CallTranscript:
        """One call from the Asterisk emulator to this server's FastAGI port, as Asterisk would place it."""
        return run_async(run_call("127.0.0.1", self.agi_port, script, timeout=timeout), timeout + 5)

    @contextmanager
    def held_call(self, script: Callable[[asyncio.Event], CallScript], timeout: float = 60.0) -> Iterator[Future[CallTranscript]]:
        """A call that stays in its Dial until the block ends, e.g.
        `script=lambda hold: CallScript(dtmf=("3",), default_dial=DialScript("ANSWER", 1, 30, hold=hold))`.

        The call runs on an event loop of its own in another thread (see `run_async`); the block gets its
        transcript's future, done once the call has ended (after the block, or earlier if it ends by itself)."""
        ready: Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = Future()

        async def call() -> CallTranscript:
            hold = asyncio.Event()
            ready.set_result((asyncio.get_running_loop(), hold))
            return await run_call("127.0.0.1", self.agi_port, script(hold), timeout=timeout)

        with ThreadPoolExecutor(1, thread_name_prefix="browser-test-held-call") as pool:
            done = pool.submit(asyncio.run, call())
            loop, hold = ready.result(10)
            try:
                yield done
            finally:
                loop.call_soon_threadsafe(hold.set)
                done.result(timeout + 5)

    def cli(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `callrouter <args>` in the server's folder, so it uses the same config.yaml and database.

        e.g. `server.cli("tenants", "add", ...)`, `server.cli("users", "add", ...)`.
        """
        run = subprocess.run([sys.executable, "-m", "callrouter", *args], cwd=self.workdir, env=ENV, input=stdin,
                             capture_output=True, text=True, timeout=60)
        if check and run.returncode != 0:
            raise AssertionError(f"callrouter {' '.join(args)} exited {run.returncode}:\n{run.stdout}{run.stderr}")
        return run

    def add_user(self, password: str, *args: str) -> None:
        """`callrouter users add <args>` with the password on standard input (never an argument)."""
        self.cli("users", "add", *args, "--password-stdin", stdin=password + "\n")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (calls get their drain time), SIGKILL if it does not go; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode
