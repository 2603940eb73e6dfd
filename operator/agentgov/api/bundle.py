"""The policy bundle: the one contract between the operator and the sidecar.

The operator compiles an AgentDeployment and the budgets and policies it references into a
``PolicyBundle`` and writes it, as JSON, into a ConfigMap mounted in the pod; the sidecar
reads it from that file (and re-reads it when it changes). Everything the sidecar enforces is
here, already resolved: shipped roles merged with the policy's, daily limits derived, prices
merged with the shipped ones, tool guards filled from the policy's defaults.

Secret *values* are never in a bundle. A bundle names a secret by ``SecretFile`` (Secret name
and key); the operator mounts that Secret at ``<secretsDir>/<name>/<key>`` and the sidecar
reads the file. ``BUNDLE_SCHEMA_VERSION`` changes when a field changes meaning; the sidecar
refuses a bundle whose version it does not know. No I/O here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final, Literal

from pydantic import Field

from agentgov.api.agentdeployment import Audit, Cache, JwtAlgorithm, ObjectLockMode
from agentgov.api.base import DataClass, Model
from agentgov.api.defaults import Permission
from agentgov.api.regionpolicy import Region, RoutingRule
from agentgov.api.toolpolicy import CircuitBreaker, Fallback, RateLimit

BUNDLE_SCHEMA_VERSION: Final = "agentgov.io/bundle/v1"
# Where the operator mounts the bundle and the Secrets the bundle names, in the sidecar.
BUNDLE_MOUNT_DIR = "/etc/agentgov/bundle"
BUNDLE_FILE_NAME = "bundle.json"
SECRETS_MOUNT_DIR = "/etc/agentgov/secrets"
# The sidecar's audit log: a writable volume the operator mounts (an emptyDir until the audit
# sinks ship records off the pod).
AUDIT_LOG_DIR = "/var/log/agentgov"
AUDIT_LOG_FILE = f"{AUDIT_LOG_DIR}/audit.jsonl"
INBOUND_PORT = 8080
EGRESS_PORT = 8081


class SecretFile(Model):
    """A key of a Secret the operator mounts in the sidecar; the value is read from the file."""

    secret: str = Field(description="Secret name (mounted at <secretsDir>/<secret>/).")
    key: str = Field(description="Key within the Secret (the file name).")

    def path(self, secrets_dir: str = SECRETS_MOUNT_DIR) -> str:
        return f"{secrets_dir}/{self.secret}/{self.key}"


class AgentIdentity(Model):
    """Which AgentDeployment the bundle was compiled for."""

    name: str = Field(description="AgentDeployment name.")
    namespace: str = Field(description="AgentDeployment namespace.")
    generation: int | None = Field(None, description="The AgentDeployment generation compiled.")


class BundleAuth(Model):
    """How the sidecar verifies callers' JWTs."""

    issuer: str = Field(description="Required `iss`, matched exactly.")
    audiences: list[str] = Field(description="Accepted `aud` values.")
    algorithms: list[JwtAlgorithm] = Field(description="Accepted algorithms (one family).")
    jwks_url: str | None = Field(None, description="JWKS endpoint for asymmetric keys.")
    key_file: SecretFile | None = Field(None, description="HMAC key or PEM public keys.")
    leeway_seconds: int = Field(description="Clock skew tolerated for exp, nbf, iat.")
    required_scopes: list[str] = Field(
        default_factory=list, description="Token scopes every caller must hold to execute the agent."
    )
    signing_key_file: SecretFile | None = Field(
        None,
        description="Private key (or HMAC key) the admin token endpoint signs with; its public half is "
        "trusted too. For HS256 the keyFile signs when this is absent.",
    )


class BundleTool(Model):
    """A tool with every guard resolved (the policy's defaults applied)."""

    name: str = Field(description="Tool name, the path segment under /tools/.")
    upstream: str = Field(description="Base URL calls are forwarded to.")
    permission: Literal["tool:read", "tool:write"] = Field(description="Permission required.")
    scopes: list[str] = Field(default_factory=list, description="Token scopes all required.")
    methods: list[str] = Field(default_factory=list, description="Allowed HTTP methods; all when empty.")
    timeout_seconds: int = Field(description="Upstream call timeout.")
    rate_limit: RateLimit | None = Field(None, description="Per-caller rate limit.")
    circuit_breaker: CircuitBreaker = Field(description="Breaker settings.")
    fallback: Fallback | None = Field(None, description="Answer when the tool is unavailable.")
    credentials_file: SecretFile | None = Field(None, description="Bearer token sent upstream.")


class BundleModelRoute(Model):
    """A model the agent may request and the upstream serving it."""

    name: str = Field(description="Model name the agent asks for.")
    provider: str = Field(description="Upstream API flavour.")
    endpoint: str = Field(description="Upstream base URL.")
    upstream_model: str = Field(description="Model name sent upstream.")
    credentials_file: SecretFile | None = Field(None, description="Upstream API key.")
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker, description="Breaker settings.")
    fallbacks: list[str] = Field(default_factory=list, description="Routes tried in order when this one is unavailable.")


class Price(Model):
    """USD per 1,000 tokens."""

    input_per_1k: float = Field(ge=0, description="Prompt tokens.")
    output_per_1k: float = Field(ge=0, description="Completion tokens.")


