"""``agentgov secrets rotate|refresh|status``: ask the operator to rotate or re-read an agent's
Vault, AWS and Azure secrets, and show where each one stands.

The command never talks to a secret provider itself and never sees a value: it sets the
``agentgov.io/rotate-secrets`` (or ``refresh-secrets``) annotation on the AgentDeployment with
a fresh request id, through the Kubernetes API as the user of the current kubeconfig (or the
pod's service account in a cluster), and waits until the operator records that id in
``status.secretsRotation`` (``secretsRefresh``). What was rotated and the new versions come
from ``status.secrets``.

Exit codes: 0 done; 1 the operator reported a failure, or did not answer in time, or the API
refused; 2 a usage error (no such agent, no Vault/AWS/Azure secrets, an unknown ``--secret``).
This module must never print a value, a token or a kubeconfig's contents.
"""

from __future__ import annotations

import datetime
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Final, Literal

from agentgov.controller.secretsync import (
    REFRESH_ANNOTATION,
    ROTATE_ANNOTATION,
    CONDITION,
)

GROUP: Final = "agentgov.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "agentdeployments"
IN_CLUSTER_NAMESPACE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
POLL_SECONDS: Final = 0.5
Action = Literal["rotate", "refresh"]
_ANNOTATIONS: Final[Mapping[Action, str]] = {"rotate": ROTATE_ANNOTATION, "refresh": REFRESH_ANNOTATION}
_STATUS_FIELDS: Final[Mapping[Action, str]] = {"rotate": "secretsRotation", "refresh": "secretsRefresh"}
_DONE_FIELDS: Final[Mapping[Action, str]] = {"rotate": "rotated", "refresh": "refreshed"}


class UsageError(Exception):
    """Exit 2: the command cannot be done as asked."""


class CommandFailed(Exception):
    """Exit 1: the API or the operator said no, or did not answer."""


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class AgentApi:
    """The few calls the command makes, through the official client (thin; errors translated)."""

    def __init__(self) -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        self.default_namespace = "default"
        try:
            api_client = config.new_client_from_config()  # type: ignore[no-untyped-call]
            try:
                _, active = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
                self.default_namespace = (active or {}).get("context", {}).get("namespace") or "default"
            except (ConfigException, KeyError, TypeError):
                pass
        except (ConfigException, OSError):
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except ConfigException:
                raise CommandFailed("no Kubernetes credentials: no kubeconfig (KUBECONFIG, ~/.kube/config) and not "
                                    "in a cluster") from None
            api_client = client.ApiClient()
            try:
                with open(IN_CLUSTER_NAMESPACE, encoding="utf-8") as handle:
                    self.default_namespace = handle.read().strip() or "default"
            except OSError:
                pass
        self._api = client.CustomObjectsApi(api_client)

    def _translate(self, error: Exception, target: Target, doing: str) -> Exception:
        from kubernetes.client.exceptions import ApiException

        if isinstance(error, ApiException):
            if error.status == 404:
                return UsageError(f"AgentDeployment {target} not found")
            reason = _api_message(error.body) or error.reason or "error"
            return CommandFailed(f"{doing} AgentDeployment {target}: HTTP {error.status}: {reason}")
        return CommandFailed(f"{doing} AgentDeployment {target}: {type(error).__name__} (is the API server reachable?)")

    def get(self, target: Target) -> dict[str, Any]:
        try:
            found = self._api.get_namespaced_custom_object(GROUP, VERSION, target.namespace, PLURAL, target.name,
                                                           _request_timeout=30)
        except Exception as error:  # translated once, here
            raise self._translate(error, target, "reading") from None
        if not isinstance(found, dict):
            raise CommandFailed(f"reading AgentDeployment {target}: an answer that is not an object")
        return found

    def annotate(self, target: Target, annotation: str, value: str) -> None:
        body = {"metadata": {"annotations": {annotation: value}}}
        try:
            self._api.patch_namespaced_custom_object(GROUP, VERSION, target.namespace, PLURAL, target.name, body,
                                                     _request_timeout=30,
                                                     _content_type="application/merge-patch+json")
        except Exception as error:
            raise self._translate(error, target, "annotating") from None


