"""The agent's Deployment: the user's agent container beside the agentgov sidecar.

The pod, as built here:

- **sidecar** (``agentgov-sidecar``, the operator's own image) runs
  ``agentgov sidecar --bundle /etc/agentgov/bundle/bundle.json``. It mounts, read-only, the
  bundle ConfigMap and each Secret the bundle names at ``SECRETS_MOUNT_DIR/<secret>/`` with
  only the keys it reads (mode 0440, group = the pod's fsGroup). It gets the budget-store URL
  as ``AGENTGOV_REDIS_URL`` from the Secret ``AGENTGOV_REDIS_URL_SECRET`` names. Probes on its
  inbound port: liveness ``/health`` (initial delay 30 s, period 10 s, timeout 5 s, 3
  failures) and readiness ``/ready`` (initial delay 5 s, period 5 s, timeout 3 s, 3 failures).
- **agent** (the user's image) gets ``OPENAI_BASE_URL`` and ``AGENTGOV_TOOLS_URL`` pointing at
  the sidecar's egress port on 127.0.0.1, a placeholder ``OPENAI_API_KEY`` (OpenAI SDKs refuse
  to start without one; the real key stays in the sidecar) unless the spec sets it, then the
  spec's ``env`` and ``secrets`` (a Kubernetes Secret directly; Vault, AWS and Azure ones from
  the Secret the secrets sync materialises, ``<agent>-secrets``). It mounts no secret files.

Both containers: restricted Pod Security Standard (non-root, read-only root filesystem, no
privilege escalation, all capabilities dropped, seccomp RuntimeDefault), an emptyDir of their
own at ``/tmp``, and requests and limits (the spec's, else the operator's defaults: the HPA
needs requests to compute utilization), written in the API server's canonical notation. Pods spread across zones and nodes (a preference, so
single-zone clusters still schedule) and are pinned to the regions their data may live in
(see ``placement``). The pod template carries the bundle hash and a hash of the referenced
Secrets' versions, so a policy or credential change rolls the pods. ``replicas`` is written
only while autoscaling is off. Pure; no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from fractions import Fraction
from typing import Final

from agentgov.api.agentdeployment import Resources
from agentgov.api.bundle import (
    AUDIT_LOG_DIR,
    BUNDLE_FILE_NAME,
    BUNDLE_MOUNT_DIR,
    SECRETS_MOUNT_DIR,
    PolicyBundle,
    bundle_hash,
)
from agentgov.api.quantity import canonical_quantity, parse_quantity
from agentgov.controller.builders import configmap, serviceaccount
from agentgov.controller.builders.bundle import mounted_secrets
from agentgov.controller.builders.inputs import BuildError, Inputs, Manifest
from agentgov.controller.builders.naming import (
    BUNDLE_HASH_ANNOTATION,
    COMPONENT_AGENT,
    SECRETS_HASH_ANNOTATION,
    dns_label,
    labels,
    materialized_secret_name,
    metadata,
    selector_labels,
    workload_name,
)
from agentgov.controller.builders.service import PORT_NAME
from agentgov.controller.config import ResourceDefaults

API_VERSION = "apps/v1"
KIND = "Deployment"

AGENT_CONTAINER: Final = "agent"
SIDECAR_CONTAINER: Final = "agentgov-sidecar"
# The uid/gid the sidecar runs as (the distroless "nonroot" user); the pod's fsGroup is the
# same, so the Secret files (mode 0440) are readable by the sidecar and nobody else.
SIDECAR_UID: Final = 65532
SECRET_FILE_MODE: Final = 0o440
BUNDLE_VOLUME: Final = "bundle"
SIDECAR_TMP_VOLUME: Final = "sidecar-tmp"
AGENT_TMP_VOLUME: Final = "agent-tmp"
SIDECAR_TMP_SIZE: Final = "64Mi"
AUDIT_VOLUME: Final = "audit-log"
AUDIT_VOLUME_SIZE: Final = "1Gi"
OPENAI_API_KEY_PLACEHOLDER: Final = "agentgov-sidecar-holds-the-key"
# Variables the operator sets on the agent that a spec may not override (they are how the
# agent reaches the sidecar); OPENAI_API_KEY is only a default.
RESERVED_AGENT_ENV: Final = ("OPENAI_BASE_URL", "AGENTGOV_TOOLS_URL")
LIVENESS: Final = {"path": "/health", "initialDelaySeconds": 30, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
READINESS: Final = {"path": "/ready", "initialDelaySeconds": 5, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3}
ZONE_KEY: Final = "topology.kubernetes.io/zone"
HOST_KEY: Final = "kubernetes.io/hostname"


def name(inputs: Inputs) -> str:
    return workload_name(inputs.name)


# --- resources ------------------------------------------------------------------------------


def _quantity(text: str, field: str) -> Fraction:
    try:
        value = parse_quantity(text)
    except ValueError as error:
        raise BuildError(field, str(error)) from None
    if value < 0:
        raise BuildError(field, f"{text!r} is negative")
    return value


def container_resources(given: Resources | None, defaults: ResourceDefaults, field: str) -> Manifest:
    """The spec's requests and limits, the defaults filling what it leaves out. A default never
    contradicts what the spec gives: a request given above the default limit raises the limit
    to it, a limit given below the default request lowers the request to it. A request given
    above a limit given can never be scheduled: BuildError naming the request."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for resource in ("cpu", "memory"):
        request = getattr(given.requests, resource) if given and given.requests else None
        limit = getattr(given.limits, resource) if given and given.limits else None
        request_field, limit_field = f"{field}.requests.{resource}", f"{field}.limits.{resource}"
        default_request, default_limit = getattr(defaults, f"{resource}_request"), getattr(defaults, f"{resource}_limit")
        if request is not None and limit is not None:
            if _quantity(request, request_field) > _quantity(limit, limit_field):
                raise BuildError(request_field, f"the request {request} exceeds the limit {limit}")
        elif request is not None:
            limit = request if _quantity(request, request_field) > parse_quantity(default_limit) else default_limit
        elif limit is not None:
            request = limit if parse_quantity(default_request) > _quantity(limit, limit_field) else default_request
        else:
            request, limit = default_request, default_limit
        # Written as the API server stores them, so reading them back shows no difference.
        requests[resource], limits[resource] = canonical_quantity(request), canonical_quantity(limit)
    return {"requests": requests, "limits": limits}


