"""kopf handlers: thin wiring from Kubernetes events to ``reconcile``.

Run with ``kopf run -m agentgov.controller.handlers`` (what ``agentgov operator`` does).
AgentDeployments are reconciled on create, update, resume and a timer (drift repair), and
when their Deployment changes. AgentBudgets, ToolPolicies and RegionPolicies are kept in kopf
indexes; an event on one re-reconciles every AgentDeployment that references it (found in
an index of references, never by listing). No handler returns a value (it would land in
status), none has a deletion handler (so no finalizer ever blocks deletion: children go with
their owner through ownerReferences), and kopf's bookkeeping lives in annotations under
``agentgov.io/``.

AgentBudget status also carries spend: a daemon per budget reads the spend store (Redis, every
``AGENTGOV_BUDGET_STATUS_INTERVAL_SECONDS``), ``budgetstatus.budget_status`` decides, and the
daemon writes status only when it changed, then posts the alert Events. A policy's status has
two writers (its event handler and, for budgets, the daemon): both hold one lock per object and
start from a fresh read, and the write carries the resourceVersion it was computed from. The
periodic work (agent resync, budget spend) runs in kopf daemons, not timers, so its period
comes from the configuration read at startup (a timer's interval is fixed at import).

The login handler gives kopf the session it would build itself, traced so that
``liveness.WatchVitals`` sees the API server answer each watch.

Secrets (``secretsync``): the reconcile syncs an agent's Vault, AWS and Azure secrets through
one ``ProviderRegistry`` built at startup (closed at cleanup); the resync daemon also wakes when
the earliest of them falls due; rotation and refresh requests arrive as annotations under
``agentgov.io/``, which kopf leaves out of the diffs that fire update handlers, so an event
handler watches for a request the status has not recorded yet.

The operator's audit log (``audit_events``): agents' create and update causes and the watch
events of agents and policies become audit records in their own handlers (id ``audit``), and a
reconcile newly stalled by a data-class refusal becomes a ``permission.denied`` record.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import logging
import secrets
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

import kopf
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from agentgov.api import spendstore
from agentgov.api.agentbudget import AgentBudgetSpec
from agentgov.api.resources import ManifestError, parse_object
from agentgov.controller import budgetstatus, liveness, metrics, secretsync
from agentgov.controller import status as kstatus
from agentgov.controller import audit_events
from agentgov.controller.config import OperatorConfig
from agentgov.controller.kube import Conflict, Connection, KubeApi, KubeError, TransientError, object_path
from agentgov.controller.reconcile import Lookups, Result, deployment_state, reconcile_agent
from agentgov.secrets.registry import ProviderRegistry
from agentgov.audit.errors import AuditConfigError

GROUP, VERSION = "agentgov.io", "v1alpha1"
MEMO_API = "agentgov_api"
MEMO_CONFIG = "agentgov_config"
MEMO_LAST_RUN = "agentgov_last_reconcile"  # uid -> monotonic time of the last reconcile
MEMO_LOCKS = "agentgov_reconcile_locks"  # (namespace, name) -> lock: one reconcile of an agent at a time
MEMO_DEPLOYMENTS = "agentgov_seen_deployments"  # Deployment uid -> state the last reconcile saw
MEMO_POLICIES = "agentgov_fanned_out"  # (kind, namespace, name) -> generation last fanned out
MEMO_STATUS_LOCKS = "agentgov_status_locks"  # (kind, namespace, name) -> lock: one status writer at a time
MEMO_SPEND_STORE = "agentgov_spend_store"  # redis.asyncio.Redis, or None when AGENTGOV_REDIS_URL is unset
MEMO_VITALS = "agentgov_watch_vitals"  # liveness.WatchVitals (given by `agentgov operator`, else made at startup)
MEMO_STOPPING = "agentgov_stopping"  # asyncio.Event set at cleanup: daemons started late still exit
MEMO_SECRETS = "agentgov_secrets"  # secretsync.SecretsContext: the secret providers and their timeout
MEMO_SECRETS_DUE = "agentgov_secrets_due"  # uid -> time.time() when the agent's next secret read falls due
FAN_OUT_CONCURRENCY = 8
# The resync loop checks whether an agent is due every min(AGENTGOV_RESYNC_SECONDS, 10 s).
MAX_RESYNC_TICK_SECONDS = 10.0


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
async def startup(*, settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    config = OperatorConfig.from_env(os.environ)
    for unknown in OperatorConfig.unknown_variables(os.environ):
        logger.warning("ignoring %s: not an agentgov setting (a typo?)", unknown)
    settings.persistence.finalizer = "agentgov.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="agentgov.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="agentgov.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # Several replicas peer (--peering): kopf pauses every operator while peers of equal priority
    # are alive, so each replica takes its own; the highest serves, the others stand by.
    settings.peering.priority = secrets.randbelow(2**31)
    settings.peering.lifetime = config.peering_lifetime_seconds
    settings.watching.server_timeout = config.watch_timeout_seconds
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 8
    info = kopf.login_via_client(logger=logger, settings=settings)
    if info is None:
        raise kopf.PermanentError("no Kubernetes credentials: neither in-cluster nor a kubeconfig")
    memo[MEMO_API] = KubeApi(Connection.from_kopf(info), timeout_seconds=config.handler_timeout_seconds)
    memo[MEMO_CONFIG] = config
    memo[MEMO_LAST_RUN] = {}
    memo[MEMO_LOCKS] = collections.defaultdict(asyncio.Lock)
    memo[MEMO_DEPLOYMENTS] = {}
    memo[MEMO_POLICIES] = {}
    memo[MEMO_STATUS_LOCKS] = collections.defaultdict(asyncio.Lock)
    memo[MEMO_SPEND_STORE] = _spend_store(config)
    if memo.get(MEMO_VITALS) is None:
        memo[MEMO_VITALS] = liveness.WatchVitals(config.stalled_watch_seconds)
    memo[MEMO_VITALS].start()
    memo[MEMO_STOPPING] = asyncio.Event()
    _start_secrets(memo, config)
    await _start_audit(memo, config)


def _spend_store(config: OperatorConfig) -> aioredis.Redis | None:
    """A client for the spend store; no connection is made until the first read."""
    if config.redis_url is None:
        return None
    return aioredis.Redis.from_url(
        config.redis_url.get_secret_value(),
        socket_timeout=config.redis_timeout_seconds,
        socket_connect_timeout=config.redis_timeout_seconds,
        retry=Retry(NoBackoff(), 0),  # a failed read waits for the next tick; no retries inside one
    )


@kopf.on.login()
async def login(*, settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger,
                **_: Any) -> kopf.AiohttpSession | None:
    """kopf's own credentials (kubeconfig or in-cluster), in a session whose watch answers are
    seen by the liveness check."""
    info = kopf.login_via_client(logger=logger, settings=settings)
    if info is None:
        return None
    vitals: liveness.WatchVitals | None = memo.get(MEMO_VITALS)
    return liveness.kopf_session(info, [vitals.trace_config()] if vitals is not None else [])


@kopf.on.cleanup()
async def cleanup(*, memo: kopf.Memo, **_: Any) -> None:
    if memo.get(MEMO_STOPPING) is not None:
        memo[MEMO_STOPPING].set()
    api = memo.get(MEMO_API)
    if api is not None:
        await api.close()
    store: aioredis.Redis | None = memo.get(MEMO_SPEND_STORE)
    if store is not None:
        await store.aclose()
    vitals: liveness.WatchVitals | None = memo.get(MEMO_VITALS)
    if vitals is not None:
        await vitals.stop()
    await _stop_secrets(memo)
    await _stop_audit(memo)


# --- indexes: the shared policies by (namespace, name), and who references what ----------

@kopf.index(GROUP, VERSION, "agentbudgets")
def budgets_index(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "default", name): _plain(body)}


@kopf.index(GROUP, VERSION, "toolpolicies")
def tool_policies_index(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "default", name): _plain(body)}


@kopf.index(GROUP, VERSION, "regionpolicies")
def region_policies_index(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "default", name): _plain(body)}


@kopf.index(GROUP, VERSION, "agentdeployments")
def references_index(*, namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str, str], str]:
    """(kind, namespace, referenced name) -> the referencing AgentDeployment's name."""
    refs: dict[tuple[str, str, str], str] = {}
    namespace = namespace or "default"
    for budget in spec.get("budgetRefs") or []:
        refs[("AgentBudget", namespace, budget)] = name
    if spec.get("toolPolicyRef"):
        refs[("ToolPolicy", namespace, spec["toolPolicyRef"])] = name
    if spec.get("regionPolicyRef"):
        refs[("RegionPolicy", namespace, spec["regionPolicyRef"])] = name
    return refs


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": dict(body.metadata),
            "spec": dict(body.spec)}


