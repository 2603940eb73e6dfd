"""Names, labels and owner references shared by every child object.

Child names derive from the AgentDeployment's name. Kubernetes allows that name 253
characters and dots, but a Service name must be an RFC 1035 label (63 characters, a letter
first, no dots) and a label value 63 characters; so a name that does not fit is cut and
suffixed with a hash of the whole original name. The result is deterministic (the same agent
always gives the same names) and names of two different agents cannot collide by truncation.
Pure; no I/O.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from agentgov.api.base import API_VERSION
from agentgov.controller.builders.inputs import BuildError, Inputs, Manifest

MAX_LABEL: Final = 63
_HASH_CHARS: Final = 8
_RFC1035: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

APP_NAME: Final = "agentgov-agent"
PART_OF: Final = "agentgov"
MANAGED_BY: Final = "agentgov-operator"
ANNOTATION_PREFIX: Final = "agentgov.io/"
BUNDLE_HASH_ANNOTATION: Final = "agentgov.io/bundle-hash"
SECRETS_HASH_ANNOTATION: Final = "agentgov.io/secrets-hash"

# Components (the app.kubernetes.io/component label) of the children.
COMPONENT_AGENT: Final = "agent"
COMPONENT_BUNDLE: Final = "policy-bundle"
COMPONENT_INGRESS: Final = "ingress"
COMPONENT_NETWORK: Final = "network-policy"
COMPONENT_AUTOSCALER: Final = "autoscaler"
COMPONENT_DISRUPTION: Final = "disruption-budget"
COMPONENT_IDENTITY: Final = "service-account"


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def dns_label(name: str, suffix: str = "") -> str:
    """``name + suffix`` as an RFC 1035 label (valid for every kind of object, Services
    included); unchanged when it already is one, otherwise cleaned, cut and given a hash of
    ``name``. ``suffix`` must itself be label characters (e.g. ``-bundle``)."""
    wanted = name + suffix
    if len(wanted) <= MAX_LABEL and _RFC1035.fullmatch(wanted):
        return wanted
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    if not cleaned[:1].isalpha():
        cleaned = "a" + cleaned
    tail = f"-{short_hash(name)}{suffix}"
    return cleaned[: MAX_LABEL - len(tail)].rstrip("-") + tail


def label_value(text: str) -> str:
    """``text`` as a label value (63 characters; letters, digits, ``-_.``; alphanumeric ends),
    hash-suffixed when it had to change."""
    if len(text) <= MAX_LABEL and _LABEL_VALUE.fullmatch(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)
    tail = short_hash(text)
    head = re.sub(r"^[^A-Za-z0-9]+", "", cleaned[: MAX_LABEL - len(tail) - 1])
    head = re.sub(r"[^A-Za-z0-9]+$", "", head)
    return f"{head}-{tail}" if head else tail


def image_tag(image: str) -> str:
    """The tag of an image reference, or ``latest`` when it has none (digest-only included)."""
    reference = image.split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    _, sep, tag = last.partition(":")
    return tag if sep and tag else "latest"


# --- the names of the children --------------------------------------------------------------


def workload_name(agent: str) -> str:
    """Deployment, Service, ServiceAccount, PDB, HPA, Ingress and NetworkPolicy share it."""
    return dns_label(agent)


def bundle_configmap_name(agent: str) -> str:
    return dns_label(agent, "-bundle")


def tls_secret_name(agent: str) -> str:
    """The certificate Secret cert-manager fills when an issuer is set but no TLS Secret named."""
    return dns_label(agent, "-tls")


def materialized_secret_name(agent: str) -> str:
    """The Secret (owned by the AgentDeployment, written by the secrets sync) holding the values
    of ``spec.secrets`` that come from Vault, AWS or Azure, one key per variable name."""
    return dns_label(agent, "-secrets")


# --- labels, selectors, metadata ------------------------------------------------------------


def selector_labels(agent: str) -> dict[str, str]:
    """The labels that select an agent's pods; stable for the Deployment's lifetime (its
    selector is immutable), so nothing that can change (version, component) is in here."""
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": label_value(agent)}


def selector_string(agent: str) -> str:
    """The selector as ``status.selector`` (for the scale subresource) writes it, keys sorted."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(agent).items()))


def labels(inputs: Inputs, component: str) -> dict[str, str]:
    """The ``app.kubernetes.io/*`` labels of every child: one helper, as the Helm chart has one."""
    return {
        **selector_labels(inputs.name),
        "app.kubernetes.io/version": label_value(image_tag(inputs.spec.image)),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def owner_reference(inputs: Inputs) -> dict[str, object]:
    """The AgentDeployment as controller of the child: deleting it deletes the child."""
    uid = inputs.agent.metadata.uid
    if not uid:
        raise BuildError("metadata.uid", "the AgentDeployment has no uid yet; children need it for their ownerReferences")
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentDeployment",
        "name": inputs.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(inputs: Inputs, name: str, component: str, annotations: dict[str, str] | None = None) -> Manifest:
    meta: Manifest = {
        "name": name,
        "namespace": inputs.namespace,
        "labels": labels(inputs, component),
    }
    if annotations:
        meta["annotations"] = annotations
    meta["ownerReferences"] = [owner_reference(inputs)]
    return meta
