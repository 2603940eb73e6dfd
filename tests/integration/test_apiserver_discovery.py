"""Discovery in the API emulator: built-ins, CRDs from files, CRDs created and deleted through the API."""
from __future__ import annotations

import pathlib
from typing import Any

import pytest

from conftest import CRDS, GADGETS, WIDGETS, ApiClient, widget_crds
from harness.apiserver import ApiServer


def _resource(resource_list: dict[str, Any], name: str) -> dict[str, Any]:
    return next(entry for entry in resource_list['resources'] if entry['name'] == name)


async def test_core_group_lists_builtin_resources(api: ApiClient) -> None:
    reply = await api.get('/api/v1')
    assert reply.status == 200
    assert reply.body['kind'] == 'APIResourceList'
    pods = _resource(reply.body, 'pods')
    assert pods['kind'] == 'Pod' and pods['namespaced'] is True and 'watch' in pods['verbs']
    assert _resource(reply.body, 'namespaces')['namespaced'] is False
    assert _resource(reply.body, 'pods/status')['verbs'] == ['get', 'patch', 'update']


async def test_crds_from_the_repository_directory_are_served_at_startup(api: ApiClient) -> None:
    reply = await api.get('/apis/agentgov.io/v1alpha1')
    assert reply.status == 200
    agd = _resource(reply.body, 'agentdeployments')
    assert agd['kind'] == 'AgentDeployment'
    assert agd['singularName'] == 'agentdeployment'
    assert 'agd' in agd['shortNames']
    assert 'agentgov' in agd['categories']
    assert agd['namespaced'] is True
    names = {entry['name'] for entry in reply.body['resources']}
    assert {'agentbudgets', 'toolpolicies', 'regionpolicies', 'agentdeployments/status'} <= names


async def test_crds_loaded_from_files_are_stored_and_listable(api: ApiClient) -> None:
    reply = await api.get(CRDS)
    assert reply.status == 200
    assert reply.body['kind'] == 'CustomResourceDefinitionList'
    names = {item['metadata']['name'] for item in reply.body['items']}
    assert 'agentdeployments.agentgov.io' in names


def test_missing_crd_directory_fails_at_startup(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match='does not exist'):
        ApiServer(crd_dirs=[tmp_path / 'absent'])


def test_directory_without_crds_fails_at_startup(tmp_path: pathlib.Path) -> None:
    (tmp_path / 'not-a-crd.yaml').write_text('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n')
    with pytest.raises(FileNotFoundError, match='no CustomResourceDefinition'):
        ApiServer(crd_dirs=[tmp_path])


