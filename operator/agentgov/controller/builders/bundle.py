"""Compile an AgentDeployment and what it references into the policy bundle its sidecar enforces.

Everything is resolved here so the sidecar decides without defaults of its own: the shipped
roles merged with the ToolPolicy's, each tool's guards filled from the policy's ``defaults``,
each budget's daily limit derived and prices merged with the shipped ones, the shipped
residency rules merged with the RegionPolicy's, model routes' upstream names defaulted.
Secrets appear only as references (``SecretFile``: Secret name and key), never as values.

The AgentDeployment's ``generation`` is deliberately left out of the bundle: the bundle hash
rolls the pods, and scaling (which bumps the generation) must not. Pure; no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel

from agentgov.api import defaults as shipped
from agentgov.api.agentbudget import AgentBudgetSpec
from agentgov.api.agentdeployment import AuditSinks
from agentgov.api.base import SecretKeyRef
from agentgov.api.bundle import (
    AgentIdentity,
    BundleAuditSinks,
    BundleAuth,
    BundleBudget,
    BundleElasticsearchSink,
    BundleModelRoute,
    BundleS3Sink,
    BundleSidecar,
    BundleTool,
    PolicyBundle,
    Price,
    SecretFile,
)
from agentgov.api.quantity import quantity_bytes
from agentgov.api.regionpolicy import RegionPolicySpec
from agentgov.api.toolpolicy import CircuitBreaker, ToolPolicySpec
from agentgov.audit.sinks.settings import SinkConfigError, sinks_from_bundle
from agentgov.controller.builders.inputs import AnyResource, BuildError, Inputs, UnresolvedReferences
from agentgov.controller.builders.placement import allowed_regions

DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _same_namespace(obj: AnyResource, inputs: Inputs) -> bool:
    return obj.metadata.namespace in (None, inputs.namespace)


def _found_budget(inputs: Inputs, name: str) -> AnyResource | None:
    budget = inputs.budgets.get(name)
    if budget is None or budget.metadata.name != name or not _same_namespace(budget, inputs):
        return None
    return budget


def _found_policy(inputs: Inputs, obj: AnyResource | None, name: str | None) -> AnyResource | None:
    if obj is None or name is None or obj.metadata.name != name or not _same_namespace(obj, inputs):
        return None
    return obj


def missing_references(inputs: Inputs) -> list[str]:
    """``Kind namespace/name`` of each referenced budget or policy not among the inputs, in
    spec order: budgets (``budgetRefs`` order), then the tool policy, then the region policy."""
    spec, namespace = inputs.spec, inputs.namespace
    missing = [f"AgentBudget {namespace}/{name}" for name in spec.budget_refs if _found_budget(inputs, name) is None]
    if spec.tool_policy_ref and _found_policy(inputs, inputs.tool_policy, spec.tool_policy_ref) is None:
        missing.append(f"ToolPolicy {namespace}/{spec.tool_policy_ref}")
    if spec.region_policy_ref and _found_policy(inputs, inputs.region_policy, spec.region_policy_ref) is None:
        missing.append(f"RegionPolicy {namespace}/{spec.region_policy_ref}")
    return missing


def _secret_file(ref: SecretKeyRef | None) -> SecretFile | None:
    return None if ref is None else SecretFile(secret=ref.name, key=ref.key)


def url_port(url: str) -> int:
    """The TCP port a URL reaches: explicit, or the scheme's default; ValueError if invalid."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL with a host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is None:
        return DEFAULT_PORTS[parts.scheme]
    if not 1 <= port <= 65535:
        raise ValueError(f"{url!r}: the port must be a number from 1 to 65535")
    return port