def _api_message(body: object) -> str | None:
    try:
        parsed = json.loads(body) if isinstance(body, (str, bytes)) else body
    except ValueError:
        return None
    message = parsed.get("message") if isinstance(parsed, dict) else None
    return str(message)[:300] if message else None


# --- pure parts ---------------------------------------------------------------------------------

def managed_names(agent: Mapping[str, Any]) -> list[str]:
    """The agent's Vault, AWS and Azure entries of ``spec.secrets``, in spec order."""
    entries = (agent.get("spec") or {}).get("secrets") or []
    return [e["name"] for e in entries if isinstance(e, Mapping) and "secretKeyRef" not in e and isinstance(e.get("name"), str)]


def new_request_id(now: datetime.datetime, token: str) -> str:
    """``cli-<UTC time>-<random>``: unique per call and valid as the annotation's request id."""
    return f"cli-{now.strftime('%Y%m%dT%H%M%SZ')}-{token}"


def annotation_value(request_id: str, names: Sequence[str]) -> str:
    return f"{request_id}:{','.join(names)}" if names else request_id


def chosen_names(agent: Mapping[str, Any], target: Target, wanted: Sequence[str]) -> list[str]:
    """The ``--secret`` names checked against the agent's managed entries (UsageError naming what
    is wrong); empty when none were given (every entry)."""
    managed = managed_names(agent)
    if not managed:
        raise UsageError(f"AgentDeployment {target} has no Vault, AWS or Azure secrets (secretKeyRef entries are "
                         "rotated where their Secret is kept)")
    unknown = [name for name in wanted if name not in managed]
    if unknown:
        raise UsageError(f"AgentDeployment {target} has no Vault, AWS or Azure secret named {', '.join(unknown)} "
                         f"(it has: {', '.join(managed)})")
    return list(dict.fromkeys(wanted))


