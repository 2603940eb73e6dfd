"""The providers a process uses, built from its settings on first use: one instance per kind.

The operator holds one ``ProviderRegistry`` for its lifetime (built at startup from
``ProviderSettings``, closed at cleanup); ``get(kind)`` imports the provider's module only when
a secret of that kind is first read, so the Vault, AWS and Azure SDKs (optional extras) are
never imported by an operator that does not use them. A kind without settings raises
``SecretProviderNotConfigured``; a provider that cannot be built raises
``SecretProviderMisconfigured`` (the message names the provider, never a setting's value).

This module must never read the environment or a file (settings are given), nor hold a value.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from typing import Final

from agentgov.secrets.base import (
    ProviderKind,
    SecretError,
    SecretProvider,
    SecretProviderMisconfigured,
    SecretProviderUnavailable,
)
from agentgov.secrets.config import ProviderSettings

# kind -> (module, class): imported by name, on first use.
PROVIDER_CLASSES: Final[Mapping[ProviderKind, tuple[str, str]]] = {
    "kubernetes": ("agentgov.secrets.kubernetes", "KubernetesProvider"),
    "vault": ("agentgov.secrets.vault", "VaultProvider"),
    "aws": ("agentgov.secrets.aws", "AwsProvider"),
    "azure": ("agentgov.secrets.azure", "AzureProvider"),
}


class SecretProviderNotConfigured(SecretProviderMisconfigured):
    """The process was given no settings for this provider (a misconfiguration the caller can
    name precisely: which setting turns the provider on)."""


class ProviderRegistry:
    """Providers by kind, built lazily from ``settings`` and shared by every caller.

    ``kubernetes_api`` is what ``KubernetesProvider`` is built with; without it the Kubernetes
    provider counts as not configured (the operator injects ``secretKeyRef`` sources straight
    from their Secret and needs no provider for them).
    """

    def __init__(self, settings: ProviderSettings, kubernetes_api: object | None = None) -> None:
        self._settings = settings
        self._kubernetes_api = kubernetes_api
        self._providers: dict[ProviderKind, SecretProvider] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    def configured(self, kind: ProviderKind) -> bool:
        """Whether ``kind`` has settings (it may still fail to build: a missing extra)."""
        return self._arguments(kind) is not None

    @property
    def configured_kinds(self) -> frozenset[ProviderKind]:
        return frozenset(kind for kind in PROVIDER_CLASSES if self.configured(kind))

    def _arguments(self, kind: ProviderKind) -> object | None:
        if kind == "kubernetes":
            return self._kubernetes_api
        settings: object | None = getattr(self._settings, kind, None)
        return settings

    async def get(self, kind: ProviderKind) -> SecretProvider:
        """The provider of ``kind``, built on the first call (concurrent first calls build one)."""
        if self._closed:
            raise SecretProviderUnavailable(None, "the process is stopping", provider=kind)
        provider = self._providers.get(kind)
        if provider is not None:
            return provider
        async with self._lock:
            provider = self._providers.get(kind)
            if provider is None:
                provider = self._build(kind)
                self._providers[kind] = provider
        return provider

    def _build(self, kind: ProviderKind) -> SecretProvider:
        argument = self._arguments(kind)
        if argument is None:
            raise SecretProviderNotConfigured(None, "not configured for this process", provider=kind)
        module_name, class_name = PROVIDER_CLASSES[kind]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise SecretProviderMisconfigured(None, f"{module_name} is not part of this installation",
                                              provider=kind) from None
        try:
            provider = getattr(module, class_name)(argument)
        except SecretError:
            raise
        except Exception as error:  # a provider refusing its settings: named by kind, never echoed
            raise SecretProviderMisconfigured(None, f"could not be set up ({type(error).__name__})",
                                              provider=kind) from None
        if not isinstance(provider, SecretProvider):
            raise SecretProviderMisconfigured(None, f"{class_name} does not implement the provider protocol",
                                              provider=kind)
        return provider

    async def close(self) -> None:
        """Close every provider built (each once); later ``get`` calls fail as unavailable."""
        self._closed = True
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            try:
                await provider.close()
            except Exception:  # noqa: S112 - closing the others matters more than one's failure
                continue
