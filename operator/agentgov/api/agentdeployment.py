"""AgentDeployment (``agd``): one governed AI agent.

The user's agent image runs beside the agentgov sidecar, which authenticates callers,
authorizes them, meters and caps model spend, guards tool calls and writes the audit log.
The spec names the image and how it scales and is reached, how callers authenticate, which
model routes it may use, and which budgets and policies govern it. No I/O here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agentgov.api.toolpolicy import CircuitBreaker
from agentgov.api.base import (
    DataClass,
    DNSLabel,
    Duration,
    HttpUrl,
    Model,
    ObjectName,
    Quantity,
    ResourceStatus,
    Rule,
    SecretKeyRef,
    NAMED_LIST,
    unique_names_rule,
)

EnvName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")]


class ConfigMapKeyRef(Model):
    """A key of a ConfigMap in the same namespace."""

    name: ObjectName = Field(description="Name of the ConfigMap.")
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key within the ConfigMap.")


class EnvVarSource(Model):
    """Where an environment variable's value comes from."""

    secret_key_ref: SecretKeyRef | None = Field(None, description="A key of a Secret.")
    config_map_key_ref: ConfigMapKeyRef | None = Field(None, description="A key of a ConfigMap.")

    cel_rules = (
        Rule(
            cel="has(self.secretKeyRef) != has(self.configMapKeyRef)",
            message="exactly one of secretKeyRef or configMapKeyRef is required",
            check=lambda m: (m.secret_key_ref is None) != (m.config_map_key_ref is None),
        ),
    )


class EnvVar(Model):
    """An environment variable of the agent container."""

    name: EnvName = Field(description="Variable name.")
    value: str | None = Field(None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = Field(None, description="Value taken from a Secret or ConfigMap.")

    cel_rules = (
        Rule(
            cel="!(has(self.value) && has(self.valueFrom))",
            message="value and valueFrom are mutually exclusive",
            check=lambda m: not (m.value is not None and m.value_from is not None),
        ),
    )


class ResourceList(Model):
    """CPU and memory quantities."""

    cpu: Quantity | None = Field(None, description="CPU, e.g. 500m.")
    memory: Quantity | None = Field(None, description="Memory, e.g. 512Mi.")


class Resources(Model):
    """Compute requests and limits of a container."""

    requests: ResourceList | None = Field(None, description="Guaranteed resources.")
    limits: ResourceList | None = Field(None, description="Maximum resources.")


class Autoscaling(Model):
    """Horizontal pod autoscaling (autoscaling/v2). When enabled the HPA owns the replica count."""

    enabled: bool = Field(False, description="Create a HorizontalPodAutoscaler.")
    min_replicas: int = Field(3, ge=1, le=1000, description="Lower bound of replicas.")
    max_replicas: int = Field(10, ge=1, le=1000, description="Upper bound of replicas.")
    target_cpu_utilization_percent: int = Field(70, ge=1, le=100, description="Average CPU utilization target.")
    target_memory_utilization_percent: int = Field(80, ge=1, le=100, description="Average memory utilization target.")

    cel_rules = (
        Rule(
            cel="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            check=lambda m: m.min_replicas <= m.max_replicas,
            field_path=".minReplicas",
        ),
    )


class IngressTLS(Model):
    """TLS for the ingress."""

    secret_name: ObjectName = Field(description="Secret holding the certificate (cert-manager fills it when an issuer is set).")


class Ingress(Model):
    """An Ingress in front of the sidecar's inbound port."""

    enabled: bool = Field(False, description="Create an Ingress.")
    host: str | None = Field(
        None,
        max_length=253,
        pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="Host name served, e.g. research.agents.example.com.",
    )
    class_name: str | None = Field(None, max_length=253, description="IngressClass name, e.g. nginx.")
    tls: IngressTLS | None = Field(None, description="Serve TLS with this certificate Secret.")
    cluster_issuer: str | None = Field(
        None, max_length=253, description="cert-manager ClusterIssuer that issues the certificate."
    )
    requests_per_minute: int = Field(
        100, ge=1, le=1_000_000, description="Rate limit per client address at the ingress controller."
    )

    cel_rules = (
        Rule(
            cel="!self.enabled || has(self.host)",
            message="an enabled ingress needs a host",
            check=lambda m: not m.enabled or m.host is not None,
            field_path=".host",
        ),
    )


JwtAlgorithm = Literal["HS256", "RS256", "ES256", "EdDSA"]


class Auth(Model):
    """How the sidecar authenticates callers (JWT bearer tokens)."""

    issuer: str = Field(min_length=1, max_length=2048, description="Required `iss` claim, matched exactly.")
    audiences: list[Annotated[str, Field(min_length=1, max_length=2048)]] = Field(
        min_length=1, max_length=16, description="Accepted `aud` values; the token must carry one of them."
    )
    algorithms: list[JwtAlgorithm] = Field(
        default_factory=lambda: list[JwtAlgorithm](["RS256"]),
        min_length=1,
        max_length=4,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Accepted signing algorithms. HS256 cannot be combined with the others.",
    )
    jwks_url: HttpUrl | None = Field(None, description="JWKS endpoint of the issuer (asymmetric algorithms).")
    key_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding the HMAC key (HS256, at least 32 bytes) or PEM public keys."
    )
    leeway_seconds: int = Field(30, ge=0, le=300, description="Clock skew tolerated for exp, nbf and iat.")

    cel_rules = (
        Rule(
            cel="has(self.jwksUrl) != has(self.keySecretRef)",
            message="exactly one of jwksUrl or keySecretRef is required",
            check=lambda m: (m.jwks_url is None) != (m.key_secret_ref is None),
        ),
        Rule(
            cel="!('HS256' in self.algorithms) || size(self.algorithms) == 1",
            message="HS256 cannot be combined with asymmetric algorithms",
            check=lambda m: "HS256" not in m.algorithms or len(m.algorithms) == 1,
            field_path=".algorithms",
        ),
        Rule(
            cel="!('HS256' in self.algorithms) || has(self.keySecretRef)",
            message="HS256 needs keySecretRef (a JWKS URL never serves shared keys)",
            check=lambda m: "HS256" not in m.algorithms or m.key_secret_ref is not None,
            field_path=".keySecretRef",
        ),
    )