# --- environment ----------------------------------------------------------------------------


def _secret_env(name: str, secret: str, key: str) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def agent_env(inputs: Inputs, bundle: PolicyBundle) -> list[Manifest]:
    spec = inputs.spec
    egress = f"http://127.0.0.1:{bundle.sidecar.egress_port}"
    for index, var in enumerate(spec.env):
        if var.name in RESERVED_AGENT_ENV:
            raise BuildError(f"spec.env[{index}].name", f"{var.name} is set by agentgov (it points the agent at the sidecar)")
    env_names = {var.name for var in spec.env}
    for index, source in enumerate(spec.secrets):
        if source.name in RESERVED_AGENT_ENV:
            raise BuildError(f"spec.secrets[{index}].name", f"{source.name} is set by agentgov (it points the agent at the sidecar)")
        if source.name in env_names:
            raise BuildError(f"spec.secrets[{index}].name", f"{source.name} is also set in spec.env")
    given = env_names | {source.name for source in spec.secrets}

    env: list[Manifest] = [{"name": "OPENAI_BASE_URL", "value": f"{egress}/v1"}]
    if "OPENAI_API_KEY" not in given:
        env.append({"name": "OPENAI_API_KEY", "value": OPENAI_API_KEY_PLACEHOLDER})
    env.append({"name": "AGENTGOV_TOOLS_URL", "value": f"{egress}/tools"})
    for var in spec.env:
        item: Manifest = {"name": var.name}
        if var.value:  # an empty value is stored as no value (omitempty): write it so
            item["value"] = var.value
        elif var.value_from is not None:
            origin = var.value_from
            if origin.secret_key_ref is not None:
                item["valueFrom"] = {"secretKeyRef": {"name": origin.secret_key_ref.name, "key": origin.secret_key_ref.key}}
            elif origin.config_map_key_ref is not None:
                item["valueFrom"] = {
                    "configMapKeyRef": {"name": origin.config_map_key_ref.name, "key": origin.config_map_key_ref.key}
                }
        env.append(item)
    for secret in spec.secrets:
        if secret.secret_key_ref is not None:
            env.append(_secret_env(secret.name, secret.secret_key_ref.name, secret.secret_key_ref.key))
        elif secret.expose_to_agent is not False:  # else only the sidecar reads it, from <agent>-secrets
            env.append(_secret_env(secret.name, materialized_secret_name(inputs.name), secret.name))
    return env


