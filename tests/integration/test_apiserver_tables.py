"""Server-side tables (``Accept: ...;as=Table``) in the API emulator, as ``kubectl get`` asks for them."""
from __future__ import annotations

import re
from typing import Any

from conftest import CONFIGMAPS, GADGETS, WIDGETS, ApiClient

TABLE = 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json'


def widget(name: str = 'w', labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {'apiVersion': 'harness.test/v1', 'kind': 'Widget', 'metadata': {'name': name, 'labels': labels or {}},
            'spec': {'size': 'small', **spec}}


async def _table(api: ApiClient, path: str, **params: str) -> dict[str, Any]:
    reply = await api.get(path, headers={'Accept': TABLE}, params=params or None)
    assert reply.status == 200, reply.body
    assert (reply.body['kind'], reply.body['apiVersion']) == ('Table', 'meta.k8s.io/v1')
    return reply.body  # type: ignore[no-any-return]


async def test_columns_are_name_then_the_crd_printer_columns(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    table = await _table(api, WIDGETS)
    columns = table['columnDefinitions']
    assert [c['name'] for c in columns] == ['Name', 'Ready', 'Replicas', 'Size', 'Owner', 'First-Port', 'Ratio',
                                            'Enabled', 'Age']
    assert columns[0]['type'] == 'string' and columns[0]['format'] == 'name'
    assert columns[1] == {'name': 'Ready', 'type': 'string', 'format': '',
                          'description': 'Whether the widget is ready.', 'priority': 0}
    assert columns[3]['priority'] == 1
    assert columns[-1]['type'] == 'date'


async def test_cells_evaluate_the_json_paths(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget('w', labels={'harness.test/owner': 'alice'}, replicas=3, ports=[8080, 9090],
                                   ratio=0.5, enabled=True))
    await api.patch(f'{WIDGETS}/w/status', {'status': {'conditions': [
        {'type': 'Progressing', 'status': 'False'}, {'type': 'Ready', 'status': 'True'}]}})
    row = (await _table(api, WIDGETS))['rows'][0]
    name, ready, replicas, size, owner, port, ratio, enabled, age = row['cells']
    assert (name, ready, replicas, size, owner, port, ratio, enabled) == (
        'w', 'True', 3, 'small', 'alice', 8080, 0.5, True)
    assert re.fullmatch(r'\d+s', age)


async def test_absent_values_are_empty_cells(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget('w'))
    cells = (await _table(api, WIDGETS))['rows'][0]['cells']
    assert cells[1] is None and cells[4] is None and cells[5] is None


async def test_rows_carry_partial_object_metadata(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    created = (await api.post(WIDGETS, widget('w'))).body
    row = (await _table(api, WIDGETS))['rows'][0]
    assert row['object'] == {'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1',
                             'metadata': created['metadata']}


async def test_include_object_none_omits_the_row_object(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget('w'))
    row = (await _table(api, WIDGETS, includeObject='None'))['rows'][0]
    assert 'object' not in row


async def test_single_object_is_a_one_row_table(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget('w'))
    table = await _table(api, f'{WIDGETS}/w')
    assert [row['cells'][0] for row in table['rows']] == ['w']


async def test_crd_without_printer_columns_gets_name_and_age(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(GADGETS, {'apiVersion': 'harness.test/v1', 'kind': 'Gadget', 'metadata': {'name': 'g'}})
    table = await _table(api, GADGETS)
    assert [(c['name'], c['type']) for c in table['columnDefinitions']] == [('Name', 'string'), ('Age', 'date')]
    assert table['rows'][0]['cells'][0] == 'g'


async def test_builtin_table_has_name_and_age(api: ApiClient) -> None:
    await api.post(CONFIGMAPS, {'metadata': {'name': 'c'}})
    table = await _table(api, CONFIGMAPS)
    assert [c['name'] for c in table['columnDefinitions']] == ['Name', 'Age']
    assert table['rows'][0]['cells'][0] == 'c'


async def test_repository_crd_columns_include_the_ready_condition(api: ApiClient) -> None:
    table = await _table(api, '/apis/agentgov.io/v1alpha1/namespaces/default/agentdeployments')
    names = [c['name'] for c in table['columnDefinitions']]
    assert names[0] == 'Name' and 'Ready' in names


async def test_plain_json_is_served_without_a_table_accept(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.get(WIDGETS, headers={'Accept': 'application/json'})
    assert reply.body['kind'] == 'WidgetList'


async def test_partial_object_metadata_list_is_served_on_request(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget('w'))
    accept = 'application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io'
    reply = await api.get(WIDGETS, headers={'Accept': accept})
    assert reply.body['kind'] == 'PartialObjectMetadataList'
    assert reply.body['items'][0]['metadata']['name'] == 'w' and 'spec' not in reply.body['items'][0]