class BundleBudget(Model):
    """A budget with its limits and prices resolved."""

    name: str = Field(description="AgentBudget name (the key of its counters in the store).")
    users: list[str] = Field(default_factory=list, description="Users it applies to; `*` for all.")
    agents: list[str] = Field(default_factory=list, description="Agents it applies to; `*` for all.")
    teams: list[str] = Field(default_factory=list, description="Teams it applies to; `*` for all.")
    scope: Literal["Each", "Shared"] = Field(description="Per-subject or pooled limits.")
    monthly_usd: float = Field(gt=0, description="Monthly limit.")
    daily_usd: float = Field(gt=0, description="Daily limit (derived when the budget gives none).")
    alert_thresholds: list[int] = Field(description="Percents that alert, ascending.")
    enforcement: Literal["Hard", "Soft"] = Field(description="Refuse or only alert over the limit.")
    failure_policy: Literal["Closed", "Open"] = Field(description="When the store is unreachable.")
    pricing: dict[str, Price] = Field(description="Model -> price, shipped prices merged with the budget's.")
    webhook_url: str | None = Field(None, description="Alert webhook.")
    webhook_key_file: SecretFile | None = Field(None, description="HMAC key signing webhook bodies.")


class BundleSidecar(Model):
    """Ports and limits of the sidecar."""

    inbound_port: int = Field(INBOUND_PORT, description="Port callers reach (the Service targets it).")
    egress_port: int = Field(EGRESS_PORT, description="Port the agent calls for models and tools.")
    agent_port: int = Field(description="Port of the agent on 127.0.0.1.")
    max_body_bytes: int = Field(ge=1, description="Largest inbound request body.")
    upstream_timeout_seconds: int = Field(ge=1, description="Timeout of calls to the agent and models.")


class BundleElasticsearchSink(Model):
    """Where the sidecar ships audit records in Elasticsearch or OpenSearch."""

    url: str = Field(description="Base URL of the cluster (no credentials in it).")
    index_prefix: str = Field(description="Records go to `<indexPrefix>-YYYY.MM.DD`.")
    username: str | None = Field(None, description="Basic authentication user.")
    password_file: SecretFile | None = Field(None, description="Basic authentication password.")
    api_key_file: SecretFile | None = Field(None, description="API key (base64 `encoded` form).")
    ca_file: SecretFile | None = Field(None, description="PEM CA bundle of the cluster's certificate.")
    flush_seconds: int = Field(ge=1, description="Longest a record waits to share a bulk request.")


class BundleS3Sink(Model):
    """Where the sidecar ships audit records in S3."""

    bucket: str = Field(description="Bucket name.")
    prefix: str = Field(description="Key prefix.")
    region: str | None = Field(None, description="AWS region of the bucket.")
    endpoint: str | None = Field(None, description="S3-compatible endpoint; AWS's when absent.")
    credentials_file: SecretFile | None = Field(None, description="AWS shared-credentials file; the pod's identity when absent.")
    window_seconds: int = Field(ge=1, description="One object per this many seconds of records.")
    max_records: int = Field(ge=1, description="Most records in one object.")
    object_lock_mode: ObjectLockMode = Field(description="Object Lock retention mode, when the bucket allows it.")


class BundleAuditSinks(Model):
    """Remote copies of the audit log (``spec.audit.sinks`` with credentials as mounted files)."""

    stdout: bool = Field(False, description="JSON lines on standard output.")
    elasticsearch: BundleElasticsearchSink | None = Field(None, description="Elasticsearch or OpenSearch.")
    s3: BundleS3Sink | None = Field(None, description="S3.")


class PolicyBundle(Model):
    """Everything one agent's sidecar enforces."""

    schema_version: Literal["agentgov.io/bundle/v1"] = Field(
        BUNDLE_SCHEMA_VERSION, description="Bundle format version."
    )
    agent: AgentIdentity = Field(description="The agent the bundle was compiled for.")
    data_classes: list[DataClass] = Field(description="Data classes the agent handles.")
    auth: BundleAuth = Field(description="Caller authentication.")
    roles: dict[str, list[Permission]] = Field(description="Role -> permissions, shipped roles merged.")
    tools: list[BundleTool] = Field(default_factory=list, description="Tools the agent may call.")
    default_tool_action: Literal["Deny", "Allow"] = Field("Deny", description="For tools not listed.")
    models: list[BundleModelRoute] = Field(default_factory=list, description="Model routes.")
    budgets: list[BundleBudget] = Field(default_factory=list, description="Budgets governing the agent.")
    regions: list[Region] = Field(default_factory=list, description="Regions, when a RegionPolicy applies.")
    routing_rules: list[RoutingRule] = Field(default_factory=list, description="Residency rules, shipped merged.")
    default_region: str | None = Field(None, description="Region when no rule applies.")
    cache: Cache = Field(description="Response cache settings.")
    audit: Audit = Field(description="Audit settings (its `sinks` are never set here: see `auditSinks`).")
    audit_sinks: BundleAuditSinks | None = Field(None, description="Where the audit log is shipped.")
    sidecar: BundleSidecar = Field(description="Ports and limits.")


def canonical_json(bundle: PolicyBundle) -> str:
    """The bundle as written to the ConfigMap: sorted keys, no whitespace, stable across runs."""
    data: Any = bundle.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def bundle_hash(bundle: PolicyBundle) -> str:
    """sha256 of the canonical JSON; shown in status and carried by the pod template."""
    return "sha256:" + hashlib.sha256(canonical_json(bundle).encode()).hexdigest()


def parse_bundle(text: str | bytes) -> PolicyBundle:
    """Parse a bundle file; raises pydantic.ValidationError (or ValueError for bad JSON)."""
    return PolicyBundle.model_validate_json(text)
