"""Deletion in the API emulator: finalizers, propagation policies and ownerReference garbage collection."""
from __future__ import annotations

import asyncio
from typing import Any

from conftest import CONFIGMAPS, WIDGETS, ApiClient
from harness.waiting import async_wait_for

SECRETS = '/api/v1/namespaces/default/secrets'


def widget(name: str = 'w', finalizers: list[str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {'name': name}
    if finalizers:
        meta['finalizers'] = finalizers
    return {'apiVersion': 'harness.test/v1', 'kind': 'Widget', 'metadata': meta, 'spec': {'size': 'small'}}


def owned(name: str, *owners: dict[str, Any], block: bool = False, finalizers: list[str] | None = None) -> dict[str, Any]:
    refs = [{'apiVersion': owner['apiVersion'], 'kind': owner['kind'], 'name': owner['metadata']['name'],
             'uid': owner['metadata']['uid'], **({'blockOwnerDeletion': True} if block else {})} for owner in owners]
    meta: dict[str, Any] = {'name': name, 'ownerReferences': refs}
    if finalizers:
        meta['finalizers'] = finalizers
    return {'metadata': meta}


async def _exists(api: ApiClient, path: str) -> bool:
    return (await api.get(path)).status == 200


async def test_delete_without_finalizers_removes_the_object(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget())).body
    reply = await api.delete(f'{WIDGETS}/w')
    assert reply.status == 200
    assert reply.body['status'] == 'Success'
    assert reply.body['details'] == {'name': 'w', 'group': 'harness.test', 'kind': 'widgets',
                                     'uid': created['metadata']['uid']}
    assert (await api.get(f'{WIDGETS}/w')).status == 404


async def test_deleting_a_missing_object_is_not_found(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.delete(f'{WIDGETS}/nope')
    assert reply.status == 404 and reply.body['message'] == 'widgets.harness.test "nope" not found'


async def test_finalizers_hold_the_object_with_a_deletion_timestamp(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(finalizers=['harness.test/hold']))
    reply = await api.delete(f'{WIDGETS}/w')
    assert reply.status == 200
    meta = reply.body['metadata']
    assert meta['deletionTimestamp'] and meta['deletionGracePeriodSeconds'] == 0
    assert meta['generation'] == 2  # markAsDeleting bumps a generation that is set
    still = await api.get(f'{WIDGETS}/w')
    assert still.status == 200 and still.body['metadata']['finalizers'] == ['harness.test/hold']


async def test_removing_the_last_finalizer_completes_the_deletion(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget(finalizers=['harness.test/hold']))).body
    await api.delete(f'{WIDGETS}/w')
    watch = asyncio.ensure_future(api.watch(WIDGETS, {'resourceVersion': created['metadata']['resourceVersion']},
                                            count=2))
    reply = await api.patch(f'{WIDGETS}/w', {'metadata': {'finalizers': None}})
    assert reply.status == 200
    assert 'finalizers' not in reply.body['metadata']
    assert (await api.get(f'{WIDGETS}/w')).status == 404
    events = await watch
    # As the registry's deleteWithoutFinalizers: no MODIFIED for the emptied finalizers, one DELETED
    # carrying the last stored state under the deletion's resourceVersion.
    assert [event['type'] for event in events] == ['MODIFIED', 'DELETED']
    assert events[1]['object']['metadata']['finalizers'] == ['harness.test/hold']
    assert int(events[1]['object']['metadata']['resourceVersion']) > int(reply.body['metadata']['resourceVersion'])


async def test_removing_one_of_several_finalizers_keeps_the_object(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(finalizers=['harness.test/a', 'harness.test/b']))
    await api.delete(f'{WIDGETS}/w')
    reply = await api.patch(f'{WIDGETS}/w', {'metadata': {'finalizers': ['harness.test/b']}})
    assert reply.status == 200
    assert await _exists(api, f'{WIDGETS}/w')


async def test_new_finalizer_on_an_object_being_deleted_is_forbidden(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(finalizers=['harness.test/a']))
    await api.delete(f'{WIDGETS}/w')
    reply = await api.patch(f'{WIDGETS}/w', {'metadata': {'finalizers': ['harness.test/a', 'harness.test/new']}})
    assert reply.status == 422
    assert reply.body['message'] == (
        'Widget.harness.test "w" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the '
        'object is being deleted, found new finalizers []string{"harness.test/new"}')
    assert reply.body['details']['causes'][0]['reason'] == 'FieldValueForbidden'


async def test_second_delete_of_an_object_being_deleted_changes_nothing(api: ApiClient,
                                                                       widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget(finalizers=['harness.test/a']))
    first = (await api.delete(f'{WIDGETS}/w')).body
    second = (await api.delete(f'{WIDGETS}/w')).body
    assert second['metadata']['resourceVersion'] == first['metadata']['resourceVersion']


async def test_background_deletion_collects_dependents_whose_owners_are_all_gone(api: ApiClient) -> None:
    owner = (await api.post(CONFIGMAPS, {'metadata': {'name': 'owner'}})).body
    other = (await api.post(CONFIGMAPS, {'metadata': {'name': 'other-owner'}})).body
    owner['apiVersion'], owner['kind'] = other['apiVersion'], other['kind'] = 'v1', 'ConfigMap'
    await api.post(SECRETS, owned('only-child', owner))
    await api.post(SECRETS, owned('shared-child', owner, other))
    await api.delete(f'{CONFIGMAPS}/owner')
    await async_wait_for(lambda: _exists(api, f'{SECRETS}/only-child'), lambda exists: not exists,
                         what='the only child to be collected')
    assert await _exists(api, f'{SECRETS}/shared-child')


async def test_collection_cascades_through_generations(api: ApiClient) -> None:
    grandparent = (await api.post(CONFIGMAPS, {'metadata': {'name': 'gp'}})).body
    parent = (await api.post(CONFIGMAPS, owned('parent', grandparent))).body
    await api.post(SECRETS, owned('child', parent))
    await api.delete(f'{CONFIGMAPS}/gp')
    await async_wait_for(lambda: _exists(api, f'{SECRETS}/child'), lambda exists: not exists,
                         what='the grandchild to be collected')


async def test_foreground_deletion_waits_for_blocking_dependents(api: ApiClient) -> None:
    owner = (await api.post(CONFIGMAPS, {'metadata': {'name': 'owner'}})).body
    await api.post(SECRETS, owned('blocker', owner, block=True, finalizers=['harness.test/slow']))
    reply = await api.delete(f'{CONFIGMAPS}/owner', {'propagationPolicy': 'Foreground'})
    assert reply.body['metadata']['finalizers'] == ['foregroundDeletion']
    assert reply.body['metadata']['deletionTimestamp']
    blocker = (await api.get(f'{SECRETS}/blocker')).body
    assert blocker['metadata']['deletionTimestamp']  # the dependent is being deleted
    assert await _exists(api, f'{CONFIGMAPS}/owner')  # ... and the owner waits for it
    await api.patch(f'{SECRETS}/blocker', {'metadata': {'finalizers': None}})
    await async_wait_for(lambda: _exists(api, f'{CONFIGMAPS}/owner'), lambda exists: not exists,
                         what='the owner to be deleted after its blocking dependent')


async def test_foreground_deletion_does_not_wait_for_non_blocking_dependents(api: ApiClient) -> None:
    owner = (await api.post(CONFIGMAPS, {'metadata': {'name': 'owner'}})).body
    await api.post(SECRETS, owned('lingering', owner, finalizers=['harness.test/slow']))
    await api.delete(f'{CONFIGMAPS}/owner', {'propagationPolicy': 'Foreground'})
    await async_wait_for(lambda: _exists(api, f'{CONFIGMAPS}/owner'), lambda exists: not exists,
                         what='the owner to go without waiting')
    assert (await api.get(f'{SECRETS}/lingering')).body['metadata']['deletionTimestamp']


async def test_orphan_deletion_keeps_dependents_and_drops_their_owner_reference(api: ApiClient) -> None:
    owner = (await api.post(CONFIGMAPS, {'metadata': {'name': 'owner'}})).body
    await api.post(SECRETS, owned('child', owner))
    await api.delete(f'{CONFIGMAPS}/owner', params={'propagationPolicy': 'Orphan'})
    await async_wait_for(lambda: _exists(api, f'{CONFIGMAPS}/owner'), lambda exists: not exists,
                         what='the owner to be deleted')
    child = (await api.get(f'{SECRETS}/child')).body
    assert 'ownerReferences' not in child['metadata']


async def test_dependent_with_a_dangling_owner_reference_is_collected(api: ApiClient) -> None:
    ghost = {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'ghost',
                                                                   'uid': '00000000-0000-4000-8000-000000000000'}}
    await api.post(SECRETS, owned('orphan', ghost))
    await async_wait_for(lambda: _exists(api, f'{SECRETS}/orphan'), lambda exists: not exists,
                         what='the dependent of a missing owner to be collected')


