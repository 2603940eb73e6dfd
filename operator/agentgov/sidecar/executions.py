"""Execution ids: which caller an agent run belongs to, so its outbound calls are attributed.

The inbound proxy issues an id per request it forwards (``X-Agentgov-Execution-Id`` on the
request the agent receives) and records ``id -> Identity`` here. The agent passes the id back
on its model and tool calls to the egress port (issue 5), which looks it up to charge the
right budget and write the right user into the audit log. Entries live ``ttl_seconds`` from
issue (agents may keep working after answering), bounded in number: the oldest go first.

In-process only: every sidecar holds the executions of its own pod, which is where its agent
runs. The clock is injected; nothing here does I/O.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from agentgov.sidecar.auth import Identity
from agentgov.sidecar.errors import BadRequest, ExecutionRequired, Forbidden, SidecarError

EXECUTION_ID_PREFIX = "exe_"
# Issued ids are ~28 characters; anything much longer was not issued here (not even looked up).
MAX_EXECUTION_ID = 128


def new_execution_id() -> str:
    """An unguessable id: the agent cannot claim another caller's execution by guessing."""
    return EXECUTION_ID_PREFIX + secrets.token_urlsafe(18)


@dataclass(frozen=True)
class Execution:
    """One forwarded request: who asked, when, and until when it may be attributed."""

    id: str
    identity: Identity
    started_at: float
    expires_at: float
    request_id: str | None = None
    finished_at: float | None = None
    status: int | None = None


class ExecutionStore:
    """``execution id -> Execution`` with a TTL and a size bound.

    ``issue`` when forwarding starts, ``finish`` when the response ends, ``get`` from the egress
    side. Expired entries are invisible to ``get`` and removed by ``purge`` (and on ``issue``).
    """

    def __init__(self, ttl_seconds: float, *, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic,
                 new_id: Callable[[], str] = new_execution_id) -> None:
        if ttl_seconds <= 0 or max_entries < 1:
            raise ValueError("ttl_seconds and max_entries must be positive")
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._new_id = new_id
        # Insertion order is expiry order: every entry lives the same TTL from its issue.
        self._entries: OrderedDict[str, Execution] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def issue(self, identity: Identity, *, request_id: str | None = None) -> Execution:
        now = self._clock()
        self.purge()
        while len(self._entries) >= self._max:
            self._entries.popitem(last=False)
        execution = Execution(self._new_id(), identity, now, now + self._ttl, request_id)
        self._entries[execution.id] = execution
        return execution

    def get(self, execution_id: str) -> Execution | None:
        """The execution, if the id was issued here and has not expired."""
        execution = self._entries.get(execution_id)
        if execution is None or execution.expires_at <= self._clock():
            return None
        return execution

    def identity_of(self, execution_id: str) -> Identity | None:
        execution = self.get(execution_id)
        return execution.identity if execution else None

    def finish(self, execution_id: str, status: int | None) -> None:
        """Note the end of the forwarded request; the id stays valid until its TTL."""
        execution = self._entries.get(execution_id)
        if execution is not None:
            self._entries[execution_id] = replace(execution, finished_at=self._clock(), status=status)

    def purge(self) -> int:
        """Drop expired entries; how many went."""
        now = self._clock()
        removed = 0
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.expires_at > now:
                break
            self._entries.popitem(last=False)
            removed += 1
        return removed


def execution_for(values: Sequence[str], store: ExecutionStore) -> Execution | SidecarError:
    """The execution the egress request names in its ``X-Agentgov-Execution-Id`` header
    (``values``: every copy of the header), or the error to answer: none sent (400), several
    (400), or one this sidecar did not issue or that expired (403 ``unknown_execution``)."""
    if not values:
        return ExecutionRequired()
    if len(values) > 1:
        return BadRequest("send one X-Agentgov-Execution-Id header")
    value = values[0].strip()
    execution = store.get(value) if 0 < len(value) <= MAX_EXECUTION_ID else None
    if execution is None:
        return Forbidden("unknown_execution", "the execution id was not issued by this sidecar or has expired")
    return execution