class ModelRoute(Model):
    """A model name the agent may request, and the upstream serving it."""

    name: str = Field(min_length=1, max_length=253, description="Model name the agent asks for, e.g. gpt-4o.")
    provider: Literal["OpenAI", "AzureOpenAI", "Anthropic", "OpenAICompatible"] = Field(
        "OpenAICompatible", description="Upstream API flavour."
    )
    endpoint: HttpUrl = Field(description="Upstream base URL, e.g. https://api.openai.com/v1.")
    upstream_model: str | None = Field(
        None, max_length=253, description="Model name sent upstream; defaults to `name`."
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding the upstream API key; never visible to the agent."
    )
    # No server-side default inside a list item (client-side `kubectl apply` would re-send the
    # list every time); the shipped breaker settings apply when absent.
    circuit_breaker: CircuitBreaker | None = Field(
        None, description="When to stop calling this upstream and when to retry it; the shipped settings when absent."
    )
    fallbacks: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        max_length=8,
        description="Models (names of other routes) tried in order when this one's breaker is open or it fails.",
    )


class VaultSource(Model):
    """A key of a HashiCorp Vault KV v2 secret."""

    path: str = Field(min_length=1, max_length=1024, description="Secret path under the mount, e.g. agents/research.")
    key: str = Field(min_length=1, max_length=253, description="Key within the secret.")


class AwsSource(Model):
    """A key of an AWS Secrets Manager secret (JSON), or the whole string when key is absent."""

    name: str = Field(min_length=1, max_length=2048, description="Secret name or ARN.")
    key: str | None = Field(None, max_length=253, description="JSON key within the secret string.")


class AzureSource(Model):
    """An Azure Key Vault secret."""

    vault: str = Field(min_length=3, max_length=24, pattern=r"^[a-zA-Z][a-zA-Z0-9-]*$", description="Key Vault name.")
    name: str = Field(min_length=1, max_length=127, pattern=r"^[a-zA-Z0-9-]+$", description="Secret name.")


