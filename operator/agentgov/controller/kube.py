"""The operator's one way to write to the Kubernetes API: idempotent get/create/patch/delete.

A thin aiohttp layer. Credentials come from kopf's own login (kubeconfig or in-cluster
service account), so the operator and kopf always talk to the same server as the same user.
Library errors are translated here, once: 404 on get/delete is an answer, 409 on create means
"exists" (the caller re-reads), other 409s are ``Conflict``, 5xx and timeouts are
``TransientError`` (retried with backoff by the handlers), 4xx the server will never accept
are ``Refused``. Error texts carry the server's message, never request bodies (which may
hold references to secrets) nor credentials.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

# apiVersion, kind -> plural, for every kind the operator writes or reads.
PLURALS: Mapping[tuple[str, str], str] = {
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("v1", "Service"): "services",
    ("apps/v1", "Deployment"): "deployments",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("networking.k8s.io/v1", "Ingress"): "ingresses",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("agentgov.io/v1alpha1", "AgentDeployment"): "agentdeployments",
    ("agentgov.io/v1alpha1", "AgentBudget"): "agentbudgets",
    ("agentgov.io/v1alpha1", "ToolPolicy"): "toolpolicies",
    ("agentgov.io/v1alpha1", "RegionPolicy"): "regionpolicies",
}


class KubeError(Exception):
    """A call the operator could not complete."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Conflict(KubeError):
    """409: someone else changed the object; re-read and try again."""


class TransientError(KubeError):
    """5xx, 429, timeouts, connection errors: retry with backoff."""


class Refused(KubeError):
    """A 4xx the server will keep answering: the object we built is wrong (a bug or bad spec)."""


def object_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    plural = PLURALS[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{scope}/{plural}" + (f"/{name}" if name else "")


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate (from kopf.login_via_client)."""

    server: str
    token: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    certificate_path: str | None = None
    certificate_data: bytes | None = None
    private_key_path: str | None = None
    private_key_data: bytes | None = None

    @classmethod
    def from_kopf(cls, info: Any) -> Connection:
        return cls(
            server=str(info.server),
            token=info.token,
            ca_path=info.ca_path,
            ca_data=info.ca_data,
            insecure=bool(info.insecure),
            certificate_path=info.certificate_path,
            certificate_data=info.certificate_data,
            private_key_path=info.private_key_path,
            private_key_data=info.private_key_data,
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            return False
        context = ssl.create_default_context(
            cafile=self.ca_path, cadata=self.ca_data.decode() if self.ca_data else None
        )
        cert, key = self.certificate_path, self.private_key_path
        if self.certificate_data and self.private_key_data:
            cert, key = _temp_file(self.certificate_data), _temp_file(self.private_key_data)
        if cert and key:
            context.load_cert_chain(cert, key)
        return context


def _temp_file(data: bytes) -> str:
    handle = tempfile.NamedTemporaryFile(prefix="agentgov-", delete=False)  # noqa: SIM115 - kept for the process
    handle.write(data)
    handle.close()
    return handle.name


class KubeApi:
    """JSON over HTTP to the API server, with errors translated once."""

    def __init__(self, connection: Connection, timeout_seconds: float = 30.0) -> None:
        headers = {"Accept": "application/json", "User-Agent": "agentgov-operator"}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        self._server = connection.server.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            connector=aiohttp.TCPConnector(ssl=connection.ssl_context()),
        )

    async def close(self) -> None:
        await self._session.close()

    async def _call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        if self._session.closed:  # the operator is stopping: a late handler gets an answer, not a crash
            raise TransientError(f"{method} {path}: the operator is stopping")
        try:
            async with self._session.request(
                method, self._server + path, data=data, headers=headers
            ) as response:
                text = await response.text()
                try:
                    payload = json.loads(text) if text else None
                except ValueError:
                    payload = {"message": text[:200]}
                return response.status, payload
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise TransientError(f"{method} {path}: {type(error).__name__}") from None

    @staticmethod
    def _fail(method: str, path: str, status: int, payload: Any) -> KubeError:
        message = payload.get("message", "") if isinstance(payload, dict) else ""
        text = f"{method} {path}: HTTP {status}: {message}"
        if status == 409:
            return Conflict(text, status)
        if status >= 500 or status == 429:
            return TransientError(text, status)
        return Refused(text, status)

    async def get(self, path: str) -> dict[str, Any] | None:
        status, payload = await self._call("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise self._fail("GET", path, status, payload)
        return payload  # type: ignore[no-any-return]

    async def create(self, collection: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create; None when it already exists (409 AlreadyExists is success for an idempotent write)."""
        status, payload = await self._call("POST", collection, body)
        if status == 409 and isinstance(payload, dict) and payload.get("reason") == "AlreadyExists":
            return None
        if status not in (200, 201, 202):
            raise self._fail("POST", collection, status, payload)
        return payload  # type: ignore[no-any-return]

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        status, payload = await self._call("PATCH", path, patch, "application/merge-patch+json")
        if status != 200:
            raise self._fail("PATCH", path, status, payload)
        return payload  # type: ignore[no-any-return]

    async def delete(self, path: str) -> bool:
        """Delete in the background; False when it was already gone (404 is success)."""
        status, payload = await self._call(
            "DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        )
        if status == 404:
            return False
        if status not in (200, 202):
            raise self._fail("DELETE", path, status, payload)
        return True
