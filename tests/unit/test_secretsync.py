"""The secrets sync's decisions (controller/secretsync.py), the builder of ``<agent>-secrets``
(controller/builders/secret.py), the provider settings read from ``AGENTGOV_*`` and the
provider registry: pure functions, table-tested, with canary values that must never leave the
Secret's data."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from builder_cases import AGENT_UID, make_inputs

from agentgov.api.agentdeployment import AgentDeploymentSpec, AgentDeploymentStatus, SecretSource
from agentgov.controller import secretsync as sync
from agentgov.controller.builders import secret as builder
from agentgov.controller.config import ConfigError, OperatorConfig
from agentgov.controller.status import Outcome, status_violations, updated_status
from agentgov.secrets.base import (
    SecretLocator,
    SecretNotFound,
    SecretPermissionDenied,
    SecretProviderMisconfigured,
    SecretProviderUnavailable,
    SecretValue,
)
from agentgov.secrets.config import AwsSettings, ProviderSettings
from agentgov.secrets.registry import ProviderRegistry, SecretProviderNotConfigured

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
STAMP = "2026-03-01T12:00:00Z"
CANARY = "canary-9f3b2c-value"
AGENT = "research/research-assistant"
SECRETS = [
    {"name": "SEARCH_API_KEY", "vault": {"path": "agents/research", "key": "search-api-key"}},
    {"name": "TICKET_TOKEN", "aws": {"name": "agents/ticketing", "key": "token"}, "refreshInterval": "15m"},
    {"name": "MAPS_KEY", "azure": {"vault": "research-kv", "name": "maps-key"}},
    {"name": "DATABASE_URL", "secretKeyRef": {"name": "research-db", "key": "url"}},
]
ALL = frozenset({"vault", "aws", "azure"})


def spec(secrets: list[dict[str, Any]] | None = None) -> AgentDeploymentSpec:
    inputs = make_inputs(agent_changes={"spec.secrets": SECRETS if secrets is None else secrets})
    return inputs.spec


def managed(secrets: list[dict[str, Any]] | None = None) -> list[sync.Managed]:
    return sync.managed_sources(spec(secrets), "research")


def ago(seconds: float) -> str:
    return sync.format_time(NOW - dt.timedelta(seconds=seconds))


def good_entry(item: sync.Managed, synced: str = STAMP, version: str = "1") -> dict[str, Any]:
    return {"name": item.name, "source": item.source, "version": version, "syncedAt": synced}


def no_canary(*things: Any) -> None:
    text = json.dumps([repr(t) if not isinstance(t, (dict, list, str)) else t for t in things], default=repr)
    assert CANARY not in text


# --- locators, intervals ----------------------------------------------------------------------

@pytest.mark.parametrize("source, locator", [
    ({"vault": {"path": "agents/research", "key": "k"}}, SecretLocator("vault", "agents/research", "k")),
    ({"aws": {"name": "arn:aws:secretsmanager:eu-central-1:1:secret:x", "key": "token"}},
     SecretLocator("aws", "arn:aws:secretsmanager:eu-central-1:1:secret:x", "token")),
    ({"aws": {"name": "agents/whole"}}, SecretLocator("aws", "agents/whole", None)),
    ({"azure": {"vault": "research-kv", "name": "maps-key"}}, SecretLocator("azure", "research-kv/maps-key", None)),
    ({"secretKeyRef": {"name": "research-db", "key": "url"}}, SecretLocator("kubernetes", "research/research-db", "url")),
], ids=["a vault source is its path and key", "an aws source with a json key is its name and key",
        "an aws source without a key is the whole secret string", "an azure source is vault/name without a key",
        "a secretKeyRef source is namespace/name and key"])
def test_a_source_has_the_locator_of_its_provider(source: dict[str, Any], locator: SecretLocator) -> None:
    assert sync.locator_of(SecretSource.model_validate({"name": "X", **source}), "research") == locator


def test_only_vault_aws_and_azure_entries_are_materialised_in_spec_order() -> None:
    assert [(m.index, m.name, m.source) for m in managed()] == [
        (0, "SEARCH_API_KEY", "vault:agents/research#search-api-key"),
        (1, "TICKET_TOKEN", "aws:agents/ticketing#token"),
        (2, "MAPS_KEY", "azure:research-kv/maps-key"),
    ]


@pytest.mark.parametrize("interval, seconds", [
    ("1h", 3600), ("15m", 900), ("1h30m", 5400), ("90s", 90), ("2.5m", 150), ("0s", 10), ("500ms", 10),
], ids=["an hour", "minutes", "hours and minutes", "seconds", "a fraction", "zero is raised to the floor",
        "milliseconds are raised to the floor"])
def test_a_refresh_interval_is_read_in_seconds_with_a_floor(interval: str, seconds: float) -> None:
    source = SecretSource.model_validate({"name": "X", "aws": {"name": "n"}, "refreshInterval": interval})
    assert sync.refresh_seconds(source) == seconds


def test_the_default_refresh_interval_is_an_hour() -> None:
    assert sync.refresh_seconds(SecretSource.model_validate({"name": "X", "aws": {"name": "n"}})) == 3600


@pytest.mark.parametrize("failures, seconds", [(1, 5), (2, 10), (3, 20), (6, 160), (7, 300), (10_000, 300), (0, 5)],
                         ids=["the first retry after 5 s", "then 10 s", "then 20 s", "doubling", "capped at 5 min",
                              "a huge count stays capped", "no count counts as one"])
def test_retries_back_off_exponentially_to_a_cap(failures: int, seconds: float) -> None:
    assert sync.backoff_seconds(failures) == seconds


# --- due-ness -----------------------------------------------------------------------------------

VAULT, AWS_ITEM, AZURE = managed()
DUE_CASES: list[tuple[str, sync.Managed, dict[str, Any] | None, bool, frozenset[str], bool, str | None]] = [
    ("a source never read is due", AWS_ITEM, None, False, ALL, False, "never read"),
    ("a source whose locator changed is due", AWS_ITEM, {**good_entry(AWS_ITEM), "source": "aws:old#token"}, True,
     ALL, False, "source changed"),
    ("a key missing from the Secret is due", AWS_ITEM, good_entry(AWS_ITEM), False, ALL, False,
     "missing from the Secret"),
    ("a fresh read is not due", AWS_ITEM, good_entry(AWS_ITEM, ago(60)), True, ALL, False, None),
    ("a read older than its interval is due", AWS_ITEM, good_entry(AWS_ITEM, ago(900)), True, ALL, False,
     "refresh interval passed"),
    ("a read just inside its interval is not due", AWS_ITEM, good_entry(AWS_ITEM, ago(899)), True, ALL, False, None),
    ("a requested refresh is due however fresh", AWS_ITEM, good_entry(AWS_ITEM), True, ALL, True, "requested"),
    ("a failure inside its backoff is not due", AWS_ITEM,
     {**good_entry(AWS_ITEM, ago(999)), "reason": "ProviderUnavailable", "failedAt": ago(9), "failures": 2}, True,
     ALL, False, None),
    ("a failure past its backoff is retried", AWS_ITEM,
     {**good_entry(AWS_ITEM), "reason": "ProviderUnavailable", "failedAt": ago(10), "failures": 2}, True, ALL, False,
     "retry after a failure"),
    ("a failure with a missing key still waits out its backoff", AWS_ITEM,
     {"name": "TICKET_TOKEN", "source": AWS_ITEM.source, "reason": "NotFound", "failedAt": ago(1), "failures": 1},
     False, ALL, False, None),
    ("a provider still not configured is not retried", VAULT,
     {"name": VAULT.name, "source": VAULT.source, "reason": "ProviderNotConfigured", "failedAt": ago(9999)}, False,
     frozenset({"aws"}), False, None),
    ("a provider configured since is read", VAULT,
     {"name": VAULT.name, "source": VAULT.source, "reason": "ProviderNotConfigured", "failedAt": ago(1)}, False,
     ALL, False, "provider now configured"),
    ("an unreadable sync time counts as never", AWS_ITEM, good_entry(AWS_ITEM, "yesterday"), True, ALL, False,
     "refresh interval passed"),
    ("an unreadable failure time is retried", AWS_ITEM,
     {**good_entry(AWS_ITEM), "reason": "NotFound", "failedAt": 17, "failures": "x"}, True, ALL, False,
     "retry after a failure"),
]


@pytest.mark.parametrize("item, entry, has_value, configured, requested, expected",
                         [case[1:] for case in DUE_CASES], ids=[case[0] for case in DUE_CASES])
def test_due(item: sync.Managed, entry: dict[str, Any] | None, has_value: bool, configured: frozenset[Any],
             requested: bool, expected: str | None) -> None:
    assert sync.due(item, entry, NOW, has_value, configured, requested) == expected


def test_the_next_read_falls_due_at_the_earliest_interval_or_backoff() -> None:
    entries = {
        VAULT.name: {**good_entry(VAULT, ago(3000))},  # due in 600 s
        AWS_ITEM.name: {**good_entry(AWS_ITEM, ago(100))},  # 15 min interval: due in 800 s
        AZURE.name: {"name": AZURE.name, "source": AZURE.source, "reason": "ProviderUnavailable", "failedAt": ago(0),
                     "failures": 3},  # backoff 20 s
    }
    assert sync.next_due(managed(), entries, ALL) == NOW + dt.timedelta(seconds=20)
    del entries[AZURE.name]
    assert sync.next_due(managed(), entries, ALL) == NOW + dt.timedelta(seconds=600)


def test_nothing_falls_due_while_the_only_provider_is_not_configured() -> None:
    entries = {VAULT.name: {"name": VAULT.name, "source": VAULT.source, "reason": "ProviderNotConfigured",
                            "failedAt": STAMP}}
    assert sync.next_due([VAULT], entries, frozenset()) is None


# --- requests (annotations) ---------------------------------------------------------------------

REQUEST_CASES: list[tuple[str, str, str | None, tuple[str, ...] | None, str | None]] = [
    ("a bare id asks for every entry", "r-1", "r-1", None, None),
    ("an id with names asks for those", "r-2:SEARCH_API_KEY,MAPS_KEY", "r-2", ("SEARCH_API_KEY", "MAPS_KEY"), None),
    ("a repeated name is asked for once", "r-3:MAPS_KEY, MAPS_KEY", "r-3", ("MAPS_KEY",), None),
    ("surrounding space is ignored", "  r-4  ", "r-4", None, None),
    ("an unknown name is refused naming it", "r-5:NOPE", "r-5", None, "spec.secrets has no entry 'NOPE'"),
    ("a secretKeyRef entry is refused", "r-6:DATABASE_URL", "r-6", None, "comes from the Kubernetes Secret research-db"),
    ("an empty name list is refused", "r-7:", "r-7", None, "'' is not a secret name"),
    ("an empty item in the list is refused", "r-8:MAPS_KEY,,SEARCH_API_KEY", "r-8", None, "'' is not a secret name"),
    ("a name with bad characters is refused", "r-9:MAPS KEY", "r-9", None, "'MAPS KEY' is not a secret name"),
]


@pytest.mark.parametrize("value, request_id, names, problem", [c[1:] for c in REQUEST_CASES],
                         ids=[c[0] for c in REQUEST_CASES])
def test_a_request_annotation_is_parsed(value: str, request_id: str, names: tuple[str, ...] | None,
                                        problem: str | None) -> None:
    request = sync.parse_request("rotate", value, spec())
    assert request is not None and request.request == request_id
    if problem is None:
        assert request.problem is None and request.names == names
    else:
        assert request.problem is not None and problem in request.problem
        assert request.problem.startswith("agentgov.io/rotate-secrets: ")


HOSTILE = [
    ("an oversized value", "r" * 5000, "longer than 2048 characters"),
    ("an empty value", "", "'' is not a request id"),
    ("a newline in the id", "r-1\nx", "is not a request id"),
    ("a shell metacharacter in the id", "r-1;rm -rf /", "is not a request id"),
    ("a non-ASCII id", "rötation", "is not a request id"),
    ("an id starting with a dash", "-r", "is not a request id"),
    ("an id longer than 63 characters", "r" * 64, "is not a request id"),
    ("a names list with no id", ":MAPS_KEY", "is not a request id"),
]


@pytest.mark.parametrize("value, problem", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_a_hostile_request_is_refused_by_a_digest_and_not_echoed_whole(value: str, problem: str) -> None:
    request = sync.parse_request("refresh", value, spec())
    assert request is not None and request.problem is not None and problem in request.problem
    assert request.request.startswith("sha256:") and len(request.request) <= 80
    assert len(request.problem) < 400 and "\n" not in request.problem
    assert sync.request_key(value) == request.request


def test_a_request_already_recorded_is_not_pending_and_a_new_id_is() -> None:
    status = {"secretsRotation": {"request": "r-1", "result": "Succeeded", "at": STAMP}}
    body = {"metadata": {"annotations": {sync.ROTATE_ANNOTATION: "r-1:MAPS_KEY"}}, "status": status}
    assert sync.pending_request("rotate", body["metadata"]["annotations"], status, spec()) is None
    assert not sync.has_pending_request(body)
    body["metadata"]["annotations"][sync.ROTATE_ANNOTATION] = "r-2"
    assert sync.pending_request("rotate", body["metadata"]["annotations"], status, spec()) == sync.Request("rotate", "r-2")
    assert sync.has_pending_request(body)


def test_the_same_invalid_value_is_reported_once() -> None:
    value = "not valid!"
    status = {"secretsRefresh": {"request": sync.request_key(value), "result": "Invalid", "at": STAMP}}
    body = {"metadata": {"annotations": {sync.REFRESH_ANNOTATION: value}}, "status": status}
    assert sync.pending_request("refresh", body["metadata"]["annotations"], status, spec()) is None
    assert not sync.has_pending_request(body)


def test_an_agent_without_requests_has_none_pending() -> None:
    assert not sync.has_pending_request({"metadata": {"annotations": {"other": "x"}}, "status": {}})
    assert not sync.has_pending_request({})


# --- decide: what a sync concludes --------------------------------------------------------------

def value(text: str = CANARY, version: str = "v2") -> SecretValue:
    return SecretValue(text, version)


def read(name: str, *, error: Exception | None = None, text: str = CANARY, version: str = "v2",
         action: str = "read") -> sync.Attempt:
    if error is not None:
        return sync.Attempt(name, action, error=error)  # type: ignore[arg-type]
    return sync.Attempt(name, action, value=value(text, version))  # type: ignore[arg-type]


def decide(items: list[sync.Managed], attempts: list[sync.Attempt], *, status: dict[str, Any] | None = None,
           live: dict[str, str] | None = None, requests: list[sync.Request] | None = None,
           configured: frozenset[Any] = ALL) -> sync.Decision:
    decision = sync.decide(AGENT, items, status or {}, live or {}, {a.name: a for a in attempts}, requests or [],
                           NOW, configured)
    no_canary(decision.entries, decision.condition, decision.outcome, decision.events,
              [a.as_record() for a in decision.access], decision.requests, repr(decision))
    return decision


def test_a_good_read_fills_the_secret_and_the_status_and_is_an_audited_access() -> None:
    decision = decide([AWS_ITEM], [read(AWS_ITEM.name)])
    assert decision.data == {"TICKET_TOKEN": CANARY} and decision.versions == {"TICKET_TOKEN": "v2"}
    assert decision.entries == [{"name": "TICKET_TOKEN", "source": "aws:agents/ticketing#token", "version": "v2",
                                 "syncedAt": STAMP}]
    assert decision.condition == ("True", "Synced", "1 secret(s) current in the agent's Secret (from aws)")
    assert decision.outcome is None
    assert [a.as_record() for a in decision.access] == [{
        "event": "secret_access", "agent": AGENT, "secret": "TICKET_TOKEN", "source": "aws:agents/ticketing#token",
        "action": "read", "result": "ok", "code": None, "version": "v2"}]
    assert decision.next_due == NOW + dt.timedelta(minutes=15)


def test_an_entry_not_due_keeps_its_value_and_status_and_is_not_audited() -> None:
    entry = good_entry(AWS_ITEM, ago(60), "v1")
    decision = decide([AWS_ITEM], [], status={"secrets": [entry]}, live={"TICKET_TOKEN": CANARY})
    assert decision.data == {"TICKET_TOKEN": CANARY} and decision.entries == [entry] and decision.access == []


def test_keys_of_entries_no_longer_in_the_spec_are_dropped_from_the_secret() -> None:
    decision = decide([AWS_ITEM], [read(AWS_ITEM.name)], live={"TICKET_TOKEN": "old", "REMOVED": "x"})
    assert set(decision.data) == {"TICKET_TOKEN"}


FAILURES = [
    ("an unavailable provider with a last good value keeps it and the agent runs",
     SecretProviderUnavailable(SecretLocator("aws", "agents/ticketing", "token"), "connection timed out"), True,
     "ProviderUnavailable", None, None),
    ("an unavailable provider and no value yet waits for it",
     SecretProviderUnavailable(SecretLocator("aws", "agents/ticketing", "token"), "connection timed out"), False,
     "ProviderUnavailable", "Reconciling", "WaitingForSecrets"),
    ("a missing secret stalls naming it, even with a last good value",
     SecretNotFound(SecretLocator("aws", "agents/ticketing", "token"), "no such secret"), True,
     "NotFound", "Stalled", "SecretNotFound"),
    ("a missing secret and no value stalls naming it",
     SecretNotFound(SecretLocator("aws", "agents/ticketing", "token"), "no key 'token' in the secret"), False,
     "NotFound", "Stalled", "SecretNotFound"),
    ("permission denied stalls with its own reason",
     SecretPermissionDenied(SecretLocator("aws", "agents/ticketing", "token"), "AWS denied the operator's identity"),
     True, "PermissionDenied", "Stalled", "SecretPermissionDenied"),
    ("a provider not configured with a value at hand keeps using it",
     SecretProviderNotConfigured(None, "not configured for this process", provider="aws"), True,
     "ProviderNotConfigured", None, None),
    ("a provider not configured and no value stalls naming the setting",
     SecretProviderNotConfigured(None, "not configured for this process", provider="aws"), False,
     "ProviderNotConfigured", "Stalled", "ProviderNotConfigured"),
    ("a misconfigured provider and no value stalls",
     SecretProviderMisconfigured(None, "the aws provider needs 'boto3': pip install 'agentgov[aws]'", provider="aws"),
     False, "ProviderMisconfigured", "Stalled", "ProviderMisconfigured"),
]


@pytest.mark.parametrize("error, has_value, reason, phase, outcome_reason", [f[1:] for f in FAILURES],
                         ids=[f[0] for f in FAILURES])
def test_a_failed_read(error: Exception, has_value: bool, reason: str, phase: str | None,
                       outcome_reason: str | None) -> None:
    previous = good_entry(AWS_ITEM, ago(3600), "v1")
    live = {"TICKET_TOKEN": CANARY} if has_value else {}
    decision = decide([AWS_ITEM], [read(AWS_ITEM.name, error=error)], status={"secrets": [previous]}, live=live)
    assert decision.data == live, "a failure never removes nor changes the last good value"
    [entry] = decision.entries
    assert entry["reason"] == reason and entry["failedAt"] == STAMP and entry["failures"] == 1
    assert entry["version"] == "v1" and entry["syncedAt"] == previous["syncedAt"], "the last good read is kept"
    assert entry["message"].startswith("aws:agents/ticketing#token: ")
    state, condition_reason, message = decision.condition or ("", "", "")
    assert (state, condition_reason) == ("False", reason)
    assert "TICKET_TOKEN: aws:agents/ticketing#token" in message
    assert ("last good value kept for TICKET_TOKEN" in message) == has_value
    if phase is None:
        assert decision.outcome is None
    else:
        assert decision.outcome is not None
        assert (decision.outcome.phase, decision.outcome.reason) == (phase, outcome_reason)
        assert "spec.secrets[1] TICKET_TOKEN: aws:agents/ticketing#token" in decision.outcome.message
    assert decision.access[0].result == "error" and decision.access[0].code == error.code  # type: ignore[attr-defined]
    assert decision.next_due == (None if reason == "ProviderNotConfigured" else NOW + dt.timedelta(seconds=5))


def test_a_provider_not_configured_is_named_with_the_setting_that_turns_it_on() -> None:
    error = SecretProviderNotConfigured(None, "not configured for this process", provider="vault")
    decision = decide([VAULT], [read(VAULT.name, error=error)])
    assert decision.outcome == Outcome("Stalled", "ProviderNotConfigured", (
        "spec.secrets[0] SEARCH_API_KEY: vault:agents/research#search-api-key: the vault provider is not configured "
        "for the operator; set AGENTGOV_VAULT_ADDR (and its companions) in the operator's environment"))


def test_consecutive_failures_are_counted_and_a_good_read_clears_them() -> None:
    failing = {"name": AWS_ITEM.name, "source": AWS_ITEM.source, "version": "v1", "syncedAt": ago(99),
               "reason": "ProviderUnavailable", "message": "x", "failedAt": ago(60), "failures": 3}
    error = SecretProviderUnavailable(AWS_ITEM.locator, "timed out")
    again = decide([AWS_ITEM], [read(AWS_ITEM.name, error=error)], status={"secrets": [failing]})
    assert again.entries[0]["failures"] == 4 and again.next_due == NOW + dt.timedelta(seconds=40)
    recovered = decide([AWS_ITEM], [read(AWS_ITEM.name)], status={"secrets": [failing]})
    assert recovered.entries == [{"name": "TICKET_TOKEN", "source": AWS_ITEM.source, "version": "v2", "syncedAt": STAMP}]
    assert recovered.condition is not None and recovered.condition[0] == "True"


def test_a_failure_after_the_source_changed_keeps_nothing_of_the_old_source() -> None:
    old = {**good_entry(AWS_ITEM, ago(10), "v1"), "source": "aws:old-name#token", "lastRotatedAt": ago(10)}
    decision = decide([AWS_ITEM], [read(AWS_ITEM.name, error=SecretNotFound(AWS_ITEM.locator, "no such secret"))],
                      status={"secrets": [old]}, live={"TICKET_TOKEN": CANARY})
    assert set(decision.entries[0]) == {"name", "source", "reason", "message", "failedAt", "failures"}


def test_the_stalled_reason_is_the_gravest_and_the_message_names_every_blocking_entry() -> None:
    attempts = [
        read(VAULT.name, error=SecretProviderNotConfigured(None, "not configured", provider="vault")),
        read(AWS_ITEM.name, error=SecretPermissionDenied(AWS_ITEM.locator, "denied")),
        read(AZURE.name, error=SecretNotFound(AZURE.locator, "no such secret")),
    ]
    decision = decide(managed(), attempts)
    assert decision.outcome is not None and decision.outcome.reason == "SecretNotFound"
    for name in ("SEARCH_API_KEY", "TICKET_TOKEN", "MAPS_KEY"):
        assert name in decision.outcome.message
    assert decision.condition is not None and decision.condition[1] == "ProviderNotConfigured", "the first failing"


def test_a_long_provider_message_is_cut() -> None:
    error = SecretProviderUnavailable(AWS_ITEM.locator, "x" * 5000)
    decision = decide([AWS_ITEM], [read(AWS_ITEM.name, error=error)])
    assert len(decision.entries[0]["message"]) == sync.MAX_MESSAGE_CHARS
    assert decision.outcome is not None and len(decision.outcome.message) <= sync.MAX_MESSAGE_CHARS


def test_a_rotation_is_recorded_with_what_it_rotated_and_when() -> None:
    request = sync.Request("rotate", "r-1", ("TICKET_TOKEN",))
    previous = {**good_entry(AWS_ITEM, ago(60), "v1")}
    decision = decide([AWS_ITEM, AZURE], [read(AWS_ITEM.name, action="rotate", version="v9")],
                      status={"secrets": [previous, good_entry(AZURE, ago(60))]}, live={"MAPS_KEY": "m"},
                      requests=[request])
    assert decision.requests == {"secretsRotation": {"request": "r-1", "at": STAMP, "rotated": ["TICKET_TOKEN"],
                                                     "failed": [], "result": "Succeeded"}}
    assert decision.entries[0]["lastRotatedAt"] == STAMP and decision.entries[0]["version"] == "v9"
    assert decision.entries[1] == good_entry(AZURE, ago(60)), "an entry not asked for is left alone"
    assert decision.access[0].action == "rotate"
    assert decision.events == [sync.SecretEvent("Normal", "SecretsRotated", "rotation r-1: TICKET_TOKEN version v9")]


def test_a_rotation_that_fails_for_one_entry_says_which_and_why() -> None:
    request = sync.Request("rotate", "r-2")
    attempts = [read(AWS_ITEM.name, action="rotate"),
                read(AZURE.name, action="rotate", error=SecretPermissionDenied(AZURE.locator, "forbidden"))]
    decision = decide([AWS_ITEM, AZURE], attempts, requests=[request])
    record = decision.requests["secretsRotation"]
    assert (record["result"], record["rotated"], record["failed"]) == ("Failed", ["TICKET_TOKEN"], ["MAPS_KEY"])
    assert "MAPS_KEY: azure:research-kv/maps-key: forbidden" in record["message"]
    assert decision.events[0].type == "Warning" and decision.events[0].reason == "SecretsRotationFailed"


def test_an_invalid_request_is_recorded_and_warned_about_and_rotates_nothing() -> None:
    request = sync.parse_request("rotate", "r-3:NOPE", spec())
    assert request is not None
    decision = decide([AWS_ITEM], [], status={"secrets": [good_entry(AWS_ITEM)]}, live={"TICKET_TOKEN": CANARY},
                      requests=[request])
    record = decision.requests["secretsRotation"]
    assert record["result"] == "Invalid" and record["request"] == "r-3"
    assert record["message"] == "agentgov.io/rotate-secrets: spec.secrets has no entry 'NOPE'; nothing was done"
    assert decision.events == [sync.SecretEvent("Warning", "InvalidSecretsRequest", record["message"])]
    assert decision.access == []


def test_a_refresh_is_recorded_under_its_own_field() -> None:
    decision = decide([AWS_ITEM], [read(AWS_ITEM.name)], requests=[sync.Request("refresh", "f-1")])
    assert decision.requests["secretsRefresh"]["refreshed"] == ["TICKET_TOKEN"]
    assert "secretsRotation" not in decision.requests


# --- status: kstatus and the CRD's schema --------------------------------------------------------

def test_the_sync_status_obeys_kstatus_and_the_status_schema() -> None:
    error = SecretProviderUnavailable(AZURE.locator, "timed out")
    decision = decide([AWS_ITEM, AZURE], [read(AWS_ITEM.name), read(AZURE.name, error=error)],
                      live={"MAPS_KEY": CANARY}, requests=[sync.Request("rotate", "r-1", ("TICKET_TOKEN",))])
    result = sync.SyncResult(decision)
    status = updated_status({}, Outcome("Ready", "Available", "3 pods ready"), 2, STAMP, {})
    status = sync.with_secrets_status(status, result, 2, STAMP)
    agent = {"metadata": {"generation": 2}, "status": status}
    assert status_violations(agent) == []
    AgentDeploymentStatus.model_validate(status)
    [condition] = [c for c in status["conditions"] if c["type"] == "SecretsSynced"]
    assert condition["status"] == "False" and condition["reason"] == "ProviderUnavailable"
    no_canary(status)


def test_an_agent_without_managed_secrets_loses_the_field_and_the_condition() -> None:
    before = sync.with_secrets_status({"conditions": [], "observedGeneration": 1},
                                      sync.SyncResult(decide([AWS_ITEM], [read(AWS_ITEM.name)])), 1, STAMP)
    after = sync.with_secrets_status(before, sync.SyncResult(sync.Decision(), managed=False), 1, STAMP)
    assert "secrets" not in after and not any(c["type"] == "SecretsSynced" for c in after["conditions"])


# --- the Secret -----------------------------------------------------------------------------------

def test_the_secret_is_opaque_owned_labelled_and_holds_values_only_in_data() -> None:
    inputs = make_inputs(agent_changes={"spec.secrets": SECRETS})
    manifest = builder.build(inputs, {"TICKET_TOKEN": CANARY, "MAPS_KEY": "é-unicode"}, {"TICKET_TOKEN": "v2", "MAPS_KEY": "a1"})
    assert manifest["apiVersion"] == "v1" and manifest["kind"] == "Secret" and manifest["type"] == "Opaque"
    meta = manifest["metadata"]
    assert meta["name"] == "research-assistant-secrets" and meta["namespace"] == "research"
    assert meta["ownerReferences"] == [{"apiVersion": "agentgov.io/v1alpha1", "kind": "AgentDeployment",
                                       "name": "research-assistant", "uid": AGENT_UID, "controller": True,
                                       "blockOwnerDeletion": True}]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "agentgov-operator"
    assert meta["labels"]["app.kubernetes.io/component"] == "secrets"
    assert json.loads(meta["annotations"][builder.VERSIONS_ANNOTATION]) == {"MAPS_KEY": "a1", "TICKET_TOKEN": "v2"}
    assert list(manifest["data"]) == ["MAPS_KEY", "TICKET_TOKEN"]
    assert base64.b64decode(manifest["data"]["TICKET_TOKEN"]).decode() == CANARY
    assert builder.decoded(manifest) == {"TICKET_TOKEN": CANARY, "MAPS_KEY": "é-unicode"}
    no_canary(meta)


def test_updating_the_secret_removes_stale_keys_and_adopts_it_keeping_other_owners() -> None:
    inputs = make_inputs(agent_changes={"spec.secrets": SECRETS})
    foreign = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u-1"}
    old_controller = {"apiVersion": "v1", "kind": "Thing", "name": "y", "uid": "u-2", "controller": True}
    live = {"metadata": {"ownerReferences": [foreign, old_controller]},
            "data": {"OLD": "eA==", "TICKET_TOKEN": "eA=="}}
    patch = builder.update_patch(inputs, live, {"TICKET_TOKEN": CANARY}, {"TICKET_TOKEN": "v2"})
    assert patch["data"] == {"OLD": None, "TICKET_TOKEN": base64.b64encode(CANARY.encode()).decode()}
    assert [r["uid"] for r in patch["metadata"]["ownerReferences"]] == ["u-1", AGENT_UID]
    assert builder.owned_by({"metadata": patch["metadata"]}, inputs)
    assert not builder.owned_by(live, inputs)


@pytest.mark.parametrize("data", [{"K": "not base64!"}, {"K": base64.b64encode(b"\xff\xfe").decode()}, {"K": 7},
                                  "not a mapping"],
                         ids=["bad base64", "bytes that are not UTF-8", "a value that is not a string",
                              "data that is not a mapping"])
def test_a_key_the_secret_holds_unreadably_counts_as_missing(data: Any) -> None:
    assert builder.decoded({"data": data}) == {}


# --- provider settings from the environment --------------------------------------------------------

def test_no_provider_is_on_by_default_and_the_timeout_is_ten_seconds() -> None:
    config = OperatorConfig.from_env({})
    assert config.secret_providers == ProviderSettings() and config.secrets_timeout_seconds == 10


def test_each_provider_is_read_from_its_variables_with_the_timeout() -> None:
    config = OperatorConfig.from_env({
        "AGENTGOV_SECRETS_TIMEOUT_SECONDS": "3",
        "AGENTGOV_VAULT_ADDR": "https://vault.example:8200/", "AGENTGOV_VAULT_MOUNT": "/kv/agents/",
        "AGENTGOV_VAULT_NAMESPACE": "admin/research", "AGENTGOV_VAULT_ROLE": "agentgov",
        "AGENTGOV_VAULT_AUTH_MOUNT": "k8s-prod", "AGENTGOV_VAULT_CA_FILE": "/etc/vault/ca.pem",
        "AGENTGOV_AWS_REGION": "eu-central-1", "AGENTGOV_AWS_ENDPOINT_URL": "https://vpce.example",
        "AGENTGOV_AWS_CREDENTIALS_FILE": "/etc/aws/credentials",
        "AGENTGOV_AZURE_CREDENTIAL": "client_secret", "AGENTGOV_AZURE_TENANT_ID": "contoso.onmicrosoft.com",
        "AGENTGOV_AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
        "AGENTGOV_AZURE_CLIENT_SECRET_FILE": "/etc/azure/secret",
        "AGENTGOV_AZURE_VAULT_URL_TEMPLATE": "https://{vault}.vault.azure.cn", "AGENTGOV_AZURE_AUTHORITY": "login.chinacloudapi.cn",
    })
    vault, aws, azure = config.secret_providers.vault, config.secret_providers.aws, config.secret_providers.azure
    assert vault is not None and aws is not None and azure is not None
    assert (vault.address, vault.mount, vault.namespace, vault.auth, vault.role, vault.auth_mount, vault.ca_file) == (
        "https://vault.example:8200", "kv/agents", "admin/research", "kubernetes", "agentgov", "k8s-prod",
        "/etc/vault/ca.pem")
    assert (aws.region, aws.endpoint_url, aws.credentials_file) == ("eu-central-1", "https://vpce.example",
                                                                   "/etc/aws/credentials")
    assert (azure.credential, azure.vault_url_template, azure.authority, azure.client_secret_file) == (
        "client_secret", "https://{vault}.vault.azure.cn", "login.chinacloudapi.cn", "/etc/azure/secret")
    assert vault.timeout_seconds == aws.timeout_seconds == azure.timeout_seconds == 3
    assert OperatorConfig.unknown_variables({"AGENTGOV_VAULT_ADDR": "x", "AGENTGOV_AWS_REGON": "x"}) == ["AGENTGOV_AWS_REGON"]


BAD_SETTINGS = [
    ("a vault setting without the address", {"AGENTGOV_VAULT_ROLE": "r"}, "AGENTGOV_VAULT_ROLE",
     "AGENTGOV_VAULT_ADDR is not"),
    ("a vault address that is not a URL", {"AGENTGOV_VAULT_ADDR": "vault:8200"}, "AGENTGOV_VAULT_ADDR", "http"),
    ("a vault address with credentials", {"AGENTGOV_VAULT_ADDR": "https://u:p@vault"}, "AGENTGOV_VAULT_ADDR",
     "credentials"),
    ("kubernetes auth without a role", {"AGENTGOV_VAULT_ADDR": "https://v"}, "AGENTGOV_VAULT_ROLE", "required"),
    ("token auth without a token file", {"AGENTGOV_VAULT_ADDR": "https://v", "AGENTGOV_VAULT_AUTH": "token"},
     "AGENTGOV_VAULT_TOKEN_FILE", "required"),
    ("an unknown vault auth", {"AGENTGOV_VAULT_ADDR": "https://v", "AGENTGOV_VAULT_AUTH": "ldap"},
     "AGENTGOV_VAULT_AUTH", "kubernetes or token"),
    ("a relative token file", {"AGENTGOV_VAULT_ADDR": "https://v", "AGENTGOV_VAULT_AUTH": "token",
                               "AGENTGOV_VAULT_TOKEN_FILE": "token.txt"}, "AGENTGOV_VAULT_TOKEN_FILE", "absolute"),
    ("a mount with bad characters", {"AGENTGOV_VAULT_ADDR": "https://v", "AGENTGOV_VAULT_ROLE": "r",
                                     "AGENTGOV_VAULT_MOUNT": "kv/../x y"}, "AGENTGOV_VAULT_MOUNT", "mount path"),
    ("an aws setting without the region", {"AGENTGOV_AWS_ENDPOINT_URL": "http://x"}, "AGENTGOV_AWS_ENDPOINT_URL",
     "AGENTGOV_AWS_REGION is not"),
    ("a region that is not one", {"AGENTGOV_AWS_REGION": "Frankfurt"}, "AGENTGOV_AWS_REGION", "not an AWS region"),
    ("an azure template without a placeholder", {"AGENTGOV_AZURE_CREDENTIAL": "workload",
                                                 "AGENTGOV_AZURE_VAULT_URL_TEMPLATE": "https://kv.example"},
     "AGENTGOV_AZURE_VAULT_URL_TEMPLATE", "{vault}"),
    ("an azure template with other braces", {"AGENTGOV_AZURE_CREDENTIAL": "workload",
                                             "AGENTGOV_AZURE_VAULT_URL_TEMPLATE": "https://{vault}.{x}"},
     "AGENTGOV_AZURE_VAULT_URL_TEMPLATE", "no other braces"),
    ("a client secret credential without its file", {
        "AGENTGOV_AZURE_CREDENTIAL": "client_secret", "AGENTGOV_AZURE_TENANT_ID": "t", "AGENTGOV_AZURE_CLIENT_ID": "c"},
     "AGENTGOV_AZURE_CLIENT_SECRET_FILE", "required"),
    ("an unknown azure credential", {"AGENTGOV_AZURE_CREDENTIAL": "password"}, "AGENTGOV_AZURE_CREDENTIAL",
     "workload or client_secret or default"),
    ("a secrets timeout of zero", {"AGENTGOV_SECRETS_TIMEOUT_SECONDS": "0"}, "AGENTGOV_SECRETS_TIMEOUT_SECONDS",
     "positive"),
]


@pytest.mark.parametrize("environ, variable, problem", [b[1:] for b in BAD_SETTINGS], ids=[b[0] for b in BAD_SETTINGS])
def test_a_bad_provider_setting_fails_at_start_naming_the_variable(environ: dict[str, str], variable: str,
                                                                   problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        OperatorConfig.from_env(environ)
    assert caught.value.variable == variable and problem in caught.value.message
    assert "p@" not in str(caught.value)


# --- the provider registry -------------------------------------------------------------------------

async def test_a_provider_without_settings_is_not_configured() -> None:
    registry = ProviderRegistry(ProviderSettings())
    assert registry.configured_kinds == frozenset()
    with pytest.raises(SecretProviderNotConfigured) as caught:
        await registry.get("vault")
    assert caught.value.provider == "vault" and caught.value.code == "provider_misconfigured"


async def test_a_provider_is_built_once_on_first_use_and_closed_with_the_registry() -> None:
    registry = ProviderRegistry(ProviderSettings(aws=AwsSettings(region="eu-central-1", endpoint_url="http://127.0.0.1:9")))
    assert registry.configured_kinds == frozenset({"aws"})
    import asyncio

    first, second = await asyncio.gather(registry.get("aws"), registry.get("aws"))
    assert first is second and first.kind == "aws"
    await registry.close()
    with pytest.raises(SecretProviderUnavailable):
        await registry.get("aws")


async def test_a_provider_that_refuses_its_settings_is_misconfigured_without_echoing_them() -> None:
    registry = ProviderRegistry(ProviderSettings(aws=AwsSettings(region="eu-central-1", endpoint_url="not a url")))
    with pytest.raises(SecretProviderMisconfigured) as caught:
        await registry.get("aws")
    assert caught.value.provider == "aws" and "not a url" not in str(caught.value)


# --- the Helm chart gives the operator its provider settings (values -> env + files) -------------

def render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    import helm_python as helm
    import yaml

    from builder_cases import EXAMPLES_DIR

    with helm.Chart.load(EXAMPLES_DIR.parent / "charts" / "agentgov") as chart:
        out = chart.render(values, name="agentgov", namespace="agentgov-system", is_install=True)
    return [d for path, text in out.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def test_the_chart_passes_each_provider_as_variables_and_credential_files_the_operator_accepts() -> None:
    values = {"secretProviders": {
        "timeoutSeconds": 4,
        "vault": {"address": "https://vault.corp:8200", "role": "agentgov", "caSecret": {"name": "vault-ca"}},
        "aws": {"region": "eu-central-1", "credentialsSecret": {"name": "aws-keys"}},
        "azure": {"credential": "client_secret", "tenantId": "t-1", "clientId": "c-1",
                  "clientSecretSecret": {"name": "azure-app", "key": "secret"}},
    }, "networkPolicy": {"enabled": True}}
    objects = render_chart(values)
    [deployment] = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "agentgov"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    config = OperatorConfig.from_env(env)
    assert OperatorConfig.unknown_variables(env) == []
    providers = config.secret_providers
    assert providers.vault is not None and providers.aws is not None and providers.azure is not None
    assert config.secrets_timeout_seconds == 4 and providers.vault.role == "agentgov"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path, secret_name, key in ((providers.vault.ca_file, "vault-ca", "ca.crt"),
                                   (providers.aws.credentials_file, "aws-keys", "credentials"),
                                   (providers.azure.client_secret_file, "azure-app", "secret")):
        assert path is not None
        folder, file = path.rsplit("/", 1)
        volume = volumes[mounts[folder]]["secret"]
        assert (volume["secretName"], volume["items"], volume["defaultMode"]) == (
            secret_name, [{"key": key, "path": file}], 0o440)
    assert not any("valueFrom" in e and e["name"].startswith(("AGENTGOV_VAULT", "AGENTGOV_AWS", "AGENTGOV_AZURE"))
                   for e in container["env"]), "credentials are files, never variables"
    [policy] = [o for o in objects if o["kind"] == "NetworkPolicy"]
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {8200, 443} <= ports


def test_the_chart_leaves_every_provider_off_by_default() -> None:
    [deployment] = [o for o in render_chart({}) if o["kind"] == "Deployment" and o["metadata"]["name"] == "agentgov"]
    env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not {n for n in env if n.startswith(("AGENTGOV_VAULT", "AGENTGOV_AWS", "AGENTGOV_AZURE"))}


@pytest.mark.parametrize("values, message", [
    ({"vault": {"address": "https://v:8200"}}, "secretProviders.vault.role is required"),
    ({"vault": {"address": "https://v:8200", "auth": "token"}}, "secretProviders.vault.tokenSecret.name is required"),
    ({"azure": {"credential": "client_secret"}}, "needs secretProviders.azure.tenantId, clientId and clientSecretSecret"),
    ({"aws": {"region": "Frankfurt"}}, "/secretProviders/aws/region"),
    ({"vault": {"address": "vault:8200"}}, "/secretProviders/vault/address"),
], ids=["vault's kubernetes auth without a role", "vault's token auth without a token Secret",
        "an azure client secret credential without its parts", "a region that is not one", "an address that is not a URL"])
def test_the_chart_refuses_provider_settings_the_operator_would_refuse(values: dict[str, Any], message: str) -> None:
    import helm_python as helm

    with pytest.raises((helm.HelmRenderError, helm.HelmValuesError)) as caught:
        render_chart({"secretProviders": values})
    assert message in str(caught.value)