class SecretSource(Model):
    """A secret injected into the agent, materialised into a Secret owned by the AgentDeployment."""

    name: EnvName = Field(description="Environment variable (and file) name the agent sees.")
    secret_key_ref: SecretKeyRef | None = Field(None, description="From a Kubernetes Secret.")
    vault: VaultSource | None = Field(None, description="From HashiCorp Vault (KV v2).")
    aws: AwsSource | None = Field(None, description="From AWS Secrets Manager.")
    azure: AzureSource | None = Field(None, description="From Azure Key Vault.")
    refresh_interval: Duration = Field("1h", description="How often the value is re-read from its source.")
    # No server-side default inside a list item (client-side `kubectl apply` would re-send the
    # list every time): absent means true.
    expose_to_agent: bool | None = Field(
        None,
        description=(
            "Inject the value into the agent container as an environment variable (the default). false keeps it "
            "out of the agent: only materialised into <agent>-secrets, for the sidecar to read "
            "(e.g. an audit sink's credentials: passwordSecretRef {name: <agent>-secrets, key: NAME})."
        ),
    )

    cel_rules = (
        Rule(
            cel="[has(self.secretKeyRef), has(self.vault), has(self.aws), has(self.azure)]"
            ".filter(x, x).size() == 1",
            message="exactly one of secretKeyRef, vault, aws or azure is required",
            check=lambda m: sum(s is not None for s in (m.secret_key_ref, m.vault, m.aws, m.azure)) == 1,
        ),
        Rule(
            cel="!has(self.secretKeyRef) || !has(self.exposeToAgent) || self.exposeToAgent",
            message="only vault, aws and azure sources may set exposeToAgent to false (a secretKeyRef is used where it is)",
            check=lambda m: m.secret_key_ref is None or m.expose_to_agent is not False,
        ),
    )


class Cache(Model):
    """Response cache for model calls (in-process L1, Redis L2)."""

    enabled: bool = Field(True, description="Cache model responses.")
    ttl_seconds: int = Field(3600, ge=1, le=30 * 86400, description="How long an answer stays cached.")
    max_entries: int = Field(10_000, ge=1, le=10_000_000, description="L1 entries per sidecar.")
    max_bytes: Quantity = Field("64Mi", description="L1 size per sidecar.")
    share_across_users: bool = Field(
        False, description="Let users of this agent share answers (never across agents)."
    )
    non_deterministic: bool = Field(
        False, description="Also cache requests with temperature above 0."
    )


class Audit(Model):
    """The sidecar's audit log."""

    enabled: bool = Field(True, description="Write audit records (tamper-evident hash chain).")
    include_bodies: bool = Field(False, description="Record request and response bodies (may hold personal data).")
    retention_days: int = Field(365, ge=1, le=3650, description="Days records are kept.")
    sinks: AuditSinks | None = Field(
        None, description="Where copies of the audit log are shipped; the local file is always written first."
    )


# An http(s) URL without credentials, query or fragment (credentials come from Secrets).
SinkUrl = Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s/@?#]+(/[^\s?#]*)?$")]
ObjectLockMode = Literal["GOVERNANCE", "COMPLIANCE", "Off"]


class ElasticsearchBasicAuth(Model):
    """Basic authentication to Elasticsearch or OpenSearch."""

    username: str = Field(min_length=1, max_length=256, pattern=r"^[^\s:]+$", description="The user records are written as.")
    password_secret_ref: SecretKeyRef = Field(description="Secret key holding the user's password.")


class ElasticsearchAuditSink(Model):
    """Elasticsearch or OpenSearch: one document per record (its id the record's hash), one index per day."""

    url: SinkUrl = Field(description="Base URL of the cluster, e.g. https://es.example:9200; never with credentials.")
    index_prefix: str = Field(
        "agentgov-audit", min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9._-]*$",
        description="Records go to `<indexPrefix>-YYYY.MM.DD` (the record's UTC day); also the index template's name.",
    )
    basic_auth: ElasticsearchBasicAuth | None = Field(None, description="Basic authentication (or apiKeySecretRef).")
    api_key_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding an API key (its base64 `encoded` form), instead of basicAuth."
    )
    ca_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding the PEM CA bundle of the cluster's certificate; the system's CAs when absent."
    )
    flush_seconds: int = Field(5, ge=1, le=3600, description="Longest a record waits to share a bulk request with others.")


