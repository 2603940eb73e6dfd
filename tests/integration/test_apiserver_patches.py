"""Patch semantics by Content-Type in the API emulator: merge, JSON, strategic merge, apply."""
from __future__ import annotations

import json
from typing import Any

import yaml

from conftest import CONFIGMAPS, WIDGETS, ApiClient

DEPLOYMENTS = '/apis/apps/v1/namespaces/default/deployments'
SERVICES = '/api/v1/namespaces/default/services'
MERGE = 'application/merge-patch+json'
JSON_PATCH = 'application/json-patch+json'
STRATEGIC = 'application/strategic-merge-patch+json'
APPLY = 'application/apply-patch+yaml'


def widget(name: str = 'w', **spec: Any) -> dict[str, Any]:
    return {'apiVersion': 'harness.test/v1', 'kind': 'Widget', 'metadata': {'name': name},
            'spec': {'size': 'small', **spec}}


def deployment() -> dict[str, Any]:
    return {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': 'web', 'finalizers': ['a/one']},
            'spec': {'replicas': 1, 'selector': {'matchLabels': {'app': 'web'}},
                     'strategy': {'type': 'RollingUpdate', 'rollingUpdate': {'maxSurge': 1}},
                     'template': {'metadata': {'labels': {'app': 'web'}}, 'spec': {
                         'containers': [
                             {'name': 'app', 'image': 'app:1', 'ports': [{'containerPort': 80, 'name': 'http'}],
                              'env': [{'name': 'A', 'value': '1'}, {'name': 'B', 'value': '2'}]},
                             {'name': 'sidecar', 'image': 'side:1'}],
                         'volumes': [{'name': 'data', 'emptyDir': {}}]}}}}


async def test_merge_patch_merges_nested_objects(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(nested={'a': '1', 'b': '2'}))
    reply = await api.patch(f'{WIDGETS}/w', {'spec': {'nested': {'b': '3'}}}, MERGE)
    assert reply.body['spec']['nested'] == {'a': '1', 'b': '3'}


async def test_merge_patch_replaces_lists(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(tags=['a', 'b']))
    reply = await api.patch(f'{WIDGETS}/w', {'spec': {'tags': ['c']}}, MERGE)
    assert reply.body['spec']['tags'] == ['c']


async def test_merge_patch_null_deletes_a_key(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(nested={'a': '1', 'b': '2'}))
    reply = await api.patch(f'{WIDGETS}/w', {'spec': {'nested': {'a': None}}}, MERGE)
    assert reply.body['spec']['nested'] == {'b': '2'}


async def test_json_patch_applies_operations_in_order(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(tags=['a']))
    operations = [{'op': 'add', 'path': '/spec/tags/-', 'value': 'b'},
                  {'op': 'replace', 'path': '/spec/size', 'value': 'large'},
                  {'op': 'remove', 'path': '/spec/tags/0'}]
    reply = await api.patch(f'{WIDGETS}/w', operations, JSON_PATCH)
    assert reply.status == 200
    assert reply.body['spec']['tags'] == ['b'] and reply.body['spec']['size'] == 'large'


