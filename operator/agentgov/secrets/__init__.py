"""Secret providers: one protocol, one module per backend (Kubernetes, Vault, AWS, Azure).

The operator reads the values of an AgentDeployment's ``spec.secrets`` through these providers
and materialises them into the Secret ``<agent>-secrets``; ``agentgov secrets rotate`` writes a
new version through them. The contract every provider keeps (``base.py``):

- ``get_secret(locator, version=None) -> SecretValue`` (the value and the provider's version
  id), ``rotate_secret(locator, new_value) -> SecretValue`` (a new version holding it),
  ``close()``.
- Failures are exactly one of ``SecretNotFound`` (path or key missing; the message says which),
  ``SecretPermissionDenied``, ``SecretProviderUnavailable`` (network, timeouts, 5xx: worth a
  retry) and ``SecretProviderMisconfigured`` (a missing extra, bad settings: not worth one).
  Each names the provider and the locator, never the value; SDK exceptions are translated at
  the provider's boundary and never chained (``from None``), so no traceback carries a
  response body.
- Cloud SDKs are imported only inside the provider that needs them (``require_extra``), so the
  package works without ``agentgov[vault]``, ``[aws]`` or ``[azure]`` until a CR asks for one.

This layer sits below the operator and the sidecar and above ``api``; it never imports either.
"""
