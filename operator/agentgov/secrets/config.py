"""Settings of each provider: where it is and how the operator authenticates to it.

Credentials come from workload identity (Vault Kubernetes auth with the operator's service
account token, AWS's default chain: IRSA / pod identity, Azure workload identity) or from files
the operator's Deployment mounts from a Secret (``*_file`` fields). Never from a CR. Values that
are credentials are held as ``SecretStr`` so they never print.

The operator fills these from ``AGENTGOV_VAULT_*``, ``AGENTGOV_AWS_*`` and ``AGENTGOV_AZURE_*``
(``controller/config.py``); tests construct them directly against local servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

DEFAULT_SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass(frozen=True)
class VaultSettings:
    """HashiCorp Vault, KV version 2."""

    address: str  # https://vault.example:8200
    mount: str = "secret"  # the KV v2 mount path
    namespace: str | None = None  # Vault Enterprise / HCP namespace (X-Vault-Namespace)
    auth: Literal["token", "kubernetes"] = "kubernetes"
    token: SecretStr | None = None  # auth=token: the token itself (tests) ...
    token_file: str | None = None  # ... or a file holding it (mounted from a Secret)
    role: str | None = None  # auth=kubernetes: the Vault role bound to the operator's service account
    auth_mount: str = "kubernetes"  # auth=kubernetes: where the auth method is mounted
    jwt_file: str = DEFAULT_SERVICE_ACCOUNT_TOKEN  # auth=kubernetes: the service account token
    ca_file: str | None = None  # a CA bundle for Vault's TLS certificate; None: the system's
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class AwsSettings:
    """AWS Secrets Manager."""

    region: str | None = None  # None: the SDK's default chain (AWS_REGION, ...)
    endpoint_url: str | None = None  # a VPC endpoint or, in tests, moto's server
    # Static keys from a mounted Secret; None: the SDK's default chain (IRSA, pod identity, ...).
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    credentials_file: str | None = None  # an AWS shared-credentials file mounted from a Secret
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class AzureSettings:
    """Azure Key Vault."""

    # The vault URL for a vault name; sovereign clouds change the suffix.
    vault_url_template: str = "https://{vault}.vault.azure.net"
    credential: Literal["workload", "client_secret", "default"] = "workload"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None  # credential=client_secret ...
    client_secret_file: str | None = None  # ... or a file holding it (mounted from a Secret)
    authority: str | None = None  # the Entra ID host; None: the public cloud's
    ca_file: str | None = None  # a CA bundle for the vault's TLS certificate (tests: the local server's)
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class ProviderSettings:
    """Every provider the operator may use; None where it is not configured."""

    vault: VaultSettings | None = None
    aws: AwsSettings | None = None
    azure: AzureSettings | None = None
