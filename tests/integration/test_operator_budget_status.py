"""AgentBudget status from the spend store: the real operator, the API emulator and a real redis-server.

Spend is written into Redis exactly as the sidecars write it (the spend store's key functions,
HINCRBY of ``spent:<subject>`` in micro-USD); the operator (``agentgov operator`` as its own
process) must show it in status, raise ``Warning``/``Exceeded``, announce each threshold once
per period with an Event (also across an operator restart), say when the store is unreachable
or not configured, and keep the kstatus invariants after every step.
"""
from __future__ import annotations

import datetime as dt
import json
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import redis
from harness.apiserver import ApiServer
from harness.redis import RedisServer
from harness.waiting import wait_for
from test_operator import NS, Api, assert_kstatus, condition, events_of, operator_process, prepared

from agentgov.api import spendstore

BUDGET = "team-budget"
PATH = f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/agentbudgets/{BUDGET}"
FAST = {"AGENTGOV_BUDGET_STATUS_INTERVAL_SECONDS": "0.5", "AGENTGOV_REDIS_TIMEOUT_SECONDS": "0.5"}


def create_budget(api: Api) -> None:
    api.create(f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/agentbudgets", {
        "apiVersion": "agentgov.io/v1alpha1", "kind": "AgentBudget",
        "metadata": {"name": BUDGET, "namespace": NS},
        "spec": {"subjects": {"users": ["*"]}, "scope": "Each", "limits": {"monthlyUsd": 300, "dailyUsd": 10},
                 "alertThresholds": [80, 90], "enforcement": "Hard", "failurePolicy": "Closed"},
    })


def spend(client: redis.Redis, usd: float, user: str = "alice") -> None:
    """What a sidecar's settlement adds: HINCRBY of the subject's spent field, day and month."""
    now = dt.datetime.now(dt.timezone.utc)
    field = spendstore.spent_field(spendstore.subject("user", user))
    for period in ("day", "month"):
        client.hincrby(spendstore.period_key(NS, BUDGET, period, now), field, spendstore.usd_to_micros(usd))  # type: ignore[arg-type]


def budget(api: Api, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20) -> dict[str, Any]:
    found = wait_for(lambda: api.get(PATH), lambda b: b is not None and predicate(b), what=what, timeout=timeout)
    assert_kstatus(api)
    return found  # type: ignore[no-any-return]


def alerts(api: Api) -> list[str]:
    """The budget's alert Events as ``reason: message``, sorted (Events posted together may land in
    any order)."""
    return sorted(f"{e['reason']}: {e['message']}" for e in events_of(api, BUDGET) if e["reason"].startswith("Budget"))


def ticks_pass(server: ApiServer, count: int = 3) -> list[str]:
    """Wait until the operator has re-read the budget ``count`` more times; the status writes it
    made meanwhile (kopf's own one-off metadata patch, its finalizer, may land at any time)."""
    seen = len(list(server))
    wait_for(lambda: [r for r in list(server)[seen:] if r.method == "GET" and str(r.url.path) == PATH],
             lambda reads: len(reads) >= count, what=f"{count} budget status ticks", timeout=20)
    return [f"{r.method} {r.url.path}" for r in list(server)[seen:]
            if r.method in ("POST", "PUT", "PATCH") and str(r.url.path) == f"{PATH}/status"]


