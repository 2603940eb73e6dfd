"""The contract between the shipper and a sink: what a sink is given and what it answers.

A sink is handed batches of usable records in file order (``LogLine`` with ``record``) and
answers with a ``Delivery``: which records it refused for good (``rejected``, parked in the
dead-letter file by the shipper) and which it could not take this time (``retry``, sent again
after a backoff). Everything else in the batch counts as delivered. A sink that could take
nothing raises ``SinkUnavailable`` with a bounded ``reason`` (a metrics label) and a message
for the logs that names the destination and never a credential or a response body.

Sinks are idempotent by construction: a batch sent twice (after a crash between delivery and
the cursor write) is stored once — Elasticsearch ids are the records' hashes (a second
``create`` is a 409), S3 keys name the batch's first and last seq and first hash (a second
``PutObject`` overwrites the same key), stdout is the one at-least-once sink.

No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agentgov.audit.sinks.batching import BatchPolicy
from agentgov.audit.sinks.logread import LogLine
from agentgov.audit.sinks.metrics import FailureReason
from agentgov.audit.sinks.settings import SinkKind


class SinkUnavailable(Exception):
    """Nothing of the batch is known to be delivered; try again later."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        self.reason: FailureReason = reason
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Rejection:
    """A record the sink will never take as it is (e.g. an Elasticsearch mapping error)."""

    line: LogLine
    reason: str


@dataclass(frozen=True)
class Delivery:
    rejected: tuple[Rejection, ...] = ()
    retry: tuple[LogLine, ...] = ()
    retry_reason: FailureReason | None = None  # why ``retry`` is not empty

    @classmethod
    def all_delivered(cls) -> Delivery:
        return cls()


class Sink(Protocol):
    """One destination of the audit log's copies."""

    kind: SinkKind
    destination: str  # where it delivers, for logs and the cursor; never a credential
    batching: BatchPolicy
    # True when a retried batch must have exactly the same records (the cursor then notes the
    # batch before sending it).
    fixed_batches: bool

    async def open(self) -> None:
        """Prepare (connect, install templates, detect bucket features); SinkUnavailable to retry."""
        ...

    async def deliver(self, batch: Sequence[LogLine]) -> Delivery:
        """Send usable records; see the module docstring."""
        ...

    async def close(self) -> None: ...

    def details(self) -> Mapping[str, object]:
        """What the sink knows about its destination, for status (no credentials)."""
        ...
