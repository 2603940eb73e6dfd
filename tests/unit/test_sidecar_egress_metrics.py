"""The playbook's user_id label: a short hash of the user, capped so callers cannot grow the series."""
from __future__ import annotations

import hashlib

from agentgov.sidecar.metrics import MAX_USER_LABELS, OTHER_USERS, Metrics, user_hash


def test_a_user_label_is_a_short_stable_hash_never_the_id() -> None:
    metrics = Metrics()
    label = metrics.user_label('alice@example.com')
    assert label == hashlib.sha256(b'alice@example.com').hexdigest()[:12] == user_hash('alice@example.com')
    assert 'alice' not in label and Metrics().user_label('alice@example.com') == label  # the same on every replica


def test_users_beyond_the_cap_share_one_label_and_known_users_keep_theirs() -> None:
    metrics = Metrics()
    labels = {metrics.user_label(f'user-{i}') for i in range(MAX_USER_LABELS)}
    assert len(labels) == MAX_USER_LABELS and OTHER_USERS not in labels
    assert metrics.user_label('one-too-many') == OTHER_USERS
    assert metrics.user_label('user-7') == user_hash('user-7')


def test_breaker_states_are_numbers() -> None:
    metrics = Metrics()
    for state, value in (('closed', 0), ('half_open', 1), ('open', 2)):
        metrics.set_breaker('model', 'fast', state)
        assert metrics.registry.get_sample_value('agentgov_breaker_state', {'kind': 'model', 'name': 'fast'}) == value