async def test_json_patch_failed_test_operation_is_unprocessable(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    operations = [{'op': 'test', 'path': '/spec/size', 'value': 'large'},
                  {'op': 'replace', 'path': '/spec/size', 'value': 'medium'}]
    reply = await api.patch(f'{WIDGETS}/w', operations, JSON_PATCH)
    assert reply.status == 422
    assert reply.body['reason'] == 'Invalid'
    assert reply.body['details']['causes'][0]['message'] == 'testing value /spec/size failed: test failed'
    assert (await api.get(f'{WIDGETS}/w')).body['spec']['size'] == 'small'


async def test_json_patch_on_a_missing_path_is_unprocessable(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    reply = await api.patch(f'{WIDGETS}/w', [{'op': 'remove', 'path': '/spec/absent'}], JSON_PATCH)
    assert reply.status == 422


async def test_malformed_json_patch_is_a_bad_request(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    reply = await api.patch(f'{WIDGETS}/w', [{'op': 'frobnicate', 'path': '/spec'}], JSON_PATCH)
    assert reply.status == 400


async def test_strategic_merge_patch_merges_containers_and_env_by_name(api: ApiClient) -> None:
    await api.post(DEPLOYMENTS, deployment())
    patch = {'spec': {'template': {'spec': {'containers': [
        {'name': 'app', 'image': 'app:2', 'env': [{'name': 'B', 'value': 'two'}, {'name': 'C', 'value': '3'}]}]}}}}
    reply = await api.patch(f'{DEPLOYMENTS}/web', patch, STRATEGIC)
    containers = reply.body['spec']['template']['spec']['containers']
    assert [c['name'] for c in containers] == ['app', 'sidecar']
    assert containers[0]['image'] == 'app:2'
    assert containers[0]['env'] == [{'name': 'A', 'value': '1'}, {'name': 'B', 'value': 'two'},
                                    {'name': 'C', 'value': '3'}]
    assert containers[0]['ports'] == [{'containerPort': 80, 'name': 'http'}]


async def test_strategic_merge_patch_deletes_a_list_item_by_key(api: ApiClient) -> None:
    await api.post(DEPLOYMENTS, deployment())
    patch = {'spec': {'template': {'spec': {'containers': [{'name': 'sidecar', '$patch': 'delete'}]}}}}
    reply = await api.patch(f'{DEPLOYMENTS}/web', patch, STRATEGIC)
    assert [c['name'] for c in reply.body['spec']['template']['spec']['containers']] == ['app']


async def test_strategic_merge_patch_honours_set_element_order(api: ApiClient) -> None:
    await api.post(DEPLOYMENTS, deployment())
    patch = {'spec': {'template': {'spec': {'$setElementOrder/containers': [{'name': 'sidecar'}, {'name': 'app'}],
                                            'containers': [{'name': 'sidecar', 'image': 'side:2'}]}}}}
    reply = await api.patch(f'{DEPLOYMENTS}/web', patch, STRATEGIC)
    containers = reply.body['spec']['template']['spec']['containers']
    assert [(c['name'], c['image']) for c in containers] == [('sidecar', 'side:2'), ('app', 'app:1')]


async def test_strategic_merge_patch_merges_finalizers_and_deletes_from_primitive_lists(api: ApiClient) -> None:
    await api.post(DEPLOYMENTS, deployment())
    added = await api.patch(f'{DEPLOYMENTS}/web', {'metadata': {'finalizers': ['b/two']}}, STRATEGIC)
    assert added.body['metadata']['finalizers'] == ['a/one', 'b/two']
    removed = await api.patch(f'{DEPLOYMENTS}/web', {'metadata': {'$deleteFromPrimitiveList/finalizers': ['a/one']}},
                              STRATEGIC)
    assert removed.body['metadata']['finalizers'] == ['b/two']


async def test_strategic_merge_patch_retain_keys_drops_other_fields(api: ApiClient) -> None:
    await api.post(DEPLOYMENTS, deployment())
    patch = {'spec': {'strategy': {'$retainKeys': ['type'], 'type': 'Recreate'}}}
    reply = await api.patch(f'{DEPLOYMENTS}/web', patch, STRATEGIC)
    assert reply.body['spec']['strategy'] == {'type': 'Recreate'}


async def test_strategic_merge_patch_replace_directive_replaces_a_map(api: ApiClient) -> None:
    await api.post(CONFIGMAPS, {'metadata': {'name': 'c', 'labels': {'a': '1', 'b': '2'}}})
    reply = await api.patch(f'{CONFIGMAPS}/c', {'metadata': {'labels': {'$patch': 'replace', 'c': '3'}}}, STRATEGIC)
    assert reply.body['metadata']['labels'] == {'c': '3'}


async def test_strategic_merge_patch_merges_service_ports_by_port(api: ApiClient) -> None:
    service = {'metadata': {'name': 's'}, 'spec': {'ports': [{'port': 80, 'name': 'http'}, {'port': 443, 'name': 'https'}]}}
    await api.post(SERVICES, service)
    reply = await api.patch(f'{SERVICES}/s', {'spec': {'ports': [{'port': 443, 'targetPort': 8443}]}}, STRATEGIC)
    assert reply.body['spec']['ports'] == [{'port': 80, 'name': 'http'},
                                           {'port': 443, 'name': 'https', 'targetPort': 8443}]


async def test_strategic_merge_patch_on_a_custom_resource_is_unsupported(api: ApiClient,
                                                                         widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    reply = await api.patch(f'{WIDGETS}/w', {'spec': {'size': 'large'}}, STRATEGIC)
    assert reply.status == 415
    assert reply.body['reason'] == 'UnsupportedMediaType'
    assert reply.body['message'] == ('the body of the request was in an unknown format - accepted media types include: '
                                     'application/json-patch+json, application/merge-patch+json, '
                                     'application/apply-patch+yaml')


async def test_unknown_patch_content_type_is_unsupported(api: ApiClient) -> None:
    await api.post(CONFIGMAPS, {'metadata': {'name': 'c'}})
    reply = await api.patch(f'{CONFIGMAPS}/c', {'data': {'a': '1'}}, 'application/json')
    assert reply.status == 415


async def test_patching_a_missing_object_is_not_found(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.patch(f'{WIDGETS}/nope', {'spec': {'size': 'large'}}, MERGE)
    assert reply.status == 404


async def test_apply_patch_creates_a_missing_object(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.patch(f'{WIDGETS}/w', yaml.safe_dump(widget(replicas=2)), APPLY, params={'fieldManager': 'me'})
    assert reply.status == 201
    assert reply.body['spec'] == {'size': 'small', 'replicas': 2}
    assert reply.body['metadata']['generation'] == 1


async def test_apply_patch_merges_into_an_existing_object(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(nested={'a': '1'}))
    applied = widget(nested={'b': '2'})
    reply = await api.patch(f'{WIDGETS}/w', yaml.safe_dump(applied), APPLY, params={'fieldManager': 'me'})
    assert reply.status == 200
    assert reply.body['spec']['nested'] == {'a': '1', 'b': '2'}


async def test_apply_patch_without_field_manager_is_a_bad_request(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.patch(f'{WIDGETS}/w', yaml.safe_dump(widget()), APPLY)
    assert reply.status == 400


async def test_apply_patch_accepts_json_as_yaml(api: ApiClient) -> None:
    body = json.dumps({'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'c'}, 'data': {'k': 'v'}})
    reply = await api.patch(f'{CONFIGMAPS}/c', body, APPLY, params={'fieldManager': 'me'})
    assert reply.status == 201 and reply.body['data'] == {'k': 'v'}


async def test_apply_patch_with_an_undeclared_field_fails_the_typed_conversion(
        api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.patch(f'{WIDGETS}/w', yaml.safe_dump(widget(bogus=1)), APPLY, params={'fieldManager': 'me'})
    assert reply.status == 500
    assert reply.body['message'] == ('failed to create typed patch object (default/w; harness.test/v1, Kind=Widget): '
                                     '.spec.bogus: field not declared in schema')
    assert 'reason' not in reply.body
