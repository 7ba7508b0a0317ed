"""Asking the CRM over HTTP. Never raises into a call; a slow CRM costs a call at most its budget.

Requests belong to the client, not to a call: a call waits for an answer only within its budget and
then goes on, while the request runs to its own (longer) timeout and fills the cache for the next call
from that number. Concurrent calls that make the same request share it; at most `max_concurrency`
requests are open at once.

The cache and the requests in flight are keyed by the rendered URL, i.e. by everything the answer
depends on (the headers are the same for every request): with `{number}` in the URL, one CRM serving
several companies may know a caller differently for each, and a name asked for on company A's number
must never be shown on company B's phone or stored in B's CDR.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Callable
from urllib.parse import quote

import aiohttp

from callrouter.config.service import Crm
from callrouter.crm.cache import TtlCache
from callrouter.crm.parse import CrmResult, InvalidAnswer, parse_answer
from callrouter.config.envsubst import expand_headers
from callrouter.metrics import RouterMetrics

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


def crm_url(template: str, caller: str, number: str) -> str:
    """The caller's digits (and the 400 number) URL-encoded into the template."""
    return template.replace("{caller}", quote(caller, safe="")).replace("{number}", quote(number, safe=""))


class CrmClient:
    def __init__(self, settings: Crm, metrics: RouterMetrics, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.metrics = metrics
        self._now = monotonic
        self.cache = TtlCache(settings.cache_size, settings.cache_ttl, settings.negative_ttl)
        self._inflight: dict[str, asyncio.Task[CrmResult]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._headers: dict[str, str] = {}

    async def start(self) -> None:
        """MissingEnvironment when a header names an unset variable: found at start, not at the first call."""
        self._headers = expand_headers(self.settings.headers, os.environ)
        self._http = aiohttp.ClientSession(headers=self._headers)

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def request_key(self, caller: str, number: str) -> str:
        """What the cache and the requests in flight are keyed by: the URL asked, everything the answer depends on."""
        return crm_url(self.settings.url or "", caller, number)

    def lookup(self, caller: str, number: str) -> asyncio.Future[CrmResult]:
        """A future with the answer (from the cache at once, or from the CRM); it never fails."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[CrmResult] = loop.create_future()
        if not caller or self._http is None:
            ready.set_result(CrmResult("skipped"))
            return ready
        url = self.request_key(caller, number)
        cached = self.cache.get(url, self._now())
        if cached is not None:
            self.metrics.crm_lookups.labels(result="cached").inc()
            ready.set_result(CrmResult("cached", cached.name, cached.tags))
            return ready
        task = self._inflight.get(url)
        if task is None:
            if len(self._inflight) >= self.settings.max_concurrency:
                self.metrics.crm_lookups.labels(result="busy").inc()
                ready.set_result(CrmResult("busy"))
                return ready
            task = self._inflight[url] = loop.create_task(self._ask(url, caller))
            task.add_done_callback(lambda _t: self._inflight.pop(url, None))
        return task

    async def _ask(self, url: str, caller: str) -> CrmResult:
        """`caller` only names the caller in logs (last four digits); the request is `url`."""
        assert self._http is not None
        started = time.perf_counter()
        try:
            timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout)
            async with self._http.get(url, timeout=timeout, allow_redirects=False) as response:
                if response.status == 404:
                    result = CrmResult("not_found")
                elif response.status != 200:
                    raise InvalidAnswer(f"HTTP {response.status}")
                else:
                    body = await read_capped(response, MAX_BODY)
                    name, tags = parse_answer(body, self.settings.name_field, self.settings.tags_field)
                    result = CrmResult("hit", name, tags) if name else CrmResult("not_found")
        except InvalidAnswer as exc:
            log.warning("CRM: unusable answer for a caller ending %s: %s", caller[-4:], exc)
            result = CrmResult("invalid")
        except asyncio.TimeoutError:
            result = CrmResult("timeout")
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("CRM unreachable: %s", type(exc).__name__)
            result = CrmResult("error")
        except Exception:  # a bug here must cost a caller's name, never the call that waits on it
            log.exception("CRM lookup failed")
            result = CrmResult("error")
        self.metrics.crm_lookups.labels(result=result.source).inc()
        self.metrics.crm_seconds.observe(time.perf_counter() - started)
        self.cache.put(url, result, self._now())
        return result


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, however it is cut into packets; InvalidAnswer once it passes `limit`."""
    if response.content_length is not None and response.content_length > limit:
        raise InvalidAnswer(f"answer larger than {limit} bytes ({response.content_length})")
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise InvalidAnswer(f"answer larger than {limit} bytes")
    return bytes(body)


def settled(answer: asyncio.Future[CrmResult]) -> CrmResult | None:
    """The answer if it has come; a request cut off by the client's close is an error, not an exception."""
    if not answer.done():
        return None
    return CrmResult("error") if answer.cancelled() else answer.result()


async def within_budget(answer: asyncio.Future[CrmResult], seconds: float) -> CrmResult:
    """The answer if it comes in time; else the call goes on without it (the request keeps running)."""
    if not answer.done() and seconds > 0:
        await asyncio.wait({answer}, timeout=seconds)
    return settled(answer) or CrmResult("timeout")
