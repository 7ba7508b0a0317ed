"""Sending one message over HTTP: the SMS gateway or the webhook. The edge where messages leave us."""

from __future__ import annotations

import asyncio
import os
from typing import Mapping

import aiohttp

from callrouter.config.notify import SmsGateway, Webhook
from callrouter.config.envsubst import MissingEnvironment, expand_headers
from callrouter.store.outbox import Claimed
from callrouter.notify.rules import accepted, fill

MAX_RESPONSE = 64 * 1024


class SendFailed(Exception):
    """The gateway did not take the message; the text says why (stored, so ops can see it)."""


def resolve_headers(headers: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    try:
        return expand_headers(headers, environ)
    except MissingEnvironment as exc:
        raise SendFailed(str(exc)) from None


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    body = await response.content.read(MAX_RESPONSE + 1)
    return body[:MAX_RESPONSE]


async def send_sms(http: aiohttp.ClientSession, gateway: SmsGateway, message: Claimed) -> None:
    values = {"to": message.recipient, "text": message.payload.get("text", ""), "id": str(message.id), "number": message.number}
    body = {key: fill(template, values) for key, template in gateway.body.items()}
    headers = {"Idempotency-Key": f"callrouter-{message.id}", **resolve_headers(gateway.headers, os.environ)}
    as_json = body if gateway.encoding == "json" else None
    as_form = body if gateway.encoding == "form" else None
    timeout = aiohttp.ClientTimeout(total=gateway.timeout)
    try:
        async with http.request(gateway.method, gateway.url, headers=headers, timeout=timeout, json=as_json, data=as_form) as r:
            payload = await _read_capped(r)
            if not 200 <= r.status < 300:
                raise SendFailed(f"HTTP {r.status}: {payload[:120]!r}")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise SendFailed(f"{type(exc).__name__}: {exc}"[:200]) from None
    refusal = accepted(gateway.success_field, gateway.success_value, payload)
    if refusal:
        raise SendFailed(refusal)


async def send_webhook(http: aiohttp.ClientSession, webhook: Webhook, message: Claimed) -> None:
    document = {"id": message.id, "kind": message.kind, "number": message.number, "caller": message.caller, **message.payload}
    headers = {"Idempotency-Key": f"callrouter-{message.id}", **resolve_headers(webhook.headers, os.environ)}
    try:
        async with http.post(webhook.url, json=document, headers=headers, timeout=aiohttp.ClientTimeout(total=webhook.timeout)) as r:
            payload = await _read_capped(r)
            if not 200 <= r.status < 300:
                raise SendFailed(f"HTTP {r.status}: {payload[:120]!r}")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise SendFailed(f"{type(exc).__name__}: {exc}"[:200]) from None
