"""Audit sinks: copies of the local audit log in stdout, Elasticsearch/OpenSearch and S3.

The local JSON lines file is always written first; shipping is separate. For each configured
sink a ``Shipper`` (``shipper.py``) tails the local log files from a cursor persisted next to
them (``cursor.py``), batches records (``batching.py``), delivers them through the sink
(``stdout.py``, ``elasticsearch.py``, ``s3.py``, behind the contract in ``base.py``) and only
then moves the cursor. A sink that is down falls behind and catches up; nothing is lost, and
idempotent writes (record hashes as Elasticsearch ids, deterministic S3 keys) mean nothing is
stored twice. Settings come from the policy bundle (a sidecar) or ``AGENTGOV_AUDIT_*``
variables (the operator): ``settings.py``.

This package sits in the audit layer: it may import ``agentgov.secrets`` and ``agentgov.api``,
never the sidecar or the controller (what it needs from them, such as the metrics registry, is
passed in). Importing it pulls in no SDK: aiohttp and boto3 are imported by the modules of the
sinks that use them.
"""
