"""Test support for budgets: bundles with budgets, identities, a settable clock.

What it is for: letting the budget tests (pure, store contract, usage command) build the same
budgets and callers in one line each, with prices chosen so costs are round numbers.

What it must never do: talk to Redis or the network (the tests' fixtures do that).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentgov.api.bundle import BundleBudget, PolicyBundle, Price
from agentgov.sidecar.auth import Identity
from agentgov.sidecar.budgets import shipped_pricing
from sidecar_support import make_bundle

# 1 USD per 1K input tokens and 2 USD per 1K output tokens: 1,000 and 2,000 micro-USD per token.
TEST_MODEL = 'test-model'
TEST_PRICE = Price(input_per_1k=1.0, output_per_1k=2.0)
# 2025-03-14 12:00:00 UTC
NOON = dt.datetime(2025, 3, 14, 12, 0, tzinfo=dt.timezone.utc).timestamp()


def budget(name: str = 'team-budget', *, users: Sequence[str] = ('*',), agents: Sequence[str] = (),
           teams: Sequence[str] = (), scope: str = 'Each', monthly: float = 100.0, daily: float = 10.0,
           thresholds: Sequence[int] = (80, 90), enforcement: str = 'Hard', failure_policy: str = 'Closed',
           pricing: Mapping[str, Price] | None = None, webhook_url: str | None = None) -> BundleBudget:
    prices = {**shipped_pricing(), TEST_MODEL: TEST_PRICE, **(pricing or {})}
    return BundleBudget(
        name=name, users=list(users), agents=list(agents), teams=list(teams), scope=scope,  # type: ignore[arg-type]
        monthly_usd=monthly, daily_usd=daily, alert_thresholds=list(thresholds),
        enforcement=enforcement, failure_policy=failure_policy, pricing=prices,  # type: ignore[arg-type]
        webhook_url=webhook_url,
    )


def bundle_with(*budgets: BundleBudget) -> PolicyBundle:
    return make_bundle().model_copy(update={'budgets': list(budgets)})


def identity(user: str = 'alice', team: str | None = 'research') -> Identity:
    return Identity(user=user, role='analyst', scopes=frozenset(), issuer='https://login.example.com/',
                    expires_at=NOON + 3600, team=team)


def chat(tokens_out: int = 100, text: str = 'hi') -> dict[str, object]:
    """A chat body whose output cap is ``tokens_out``."""
    return {'model': TEST_MODEL, 'messages': [{'role': 'user', 'content': text}], 'max_tokens': tokens_out}


@dataclass
class Clock:
    """Epoch seconds that tests move by hand."""

    now: float = NOON

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