def test_status_follows_the_spend_store_and_each_threshold_is_announced_once(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    redis_url: str, tmp_path: pathlib.Path,
) -> None:
    api = prepared(apiserver_in_thread, monkeypatch, AGENTGOV_REDIS_URL=redis_url, **FAST)
    store = redis.Redis.from_url(redis_url)
    create_budget(api)
    with operator_process(tmp_path / "operator.log") as operator:
        status = budget(api, lambda b: condition(b, "SpendStoreAvailable").get("status") == "True",
                        "the first read of the spend store")["status"]
        assert (status["percentUsed"], status["spentTodayUsd"], status["remainingTodayUsd"]) == (0, 0, 10)
        assert condition(api.get(PATH), "Ready")["status"] == "True"

        spend(store, 7.9)
        status = budget(api, lambda b: b["status"].get("percentUsed") == 79, "79% used")["status"]
        assert status["topSubject"] == "user:alice" and status["spentTodayUsd"] == 7.9
        assert status["remainingTodayUsd"] == pytest.approx(2.1) and status["subjects"] == 1
        assert condition(api.get(PATH), "Warning")["status"] == "False" and alerts(api) == []

        spend(store, 0.6)
        found = budget(api, lambda b: condition(b, "Warning").get("status") == "True", "the 80% warning")
        assert condition(found, "Warning")["message"] == (
            "80% alert threshold reached: user:alice has spent $8.50 of the $10.00 daily limit")
        wait_for(lambda: alerts(api), lambda a: len(a) == 1, what="the 80% Event")
        assert alerts(api) == ["BudgetThresholdReached: user:alice reached 80% of the daily limit: $8.50 of "
                               f"$10.00 spent on {found['status']['alerts']['day']}"]
        assert events_of(api, BUDGET)[0]["type"] == "Warning"

        assert ticks_pass(apiserver_in_thread) == [], "nothing changed: no status write"
        assert len(alerts(api)) == 1, "80% is announced once"

        spend(store, 1.7, user="bob")  # bob is below alice: figures and alerts stay alice's
        budget(api, lambda b: b["status"].get("subjects") == 2, "a second subject counted")
        assert len(alerts(api)) == 1

        spend(store, 1.7)  # alice at $10.20 of $10.00
        found = budget(api, lambda b: condition(b, "Exceeded").get("status") == "True", "Exceeded")
        assert condition(found, "Exceeded")["reason"] == "DailyLimitReached"
        assert found["status"]["remainingTodayUsd"] == 0 and found["status"]["percentUsed"] == 102
        assert condition(found, "Ready")["status"] == "True", "an exceeded budget is reconciled fine"
        wait_for(lambda: alerts(api), lambda a: len(a) == 3, what="the 90% and Exceeded Events")
        exceeded, eighty, ninety = alerts(api)
        assert exceeded.startswith("BudgetExceeded: user:alice reached the daily limit: $10.20 of $10.00 spent on ")
        assert "calls are refused until" in exceeded
        assert "reached 80% of the daily limit" in eighty and "reached 90% of the daily limit: $10.20" in ninety
        assert found["status"]["alerts"]["daily"] == [80, 90, 100]
        assert operator.running(), operator.output()

    # A new operator process knows only what status recorded: nothing is announced again.
    with operator_process(tmp_path / "operator.log") as operator:
        assert ticks_pass(apiserver_in_thread) == []
        assert len(alerts(api)) == 3
        assert_kstatus(api)
        assert operator.running(), operator.output()


