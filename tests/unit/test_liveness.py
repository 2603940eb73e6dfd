"""The liveness verdict on the operator's watch streams: dead and stalled watches fail it."""

from __future__ import annotations

import asyncio

import pytest

from agentgov.controller.liveness import WatchState, WatchVitals, assess, parse_endpoint, watch_name

BUDGETS = "agentbudgets.v1alpha1.agentgov.io@None"


def watch(name: str = BUDGETS, running: bool = True, error: str | None = None, seen: float = 0.0,
          request: float | None = None, answer: float | None = None) -> WatchState:
    return WatchState(name, running, error, seen, request, answer)


@pytest.mark.parametrize(
    "state, now, expected",
    [
        (watch(request=1.0, answer=1.1), 100.0, "ok"),
        (watch(request=95.0, answer=90.0), 100.0, "ok"),
        (watch(request=50.0, answer=10.0), 100.0, "stalled"),
        (watch(request=1.0), 100.0, "stalled"),
        (watch(seen=90.0, request=91.0), 100.0, "ok"),
        (watch(), 1000.0, "ok"),
        (watch(request=10.0, answer=11.0), 1000.0, "ok"),
        (watch(running=False, error="APINotFoundError: 404", request=1.0, answer=1.1), 2.0, "dead"),
    ],
    ids=[
        "answered after the last request",
        "a request in flight, answered recently",
        "asking with no answer past the limit",
        "never answered since it was seen, past the limit",
        "never answered but seen only just now",
        "a paused watch (no requests) is never stalled",
        "an idle watch not asking again is not stalled",
        "an ended watcher is dead",
    ],
)
def test_each_watch_is_judged(state: WatchState, now: float, expected: str) -> None:
    verdict = assess([state], now, stalled_after=20.0)
    assert verdict.body["watches"][BUDGETS]["state"] == expected
    assert verdict.alive == (expected == "ok")
    assert verdict.body["status"] == ("ok" if expected == "ok" else "failing")


def test_the_body_names_what_failed_and_why() -> None:
    verdict = assess([watch(running=False, error="APINotFoundError: gone"),
                      watch("toolpolicies.v1alpha1.agentgov.io@None", request=5.0, answer=2.0),
                      watch("deployments.v1.apps@None", request=95.0, answer=99.5)], 100.0, 20.0)
    assert verdict.body["failing"] == [BUDGETS, "toolpolicies.v1alpha1.agentgov.io@None"]
    assert verdict.body["watches"][BUDGETS] == {"state": "dead", "error": "APINotFoundError: gone"}
    assert verdict.body["watches"]["toolpolicies.v1alpha1.agentgov.io@None"] == {
        "state": "stalled", "error": "no answer from the API server for 98s (limit 20s)", "lastAnswerSecondsAgo": 98.0}
    assert verdict.body["watches"]["deployments.v1.apps@None"] == {"state": "ok", "lastAnswerSecondsAgo": 0.5}


def test_no_watches_yet_is_alive() -> None:
    assert assess([], 5.0, 20.0).alive


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://k8s:6443/apis/agentgov.io/v1alpha1/agentbudgets?watch=true&timeoutSeconds=300", BUDGETS),
        ("https://k8s/apis/agentgov.io/v1alpha1/namespaces/research/agentbudgets", "agentbudgets.v1alpha1.agentgov.io@research"),
        ("https://k8s/apis/apps/v1/deployments?labelSelector=a%3Db", "deployments.v1.apps@None"),
        ("https://k8s/api/v1/namespaces", "namespaces.v1@None"),
        ("https://k8s/api/v1/namespaces/research/secrets", "secrets.v1@research"),
        ("https://k8s/api/v1/namespaces/research", None),
        ("https://k8s/apis/agentgov.io/v1alpha1/namespaces/research/agentbudgets/team", None),
        ("https://k8s/apis/agentgov.io/v1alpha1/namespaces/research/agentbudgets/team/status", None),
        ("https://k8s/apis/agentgov.io/v1alpha1", None),
        ("https://k8s/version", None),
    ],
    ids=["a cluster-wide custom resource watch", "a namespaced list", "a built-in group with a selector",
         "core namespaces", "core secrets of a namespace", "a namespace object", "a named object",
         "a status subresource", "API discovery", "the version endpoint"],
)
def test_urls_map_to_kopf_watch_names(url: str, expected: str | None) -> None:
    assert watch_name(url) == expected


