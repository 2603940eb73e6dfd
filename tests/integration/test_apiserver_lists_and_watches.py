"""Lists, selectors and watches in the API emulator."""
from __future__ import annotations

import asyncio
import contextlib
import pathlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import kubernetes
import pytest

from conftest import CONFIGMAPS, WIDGETS, ApiClient
from harness.apiserver import ApiServer


def widget(name: str = 'w', labels: dict[str, str] | None = None, size: str = 'small') -> dict[str, Any]:
    return {'apiVersion': 'harness.test/v1', 'kind': 'Widget', 'metadata': {'name': name, 'labels': labels or {}},
            'spec': {'size': size}}


def names(reply_body: dict[str, Any]) -> list[str]:
    return [item['metadata']['name'] for item in reply_body['items']]


async def test_list_has_kind_api_version_and_the_current_resource_version(
        api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget('a'))
    last = (await api.post(CONFIGMAPS, {'metadata': {'name': 'c'}})).body['metadata']['resourceVersion']
    reply = await api.get(WIDGETS)
    assert reply.body['kind'] == 'WidgetList' and reply.body['apiVersion'] == 'harness.test/v1'
    assert reply.body['metadata']['resourceVersion'] == last  # the global counter, not the newest widget's
    assert reply.body['items'][0]['kind'] == 'Widget'


async def test_builtin_list_items_carry_no_kind(api: ApiClient) -> None:
    await api.post(CONFIGMAPS, {'metadata': {'name': 'c'}})
    reply = await api.get(CONFIGMAPS)
    assert reply.body['kind'] == 'ConfigMapList' and reply.body['apiVersion'] == 'v1'
    assert 'kind' not in reply.body['items'][0]


async def test_cluster_wide_list_spans_namespaces(api: ApiClient) -> None:
    await api.post(CONFIGMAPS, {'metadata': {'name': 'a'}})
    await api.post('/api/v1/namespaces/kube-system/configmaps', {'metadata': {'name': 'b'}})
    assert set(names((await api.get('/api/v1/configmaps')).body)) == {'a', 'b'}
    assert names((await api.get(CONFIGMAPS)).body) == ['a']


@pytest.mark.parametrize('selector, expected', [
    ('app=web', ['web-prod', 'web-test']),
    ('app==web', ['web-prod', 'web-test']),
    ('app!=web', ['db', 'bare']),
    ('env in (prod,stage)', ['web-prod', 'db']),
    ('env notin (prod)', ['web-test', 'bare']),
    ('env', ['web-prod', 'web-test', 'db']),
    ('!env', ['bare']),
    ('app=web,env=test', ['web-test']),
    ('tier>2', ['db']),
], ids=['equals', 'double-equals', 'not-equals-includes-unlabelled', 'in-set', 'notin-includes-unlabelled',
        'exists', 'does-not-exist', 'conjunction', 'greater-than'])
async def test_label_selector(api: ApiClient, selector: str, expected: list[str]) -> None:
    for name, labels in [('web-prod', {'app': 'web', 'env': 'prod', 'tier': '1'}),
                         ('web-test', {'app': 'web', 'env': 'test'}),
                         ('db', {'app': 'db', 'env': 'prod', 'tier': '3'}),
                         ('bare', {})]:
        await api.post(CONFIGMAPS, {'metadata': {'name': name, 'labels': labels}})
    reply = await api.get(CONFIGMAPS, params={'labelSelector': selector})
    assert reply.status == 200
    assert sorted(names(reply.body)) == sorted(expected)


async def test_malformed_label_selector_is_a_bad_request(api: ApiClient) -> None:
    reply = await api.get(CONFIGMAPS, params={'labelSelector': 'a in (x'})
    assert reply.status == 400 and reply.body['reason'] == 'BadRequest'