class _IndexView(Mapping[Any, Any]):
    """A kopf index as key -> the one object indexed under it; read on lookup, never copied
    (a reconcile looks up a few references, not every policy in the cluster)."""

    def __init__(self, index: kopf.Index[Any, Any]) -> None:
        self._index = index

    def __getitem__(self, key: Any) -> Any:
        for value in self._index[key]:
            return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _lookups(kwargs: Mapping[str, Any]) -> Lookups:
    return Lookups(
        budgets=_IndexView(kwargs["budgets_index"]),
        tool_policies=_IndexView(kwargs["tool_policies_index"]),
        region_policies=_IndexView(kwargs["region_policies_index"]),
    )


# --- AgentDeployment -------------------------------------------------------------------------

async def _reconcile(
    body: Mapping[str, Any], memo: kopf.Memo, logger: kopf.Logger, kwargs: Mapping[str, Any],
    unless_deployment: tuple[Any, ...] | None = None,
) -> None:
    """Reconcile the agent ``body`` names (only its namespace and name are used). Create/update,
    the timer, child events and policy fan-out may all fire for one agent: they queue on one
    lock, and each re-reads the agent first. ``unless_deployment``: skip when the last reconcile
    already saw the child Deployment in this state (the event was that reconcile's own write)."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta["name"]
    async with memo[MEMO_LOCKS][(namespace, name)]:
        if unless_deployment is not None and memo[MEMO_DEPLOYMENTS].get(unless_deployment[0]) == unless_deployment:
            return
        api: KubeApi = memo[MEMO_API]
        path = object_path(f"{GROUP}/{VERSION}", "AgentDeployment", namespace, name)
        try:
            fresh = await api.get(path)
        except KubeError as error:
            raise kopf.TemporaryError(str(error), delay=5) from None
        if fresh is None or (fresh.get("metadata") or {}).get("deletionTimestamp"):
            return
        await _reconcile_locked(fresh, memo, logger, kwargs)


async def _reconcile_locked(body: Mapping[str, Any], memo: kopf.Memo, logger: kopf.Logger, kwargs: Mapping[str, Any]) -> None:
    api: KubeApi = memo[MEMO_API]
    config: OperatorConfig = memo[MEMO_CONFIG]
    memo[MEMO_LAST_RUN][(body.get("metadata") or {}).get("uid")] = time.monotonic()
    try:
        with metrics.RECONCILE_SECONDS.time():
            result = await reconcile_agent(api, body, _lookups(kwargs), config, utc_now, secrets=memo.get(MEMO_SECRETS))
    except TransientError as error:
        metrics.RECONCILE_ERRORS.labels(error="transient").inc()
        raise kopf.TemporaryError(str(error), delay=5) from None
    except KubeError as error:
        metrics.RECONCILE_ERRORS.labels(error=type(error).__name__.lower()).inc()
        raise kopf.TemporaryError(str(error), delay=30) from None
    metrics.RECONCILES.labels(phase=result.outcome.phase, reason=result.outcome.reason).inc()
    if result.deployment is not None:
        state = deployment_state(result.deployment)
        memo[MEMO_DEPLOYMENTS][state[0]] = state
    for key, change in result.changes.items():
        if change != "unchanged":
            metrics.CHILD_WRITES.labels(kind=key.split("/")[0], change=change).inc()
    changed = {k: v for k, v in result.changes.items() if v != "unchanged"}
    if changed:
        # kopf.event, not kopf.info: settings.posting.level (WARNING, to keep kopf's own log
        # lines out of Events) makes kopf.info a no-op.
        kopf.event(cast(kopf.Body, body), type="Normal", reason="Reconciled",
                   message=", ".join(f"{k} {v}" for k, v in sorted(changed.items())))
    if result.outcome.phase == "Stalled" and result.status_written:
        kopf.warn(cast(kopf.Body, body), reason=result.outcome.reason, message=result.outcome.message)
    _audit_stalled(body, result, memo, kwargs)
    _report_secrets(body, result, memo)
    logger.debug("reconciled: %s (%s)", result.outcome.phase, result.outcome.reason)


@kopf.on.create(GROUP, VERSION, "agentdeployments", timeout=600, backoff=5)
@kopf.on.update(GROUP, VERSION, "agentdeployments", timeout=600, backoff=5)
@kopf.on.resume(GROUP, VERSION, "agentdeployments", timeout=600, backoff=5)
async def agent_changed(*, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    await _reconcile(body, memo, logger, kwargs)


async def _rest(stopped: kopf.DaemonStopped, memo: kopf.Memo, seconds: float) -> bool:
    """Sleep ``seconds``; True (stop looping) once the daemon is stopped or the operator stops.
    The second matters for a daemon kopf spawns from an event it was still processing while it
    stopped the others (kopf #1266): nothing else would stop that one."""
    stopping: asyncio.Event = memo[MEMO_STOPPING]
    if stopped or stopping.is_set():
        return True
    waits = {asyncio.ensure_future(stopped.wait(seconds)), asyncio.ensure_future(stopping.wait())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return bool(stopped) or stopping.is_set()


@kopf.daemon(GROUP, VERSION, "agentdeployments", cancellation_timeout=5)
async def agent_resync(*, stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                       **kwargs: Any) -> None:
    """Drift repair and status progress even when the CR did not change: a reconcile once
    ``AGENTGOV_RESYNC_SECONDS`` have passed since the last one (each tick only checks). A daemon
    rather than a kopf timer: a timer's interval is fixed when this module is imported, the
    daemon reads it from the configuration loaded at startup."""
    config: OperatorConfig = memo[MEMO_CONFIG]
    tick = min(config.resync_seconds, MAX_RESYNC_TICK_SECONDS)
    uid = body.metadata.uid
    memo[MEMO_LAST_RUN].setdefault(uid, time.monotonic())  # created or resumed just now
    while not await _rest(stopped, memo, _until_secrets_due(memo, uid, tick)):
        if time.monotonic() - memo[MEMO_LAST_RUN].get(uid, 0.0) < config.resync_seconds and not _secrets_due(memo, uid):
            continue
        try:
            await _reconcile(body, memo, logger, kwargs)
        except kopf.TemporaryError as error:
            logger.warning("resync failed, retried at the next tick: %s", error)


# --- secrets: providers, what a sync did, when it is due, requests by annotation -----------

SECRET_ACCESS_LOG = logging.getLogger("agentgov.secrets.access")


def _start_secrets(memo: kopf.Memo, config: OperatorConfig) -> None:
    """One provider registry for the operator's life: providers are built on first use."""
    memo[MEMO_SECRETS] = secretsync.SecretsContext(ProviderRegistry(config.secret_providers),
                                                   config.secrets_timeout_seconds)
    memo[MEMO_SECRETS_DUE] = {}


async def _stop_secrets(memo: kopf.Memo) -> None:
    context: secretsync.SecretsContext | None = memo.get(MEMO_SECRETS)
    if context is not None:
        await context.providers.close()


def _report_secrets(body: Mapping[str, Any], result: Result, memo: kopf.Memo) -> None:
    """After a reconcile: each secret read or rotation as a ``secret_access`` line (no value),
    the sync's Events, a Warning when ``SecretsSynced`` turns False, and when to come back."""
    sync = result.secrets
    if sync is None:
        return
    meta = body.get("metadata") or {}
    audit: audit_events.OperatorAudit | None = memo.get(MEMO_AUDIT)
    for access in sync.decision.access:
        SECRET_ACCESS_LOG.info("secret_access %s", json.dumps(access.as_record(), sort_keys=True))
        if audit is not None:
            audit.emit(audit_events.secret_access_event(access.agent, access.name, access.source, access.action,
                                                        access.result, access.code, access.version, time.time()))
    for event in sync.decision.events:
        kopf.event(cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message)
    conditions = (body.get("status") or {}).get("conditions") or []
    before: Mapping[str, Any] = next((c for c in conditions if c.get("type") == secretsync.CONDITION), {})
    condition = sync.decision.condition if sync.managed else None
    # A stalled agent has had its Warning (named by the Stalled reason); this one is for the
    # failures it runs through on a last good value.
    if (condition is not None and condition[0] == "False" and result.outcome.phase != "Stalled"
            and (before.get("status"), before.get("reason")) != condition[:2]):
        kopf.warn(cast(kopf.Body, body), reason=f"Secrets{condition[1]}", message=condition[2])
    due = sync.decision.next_due
    if due is None:
        memo[MEMO_SECRETS_DUE].pop(meta.get("uid"), None)
    else:
        memo[MEMO_SECRETS_DUE][meta.get("uid")] = due.timestamp()


def _secrets_due(memo: kopf.Memo, uid: str | None) -> bool:
    """Whether a secret of the agent has fallen due; taken off the list when it has, so a
    reconcile that fails is retried at the resync period (a success puts the next one back)."""
    due: float | None = memo.get(MEMO_SECRETS_DUE, {}).get(uid)
    if due is None or time.time() < due:
        return False
    memo[MEMO_SECRETS_DUE].pop(uid, None)
    return True


def _until_secrets_due(memo: kopf.Memo, uid: str | None, tick: float) -> float:
    """The daemon's next rest: its tick, or less when a secret of the agent falls due sooner."""
    due: float | None = memo.get(MEMO_SECRETS_DUE, {}).get(uid)
    if due is None:
        return tick
    return min(tick, max(due - time.time(), 0.1))


def _secrets_request_pending(body: kopf.Body, **_: Any) -> bool:
    return secretsync.has_pending_request(body)


@kopf.on.event(GROUP, VERSION, "agentdeployments", when=_secrets_request_pending)
async def secrets_requested(*, type: str, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """An ``agentgov.io/rotate-secrets`` or ``agentgov.io/refresh-secrets`` request the status has
    not recorded: reconcile now (kopf's update handlers never see ``agentgov.io/`` annotations)."""
    if type == "DELETED":
        return
    try:
        await _reconcile(body, memo, logger, kwargs)
    except kopf.TemporaryError as error:  # an event handler is not retried: the resync will be
        logger.warning("secrets request: reconcile failed, retried at the next resync: %s", error)


async def _reconcile_by_name(
    namespace: str | None, name: str, memo: kopf.Memo, logger: kopf.Logger, kwargs: Mapping[str, Any],
    unless_deployment: tuple[Any, ...] | None = None,
) -> None:
    await _reconcile({"metadata": {"namespace": namespace, "name": name}}, memo, logger, kwargs, unless_deployment)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "agentgov-operator"})
async def deployment_event(*, type: str, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """A child Deployment changed (rolled out, scaled, edited, deleted): reconcile its owner —
    unless the change is one the owner's last reconcile already saw (its own write)."""
    state = deployment_state(body) if type != "DELETED" else None
    if state is not None and memo[MEMO_DEPLOYMENTS].get(state[0]) == state:
        return
    for owner in body.metadata.get("ownerReferences") or []:
        if owner.get("kind") == "AgentDeployment" and owner.get("apiVersion", "").startswith(GROUP):
            await _reconcile_by_name(body.metadata.namespace, owner["name"], memo, logger, kwargs, state)


# --- shared policies: their own status, and fan-out to dependents --------------------------

async def _policy_event(kind: str, event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo,
                        logger: kopf.Logger, kwargs: Mapping[str, Any]) -> None:
    namespace, name = body.metadata.namespace, body.metadata.name
    key = (kind, namespace, name)
    if event.get("type") == "DELETED":
        memo[MEMO_POLICIES].pop(key, None)
    else:
        await _policy_status(kind, body, memo)
        generation = body.metadata.get("generation")
        if memo[MEMO_POLICIES].get(key) == generation:
            return  # a status or metadata change: nothing the agents' bundles depend on
        memo[MEMO_POLICIES][key] = generation
    dependents = sorted(set(kwargs["references_index"].get(key, [])))
    limit = asyncio.Semaphore(FAN_OUT_CONCURRENCY)

    async def one(agent: str) -> None:
        async with limit:
            await _reconcile_by_name(namespace, agent, memo, logger, kwargs)

    await asyncio.gather(*(one(agent) for agent in dependents))


def _policy_kstatus(kind: str, obj: Mapping[str, Any], current: Mapping[str, Any], now: str) -> dict[str, Any]:
    """``current`` with the kstatus of the policy ``obj`` (and its counts); other fields kept."""
    generation = (obj.get("metadata") or {}).get("generation")
    extra: dict[str, Any] = {}
    try:
        parsed = parse_object({k: obj.get(k) for k in ("apiVersion", "kind", "metadata", "spec")})
        spec: Any = parsed.spec
        if kind == "ToolPolicy":
            extra = {"tools": len(spec.tools), "roles": len(spec.effective_roles())}
        elif kind == "RegionPolicy":
            extra = {"regions": len(spec.regions), "onPremiseRegions": sum(r.on_premise for r in spec.regions)}
        outcome = kstatus.Outcome("Ready", "Valid", f"{kind} is valid and in force for the agents that reference it")
    except ManifestError as error:
        outcome = kstatus.Outcome("Stalled", "InvalidSpec", "; ".join(error.problems))
    return kstatus.updated_status(current, outcome, generation, now, extra)


async def _write_status(api: KubeApi, path: str, fresh: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    """Patch ``status`` over ``fresh``'s: fields it dropped are removed, and the write is refused
    (Conflict) if the object changed since ``fresh`` was read."""
    current = fresh.get("status") or {}
    patch: dict[str, Any] = {"status": {**{k: None for k in current if k not in status}, **status}}
    version = (fresh.get("metadata") or {}).get("resourceVersion")
    if version:
        patch["metadata"] = {"resourceVersion": version}
    await api.merge_patch(path + "/status", patch)


async def _policy_status(kind: str, body: kopf.Body, memo: kopf.Memo) -> None:
    api: KubeApi = memo[MEMO_API]
    namespace, name = body.metadata.namespace or "default", body.metadata.name
    path = object_path(f"{GROUP}/{VERSION}", kind, namespace, name)
    async with memo[MEMO_STATUS_LOCKS][(kind, namespace, name)]:
        for attempt in range(3):  # a conflict (someone wrote meanwhile, e.g. kopf's finalizer): read again
            try:
                fresh = await api.get(path)
                if fresh is None:
                    return
                current = fresh.get("status") or {}
                status = _policy_kstatus(kind, fresh, current, utc_now())
                if status != current:
                    await _write_status(api, path, fresh, status)
                return
            except Conflict as error:
                if attempt == 2:
                    raise kopf.TemporaryError(str(error), delay=5) from None
            except KubeError as error:
                raise kopf.TemporaryError(str(error), delay=5) from None


# --- AgentBudget spend ---------------------------------------------------------------------

@kopf.daemon(GROUP, VERSION, "agentbudgets", cancellation_timeout=5)
async def budget_status_loop(*, stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo,
                             logger: kopf.Logger, **_: Any) -> None:
    """Every ``AGENTGOV_BUDGET_STATUS_INTERVAL_SECONDS`` (from the configuration loaded at
    startup), the budget's spend into its status (``budget_status_once``)."""
    config: OperatorConfig = memo[MEMO_CONFIG]
    while not (stopped or memo[MEMO_STOPPING].is_set()):
        await budget_status_once(body, memo, logger)
        if await _rest(stopped, memo, config.budget_status_interval_seconds):
            return


async def budget_status_once(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger) -> None:
    """Spend today and this month from the spend store into the budget's status; alert Events.
    Never raises: whatever failed is retried at the next tick (a failing store shows in status)."""
    api: KubeApi = memo[MEMO_API]
    config: OperatorConfig = memo[MEMO_CONFIG]
    namespace, name = body.metadata.namespace or "default", body.metadata.name
    path = object_path(f"{GROUP}/{VERSION}", "AgentBudget", namespace, name)
    async with memo[MEMO_STATUS_LOCKS][("AgentBudget", namespace, name)]:
        try:
            fresh = await api.get(path)
        except KubeError as error:
            logger.warning("budget status: could not read the AgentBudget: %s", error)
            return
        if fresh is None or (fresh.get("metadata") or {}).get("deletionTimestamp"):
            return
        now = datetime.datetime.now(datetime.timezone.utc)
        current = fresh.get("status") or {}
        generation = (fresh.get("metadata") or {}).get("generation")
        status = _policy_kstatus("AgentBudget", fresh, current, utc_now())
        events: list[budgetstatus.BudgetEvent] = []
        try:
            spec = AgentBudgetSpec.model_validate(fresh.get("spec") or {})
        except ValueError:
            spec = None  # Stalled (InvalidSpec) says why; no figures for a spec that cannot work
        store: aioredis.Redis | None = memo[MEMO_SPEND_STORE]
        if spec is not None and store is None:
            status = budgetstatus.store_not_configured(status, now, generation)
        elif spec is not None and store is not None:
            address = config.spend_store_address or "the spend store"
            try:
                day, month = await _read_spend(store, namespace, name, now, config.redis_timeout_seconds)
            except (RedisError, OSError, TimeoutError) as error:
                metrics.SPEND_STORE_READS.labels(outcome="unreachable").inc()
                status = budgetstatus.store_unreachable(status, address, type(error).__name__, now, generation)
                if status != current:  # logged when it starts (or its kind changes), not on every tick
                    logger.warning("budget status: spend store %s unreachable (%s)", address, type(error).__name__)
            else:
                metrics.SPEND_STORE_READS.labels(outcome="ok").inc()
                status, events = budgetstatus.budget_status(spec, day, month, status, now, generation, store=address)
        if status == current:
            return
        try:
            await _write_status(api, path, fresh, status)
        except Conflict:
            return  # changed meanwhile (another writer): the next tick starts from the new version
        except KubeError as error:
            logger.warning("budget status: could not write status: %s", error)
            return
    for event in events:  # after the write: what status records as announced was announced
        metrics.BUDGET_ALERTS.labels(reason=event.reason).inc()
        kopf.event(cast(kopf.Body, fresh), type=event.type, reason=event.reason, message=event.message)


async def _read_spend(store: aioredis.Redis, namespace: str, name: str, now: datetime.datetime,
                      timeout: float) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """``HGETALL`` of today's and this month's hashes, in one round trip, bounded by ``timeout``."""
    async with asyncio.timeout(timeout):
        async with store.pipeline(transaction=False) as pipe:
            pipe.hgetall(spendstore.period_key(namespace, name, "day", now))
            pipe.hgetall(spendstore.period_key(namespace, name, "month", now))
            day, month = await pipe.execute()
    return day, month


@kopf.on.event(GROUP, VERSION, "agentbudgets")
async def budget_event(*, event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    await _policy_event("AgentBudget", event, body, memo, logger, kwargs)


@kopf.on.event(GROUP, VERSION, "toolpolicies")
async def tool_policy_event(*, event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    await _policy_event("ToolPolicy", event, body, memo, logger, kwargs)


@kopf.on.event(GROUP, VERSION, "regionpolicies")
async def region_policy_event(*, event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    await _policy_event("RegionPolicy", event, body, memo, logger, kwargs)


# --- the operator's audit log (audit_events decides what each change becomes) ----------------

MEMO_AUDIT = "agentgov_audit"  # audit_events.OperatorAudit (its writer is None when the log is off)
_POLICY_KINDS = {"agentbudgets": "AgentBudget", "toolpolicies": "ToolPolicy", "regionpolicies": "RegionPolicy"}


async def _start_audit(memo: kopf.Memo, config: OperatorConfig) -> None:
    audit = audit_events.OperatorAudit.from_config(config)
    try:
        await audit.start()
    except AuditConfigError as error:  # e.g. an unusable digest key: fail at start, naming it
        raise kopf.PermanentError(str(error)) from None
    memo[MEMO_AUDIT] = audit


async def _stop_audit(memo: kopf.Memo) -> None:
    audit: audit_events.OperatorAudit | None = memo.get(MEMO_AUDIT)
    if audit is not None:
        await audit.close()


def _audit_stalled(body: Mapping[str, Any], result: Result, memo: kopf.Memo, kwargs: Mapping[str, Any]) -> None:
    """A reconcile that newly stalled because the bundle compiler refused the agent's data
    classes: a ``permission.denied`` record (once per change of the Stalled status)."""
    audit: audit_events.OperatorAudit | None = memo.get(MEMO_AUDIT)
    if audit is None or audit.writer is None or result.outcome.phase != "Stalled" or not result.status_written:
        return
    denial = audit_events.compile_denial(body, _lookups(kwargs), memo[MEMO_CONFIG])
    if denial is not None:
        audit.emit(audit_events.denial_event(body, denial, time.time()))


@kopf.on.create(GROUP, VERSION, "agentdeployments", id="audit")
@kopf.on.update(GROUP, VERSION, "agentdeployments", id="audit")
async def agent_audited(*, reason: str, body: kopf.Body, old: Any, memo: kopf.Memo, **_: Any) -> None:
    """``agent.created`` / ``agent.updated``: kopf's causes come from its diff base, so a change
    made while the operator was down is recorded at its next start."""
    audit: audit_events.OperatorAudit | None = memo.get(MEMO_AUDIT)
    if audit is not None:
        action: audit_events.Action = "created" if reason == kopf.Reason.CREATE else "updated"
        audit.emit(audit_events.object_event("AgentDeployment", action, body, time.time(),
                                             old=old if action == "updated" else None))


@kopf.on.event(GROUP, VERSION, "agentdeployments", id="audit")
async def agent_deleted_audited(*, type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    audit: audit_events.OperatorAudit | None = memo.get(MEMO_AUDIT)
    if audit is not None and type == "DELETED":
        audit.emit(audit_events.object_event("AgentDeployment", "deleted", body, time.time()))


@kopf.on.event(GROUP, VERSION, "agentbudgets", id="audit")
@kopf.on.event(GROUP, VERSION, "toolpolicies", id="audit")
@kopf.on.event(GROUP, VERSION, "regionpolicies", id="audit")
async def policy_audited(*, event: kopf.RawEvent, body: kopf.Body, resource: kopf.Resource, memo: kopf.Memo,
                         **_: Any) -> None:
    audit: audit_events.OperatorAudit | None = memo.get(MEMO_AUDIT)
    if audit is not None:
        audit.policy_event(_POLICY_KINDS[resource.plural], event.get("type"), body, time.time())
