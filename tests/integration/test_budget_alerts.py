"""Budget alert webhooks (sidecar/alerts.py) against a real local HTTP receiver."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from agentgov.api.bundle import PolicyBundle, SecretFile
from agentgov.sidecar.alerts import SIGNATURE_HEADER, AlertWebhooks, signature, webhook_body
from agentgov.sidecar.budgets import BudgetAlert
from budget_support import NOON, budget, bundle_with
from harness.waiting import async_wait_for

KEY_FILE = SecretFile(secret='budget-webhook', key='hmac')
KEY = b'webhook-test-key-0123456789abcdef'
ALERT = BudgetAlert(budget='team-budget', subject='user:alice', period='day', percent=80, spent_usd=8.0,
                    limit_usd=10.0)


@dataclass
class Receiver:
    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 204


@pytest.fixture()
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    runner = web.AppRunner(app)
    state = Receiver(url='')

    async def hook(request: web.Request) -> web.Response:
        state.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=state.status)

    app.router.add_post('/hooks/{token}', hook)
    await runner.setup()
    site = web.TCPSite(runner, '127.0.0.1', 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f'http://127.0.0.1:{port}/hooks/url-token-secret'
    yield state
    await runner.cleanup()


def webhook_bundle(url: str, key_file: SecretFile | None = KEY_FILE) -> PolicyBundle:
    b = budget().model_copy(update={'webhook_url': url, 'webhook_key_file': key_file})
    return bundle_with(b)


def test_the_body_is_canonical_json_with_the_agent_and_time() -> None:
    body = webhook_body(ALERT, agent='research/bot', at=NOON)
    assert json.loads(body) == {'budget': 'team-budget', 'subject': 'user:alice', 'period': 'day', 'percent': 80,
                                'spentUsd': 8.0, 'limitUsd': 10.0, 'agent': 'research/bot',
                                'at': '2025-03-14T12:00:00Z', 'degraded': False}
    assert b' ' not in body
    assert signature(KEY, body) == 'sha256=' + hmac.new(KEY, body, hashlib.sha256).hexdigest()


async def test_an_alert_is_posted_signed_with_the_budget_key(receiver: Receiver) -> None:
    async with aiohttp.ClientSession() as session:
        hooks = AlertWebhooks(session, timeout=2)
        assert hooks.submit(webhook_bundle(receiver.url), ALERT, at=NOON, read_secret={KEY_FILE: KEY}.get)
        await async_wait_for(lambda: hooks.drain(5), what='the delivery')
        await hooks.aclose()
    [(headers, body)] = receiver.requests
    expected = 'sha256=' + hmac.new(KEY, body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected and headers['Content-Type'] == 'application/json'
    assert json.loads(body)['agent'] == 'research/research-assistant'
    assert hooks.counters.sent == 1 and hooks.counters.failed == 0


async def test_without_a_key_file_the_body_is_sent_unsigned(receiver: Receiver) -> None:
    async with aiohttp.ClientSession() as session:
        hooks = AlertWebhooks(session, timeout=2)
        assert hooks.submit(webhook_bundle(receiver.url, key_file=None), ALERT, at=NOON, read_secret=lambda f: None)
        await hooks.aclose()
    [(headers, _)] = receiver.requests
    assert SIGNATURE_HEADER not in headers


async def test_a_named_key_that_is_not_mounted_sends_nothing_and_says_which_secret(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    async with aiohttp.ClientSession() as session:
        hooks = AlertWebhooks(session, timeout=2)
        assert not hooks.submit(webhook_bundle(receiver.url), ALERT, at=NOON, read_secret=lambda f: None)
        await hooks.aclose()
    assert receiver.requests == [] and hooks.counters.failed == 1
    assert 'budget-webhook/hmac is not mounted' in caplog.text


async def test_a_budget_without_a_webhook_is_not_posted(receiver: Receiver) -> None:
    async with aiohttp.ClientSession() as session:
        hooks = AlertWebhooks(session)
        assert not hooks.submit(bundle_with(budget()), ALERT, at=NOON, read_secret=lambda f: None)
        assert not hooks.submit(webhook_bundle(receiver.url), BudgetAlert('other', 'shared', 'day', 80, 1, 2),
                                at=NOON, read_secret={KEY_FILE: KEY}.get)
        await hooks.aclose()
    assert receiver.requests == []


async def test_failures_are_counted_and_logged_without_the_url(receiver: Receiver,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    receiver.status = 500
    caplog.set_level(logging.WARNING)
    async with aiohttp.ClientSession() as session:
        hooks = AlertWebhooks(session, timeout=2)
        hooks.submit(webhook_bundle(receiver.url), ALERT, at=NOON, read_secret={KEY_FILE: KEY}.get)
        dead = webhook_bundle('http://127.0.0.1:9/hooks/url-token-secret')
        hooks.submit(dead, ALERT, at=NOON, read_secret={KEY_FILE: KEY}.get)
        await hooks.aclose()
    assert hooks.counters.failed == 2 and hooks.counters.sent == 0
    assert 'HTTP 500' in caplog.text and 'ClientConnectorError' in caplog.text
    assert 'url-token-secret' not in caplog.text


async def test_a_full_queue_drops_and_counts_instead_of_blocking(receiver: Receiver) -> None:
    async with aiohttp.ClientSession() as session:
        hooks = AlertWebhooks(session, timeout=2, queue_size=2)
        bundle = webhook_bundle(receiver.url)
        results = [hooks.submit(bundle, ALERT, at=NOON, read_secret={KEY_FILE: KEY}.get) for _ in range(5)]
        await hooks.aclose()
    assert results == [True, True, False, False, False]
    assert hooks.counters.dropped == 3 and len(receiver.requests) == 2