async def test_crd_created_through_the_api_is_served_with_its_names_and_subresources(
        api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.get('/apis/harness.test/v1')
    assert reply.status == 200
    widget = _resource(reply.body, 'widgets')
    assert widget['kind'] == 'Widget'
    assert widget['singularName'] == 'widget'
    assert widget['shortNames'] == ['wd']
    assert widget['categories'] == ['harness']
    assert widget['namespaced'] is True
    assert _resource(reply.body, 'widgets/status')['kind'] == 'Widget'
    scale = _resource(reply.body, 'widgets/scale')
    assert (scale['group'], scale['version'], scale['kind']) == ('autoscaling', 'v1', 'Scale')
    gadget = _resource(reply.body, 'gadgets')
    assert gadget['namespaced'] is False
    assert gadget['singularName'] == 'gadget'  # defaulted from the kind


async def test_api_created_crd_serves_its_objects(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = await api.post(WIDGETS, {'apiVersion': 'harness.test/v1', 'kind': 'Widget',
                                       'metadata': {'name': 'w'}, 'spec': {'size': 'small'}})
    assert created.status == 201, created.body
    fetched = await api.get(f'{WIDGETS}/w')
    assert fetched.status == 200
    assert fetched.body['kind'] == 'Widget'


async def test_crd_created_through_the_api_gets_an_established_status(
        api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.get(f'{CRDS}/widgets.harness.test')
    conditions = {c['type']: c['status'] for c in reply.body['status']['conditions']}
    assert conditions == {'NamesAccepted': 'True', 'Established': 'True'}
    assert reply.body['status']['acceptedNames']['listKind'] == 'WidgetList'
    assert reply.body['status']['storedVersions'] == ['v1']


async def test_group_and_group_list_name_the_preferred_version(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    groups = (await api.get('/apis')).body
    assert groups['kind'] == 'APIGroupList'
    harness = next(group for group in groups['groups'] if group['name'] == 'harness.test')
    assert harness['preferredVersion'] == {'groupVersion': 'harness.test/v1', 'version': 'v1'}
    autoscaling = next(group for group in groups['groups'] if group['name'] == 'autoscaling')
    assert autoscaling['preferredVersion']['version'] == 'v2'
    group = (await api.get('/apis/harness.test')).body
    assert group['kind'] == 'APIGroup' and group['name'] == 'harness.test'


async def test_deleted_crd_stops_being_served(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.delete(f'{CRDS}/widgets.harness.test')
    assert reply.status == 200
    assert (await api.get(f'{CRDS}/widgets.harness.test')).status == 404
    gone = await api.get(WIDGETS)
    assert gone.status == 404
    assert gone.body['reason'] == 'NotFound'
    version = (await api.get('/apis/harness.test/v1')).body
    assert 'widgets' not in {entry['name'] for entry in version['resources']}


async def test_deleting_a_crd_deletes_its_objects(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(GADGETS, {'apiVersion': 'harness.test/v1', 'kind': 'Gadget', 'metadata': {'name': 'g'}})
    await api.delete(f'{CRDS}/gadgets.harness.test')
    crd = widget_crds()[1]
    assert (await api.post(CRDS, crd)).status == 201
    listed = await api.get(GADGETS)
    assert listed.body['items'] == []


async def test_deleting_the_last_crd_of_a_group_removes_the_group(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.delete(f'{CRDS}/widgets.harness.test')
    await api.delete(f'{CRDS}/gadgets.harness.test')
    assert (await api.get('/apis/harness.test')).status == 404
    groups = (await api.get('/apis')).body['groups']
    assert 'harness.test' not in {group['name'] for group in groups}


async def test_unknown_resource_is_not_found(api: ApiClient) -> None:
    reply = await api.get('/apis/agentgov.io/v1alpha1/namespaces/default/nonexistents')
    assert reply.status == 404
    assert reply.body == {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                          'message': 'the server could not find the requested resource', 'reason': 'NotFound',
                          'details': {}, 'code': 404}


async def test_unknown_path_is_a_not_found_status(api: ApiClient) -> None:
    reply = await api.get('/no/such/path')
    assert reply.status == 404
    assert reply.body['kind'] == 'Status' and 'traceback' not in str(reply.body)


async def test_version_endpoint_reports_a_kubernetes_version(api: ApiClient) -> None:
    reply = await api.get('/version')
    assert reply.body['major'] == '1' and reply.body['gitVersion'].startswith('v1.')


async def test_openapi_v3_declares_field_validation_on_patch(api: ApiClient) -> None:
    index = (await api.get('/openapi/v3')).body
    url = index['paths']['apis/agentgov.io/v1alpha1']['serverRelativeURL']
    document = (await api.get(url)).body
    patch = document['paths']['/apis/agentgov.io/v1alpha1/namespaces/{namespace}/agentdeployments/{name}']['patch']
    assert patch['x-kubernetes-group-version-kind'] == {'group': 'agentgov.io', 'version': 'v1alpha1',
                                                        'kind': 'AgentDeployment'}
    assert {'name': 'fieldValidation', 'in': 'query'}.items() <= next(
        p for p in patch['parameters'] if p['name'] == 'fieldValidation').items()
