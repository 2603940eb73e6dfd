"""The execution-id store (agentgov.sidecar.executions): ids map to the caller for their TTL,
the store stays bounded, and ids cannot be guessed."""
from __future__ import annotations

import pytest

from agentgov.sidecar.auth import Identity
from agentgov.sidecar.executions import EXECUTION_ID_PREFIX, ExecutionStore, new_execution_id
from sidecar_support import ISSUER


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def who(user: str) -> Identity:
    return Identity(user=user, role='analyst', scopes=frozenset(), issuer=ISSUER, expires_at=0)


def test_an_issued_id_maps_to_its_caller_until_the_ttl() -> None:
    clock = Clock()
    store = ExecutionStore(60, clock=clock)
    execution = store.issue(who('alice'), request_id='req_1')
    assert store.identity_of(execution.id) == who('alice')
    assert execution.request_id == 'req_1' and execution.expires_at == 1060
    clock.now = 1059.9
    assert store.get(execution.id) is not None
    clock.now = 1060
    assert store.get(execution.id) is None and store.identity_of(execution.id) is None


def test_finishing_records_the_status_and_keeps_the_id_until_its_ttl() -> None:
    clock = Clock()
    store = ExecutionStore(60, clock=clock)
    execution = store.issue(who('alice'))
    clock.now = 1005
    store.finish(execution.id, 200)
    finished = store.get(execution.id)
    assert finished is not None and (finished.finished_at, finished.status) == (1005, 200)


def test_unknown_ids_are_nobody() -> None:
    store = ExecutionStore(60)
    assert store.get('exe_unknown') is None
    store.finish('exe_unknown', 200)  # no error, nothing stored
    assert len(store) == 0


def test_purge_drops_only_expired_entries() -> None:
    clock = Clock()
    store = ExecutionStore(60, clock=clock)
    store.issue(who('a'))
    clock.now = 1030
    young = store.issue(who('b'))
    clock.now = 1061
    assert store.purge() == 1
    assert len(store) == 1 and store.get(young.id) is not None


def test_the_store_is_bounded_and_forgets_the_oldest_first() -> None:
    store = ExecutionStore(3600, max_entries=3, clock=Clock())
    ids = [store.issue(who(f'u{i}')).id for i in range(5)]
    assert len(store) == 3
    assert [store.get(i) is not None for i in ids] == [False, False, True, True, True]


@pytest.mark.parametrize('ttl, size', [(0, 10), (10, 0)], ids=['a zero ttl', 'a zero size'])
def test_a_store_needs_a_positive_ttl_and_size(ttl: float, size: int) -> None:
    with pytest.raises(ValueError):
        ExecutionStore(ttl, max_entries=size)


def test_execution_ids_are_prefixed_and_unguessable() -> None:
    ids = {new_execution_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith(EXECUTION_ID_PREFIX) and len(i) >= 24 for i in ids)
