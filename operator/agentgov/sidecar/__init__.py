"""The agentgov sidecar: an aiohttp application in front of (and, from issue 5, behind) the agent.

Inbound (``bundle.sidecar.inbound_port``, 8080): authenticate the caller's JWT, authorize the
route against the bundle's roles and scopes, write audit records, issue an execution id and
stream the request to the agent on 127.0.0.1. It reads its policy bundle and secrets from
mounted files and never talks to the Kubernetes API; it must never import the controller.

Layout: pure decision modules (``auth``, ``keys``, ``authz``, ``headers``, ``redact``, the
record and chain functions of ``audit``, ``tokens``) and thin I/O layers around them
(``bundle_loader``, ``jwks``, the ``AuditWriter``, ``proxy``, ``handlers``, ``app``).
"""
