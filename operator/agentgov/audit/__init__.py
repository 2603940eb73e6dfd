"""The audit trail: records, their hash chain, the local JSON lines log, digests, search, retention.

Used by both the sidecar and the operator, so it sits below both in the layers: it never imports
``agentgov.sidecar`` or ``agentgov.controller`` (what it needs from them — metrics, redaction —
is passed in). Remote copies of the log (Elasticsearch, S3, stdout) live in ``audit.sinks``.
"""