@pytest.mark.parametrize(
    "endpoint, expected",
    [("http://0.0.0.0:8080/healthz", ("0.0.0.0", 8080, "/healthz")), ("http://127.0.0.1:9", ("127.0.0.1", 9, "/")),
     ("http://:8080/livez", ("0.0.0.0", 8080, "/livez"))],
    ids=["the default", "no path", "no host"],
)
def test_endpoints_are_parsed(endpoint: str, expected: tuple[str, int, str]) -> None:
    assert parse_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["https://0.0.0.0:8080/healthz", "0.0.0.0:8080", "http://h:70000/"],
                         ids=["https", "no scheme", "a port out of range"])
def test_bad_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="liveness endpoint"):
        parse_endpoint(endpoint)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_vitals_find_watcher_tasks_and_see_them_die() -> None:
    clock = Clock()
    vitals = WatchVitals(stalled_after=20.0, clock=clock)
    gate = asyncio.Event()

    async def failing_watch() -> None:
        await gate.wait()
        raise RuntimeError("the stream broke")

    task = asyncio.create_task(failing_watch(), name=f"watcher for {BUDGETS}")
    other = asyncio.create_task(asyncio.sleep(3600), name="worker for something else")
    try:
        clock.now = 1.0
        vitals.note_request("GET", "https://k8s/apis/agentgov.io/v1alpha1/agentbudgets?watch=true")
        vitals.note_answer("GET", "https://k8s/apis/agentgov.io/v1alpha1/agentbudgets?watch=true", 200)
        assert vitals.verdict().alive and [s.name for s in vitals.states()] == [BUDGETS]
        gate.set()
        with pytest.raises(RuntimeError):
            await task
        verdict = vitals.verdict()
        assert not verdict.alive
        assert verdict.body["watches"][BUDGETS]["error"] == "RuntimeError: the stream broke"
    finally:
        other.cancel()
        task.cancel()


async def test_a_new_watcher_of_the_same_name_replaces_an_ended_one() -> None:
    vitals = WatchVitals(stalled_after=20.0, clock=Clock())
    first = asyncio.create_task(asyncio.sleep(0), name=f"watcher for {BUDGETS}")
    vitals.scan()
    await first
    assert not vitals.verdict().alive
    second = asyncio.create_task(asyncio.sleep(3600), name=f"watcher for {BUDGETS}")
    try:
        assert vitals.verdict().alive
    finally:
        second.cancel()


async def test_only_successful_list_and_watch_answers_count() -> None:
    clock = Clock()
    vitals = WatchVitals(stalled_after=20.0, clock=clock)
    url = "https://k8s/apis/agentgov.io/v1alpha1/agentbudgets?watch=true"
    task = asyncio.create_task(asyncio.sleep(3600), name=f"watcher for {BUDGETS}")
    try:
        vitals.scan()
        clock.now = 5.0
        vitals.note_request("GET", url)
        vitals.note_answer("GET", url, 500)
        vitals.note_answer("PATCH", "https://k8s/apis/agentgov.io/v1alpha1/namespaces/a/agentbudgets/b", 200)
        (state,) = vitals.states()
        assert (state.last_request, state.last_answer) == (5.0, None)
        clock.now = 30.0
        assert vitals.verdict().body["watches"][BUDGETS]["state"] == "stalled", "500s are no answer"
        vitals.note_answer("GET", url, 200)
        (state,) = vitals.states()
        assert state.last_answer == 30.0 and vitals.verdict().alive
    finally:
        task.cancel()