async def test_delete_with_a_mismatching_uid_precondition_is_a_conflict(api: ApiClient) -> None:
    await api.post(CONFIGMAPS, {'metadata': {'name': 'c'}})
    reply = await api.delete(f'{CONFIGMAPS}/c', {'preconditions': {'uid': 'not-the-uid'}})
    assert reply.status == 409
    assert reply.body['message'].startswith('Operation cannot be fulfilled on configmaps "c": Precondition failed: '
                                            'UID in precondition: not-the-uid')
    assert await _exists(api, f'{CONFIGMAPS}/c')


async def test_invalid_propagation_policy_is_rejected(api: ApiClient) -> None:
    await api.post(CONFIGMAPS, {'metadata': {'name': 'c'}})
    reply = await api.delete(f'{CONFIGMAPS}/c', {'propagationPolicy': 'Sometimes'})
    assert reply.status == 422


async def test_namespace_deletion_removes_its_contents_first(api: ApiClient) -> None:
    await api.post('/api/v1/namespaces', {'metadata': {'name': 'doomed'}})
    await api.post('/api/v1/namespaces/doomed/configmaps', {'metadata': {'name': 'c', 'finalizers': ['harness.test/x']}})
    reply = await api.delete('/api/v1/namespaces/doomed')
    assert reply.body['status']['phase'] == 'Terminating'
    refused = await api.post('/api/v1/namespaces/doomed/configmaps', {'metadata': {'name': 'late'}})
    assert refused.status == 403
    assert 'because it is being terminated' in refused.body['message']
    await api.patch('/api/v1/namespaces/doomed/configmaps/c', {'metadata': {'finalizers': None}})
    await async_wait_for(lambda: _exists(api, '/api/v1/namespaces/doomed'), lambda exists: not exists,
                         what='the namespace to be finalized')


async def test_delete_collection_deletes_only_matching_objects(api: ApiClient) -> None:
    await api.post(CONFIGMAPS, {'metadata': {'name': 'a', 'labels': {'app': 'x'}}})
    await api.post(CONFIGMAPS, {'metadata': {'name': 'b', 'labels': {'app': 'y'}}})
    reply = await api.delete(CONFIGMAPS, params={'labelSelector': 'app=x'})
    assert reply.status == 200 and [item['metadata']['name'] for item in reply.body['items']] == ['a']
    assert not await _exists(api, f'{CONFIGMAPS}/a')
    assert await _exists(api, f'{CONFIGMAPS}/b')
