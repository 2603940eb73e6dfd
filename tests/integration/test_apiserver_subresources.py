"""The status and scale subresources in the API emulator."""
from __future__ import annotations

from typing import Any

from conftest import GADGETS, WIDGETS, ApiClient

DEPLOYMENTS = '/apis/apps/v1/namespaces/default/deployments'


def widget(name: str = 'w', **spec: Any) -> dict[str, Any]:
    return {'apiVersion': 'harness.test/v1', 'kind': 'Widget', 'metadata': {'name': name},
            'spec': {'size': 'small', **spec}}


async def test_create_drops_status_when_the_status_subresource_is_enabled(
        api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    body = widget()
    body['status'] = {'phase': 'Faked'}
    reply = await api.post(WIDGETS, body)
    assert 'status' not in reply.body


async def test_status_write_changes_only_status(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget())).body
    body = dict(created, spec={'size': 'large'}, status={'phase': 'Ready'})
    body['metadata'] = dict(created['metadata'], labels={'sneaky': 'yes'})
    reply = await api.put(f'{WIDGETS}/w/status', body)
    assert reply.status == 200
    assert reply.body['status'] == {'phase': 'Ready'}
    assert reply.body['spec'] == created['spec']
    assert 'labels' not in reply.body['metadata']


async def test_status_write_does_not_bump_generation(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    reply = await api.patch(f'{WIDGETS}/w/status', {'status': {'phase': 'Ready', 'observedGeneration': 1}})
    assert reply.body['metadata']['generation'] == 1
    assert reply.body['status'] == {'phase': 'Ready', 'observedGeneration': 1}


async def test_status_write_bumps_the_resource_version(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget())).body
    reply = await api.patch(f'{WIDGETS}/w/status', {'status': {'phase': 'Ready'}})
    assert int(reply.body['metadata']['resourceVersion']) > int(created['metadata']['resourceVersion'])


async def test_main_resource_write_ignores_status(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    await api.patch(f'{WIDGETS}/w/status', {'status': {'phase': 'Ready'}})
    reply = await api.patch(f'{WIDGETS}/w', {'spec': {'replicas': 2}, 'status': {'phase': 'Hijacked'}})
    assert reply.body['status'] == {'phase': 'Ready'}
    assert reply.body['spec']['replicas'] == 2


async def test_status_put_stale_resource_version_is_a_conflict(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget())).body
    await api.patch(f'{WIDGETS}/w', {'spec': {'replicas': 2}})
    reply = await api.put(f'{WIDGETS}/w/status', dict(created, status={'phase': 'Ready'}))
    assert reply.status == 409


async def test_status_subresource_is_not_served_when_not_declared(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(GADGETS, {'apiVersion': 'harness.test/v1', 'kind': 'Gadget', 'metadata': {'name': 'g'}})
    reply = await api.patch(f'{GADGETS}/g/status', {'status': {'phase': 'Up'}})
    assert reply.status == 404


async def test_builtin_status_subresource_changes_only_status(api: ApiClient) -> None:
    deployment = {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': 'web'},
                  'spec': {'replicas': 2, 'selector': {'matchLabels': {'app': 'web'}},
                           'template': {'metadata': {'labels': {'app': 'web'}},
                                        'spec': {'containers': [{'name': 'c', 'image': 'nginx'}]}}},
                  'status': {'replicas': 99}}
    created = await api.post(DEPLOYMENTS, deployment)
    assert 'status' not in created.body
    reply = await api.patch(f'{DEPLOYMENTS}/web/status', {'status': {'readyReplicas': 2}, 'spec': {'replicas': 7}})
    assert reply.body['status'] == {'readyReplicas': 2}
    assert reply.body['spec']['replicas'] == 2 and reply.body['metadata']['generation'] == 1


async def test_scale_reports_spec_and_status_replicas_and_selector(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(replicas=3))
    await api.patch(f'{WIDGETS}/w/status', {'status': {'replicas': 2, 'selector': 'app=w'}})
    reply = await api.get(f'{WIDGETS}/w/scale')
    assert reply.status == 200
    assert reply.body['kind'] == 'Scale' and reply.body['apiVersion'] == 'autoscaling/v1'
    assert reply.body['spec'] == {'replicas': 3}
    assert reply.body['status'] == {'replicas': 2, 'selector': 'app=w'}
    assert reply.body['metadata']['name'] == 'w' and reply.body['metadata']['namespace'] == 'default'


async def test_scale_put_sets_spec_replicas_and_bumps_generation(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(replicas=1))
    scale = (await api.get(f'{WIDGETS}/w/scale')).body
    scale['spec']['replicas'] = 4
    reply = await api.put(f'{WIDGETS}/w/scale', scale)
    assert reply.status == 200 and reply.body['spec']['replicas'] == 4
    obj = (await api.get(f'{WIDGETS}/w')).body
    assert obj['spec']['replicas'] == 4 and obj['metadata']['generation'] == 2


async def test_scale_patch_sets_spec_replicas(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(replicas=1))
    reply = await api.patch(f'{WIDGETS}/w/scale', {'spec': {'replicas': 6}})
    assert reply.body['spec']['replicas'] == 6
    assert (await api.get(f'{WIDGETS}/w')).body['spec']['replicas'] == 6


async def test_scale_with_a_stale_resource_version_is_a_conflict(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(replicas=1))
    scale = (await api.get(f'{WIDGETS}/w/scale')).body
    await api.patch(f'{WIDGETS}/w', {'spec': {'replicas': 2}})
    scale['spec']['replicas'] = 5
    reply = await api.put(f'{WIDGETS}/w/scale', scale)
    assert reply.status == 409


async def test_scale_is_validated_against_the_schema(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(replicas=1))
    reply = await api.patch(f'{WIDGETS}/w/scale', {'spec': {'replicas': 11}})  # the CEL rule allows >10 only if large
    assert reply.status == 422
    assert 'more than 10 replicas need a large widget' in reply.body['message']


async def test_deployment_scale_reads_the_selector_from_the_spec(api: ApiClient) -> None:
    deployment = {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': 'web'},
                  'spec': {'replicas': 2, 'selector': {'matchLabels': {'app': 'web'}},
                           'template': {'metadata': {'labels': {'app': 'web'}},
                                        'spec': {'containers': [{'name': 'c', 'image': 'nginx'}]}}}}
    await api.post(DEPLOYMENTS, deployment)
    reply = await api.get(f'{DEPLOYMENTS}/web/scale')
    assert reply.body['spec'] == {'replicas': 2}
    assert reply.body['status'] == {'replicas': 0, 'selector': 'app=web'}
