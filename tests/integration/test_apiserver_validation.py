"""Custom resource validation in the API emulator: prune, default, validate, fieldValidation, CRD checks.

The schema semantics themselves belong to ``harness.schema`` (and its own tests); these tests
prove that the server calls them in the real server's order and answers as the real server does.
"""
from __future__ import annotations

import copy
from typing import Any

from conftest import CRDS, WIDGETS, ApiClient, widget_crds


def widget(name: str = 'w', **spec: Any) -> dict[str, Any]:
    return {'apiVersion': 'harness.test/v1', 'kind': 'Widget', 'metadata': {'name': name},
            'spec': {'size': 'small', **spec}}


async def test_unknown_fields_are_pruned_with_a_warning_by_default(api: ApiClient,
                                                                   widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(WIDGETS, widget(bogus=1, nested={'a': 'x', 'extra': True}))
    assert reply.status == 201
    assert 'bogus' not in reply.body['spec'] and reply.body['spec']['nested'] == {'a': 'x'}
    assert reply.warnings == ['299 - "unknown field \\"spec.bogus\\""', '299 - "unknown field \\"spec.nested.extra\\""']


async def test_strict_field_validation_rejects_unknown_fields_on_create(api: ApiClient,
                                                                        widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(WIDGETS, widget(bogus=1), params={'fieldValidation': 'Strict'})
    assert reply.status == 400
    assert reply.body['reason'] == 'BadRequest'
    assert reply.body['message'] == ('Widget in version "v1" cannot be handled as a Widget: '
                                     'strict decoding error: unknown field "spec.bogus"')
    assert (await api.get(f'{WIDGETS}/w')).status == 404


async def test_strict_field_validation_rejects_unknown_fields_in_patches(api: ApiClient,
                                                                         widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    reply = await api.patch(f'{WIDGETS}/w', {'spec': {'bogus': 1, 'tags': [{'x': 1}]}},
                            params={'fieldValidation': 'Strict'})
    assert reply.status == 400
    assert reply.body['message'].startswith('strict decoding error: unknown field "spec.bogus"')


async def test_ignore_field_validation_prunes_silently(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(WIDGETS, widget(bogus=1), params={'fieldValidation': 'Ignore'})
    assert reply.status == 201 and 'bogus' not in reply.body['spec']
    assert reply.warnings == []


async def test_unsupported_field_validation_value_is_a_bad_request(api: ApiClient,
                                                                   widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(WIDGETS, widget(), params={'fieldValidation': 'Sometimes'})
    assert reply.status == 400


async def test_fields_under_preserve_unknown_fields_are_kept(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(WIDGETS, widget(free={'anything': {'goes': [1, 2]}}), params={'fieldValidation': 'Strict'})
    assert reply.status == 201 and reply.body['spec']['free'] == {'anything': {'goes': [1, 2]}}


async def test_defaults_are_applied_on_create(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(WIDGETS, widget())
    assert reply.body['spec']['replicas'] == 1


async def test_defaults_are_applied_before_validation(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    # The CEL rule reads self.replicas: without defaulting first it would fail with "no such key".
    reply = await api.post(WIDGETS, widget())
    assert reply.status == 201


async def test_unknown_fields_are_pruned_before_validation(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(WIDGETS, widget(bogus={'not': 'a string'}))
    assert reply.status == 201


async def test_schema_violation_is_unprocessable_with_a_cause_per_field(api: ApiClient,
                                                                        widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(WIDGETS, widget(size='huge', replicas=-1))
    assert reply.status == 422
    assert reply.body['reason'] == 'Invalid'
    assert reply.body['message'].startswith('Widget.harness.test "w" is invalid: [')
    fields = {cause['field'] for cause in reply.body['details']['causes']}
    assert {'spec.size', 'spec.replicas'} <= fields
    assert reply.body['details']['kind'] == 'Widget' and reply.body['details']['group'] == 'harness.test'


async def test_missing_required_field_is_unprocessable(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    body = widget()
    del body['spec']['size']
    reply = await api.post(WIDGETS, body)
    assert reply.status == 422
    assert any(cause['field'] == 'spec.size' and cause['reason'] == 'FieldValueRequired'
               for cause in reply.body['details']['causes'])


async def test_cel_rule_violation_is_unprocessable(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    reply = await api.post(WIDGETS, widget(replicas=11))
    assert reply.status == 422
    assert 'more than 10 replicas need a large widget' in reply.body['message']
    assert (await api.post(WIDGETS, widget(size='large', replicas=11))).status == 201


async def test_updates_are_validated_too(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    reply = await api.patch(f'{WIDGETS}/w', {'spec': {'size': 'huge'}})
    assert reply.status == 422
    assert (await api.get(f'{WIDGETS}/w')).body['spec']['size'] == 'small'


async def test_status_writes_are_validated(api: ApiClient, widgets: list[dict[str, Any]]) -> None:
    await api.post(WIDGETS, widget())
    reply = await api.patch(f'{WIDGETS}/w/status', {'status': {'replicas': 'three'}})
    assert reply.status == 422
    assert any(cause['field'] == 'status.replicas' for cause in reply.body['details']['causes'])


async def test_invalid_crd_is_refused(api: ApiClient) -> None:
    crd = copy.deepcopy(widget_crds()[0])
    crd['metadata']['name'] = 'wrong.harness.test'
    reply = await api.post(CRDS, crd)
    assert reply.status == 422
    assert reply.body['message'].startswith('CustomResourceDefinition.apiextensions.k8s.io "wrong.harness.test" '
                                            'is invalid')
    assert any(cause['field'] == 'metadata.name' for cause in reply.body['details']['causes'])
    assert (await api.get('/apis/harness.test/v1')).status == 404  # nothing got served


async def test_repository_crds_pass_the_servers_checks(api: ApiClient) -> None:
    served = (await api.get(CRDS)).body['items']
    assert {crd['metadata']['name'] for crd in served} >= {
        'agentdeployments.agentgov.io', 'agentbudgets.agentgov.io',
        'toolpolicies.agentgov.io', 'regionpolicies.agentgov.io'}