class S3AuditSink(Model):
    """S3 or an S3-compatible store: one gzipped JSON lines object per time window, object-locked when the bucket allows."""

    bucket: str = Field(
        min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", description="Bucket name."
    )
    prefix: str = Field(
        "agentgov-audit", max_length=256, pattern=r"^([A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*)?$",
        description="Key prefix: objects are `<prefix>/<namespace>/<agent>/<pod>/YYYY/MM/DD/<first seq>-<last seq>-<hash>.jsonl.gz`.",
    )
    region: str | None = Field(None, max_length=32, pattern=r"^[a-z0-9-]+$", description="AWS region of the bucket.")
    endpoint: SinkUrl | None = Field(None, description="An S3-compatible endpoint or VPC endpoint; AWS's when absent.")
    credentials_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding an AWS shared-credentials file ([default] profile); the pod's identity "
        "(IRSA, EKS pod identity) when absent.",
    )
    window_seconds: int = Field(300, ge=1, le=86400, description="One object per this many seconds of records (UTC-aligned).")
    max_records: int = Field(10000, ge=1, le=100000, description="An object is closed early when it holds this many records.")
    object_lock_mode: ObjectLockMode = Field(
        "GOVERNANCE",
        description="Retention set on each object (until the end of the latest `retain_until` day of its records) "
        "when the bucket has Object Lock enabled; COMPLIANCE: nobody can shorten it; Off: the bucket's default rule only.",
    )


class AuditSinks(Model):
    """Remote copies of the audit log. The local file is the spool: a sink that is down falls behind and catches up."""

    stdout: bool = Field(False, description="Also write each record as a JSON line to the sidecar's standard output.")
    elasticsearch: ElasticsearchAuditSink | None = Field(None, description="Ship records to Elasticsearch or OpenSearch.")
    s3: S3AuditSink | None = Field(None, description="Ship records to S3 in batches per time window.")


class NetworkPolicy(Model):
    """The NetworkPolicy isolating the agent pod."""

    enabled: bool = Field(True, description="Allow ingress only to the sidecar and egress only to what policies name.")
    extra_egress_cidrs: list[Annotated[str, Field(max_length=64, pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")]] = Field(
        default_factory=list, max_length=64, description="Additional egress destinations (CIDR)."
    )


class SidecarOverrides(Model):
    """Per-agent settings of the injected sidecar."""

    resources: Resources | None = Field(None, description="Requests and limits of the sidecar container.")
    max_body_bytes: Quantity = Field("10Mi", description="Largest request body accepted inbound.")
    upstream_timeout_seconds: int = Field(300, ge=1, le=3600, description="Timeout of calls to the agent and models.")


class AgentDeploymentSpec(Model):
    """Desired state of an AgentDeployment."""

    image: str = Field(min_length=1, max_length=1024, description="Container image of the agent.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy; Kubernetes' default when absent."
    )
    command: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=64, description="Entrypoint override."
    )
    args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=256, description="Arguments to the entrypoint."
    )
    port: int = Field(8000, ge=1, le=65535, description="Port the agent listens on, on 127.0.0.1 inside the pod.")
    env: list[EnvVar] = Field(default_factory=list, max_length=256, json_schema_extra=NAMED_LIST, description="Agent environment variables.")
    resources: Resources | None = Field(None, description="Requests and limits of the agent container.")
    replicas: int = Field(1, ge=0, le=1000, description="Pod count when autoscaling is off.")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="Horizontal autoscaling.")
    ingress: Ingress = Field(default_factory=Ingress, description="External access.")
    auth: Auth = Field(description="Caller authentication.")
    models: list[ModelRoute] = Field(default_factory=list, max_length=64, json_schema_extra=NAMED_LIST, description="Model routes the agent may use.")
    budget_refs: list[DNSLabel] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="AgentBudgets (same namespace) that govern this agent's spend.",
    )
    tool_policy_ref: DNSLabel | None = Field(None, description="ToolPolicy (same namespace); no tools when absent.")
    region_policy_ref: DNSLabel | None = Field(None, description="RegionPolicy (same namespace).")
    data_classes: list[DataClass] = Field(
        default_factory=lambda: list[DataClass](["internal"]),
        max_length=5,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Data classes the agent handles; they decide where it may run and which models it may reach.",
    )
    cache: Cache = Field(default_factory=Cache, description="Model response cache.")
    secrets: list[SecretSource] = Field(default_factory=list, max_length=64, json_schema_extra=NAMED_LIST, description="Secrets injected into the agent.")
    audit: Audit = Field(default_factory=Audit, description="Audit log settings.")
    network_policy: NetworkPolicy = Field(default_factory=NetworkPolicy, description="Network isolation.")
    sidecar: SidecarOverrides = Field(default_factory=SidecarOverrides, description="Sidecar settings.")

    cel_rules = (
        unique_names_rule("models", "models", "model route"),
        Rule(
            cel="!has(self.models) || self.models.all(m, !has(m.fallbacks) || "
            "m.fallbacks.all(f, f != m.name && self.models.exists(o, o.name == f)))",
            message="a model's fallbacks must name other model routes of this agent",
            check=lambda m: all(
                f != route.name and any(o.name == f for o in m.models) for route in m.models for f in route.fallbacks
            ),
            field_path=".models",
        ),
        unique_names_rule("secrets", "secrets", "secret"),
        unique_names_rule("env", "env", "environment variable"),
    )