def test_an_unreachable_store_is_named_figures_are_kept_and_reads_recover(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    private_redis: RedisServer, tmp_path: pathlib.Path,
) -> None:
    password = "canary-redis-password-0000"
    redis.Redis.from_url(private_redis.url).config_set("requirepass", password)
    url = f"redis://:{password}@127.0.0.1:{private_redis.port}/0"
    address = f"127.0.0.1:{private_redis.port}"
    api = prepared(apiserver_in_thread, monkeypatch, AGENTGOV_REDIS_URL=url, **FAST)
    create_budget(api)
    spend(redis.Redis.from_url(url), 8.5)
    with operator_process(tmp_path / "operator.log") as operator:
        budget(api, lambda b: b.get("status", {}).get("percentUsed") == 85, "85% read")
        wait_for(lambda: alerts(api), lambda a: len(a) == 1, what="the 80% Event")

        private_redis.kill()
        found = budget(api, lambda b: condition(b, "SpendStoreAvailable").get("reason") == "Unreachable",
                       "the store reported unreachable")
        message = condition(found, "SpendStoreAvailable")["message"]
        assert message.startswith(f"spend store {address} is unreachable (ConnectionError); figures are as last read at ")
        assert found["status"]["percentUsed"] == 85 and condition(found, "Warning")["status"] == "True"
        assert condition(found, "Ready")["status"] == "True"
        assert ticks_pass(apiserver_in_thread) == [], "the same failure is not written again"

        private_redis.start()  # empty: nothing persisted
        redis.Redis.from_url(private_redis.url).config_set("requirepass", password)
        found = budget(api, lambda b: condition(b, "SpendStoreAvailable").get("status") == "True"
                       and b["status"].get("percentUsed") == 0, "reads back, from the empty store")
        spend(redis.Redis.from_url(url), 8.6)
        budget(api, lambda b: b["status"].get("percentUsed") == 86, "86% read")
        assert len(alerts(api)) == 1, "80% was already announced today"

        private_redis.pause()  # a hung server: the read times out
        found = budget(api, lambda b: "(TimeoutError)" in condition(b, "SpendStoreAvailable").get("message", ""),
                       "a hung store reported")
        private_redis.resume()
        budget(api, lambda b: condition(b, "SpendStoreAvailable").get("status") == "True", "reads back after the pause")

        assert operator.running()
        everything = json.dumps(api.get(PATH)) + json.dumps(events_of(api, BUDGET)) + operator.output()
        assert password not in everything, "the store's password leaked"
        assert address in operator.output()


def test_without_a_spend_store_status_says_so_once(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
) -> None:
    api = prepared(apiserver_in_thread, monkeypatch, **FAST)
    monkeypatch.delenv("AGENTGOV_REDIS_URL", raising=False)
    create_budget(api)
    with operator_process(tmp_path / "operator.log") as operator:
        found = budget(api, lambda b: condition(b, "SpendStoreAvailable").get("reason") == "NotConfigured",
                       "no store configured")
        assert "AGENTGOV_REDIS_URL" in condition(found, "SpendStoreAvailable")["message"]
        assert "percentUsed" not in found["status"] and condition(found, "Ready")["status"] == "True"
        assert ticks_pass(apiserver_in_thread) == [], "said once, not on every tick"
        # The daemon's finalizer never holds a deletion while the operator runs.
        wait_for(lambda: api.get(PATH), lambda b: b["metadata"].get("finalizers") == ["agentgov.io/finalizer"],
                 what="kopf's finalizer for the daemon")
        assert api.delete(PATH) == 200
        wait_for(lambda: api.get(PATH), lambda b: b is None, what="the budget gone")
        assert operator.running(), operator.output()


def test_conflicting_status_writes_are_retried_and_alerts_still_go_out_once(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    redis_url: str, tmp_path: pathlib.Path,
) -> None:
    api = prepared(apiserver_in_thread, monkeypatch, AGENTGOV_REDIS_URL=redis_url, **FAST)
    create_budget(api)
    spend(redis.Redis.from_url(redis_url), 9.5)
    # The first status writes conflict (someone else wrote the budget meanwhile): nothing is
    # announced until one lands, and then each threshold once.
    conflicts = apiserver_in_thread.inject_fault("PATCH", rf"/agentbudgets/{BUDGET}/status$", status=409, times=4)
    with operator_process(tmp_path / "operator.log") as operator:
        found = budget(api, lambda b: b.get("status", {}).get("percentUsed") == 95, "95% read despite conflicts")
        assert conflicts.hits == 4
        assert found["status"]["alerts"]["daily"] == [80, 90]
        wait_for(lambda: alerts(api), lambda a: len(a) == 2, what="the 80% and 90% Events")
        assert ticks_pass(apiserver_in_thread) == []
        assert [a.split(" spent ")[0] for a in alerts(api)] == [
            "BudgetThresholdReached: user:alice reached 80% of the daily limit: $9.50 of $10.00",
            "BudgetThresholdReached: user:alice reached 90% of the daily limit: $9.50 of $10.00"]
        assert operator.running(), operator.output()
