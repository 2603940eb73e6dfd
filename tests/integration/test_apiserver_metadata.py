"""Server-set metadata and optimistic concurrency in the API emulator."""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from conftest import CONFIGMAPS, GADGETS, WIDGETS, ApiClient
from harness.apiserver import ApiServer

DEPLOYMENTS = '/apis/apps/v1/namespaces/default/deployments'


def widget(name: str = 'w', **spec: Any) -> dict[str, Any]:
    return {'apiVersion': 'harness.test/v1', 'kind': 'Widget', 'metadata': {'name': name},
            'spec': {'size': 'small', **spec}}


def deployment(name: str = 'web', replicas: int = 1) -> dict[str, Any]:
    return {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': name},
            'spec': {'replicas': replicas, 'selector': {'matchLabels': {'app': name}},
                     'template': {'metadata': {'labels': {'app': name}},
                                  'spec': {'containers': [{'name': 'c', 'image': 'nginx:1'}]}}}}


async def test_create_sets_uid_creation_timestamp_resource_version_and_generation(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(WIDGETS, widget())
    assert reply.status == 201
    meta = reply.body['metadata']
    assert uuid.UUID(meta['uid']).version == 4
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', meta['creationTimestamp'])
    assert isinstance(meta['resourceVersion'], str) and int(meta['resourceVersion']) > 0
    assert meta['generation'] == 1
    assert meta['namespace'] == 'default'


async def test_client_supplied_uid_and_timestamps_are_replaced_on_create(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    body = widget()
    body['metadata'].update({'uid': 'mine', 'creationTimestamp': '2000-01-01T00:00:00Z', 'generation': 7})
    meta = (await api.post(WIDGETS, body)).body['metadata']
    assert meta['uid'] != 'mine' and meta['creationTimestamp'] != '2000-01-01T00:00:00Z' and meta['generation'] == 1


async def test_resource_versions_come_from_one_global_counter(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    first = (await api.post(WIDGETS, widget('a'))).body['metadata']['resourceVersion']
    second = (await api.post(CONFIGMAPS, {'metadata': {'name': 'c'}})).body['metadata']['resourceVersion']
    third = (await api.post(GADGETS, {'apiVersion': 'harness.test/v1', 'kind': 'Gadget',
                                      'metadata': {'name': 'g'}})).body['metadata']['resourceVersion']
    assert int(first) < int(second) < int(third)


async def test_generation_bumps_on_spec_change_but_not_on_metadata_change(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    labelled = await api.patch(f'{WIDGETS}/w', {'metadata': {'labels': {'a': 'b'}}})
    assert labelled.body['metadata']['generation'] == 1
    changed = await api.patch(f'{WIDGETS}/w', {'spec': {'replicas': 5}})
    assert changed.body['metadata']['generation'] == 2


async def test_custom_resource_without_status_subresource_bumps_generation_on_any_change(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(GADGETS, {'apiVersion': 'harness.test/v1', 'kind': 'Gadget', 'metadata': {'name': 'g'}})
    reply = await api.patch(f'{GADGETS}/g', {'status': {'phase': 'Up'}})
    assert reply.body['status'] == {'phase': 'Up'}
    assert reply.body['metadata']['generation'] == 2


async def test_builtin_generation_follows_spec_changes(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(DEPLOYMENTS, deployment())).body
    assert created['metadata']['generation'] == 1
    labelled = await api.patch(f'{DEPLOYMENTS}/web', {'metadata': {'labels': {'x': 'y'}}})
    assert labelled.body['metadata']['generation'] == 1
    scaled = await api.patch(f'{DEPLOYMENTS}/web', {'spec': {'replicas': 3}})
    assert scaled.body['metadata']['generation'] == 2


async def test_builtins_without_generation_have_none(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(CONFIGMAPS, {'metadata': {'name': 'c'}, 'data': {'a': '1'}})
    assert 'generation' not in reply.body['metadata']


async def test_generate_name_makes_a_unique_name(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    body = widget()
    body['metadata'] = {'generateName': 'auto-'}
    names = {(await api.post(WIDGETS, body)).body['metadata']['name'] for _ in range(3)}
    assert len(names) == 3
    assert all(re.fullmatch(r'auto-[bcdfghjklmnpqrstvwxz2456789]{5}', name) for name in names)


async def test_missing_name_is_invalid(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    body = widget()
    del body['metadata']['name']
    reply = await api.post(WIDGETS, body)
    assert reply.status == 422
    assert reply.body['reason'] == 'Invalid'
    assert reply.body['message'] == ('Widget.harness.test "" is invalid: metadata.name: Required value: '
                                     'name or generateName is required')
    assert reply.body['details']['causes'] == [{'reason': 'FieldValueRequired',
                                                'message': 'Required value: name or generateName is required',
                                                'field': 'metadata.name'}]


async def test_name_must_be_a_dns_subdomain(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(WIDGETS, widget('Not_Valid'))
    assert reply.status == 422
    assert reply.body['message'].startswith('Widget.harness.test "Not_Valid" is invalid: metadata.name: '
                                            'Invalid value: "Not_Valid": a lowercase RFC 1123 subdomain')


async def test_namespace_is_taken_from_the_url(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.post('/api/v1/namespaces/kube-public/configmaps', {'metadata': {'name': 'c'}})
    assert reply.body['metadata']['namespace'] == 'kube-public'


async def test_namespace_mismatch_between_body_and_url_is_a_bad_request(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(CONFIGMAPS, {'metadata': {'name': 'c', 'namespace': 'other'}})
    assert reply.status == 400
    assert reply.body['reason'] == 'BadRequest'
    assert reply.body['message'] == ('the namespace of the provided object does not match the namespace '
                                     'sent on the request')


async def test_creating_in_a_missing_namespace_is_not_found(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.post('/api/v1/namespaces/nowhere/configmaps', {'metadata': {'name': 'c'}})
    assert reply.status == 404
    assert reply.body['message'] == 'namespaces "nowhere" not found'


async def test_create_of_an_existing_name_is_already_exists(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    reply = await api.post(WIDGETS, widget())
    assert reply.status == 409
    assert reply.body['reason'] == 'AlreadyExists'
    assert reply.body['message'] == 'widgets.harness.test "w" already exists'
    assert reply.body['details'] == {'name': 'w', 'group': 'harness.test', 'kind': 'widgets'}


async def test_reading_a_missing_object_is_not_found(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    custom = await api.get(f'{WIDGETS}/nope')
    assert custom.status == 404
    assert custom.body['message'] == 'widgets.harness.test "nope" not found'
    core = await api.get(f'{CONFIGMAPS}/nope')
    assert core.body == {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                         'message': 'configmaps "nope" not found', 'reason': 'NotFound',
                         'details': {'name': 'nope', 'kind': 'configmaps'}, 'code': 404}


async def test_stale_resource_version_is_a_conflict(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget())).body
    await api.patch(f'{WIDGETS}/w', {'spec': {'replicas': 2}})
    created['spec']['replicas'] = 3
    reply = await api.put(f'{WIDGETS}/w', created)
    assert reply.status == 409
    assert reply.body['reason'] == 'Conflict'
    assert reply.body['message'] == ('Operation cannot be fulfilled on widgets.harness.test "w": the object has '
                                     'been modified; please apply your changes to the latest version and try again')


async def test_put_with_the_current_resource_version_replaces_the_object(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget(tags=['a']))).body
    created['spec'] = {'size': 'large'}
    reply = await api.put(f'{WIDGETS}/w', created)
    assert reply.status == 200
    assert reply.body['spec'] == {'size': 'large', 'replicas': 1}  # replaced (tags gone), defaults applied
    assert int(reply.body['metadata']['resourceVersion']) > int(created['metadata']['resourceVersion'])


async def test_put_without_resource_version_is_invalid_for_custom_resources(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    reply = await api.put(f'{WIDGETS}/w', widget(replicas=2))
    assert reply.status == 422
    assert reply.body['message'] == ('Widget.harness.test "w" is invalid: metadata.resourceVersion: '
                                     'Invalid value: 0x0: must be specified for an update')


async def test_put_without_resource_version_is_unconditional_for_builtins(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(CONFIGMAPS, {'metadata': {'name': 'c'}, 'data': {'a': '1'}})
    reply = await api.put(f'{CONFIGMAPS}/c', {'metadata': {'name': 'c'}, 'data': {'a': '2'}})
    assert reply.status == 200 and reply.body['data'] == {'a': '2'}


async def test_put_with_a_different_name_is_a_bad_request(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget())).body
    created['metadata']['name'] = 'other'
    reply = await api.put(f'{WIDGETS}/w', created)
    assert reply.status == 400
    assert reply.body['message'] == 'the name of the object (other) does not match the name on the URL (w)'


async def test_patch_carrying_a_stale_resource_version_is_a_conflict(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget())).body
    await api.patch(f'{WIDGETS}/w', {'spec': {'replicas': 2}})
    reply = await api.patch(f'{WIDGETS}/w', {'metadata': {'resourceVersion': created['metadata']['resourceVersion']},
                                             'spec': {'replicas': 4}})
    assert reply.status == 409
    assert reply.body['reason'] == 'Conflict'


async def test_patch_carrying_the_current_resource_version_succeeds(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget())).body
    reply = await api.patch(f'{WIDGETS}/w', {'metadata': {'resourceVersion': created['metadata']['resourceVersion']},
                                             'spec': {'replicas': 4}})
    assert reply.status == 200 and reply.body['spec']['replicas'] == 4


async def test_no_op_update_keeps_the_resource_version(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget())).body
    reply = await api.patch(f'{WIDGETS}/w', {'spec': {'size': 'small'}})
    assert reply.body['metadata']['resourceVersion'] == created['metadata']['resourceVersion']


async def test_unsupported_method_is_method_not_allowed(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    reply = await api.post(f'{WIDGETS}/w', widget())
    assert reply.status == 405
    assert reply.body == {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                          'message': 'the server does not allow this method on the requested resource',
                          'reason': 'MethodNotAllowed', 'details': {}, 'code': 405}
    assert (await api.put(WIDGETS, widget())).status == 405


async def test_changing_the_uid_on_update_is_invalid(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(CONFIGMAPS, {'metadata': {'name': 'c'}})).body
    created['metadata']['uid'] = str(uuid.uuid4())
    reply = await api.put(f'{CONFIGMAPS}/c', created)
    assert reply.status == 422
    assert 'metadata.uid' in reply.body['message'] and 'field is immutable' in reply.body['message']


@pytest.fixture()
def core_v1(apiserver_in_thread: ApiServer) -> Iterator[kubernetes.client.CoreV1Api]:
    configuration = kubernetes.client.Configuration()
    configuration.host = str(apiserver_in_thread.url).rstrip('/')
    with kubernetes.client.ApiClient(configuration) as client:
        yield kubernetes.client.CoreV1Api(client)


def test_official_client_sees_conflicts_as_api_exceptions(core_v1: kubernetes.client.CoreV1Api) -> None:
    body = kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name='c'), data={'a': '1'})
    created = core_v1.create_namespaced_config_map('default', body)
    assert created.metadata is not None and created.metadata.uid and created.metadata.resource_version
    created.data = {'a': '2'}
    core_v1.replace_namespaced_config_map('c', 'default', created)
    created.data = {'a': '3'}
    with pytest.raises(kubernetes.client.ApiException) as error:
        core_v1.replace_namespaced_config_map('c', 'default', created)  # still the old resourceVersion
    assert error.value.status == 409
    assert core_v1.read_namespaced_config_map('c', 'default').data == {'a': '2'}


async def test_an_injected_fault_answers_its_status_the_given_number_of_times(apiserver: Any, api: Any) -> None:
    fault = apiserver.inject_fault('GET', r'/configmaps/faulty$', status=503, times=2)
    answers = [(await api.get('/api/v1/namespaces/default/configmaps/faulty')).status for _ in range(3)]
    assert answers == [503, 503, 404]
    assert fault.hits == 2