def entries(agent: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    listed = (agent.get("status") or {}).get("secrets") or []
    return {e["name"]: e for e in listed if isinstance(e, dict) and "name" in e}


def outcome_lines(action: Action, record: Mapping[str, Any], before: Mapping[str, Mapping[str, Any]],
                  after: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What a handled request did, one line per secret: source and version change, or why not."""
    lines = []
    for name in record.get(_DONE_FIELDS[action]) or []:
        entry = after.get(name, {})
        old, new = before.get(name, {}).get("version"), entry.get("version")
        change = f"version {old} -> {new}" if old and old != new else f"version {new}"
        lines.append(f"  {name}  {entry.get('source', '?')}  {change}")
    for name in record.get("failed") or []:
        entry = after.get(name, {})
        lines.append(f"  {name}  {entry.get('source', '?')}  failed: {entry.get('reason', 'unknown')}: "
                     f"{entry.get('message', '')}".rstrip(": "))
    return lines


def status_table(agent: Mapping[str, Any]) -> list[str]:
    rows = [("NAME", "SOURCE", "VERSION", "SYNCED", "ROTATED", "STATE")]
    for entry in entries(agent).values():
        state = "Synced" if not entry.get("reason") else f"{entry['reason']} ({entry.get('failures', 1)}x)"
        rows.append((entry["name"], str(entry.get("source", "")), _short(entry.get("version")),
                     str(entry.get("syncedAt") or "-"), str(entry.get("lastRotatedAt") or "-"), state))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _short(version: object) -> str:
    text = str(version) if version else "-"
    return text if len(text) <= 20 else text[:17] + "..."


def _condition(agent: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for condition in (agent.get("status") or {}).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == CONDITION:
            return condition
    return None


# --- the commands ---------------------------------------------------------------------------------

def request(action: Action, name: str, namespace: str | None, secrets_wanted: Sequence[str], timeout: float,
            wait: bool, out: IO[str], err: IO[str], api: AgentApi | None = None,
            sleep: Callable[[float], None] = time.sleep) -> int:
    """``agentgov secrets rotate|refresh``."""
    try:
        api = api or AgentApi()
        target = Target(namespace or api.default_namespace, name)
        agent = api.get(target)
        names = chosen_names(agent, target, secrets_wanted)
        before = entries(agent)
        request_id = new_request_id(datetime.datetime.now(datetime.timezone.utc), secrets.token_hex(4))
        api.annotate(target, _ANNOTATIONS[action], annotation_value(request_id, names))
        verb = "rotation" if action == "rotate" else "refresh"
        if not wait:
            print(f"requested {verb} {request_id} of {target}; see `agentgov secrets status {name} -n {target.namespace}`",
                  file=out)
            return 0
        record, agent = _wait_for_record(api, target, action, request_id, timeout, sleep)
        lines = outcome_lines(action, record, before, entries(agent))
        result = record.get("result")
        if result == "Succeeded":
            print(f"{verb} {request_id} of {target}: done", file=out)
            for line in lines:
                print(line, file=out)
            return 0
        print(f"{verb} {request_id} of {target}: {result}: {record.get('message', '')}".rstrip(": "), file=err)
        for line in lines:
            print(line, file=err)
        return 1
    except UsageError as error:
        print(f"error: {error}", file=err)
        return 2
    except CommandFailed as error:
        print(f"error: {error}", file=err)
        return 1


def _wait_for_record(api: AgentApi, target: Target, action: Action, request_id: str, timeout: float,
                     sleep: Callable[[float], None]) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """Poll the agent until its status records ``request_id`` (CommandFailed after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        agent = api.get(target)
        record = (agent.get("status") or {}).get(_STATUS_FIELDS[action])
        if isinstance(record, Mapping) and record.get("request") == request_id:
            return record, agent
        if time.monotonic() >= deadline:
            raise CommandFailed(f"the operator has not handled request {request_id} within {timeout:g} s; is it "
                                f"running and watching namespace {target.namespace}? The annotation stays set: "
                                "it is handled when the operator gets to it")
        sleep(POLL_SECONDS)


def show_status(name: str, namespace: str | None, output: Literal["table", "json"], out: IO[str], err: IO[str],
                api: AgentApi | None = None) -> int:
    """``agentgov secrets status``."""
    try:
        api = api or AgentApi()
        target = Target(namespace or api.default_namespace, name)
        agent = api.get(target)
        if not managed_names(agent):
            raise UsageError(f"AgentDeployment {target} has no Vault, AWS or Azure secrets")
    except UsageError as error:
        print(f"error: {error}", file=err)
        return 2
    except CommandFailed as error:
        print(f"error: {error}", file=err)
        return 1
    status = agent.get("status") or {}
    condition = _condition(agent)
    if output == "json":
        print(json.dumps({"agent": str(target), "secrets": list(entries(agent).values()), "condition": condition,
                          "rotation": status.get("secretsRotation"), "refresh": status.get("secretsRefresh")},
                         indent=2), file=out)
        return 0
    for line in status_table(agent):
        print(line, file=out)
    if condition is not None:
        print(f"\n{CONDITION}={condition.get('status')} ({condition.get('reason')}): {condition.get('message', '')}",
              file=out)
    else:
        print(f"\n{CONDITION}: not reported yet (is the operator running?)", file=out)
    for action in ("rotate", "refresh"):
        record = status.get(_STATUS_FIELDS[action])
        if isinstance(record, Mapping):
            label = "last rotation" if action == "rotate" else "last refresh"
            print(f"{label}: {record.get('request')} {record.get('result')} at {record.get('at')}", file=out)
    return 0