async def test_field_selector_by_name_and_namespace(api: ApiClient) -> None:
    await api.post(CONFIGMAPS, {'metadata': {'name': 'a'}})
    await api.post(CONFIGMAPS, {'metadata': {'name': 'b'}})
    await api.post('/api/v1/namespaces/kube-system/configmaps', {'metadata': {'name': 'a'}})
    by_name = await api.get('/api/v1/configmaps', params={'fieldSelector': 'metadata.name=a'})
    assert [(i['metadata']['namespace'], i['metadata']['name']) for i in by_name.body['items']] == [
        ('default', 'a'), ('kube-system', 'a')]
    both = await api.get('/api/v1/configmaps', params={'fieldSelector': 'metadata.name=a,metadata.namespace!=default'})
    assert [i['metadata']['namespace'] for i in both.body['items']] == ['kube-system']


async def test_unsupported_field_selector_is_a_bad_request(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.get(WIDGETS, params={'fieldSelector': 'spec.replicas=1'})
    assert reply.status == 400
    assert reply.body['message'] == 'field label not supported: spec.replicas'


async def test_crd_selectable_field_can_be_selected(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget('s', size='small'))
    await api.post(WIDGETS, widget('l', size='large'))
    reply = await api.get(WIDGETS, params={'fieldSelector': 'spec.size=large'})
    assert names(reply.body) == ['l']


async def test_limit_and_continue_page_through_a_list(api: ApiClient) -> None:
    for name in ['a', 'b', 'c', 'd', 'e']:
        await api.post(CONFIGMAPS, {'metadata': {'name': name}})
    first = (await api.get(CONFIGMAPS, params={'limit': '2'})).body
    assert names(first) == ['a', 'b'] and first['metadata']['remainingItemCount'] == 3
    second = (await api.get(CONFIGMAPS, params={'limit': '2', 'continue': first['metadata']['continue']})).body
    assert names(second) == ['c', 'd']
    third = (await api.get(CONFIGMAPS, params={'limit': '2', 'continue': second['metadata']['continue']})).body
    assert names(third) == ['e'] and 'continue' not in third['metadata']


async def test_watch_replays_every_event_after_the_given_resource_version(
        api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    since = (await api.post(WIDGETS, widget('a'))).body['metadata']['resourceVersion']
    await api.post(WIDGETS, widget('b'))
    await api.patch(f'{WIDGETS}/a', {'spec': {'replicas': 2}})
    await api.delete(f'{WIDGETS}/b')
    events = await api.watch(WIDGETS, {'resourceVersion': since}, count=3)
    assert [(e['type'], e['object']['metadata']['name']) for e in events] == [
        ('ADDED', 'b'), ('MODIFIED', 'a'), ('DELETED', 'b')]
    rvs = [int(e['object']['metadata']['resourceVersion']) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(since)


async def test_watch_without_resource_version_starts_with_synthetic_added_events(
        api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget('a'))
    await api.patch(f'{WIDGETS}/a', {'spec': {'replicas': 2}})
    for params in ({}, {'resourceVersion': '0'}):
        events = await api.watch(WIDGETS, params, count=1)
        assert events[0]['type'] == 'ADDED' and events[0]['object']['spec']['replicas'] == 2


async def test_watch_continues_with_live_events(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    since = (await api.get(WIDGETS)).body['metadata']['resourceVersion']
    watch = asyncio.ensure_future(api.watch(WIDGETS, {'resourceVersion': since}, count=2))
    await api.post(WIDGETS, widget('live'))
    await api.patch(f'{WIDGETS}/live/status', {'status': {'phase': 'Ready'}})
    events = await watch
    assert [e['type'] for e in events] == ['ADDED', 'MODIFIED']
    assert events[1]['object']['status'] == {'phase': 'Ready'}  # the object as stored after the change


async def test_watch_events_carry_the_stored_object(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    since = (await api.get(WIDGETS)).body['metadata']['resourceVersion']
    stored = (await api.post(WIDGETS, widget('a'))).body
    events = await api.watch(WIDGETS, {'resourceVersion': since}, count=1)
    assert events[0]['object'] == stored


async def test_replayed_events_carry_each_state_as_it_was_stored(api: ApiClient) -> None:
    since = (await api.get(CONFIGMAPS)).body['metadata']['resourceVersion']
    created = (await api.post(CONFIGMAPS, {'metadata': {'name': 'c'}, 'data': {'v': '1'}})).body
    updated = (await api.patch(f'{CONFIGMAPS}/c', {'data': {'v': '2'}})).body
    await api.delete(f'{CONFIGMAPS}/c')
    events = await api.watch(CONFIGMAPS, {'resourceVersion': since}, count=3)
    assert [e['type'] for e in events] == ['ADDED', 'MODIFIED', 'DELETED']
    assert events[0]['object'] == created and events[1]['object'] == updated
    deleted = events[2]['object']
    assert deleted['data'] == {'v': '2'}
    assert int(deleted['metadata']['resourceVersion']) > int(updated['metadata']['resourceVersion'])


async def test_watch_applies_label_selectors_with_transitions(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    since = (await api.get(WIDGETS)).body['metadata']['resourceVersion']
    await api.post(WIDGETS, widget('a', labels={'team': 'x'}))
    await api.post(WIDGETS, widget('b', labels={'team': 'y'}))
    await api.patch(f'{WIDGETS}/a', {'metadata': {'labels': {'team': 'y'}}})
    await api.patch(f'{WIDGETS}/b', {'metadata': {'labels': {'team': 'x'}}})
    events = await api.watch(WIDGETS, {'resourceVersion': since, 'labelSelector': 'team=x'}, count=3)
    assert [(e['type'], e['object']['metadata']['name']) for e in events] == [
        ('ADDED', 'a'), ('DELETED', 'a'), ('ADDED', 'b')]


async def test_watch_applies_field_selectors(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    since = (await api.get(WIDGETS)).body['metadata']['resourceVersion']
    await api.post(WIDGETS, widget('a'))
    await api.post(WIDGETS, widget('b'))
    events = await api.watch(WIDGETS, {'resourceVersion': since, 'fieldSelector': 'metadata.name=b'}, count=1)
    assert events[0]['object']['metadata']['name'] == 'b'


async def test_namespaced_watch_sees_only_its_namespace(api: ApiClient) -> None:
    since = (await api.get(CONFIGMAPS)).body['metadata']['resourceVersion']
    await api.post('/api/v1/namespaces/kube-system/configmaps', {'metadata': {'name': 'elsewhere'}})
    await api.post(CONFIGMAPS, {'metadata': {'name': 'here'}})
    events = await api.watch(CONFIGMAPS, {'resourceVersion': since}, count=1)
    assert events[0]['object']['metadata']['name'] == 'here'


async def test_watch_timeout_seconds_ends_the_stream(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    started = time.monotonic()
    events = await api.watch(WIDGETS, {'resourceVersion': '1', 'timeoutSeconds': '1'})
    assert events == []
    assert 0.9 <= time.monotonic() - started < 5


@contextlib.asynccontextmanager
async def _client_of(server: ApiServer) -> AsyncIterator[ApiClient]:
    """A client of ``server``, which serves while the client is in use."""
    async with server.serve():
        async with aiohttp.ClientSession(base_url=str(server.url)) as session:
            yield ApiClient(session)


@pytest.fixture()
async def small_window_api() -> AsyncIterator[ApiClient]:
    """A server whose event log keeps only 3 events (to make resourceVersions expire)."""
    async with _client_of(ApiServer(event_window=3, strict=True)) as api:
        yield api


async def test_watch_from_an_expired_resource_version_is_gone(small_window_api: ApiClient) -> None:
    api = small_window_api
    old = (await api.post(CONFIGMAPS, {'metadata': {'name': 'first'}})).body['metadata']['resourceVersion']
    for name in ['a', 'b', 'c', 'd']:
        await api.post(CONFIGMAPS, {'metadata': {'name': name}})
    events = await api.watch(CONFIGMAPS, {'resourceVersion': old})
    assert len(events) == 1
    assert events[0]['type'] == 'ERROR'
    status = events[0]['object']
    assert (status['kind'], status['code'], status['reason']) == ('Status', 410, 'Expired')
    assert status['message'].startswith(f'too old resource version: {old} (')


@pytest.fixture()
async def bookmarking_api() -> AsyncIterator[ApiClient]:
    async with _client_of(ApiServer(bookmark_interval=0.2, strict=True)) as api:
        yield api


async def test_watch_sends_bookmarks_when_allowed(bookmarking_api: ApiClient) -> None:
    api = bookmarking_api
    current = (await api.get(CONFIGMAPS)).body['metadata']['resourceVersion']
    events = await api.watch(CONFIGMAPS, {'resourceVersion': current, 'allowWatchBookmarks': 'true'}, count=1)
    assert events[0]['type'] == 'BOOKMARK'
    assert events[0]['object']['kind'] == 'ConfigMap'
    assert events[0]['object']['metadata'] == {'resourceVersion': current}


async def test_watch_sends_no_bookmarks_unless_allowed(bookmarking_api: ApiClient) -> None:
    current = (await bookmarking_api.get(CONFIGMAPS)).body['metadata']['resourceVersion']
    events = await bookmarking_api.watch(CONFIGMAPS, {'resourceVersion': current, 'timeoutSeconds': '1'})
    assert events == []


async def test_send_initial_events_ends_with_an_annotated_bookmark(api: ApiClient) -> None:
    await api.post(CONFIGMAPS, {'metadata': {'name': 'a'}})
    events = await api.watch(CONFIGMAPS, {'sendInitialEvents': 'true', 'allowWatchBookmarks': 'true',
                                          'resourceVersionMatch': 'NotOlderThan'}, count=2)
    assert [e['type'] for e in events] == ['ADDED', 'BOOKMARK']
    assert events[1]['object']['metadata']['annotations'] == {'k8s.io/initial-events-end': 'true'}


@pytest.fixture()
def core_v1(apiserver_in_thread: ApiServer) -> Iterator[kubernetes.client.CoreV1Api]:
    configuration = kubernetes.client.Configuration()
    configuration.host = str(apiserver_in_thread.url).rstrip('/')
    with kubernetes.client.ApiClient(configuration) as client:
        yield kubernetes.client.CoreV1Api(client)


def test_official_client_watch_streams_typed_events(core_v1: kubernetes.client.CoreV1Api) -> None:
    listed = core_v1.list_namespaced_config_map('default')
    assert listed.metadata is not None
    core_v1.create_namespaced_config_map('default', kubernetes.client.V1ConfigMap(
        metadata=kubernetes.client.V1ObjectMeta(name='c')))
    core_v1.delete_namespaced_config_map('c', 'default')
    seen = []
    watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
    for event in watch.stream(core_v1.list_namespaced_config_map, 'default',  # type: ignore[no-untyped-call]
                              resource_version=listed.metadata.resource_version, timeout_seconds=2):
        seen.append((event['type'], event['object'].metadata.name))
        if len(seen) == 2:
            break
    assert seen == [('ADDED', 'c'), ('DELETED', 'c')]


def test_a_watch_whose_client_is_gone_before_the_answer_starts_is_dropped_quietly() -> None:
    """A client that resets its connection right after asking (as a stopping operator does) is
    not a server error: the emulator serves on and stops cleanly."""
    server = ApiServer(crd_dirs=[pathlib.Path(__file__).resolve().parents[2] / 'crds'], strict=True)
    with server.run_in_thread():  # raises, on leaving, what the server failed to serve
        for _ in range(100):
            with socket.create_connection((server.url.host, server.url.port)) as sock:
                sock.sendall(b'GET /api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1 HTTP/1.1\r\n'
                             b'Host: emulator\r\n\r\n')
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))  # close with a reset
        with socket.create_connection((server.url.host, server.url.port)) as sock:  # and it still answers
            sock.sendall(b'GET /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\r\n')
            assert sock.makefile('rb').readline().startswith(b'HTTP/1.1 200')
