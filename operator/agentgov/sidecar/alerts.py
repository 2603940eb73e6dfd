"""Budget alert webhooks: POST each threshold alert as JSON, signed, off the request path.

An alert (``budgets.BudgetAlert``) is put on a bounded queue and returns at once; one worker
task POSTs it to the budget's ``webhookUrl`` with a timeout. When the budget names a
``webhookKeyFile`` the body is signed: ``X-Agentgov-Signature: sha256=<hex HMAC-SHA256 of the
exact body bytes>``, so the receiver can check it came from a sidecar holding the key.

Failures (refused connection, timeout, non-2xx) are logged and counted, never raised, never
retried: the alert is also a metric and an audit event, the webhook is a convenience. A
webhook URL may carry a token (chat webhooks put one in the path), so logs name the budget,
never the URL; a key file that is named but not mounted sends nothing (an unsigned body would
be refused by a receiver that checks signatures) and is logged by its Secret name and key.
``webhook_body`` and ``signature`` are pure; the class does the I/O.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp

from agentgov.api.bundle import PolicyBundle, SecretFile
from agentgov.sidecar.budgets import BudgetAlert, rfc3339

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Agentgov-Signature"
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
DEFAULT_QUEUE_SIZE: Final = 1000


def webhook_body(alert: BudgetAlert, *, agent: str, at: float) -> bytes:
    """The JSON POSTed for one alert (sorted keys, no whitespace: what the signature covers)."""
    payload = {
        "budget": alert.budget,
        "subject": alert.subject,
        "period": alert.period,
        "percent": alert.percent,
        "spentUsd": alert.spent_usd,
        "limitUsd": alert.limit_usd,
        "agent": agent,
        "at": rfc3339(dt.datetime.fromtimestamp(at, dt.timezone.utc)),
        "degraded": alert.degraded,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def signature(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivery:
    budget: str
    url: str
    body: bytes
    key: bytes | None


@dataclass
class WebhookCounters:
    sent: int = 0
    failed: int = 0
    dropped: int = 0  # the queue was full


class AlertWebhooks:
    """A bounded queue of webhook deliveries and the one task that sends them."""

    def __init__(self, session: aiohttp.ClientSession, *, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.counters = WebhookCounters()
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=queue_size)
        self._worker: asyncio.Task[None] | None = None

    def submit(self, bundle: PolicyBundle, alert: BudgetAlert, *, at: float,
               read_secret: Callable[[SecretFile], bytes | None]) -> bool:
        """Queue the alert for its budget's webhook. False when the budget has none, its key is
        not mounted, or the queue is full. Never blocks, never raises."""
        budget = next((b for b in bundle.budgets if b.name == alert.budget), None)
        if budget is None or not budget.webhook_url:
            return False
        key: bytes | None = None
        if budget.webhook_key_file is not None:
            key = read_secret(budget.webhook_key_file)
            if not key:
                self.counters.failed += 1
                log.error("budget %r: webhook key Secret %s/%s is not mounted; alert not sent", budget.name,
                          budget.webhook_key_file.secret, budget.webhook_key_file.key)
                return False
        agent = f"{bundle.agent.namespace}/{bundle.agent.name}"
        delivery = Delivery(budget.name, budget.webhook_url, webhook_body(alert, agent=agent, at=at), key)
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            self.counters.dropped += 1
            log.error("budget %r: webhook queue full; alert dropped", budget.name)
            return False
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return True

    async def _run(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._send(delivery)
            finally:
                self._queue.task_done()

    async def _send(self, delivery: Delivery) -> None:
        headers = {"Content-Type": "application/json"}
        if delivery.key is not None:
            headers[SIGNATURE_HEADER] = signature(delivery.key, delivery.body)
        try:
            async with self.session.post(delivery.url, data=delivery.body, headers=headers,
                                         timeout=self.timeout, allow_redirects=False) as response:
                await response.read()
                ok = 200 <= response.status < 300
                reason = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            ok, reason = False, type(e).__name__
        if ok:
            self.counters.sent += 1
        else:
            self.counters.failed += 1
            log.warning("budget %r: alert webhook failed (%s)", delivery.budget, reason)

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued alert was attempted; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = 2.0) -> None:
        """Send what is queued (up to ``timeout``), then stop the worker."""
        if self._worker is not None:
            await self.drain(timeout)
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        if not self._queue.empty():
            log.warning("%d budget alert webhook(s) not sent at shutdown", self._queue.qsize())