def sidecar_env(inputs: Inputs) -> list[Manifest]:
    redis = inputs.config.redis_url_secret
    env: list[Manifest] = [
        _secret_env("AGENTGOV_REDIS_URL", redis.name, redis.key),
        {"name": "AGENTGOV_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "AGENTGOV_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if inputs.config.otlp_endpoint:
        env.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": inputs.config.otlp_endpoint})
    return env


def referenced_secret_names(inputs: Inputs, bundle: PolicyBundle) -> list[str]:
    """Every Secret the pod reads (mounted in the sidecar or injected as env), sorted: the
    handler reads their versions into ``Inputs.secret_versions``."""
    return _referenced_secrets(inputs, mounted_secrets(bundle))


def _referenced_secrets(inputs: Inputs, mounted: Mapping[str, list[str]]) -> list[str]:
    names = set(mounted)
    names.add(inputs.config.redis_url_secret.name)
    spec = inputs.spec
    names.update(var.value_from.secret_key_ref.name for var in spec.env if var.value_from and var.value_from.secret_key_ref)
    for source in spec.secrets:
        names.add(source.secret_key_ref.name if source.secret_key_ref else materialized_secret_name(inputs.name))
    return sorted(names)


def secrets_hash(inputs: Inputs, referenced: list[str]) -> str:
    """A hash of the versions of the ``referenced`` Secrets: it changes, and rolls the pods,
    when one of them does."""
    versions = {name: inputs.secret_versions.get(name, "") for name in referenced}
    text = json.dumps(versions, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# --- the pod --------------------------------------------------------------------------------


def _security_context(**extra: object) -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        **extra,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(spec: Mapping[str, object]) -> Manifest:
    probe: Manifest = {"httpGet": {"path": spec["path"], "port": PORT_NAME}}
    probe.update({k: v for k, v in spec.items() if k != "path"})
    return probe


def _secret_volume_name(secret: str) -> str:
    return dns_label("secret-" + secret)


def volumes(inputs: Inputs, mounted: Mapping[str, list[str]]) -> tuple[list[Manifest], list[Manifest]]:
    """The pod's volumes and the sidecar's mounts of them; ``mounted`` is ``mounted_secrets`` of
    the bundle."""
    pod: list[Manifest] = [
        {
            "name": BUNDLE_VOLUME,
            "configMap": {"name": configmap.name(inputs), "items": [{"key": BUNDLE_FILE_NAME, "path": BUNDLE_FILE_NAME}]},
        }
    ]
    mounts: list[Manifest] = [{"name": BUNDLE_VOLUME, "mountPath": BUNDLE_MOUNT_DIR, "readOnly": True}]
    for secret, keys in mounted.items():
        volume = _secret_volume_name(secret)
        pod.append(
            {
                "name": volume,
                "secret": {
                    "secretName": secret,
                    "items": [{"key": key, "path": key} for key in keys],
                    "defaultMode": SECRET_FILE_MODE,
                },
            }
        )
        mounts.append({"name": volume, "mountPath": f"{SECRETS_MOUNT_DIR}/{secret}", "readOnly": True})
    pod.append({"name": SIDECAR_TMP_VOLUME, "emptyDir": {"sizeLimit": SIDECAR_TMP_SIZE}})
    pod.append({"name": AGENT_TMP_VOLUME, "emptyDir": {}})
    mounts.append({"name": SIDECAR_TMP_VOLUME, "mountPath": "/tmp"})
    pod.append({"name": AUDIT_VOLUME, "emptyDir": {"sizeLimit": AUDIT_VOLUME_SIZE}})
    mounts.append({"name": AUDIT_VOLUME, "mountPath": AUDIT_LOG_DIR})
    return pod, mounts


def sidecar_container(inputs: Inputs, bundle: PolicyBundle, mounts: list[Manifest]) -> Manifest:
    config = inputs.config
    container: Manifest = {
        "name": SIDECAR_CONTAINER,
        "image": config.image,
    }
    if config.image_pull_policy:
        container["imagePullPolicy"] = config.image_pull_policy
    container.update(
        {
            "command": ["agentgov", "sidecar", "--bundle", f"{BUNDLE_MOUNT_DIR}/{BUNDLE_FILE_NAME}"],
            "ports": [{"name": PORT_NAME, "containerPort": bundle.sidecar.inbound_port, "protocol": "TCP"}],
            "env": sidecar_env(inputs),
            "resources": container_resources(inputs.spec.sidecar.resources, config.sidecar_resources, "spec.sidecar.resources"),
            "livenessProbe": _probe(LIVENESS),
            "readinessProbe": _probe(READINESS),
            "securityContext": _security_context(runAsUser=SIDECAR_UID, runAsGroup=SIDECAR_UID),
            "volumeMounts": mounts,
        }
    )
    return container


def agent_container(inputs: Inputs, bundle: PolicyBundle) -> Manifest:
    spec = inputs.spec
    container: Manifest = {"name": AGENT_CONTAINER, "image": spec.image}
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    container.update(
        {
            "env": agent_env(inputs, bundle),
            "resources": container_resources(spec.resources, inputs.config.agent_resources, "spec.resources"),
            "securityContext": _security_context(),
            "volumeMounts": [{"name": AGENT_TMP_VOLUME, "mountPath": "/tmp"}],
        }
    )
    return container


def _spread(key: str, selector: dict[str, str]) -> Manifest:
    return {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}}


def build(inputs: Inputs, bundle: PolicyBundle, affinity: Manifest | None) -> Manifest:
    selector = selector_labels(inputs.name)
    mounted = mounted_secrets(bundle)  # walks the whole bundle: once per build
    pod_volumes, sidecar_mounts = volumes(inputs, mounted)
    pod_spec: Manifest = {
        "serviceAccountName": serviceaccount.name(inputs),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "fsGroup": SIDECAR_UID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [sidecar_container(inputs, bundle, sidecar_mounts), agent_container(inputs, bundle)],
        "volumes": pod_volumes,
        "topologySpreadConstraints": [_spread(ZONE_KEY, selector), _spread(HOST_KEY, selector)],
    }
    if affinity is not None:
        pod_spec["affinity"] = affinity
    spec: Manifest = {}
    if not inputs.spec.autoscaling.enabled:
        spec["replicas"] = inputs.spec.replicas
    spec.update(
        {
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels(inputs, COMPONENT_AGENT),
                    "annotations": {
                        BUNDLE_HASH_ANNOTATION: bundle_hash(bundle),
                        SECRETS_HASH_ANNOTATION: secrets_hash(inputs, _referenced_secrets(inputs, mounted)),
                        "kubectl.kubernetes.io/default-container": AGENT_CONTAINER,
                    },
                },
                "spec": pod_spec,
            },
        }
    )
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(inputs, name(inputs), COMPONENT_AGENT),
        "spec": spec,
    }