SecretSyncReason = Literal["ProviderUnavailable", "PermissionDenied", "NotFound", "ProviderNotConfigured", "ProviderMisconfigured"]
Timestamp = Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})]
SecretRequestId = Annotated[str, Field(max_length=80)]


class SecretSyncStatus(Model):
    """How one Vault, AWS or Azure entry of `spec.secrets` was last read. Never a value."""

    name: EnvName = Field(description="The entry of `spec.secrets` (the variable name).")
    source: str = Field(max_length=2400, description="Where it is read from: `vault:PATH#KEY`, `aws:NAME[#KEY]`, `azure:VAULT/NAME`.")
    version: str | None = Field(None, max_length=256, description="The provider's version id of the value in `<agent>-secrets`.")
    synced_at: Timestamp | None = Field(None, description="When the value was last read successfully.")
    last_rotated_at: Timestamp | None = Field(None, description="When the operator last rotated it (wrote a new version).")
    reason: SecretSyncReason | None = Field(None, description="Why the last read failed (absent after a good read).")
    message: str | None = Field(None, max_length=4096, description="What failed, naming the provider and the source; never a value.")
    failed_at: Timestamp | None = Field(None, description="When the last read failed (the next try backs off from here).")
    failures: int | None = Field(None, ge=0, description="Failed reads in a row since the last good one.")


class SecretRequestStatus(Model):
    """Fields shared by the outcome of a rotation and of a refresh request."""

    request: SecretRequestId = Field(description="The request id from the annotation (a digest of the value when it did not parse).")
    result: Literal["Succeeded", "Failed", "Invalid"] = Field(description="Succeeded, Failed (see `failed`) or Invalid (nothing done).")
    at: Timestamp = Field(description="When the request was handled.")
    message: str | None = Field(None, max_length=4096, description="What went wrong, naming the annotation or the secrets.")
    failed: list[EnvName] = Field(
        default_factory=list, max_length=64, description="Secrets it could not do (why: their entry in `secrets`)."
    )


class SecretsRotationStatus(SecretRequestStatus):
    """The last `agentgov.io/rotate-secrets` request handled (each request id is handled once)."""

    rotated: list[EnvName] = Field(default_factory=list, max_length=64, description="Secrets given a new value.")


class SecretsRefreshStatus(SecretRequestStatus):
    """The last `agentgov.io/refresh-secrets` request handled (each request id is handled once)."""

    refreshed: list[EnvName] = Field(default_factory=list, max_length=64, description="Secrets re-read from their source.")


class AgentDeploymentStatus(ResourceStatus):
    """Observed state, written by the operator."""

    replicas: int | None = Field(None, ge=0, description="Pods of the agent's Deployment.")
    ready_replicas: int | None = Field(None, ge=0, description="Pods ready to serve.")
    selector: str | None = Field(None, max_length=4096, description="Label selector of the pods (for the scale subresource).")
    policy_bundle_hash: str | None = Field(
        None, max_length=128, description="Hash of the policy bundle the sidecars enforce."
    )
    budget_percent_used: int | None = Field(
        None, ge=0, description="Highest percent used among the agent's budgets."
    )
    secrets: list[SecretSyncStatus] | None = Field(
        None, max_length=64, json_schema_extra=NAMED_LIST,
        description="The Vault, AWS and Azure entries of `spec.secrets`, as last read into `<agent>-secrets`.",
    )
    secrets_rotation: SecretsRotationStatus | None = Field(
        None, description="The last rotation requested with the `agentgov.io/rotate-secrets` annotation."
    )
    secrets_refresh: SecretsRefreshStatus | None = Field(
        None, description="The last re-read requested with the `agentgov.io/refresh-secrets` annotation."
    )