def url_ip(url: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address when the URL's host is an IP literal, else None (a DNS name)."""
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_url(url: str, field: str, obj: str | None = None) -> str:
    try:
        url_port(url)
    except ValueError as error:
        raise BuildError(field, str(error), obj) from None
    return url


def _byte_size(text: str, field: str) -> int:
    try:
        return quantity_bytes(text)
    except ValueError as error:
        raise BuildError(field, str(error)) from None


def _audit_sinks(sinks: AuditSinks | None, stream: str) -> BundleAuditSinks | None:
    """The spec's audit sinks with credentials as mounted files, checked as the sidecar will."""
    if sinks is None:
        return None
    es, s3 = sinks.elasticsearch, sinks.s3
    compiled = BundleAuditSinks(
        stdout=sinks.stdout,
        elasticsearch=None if es is None else BundleElasticsearchSink(
            url=_check_url(es.url, "spec.audit.sinks.elasticsearch.url"), index_prefix=es.index_prefix,
            username=es.basic_auth.username if es.basic_auth else None,
            password_file=_secret_file(es.basic_auth.password_secret_ref) if es.basic_auth else None,
            api_key_file=_secret_file(es.api_key_secret_ref), ca_file=_secret_file(es.ca_secret_ref),
            flush_seconds=es.flush_seconds,
        ),
        s3=None if s3 is None else BundleS3Sink(
            bucket=s3.bucket, prefix=s3.prefix, region=s3.region,
            endpoint=_check_url(s3.endpoint, "spec.audit.sinks.s3.endpoint") if s3.endpoint else None,
            credentials_file=_secret_file(s3.credentials_secret_ref), window_seconds=s3.window_seconds,
            max_records=s3.max_records, object_lock_mode=s3.object_lock_mode,
        ),
    )
    try:
        sinks_from_bundle(compiled, stream=stream, source="pod")  # what the sidecar will refuse
    except SinkConfigError as error:
        raise BuildError(f"spec.{error.setting}", error.message) from None
    return compiled


def compile_bundle(inputs: Inputs) -> PolicyBundle:
    """The bundle the agent's sidecar enforces. Raises UnresolvedReferences when a referenced
    budget or policy is missing, BuildError for a spec that can never work."""
    missing = missing_references(inputs)
    if missing:
        raise UnresolvedReferences(missing)
    spec, namespace = inputs.spec, inputs.namespace

    auth = spec.auth
    bundle_auth = BundleAuth(
        issuer=auth.issuer,
        audiences=list(auth.audiences),
        algorithms=list(auth.algorithms),
        jwks_url=_check_url(auth.jwks_url, "spec.auth.jwksUrl") if auth.jwks_url else None,
        key_file=_secret_file(auth.key_secret_ref),
        leeway_seconds=auth.leeway_seconds,
    )

    models = [
        BundleModelRoute(
            name=route.name,
            provider=route.provider,
            endpoint=_check_url(route.endpoint, f"spec.models[{index}].endpoint"),
            upstream_model=route.upstream_model or route.name,
            credentials_file=_secret_file(route.credentials_secret_ref),
            circuit_breaker=route.circuit_breaker or CircuitBreaker(),
            fallbacks=list(route.fallbacks),
        )
        for index, route in enumerate(spec.models)
    ]

    budgets = []
    for name in spec.budget_refs:
        budget = _found_budget(inputs, name)
        assert budget is not None
        budget_spec = budget.spec
        assert isinstance(budget_spec, AgentBudgetSpec)
        label = f"AgentBudget {namespace}/{name}"
        webhook = budget_spec.webhook
        budgets.append(
            BundleBudget(
                name=name,
                users=list(budget_spec.subjects.users),
                agents=list(budget_spec.subjects.agents),
                teams=list(budget_spec.subjects.teams),
                scope=budget_spec.scope,
                monthly_usd=budget_spec.limits.monthly_usd,
                daily_usd=budget_spec.limits.effective_daily_usd,
                alert_thresholds=list(budget_spec.alert_thresholds),
                enforcement=budget_spec.enforcement,
                failure_policy=budget_spec.failure_policy,
                pricing={
                    model: Price(input_per_1k=prices[0], output_per_1k=prices[1])
                    for model, prices in budget_spec.effective_pricing().items()
                },
                webhook_url=_check_url(webhook.url, "spec.webhook.url", label) if webhook else None,
                webhook_key_file=_secret_file(webhook.secret_ref) if webhook else None,
            )
        )

    roles = {name: list(perms) for name, perms in shipped.DEFAULT_ROLES.items()}
    tools: list[BundleTool] = []
    default_tool_action: Literal["Deny", "Allow"] = "Deny"
    tool_policy = _found_policy(inputs, inputs.tool_policy, spec.tool_policy_ref)
    if tool_policy is not None:
        policy = tool_policy.spec
        assert isinstance(policy, ToolPolicySpec)
        label = f"ToolPolicy {namespace}/{tool_policy.metadata.name}"
        roles = {name: list(perms) for name, perms in policy.effective_roles().items()}
        default_tool_action = policy.default_action
        defaults = policy.defaults
        tools = [
            BundleTool(
                name=tool.name,
                upstream=_check_url(tool.upstream, f"spec.tools[{index}].upstream", label),
                permission=tool.permission,
                scopes=list(tool.scopes),
                methods=list(tool.methods),
                timeout_seconds=tool.timeout_seconds or defaults.timeout_seconds,
                rate_limit=tool.rate_limit or defaults.rate_limit,
                circuit_breaker=tool.circuit_breaker or defaults.circuit_breaker,
                fallback=tool.fallback,
                credentials_file=_secret_file(tool.credentials_secret_ref),
            )
            for index, tool in enumerate(policy.tools)
        ]

    region_policy = _found_policy(inputs, inputs.region_policy, spec.region_policy_ref)
    regions, rules, default_region = [], [], None
    if region_policy is not None:
        region_spec = region_policy.spec
        assert isinstance(region_spec, RegionPolicySpec)
        label = f"RegionPolicy {namespace}/{region_policy.metadata.name}"
        for index, region in enumerate(region_spec.regions):
            _check_url(region.endpoint, f"spec.regions[{index}].endpoint", label)
        allowed_regions(inputs)  # an agent whose data no region may hold can never run
        regions = list(region_spec.regions)
        rules = list(region_spec.effective_rules())
        default_region = region_spec.default_region

    max_body_bytes = _byte_size(spec.sidecar.max_body_bytes, "spec.sidecar.maxBodyBytes")
    if max_body_bytes < 1:
        raise BuildError("spec.sidecar.maxBodyBytes", "must be at least 1 byte")
    _byte_size(spec.cache.max_bytes, "spec.cache.maxBytes")  # checked only: the bundle carries the text

    return PolicyBundle(
        agent=AgentIdentity(name=inputs.name, namespace=namespace),
        data_classes=list(spec.data_classes),
        auth=bundle_auth,
        roles=roles,
        tools=tools,
        default_tool_action=default_tool_action,
        models=models,
        budgets=budgets,
        regions=regions,
        routing_rules=rules,
        default_region=default_region,
        cache=spec.cache,
        audit=spec.audit.model_copy(update={"sinks": None}),
        audit_sinks=_audit_sinks(spec.audit.sinks, f"{namespace}/{inputs.name}"),
        sidecar=BundleSidecar(
            agent_port=spec.port,
            max_body_bytes=max_body_bytes,
            upstream_timeout_seconds=spec.sidecar.upstream_timeout_seconds,
        ),
    )


def _secret_files_in(value: object) -> Iterator[SecretFile]:
    if isinstance(value, SecretFile):
        yield value
    elif isinstance(value, BaseModel):
        for field in type(value).model_fields:
            yield from _secret_files_in(getattr(value, field))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _secret_files_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secret_files_in(item)


def mounted_secrets(bundle: PolicyBundle) -> dict[str, list[str]]:
    """Secret name -> the keys the sidecar reads from it, both sorted: every ``SecretFile`` in
    the bundle (auth keys, model and tool credentials, webhook keys), found by walking the whole
    bundle, so a ``SecretFile`` field added to the contract is mounted without a change here."""
    keys: dict[str, set[str]] = {}
    for file in _secret_files_in(bundle):
        keys.setdefault(file.secret, set()).add(file.key)
    return {name: sorted(keys[name]) for name in sorted(keys)}


def upstream_urls(bundle: PolicyBundle) -> list[str]:
    """Every URL the sidecar may call: models, tools, regions, the JWKS endpoint, webhooks, audit sinks."""
    urls = [route.endpoint for route in bundle.models]
    urls += [tool.upstream for tool in bundle.tools]
    urls += [region.endpoint for region in bundle.regions]
    if bundle.auth.jwks_url:
        urls.append(bundle.auth.jwks_url)
    urls += [budget.webhook_url for budget in bundle.budgets if budget.webhook_url]
    sinks = bundle.audit_sinks
    if sinks is not None and sinks.elasticsearch is not None:
        urls.append(sinks.elasticsearch.url)
    if sinks is not None and sinks.s3 is not None:
        # Without an endpoint: AWS's regional S3 endpoint (a DNS name, so any address on 443).
        region = sinks.s3.region
        urls.append(sinks.s3.endpoint or (f"https://s3.{region}.amazonaws.com" if region else "https://s3.amazonaws.com"))
    return urls
