"""kopf against the API emulator: finalizer, status, generation/observedGeneration, deletion.

The operator (``harness/testdata/kopf_widget_operator.py``) runs in kopf's own thread through
``KopfRunner``; the emulator is served from another thread; this test drives both through the
official ``kubernetes`` client. kopf logs in from the ``kubeconfig`` fixture (KUBECONFIG).
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kopf.testing import KopfRunner

from conftest import widget_crds
from harness.apiserver import ApiServer
from harness.waiting import wait_for

OPERATOR = pathlib.Path(__file__).resolve().parent.parent / 'harness' / 'testdata' / 'kopf_widget_operator.py'
FINALIZER = 'harness.test/widget-finalizer'


@pytest.fixture()
def k8s(kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer) -> Iterator[kubernetes.client.ApiClient]:
    """An official-client ApiClient for the thread-served emulator (no global configuration)."""
    configuration = kubernetes.client.Configuration()
    configuration.host = str(apiserver_in_thread.url).rstrip('/')
    configuration.api_key = {'BearerToken': 'emulator-token'}
    with kubernetes.client.ApiClient(configuration) as client:
        for crd in widget_crds():  # the client accepts plain dicts as bodies
            kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(crd)  # type: ignore[arg-type]
        yield client


def _get(client: kubernetes.client.ApiClient, name: str) -> dict[str, Any]:
    api = kubernetes.client.CustomObjectsApi(client)
    obj = api.get_namespaced_custom_object('harness.test', 'v1', 'default', 'widgets', name)
    assert isinstance(obj, dict)
    return obj


def _names(client: kubernetes.client.ApiClient) -> list[str]:
    listed = kubernetes.client.CustomObjectsApi(client).list_namespaced_custom_object(
        'harness.test', 'v1', 'default', 'widgets')
    assert isinstance(listed, dict)
    return [item['metadata']['name'] for item in listed['items']]


def test_kopf_operator_adds_finalizer_writes_status_and_completes_deletion(
        k8s: kubernetes.client.ApiClient) -> None:
    api = kubernetes.client.CustomObjectsApi(k8s)
    body = {'apiVersion': 'harness.test/v1', 'kind': 'Widget',
            'metadata': {'name': 'w1'}, 'spec': {'size': 'small', 'replicas': 2}}
    with KopfRunner(['run', '-A', '--standalone', str(OPERATOR)], timeout=60) as runner:
        api.create_namespaced_custom_object('harness.test', 'v1', 'default', 'widgets', body)

        ready = wait_for(lambda: _get(k8s, 'w1'),
                         lambda obj: obj.get('status', {}).get('phase') == 'Ready',
                         what='kopf to write the status', timeout=30)
        assert FINALIZER in ready['metadata']['finalizers']
        assert ready['metadata']['generation'] == 1
        assert ready['status']['observedGeneration'] == 1
        assert ready['status']['replicas'] == 2

        api.patch_namespaced_custom_object('harness.test', 'v1', 'default', 'widgets', 'w1',
                                           {'spec': {'replicas': 3}})
        updated = wait_for(lambda: _get(k8s, 'w1'),
                           lambda obj: obj.get('status', {}).get('observedGeneration') == 2,
                           what='kopf to observe generation 2', timeout=30)
        assert updated['metadata']['generation'] == 2  # kopf's status and annotation writes did not bump it
        assert updated['status']['replicas'] == 3

        api.delete_namespaced_custom_object('harness.test', 'v1', 'default', 'widgets', 'w1')
        wait_for(lambda: _names(k8s), lambda names: 'w1' not in names, what='the widget to be gone', timeout=30)

    assert runner.exit_code == 0
    assert runner.exception is None
