"""Audit sink settings: the operator's AGENTGOV_AUDIT_* variables and an AgentDeployment's
spec.audit.sinks become the same checked settings; every bad value is refused with the name of
the variable or field at fault, and never echoes a credential."""
from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from builder_cases import AGENT, build_error, changed, child, make_inputs

from agentgov.api.agentdeployment import AgentDeploymentSpec
from agentgov.api.bundle import SecretFile
from agentgov.audit.sinks.settings import (
    ENV_VARIABLES, SinkConfigError, sinks_from_bundle, sinks_from_env, source_name,
)
from agentgov.controller.builders import build_children, compile_bundle
from agentgov.controller.builders.bundle import mounted_secrets, upstream_urls

CANARY = 'canary-Pa55w0rd-never-shown'


def env(**variables: str) -> dict[str, str]:
    return {f'AGENTGOV_AUDIT_{k}': v for k, v in variables.items()}


def test_no_variables_configure_no_sink() -> None:
    sinks = sinks_from_env({'PATH': '/usr/bin'}, default_source='agentgov-operator-0')
    assert sinks.configured() == {}
    assert (sinks.stream, sinks.source) == ('operator', 'agentgov-operator-0')


def test_every_sink_is_configured_from_its_variables() -> None:
    sinks = sinks_from_env(env(
        STDOUT='true', ES_URL='https://es.example:9200', ES_INDEX_PREFIX='ops-audit', ES_USERNAME='shipper',
        ES_PASSWORD_FILE='/etc/agentgov/es/password', ES_CA_FILE='/etc/agentgov/es/ca.crt', ES_FLUSH_SECONDS='2.5',
        S3_BUCKET='audit-archive', S3_PREFIX='clusters/prod', S3_REGION='eu-central-1',
        S3_ENDPOINT='https://s3.eu-central-1.amazonaws.com', S3_CREDENTIALS_FILE='/etc/agentgov/aws/credentials',
        S3_WINDOW_SECONDS='60', S3_MAX_RECORDS='500', S3_OBJECT_LOCK_MODE='COMPLIANCE', SOURCE='operator-7f9',
    ), default_source='ignored')
    assert set(sinks.configured()) == {'stdout', 'elasticsearch', 's3'}
    es, s3 = sinks.elasticsearch, sinks.s3
    assert es is not None and s3 is not None
    assert (es.url, es.index_prefix, es.username, es.password_file, es.ca_file, es.flush_seconds) == (
        'https://es.example:9200', 'ops-audit', 'shipper', '/etc/agentgov/es/password', '/etc/agentgov/es/ca.crt', 2.5)
    assert (s3.bucket, s3.prefix, s3.window_seconds, s3.max_records, s3.object_lock_mode) == (
        'audit-archive', 'clusters/prod', 60, 500, 'COMPLIANCE')
    assert (s3.aws.region, s3.aws.endpoint_url, s3.aws.credentials_file) == (
        'eu-central-1', 'https://s3.eu-central-1.amazonaws.com', '/etc/agentgov/aws/credentials')
    assert sinks.source == 'operator-7f9'


@pytest.mark.parametrize('variables, named, says', [
    (env(ES_URL='ftp://es.example'), 'AGENTGOV_AUDIT_ES_URL', 'http:// or https://'),
    (env(ES_URL='https://es.example:99999'), 'AGENTGOV_AUDIT_ES_URL', 'valid URL'),
    (env(ES_URL='https://es.example/?token=x'), 'AGENTGOV_AUDIT_ES_URL', 'query string'),
    (env(ES_URL=''), 'AGENTGOV_AUDIT_ES_URL', 'empty'),
    (env(ES_URL='https://es.example', ES_INDEX_PREFIX='Audit'), 'AGENTGOV_AUDIT_ES_INDEX_PREFIX', 'lowercase'),
    (env(ES_URL='https://es.example', ES_INDEX_PREFIX='a' * 101), 'AGENTGOV_AUDIT_ES_INDEX_PREFIX', '1-100'),
    (env(ES_URL='https://es.example', ES_INDEX_PREFIX='-audit'), 'AGENTGOV_AUDIT_ES_INDEX_PREFIX', 'starting'),
    (env(ES_URL='https://es.example', ES_USERNAME='shipper'), 'AGENTGOV_AUDIT_ES_PASSWORD_FILE', 'both'),
    (env(ES_URL='https://es.example', ES_PASSWORD_FILE='/p'), 'AGENTGOV_AUDIT_ES_USERNAME', 'both'),
    (env(ES_URL='https://es.example', ES_USERNAME='u', ES_PASSWORD_FILE='/p', ES_API_KEY_FILE='/k'),
     'AGENTGOV_AUDIT_ES_API_KEY_FILE', 'not both'),
    (env(ES_URL='https://es.example', ES_FLUSH_SECONDS='soon'), 'AGENTGOV_AUDIT_ES_FLUSH_SECONDS', 'not a number'),
    (env(ES_URL='https://es.example', ES_FLUSH_SECONDS='nan'), 'AGENTGOV_AUDIT_ES_FLUSH_SECONDS', 'not a number'),
    (env(ES_URL='https://es.example', ES_FLUSH_SECONDS='-1'), 'AGENTGOV_AUDIT_ES_FLUSH_SECONDS', 'between'),
    (env(ES_USERNAME='shipper'), 'AGENTGOV_AUDIT_ES_USERNAME', 'AGENTGOV_AUDIT_ES_URL is not'),
    (env(S3_WINDOW_SECONDS='60'), 'AGENTGOV_AUDIT_S3_WINDOW_SECONDS', 'AGENTGOV_AUDIT_S3_BUCKET is not'),
    (env(S3_BUCKET='Audit_Archive'), 'AGENTGOV_AUDIT_S3_BUCKET', 'not an S3 bucket name'),
    (env(S3_BUCKET='192.168.1.1'), 'AGENTGOV_AUDIT_S3_BUCKET', 'not an S3 bucket name'),
    (env(S3_BUCKET='audit', S3_PREFIX='/leading'), 'AGENTGOV_AUDIT_S3_PREFIX', "no leading"),
    (env(S3_BUCKET='audit', S3_PREFIX='a/../b'), 'AGENTGOV_AUDIT_S3_PREFIX', "'..'"),
    (env(S3_BUCKET='audit', S3_PREFIX='p' * 257), 'AGENTGOV_AUDIT_S3_PREFIX', 'longer than 256'),
    (env(S3_BUCKET='audit', S3_WINDOW_SECONDS='5m'), 'AGENTGOV_AUDIT_S3_WINDOW_SECONDS', 'not a whole number'),
    (env(S3_BUCKET='audit', S3_WINDOW_SECONDS='0'), 'AGENTGOV_AUDIT_S3_WINDOW_SECONDS', 'between 1 and 86400'),
    (env(S3_BUCKET='audit', S3_WINDOW_SECONDS='86401'), 'AGENTGOV_AUDIT_S3_WINDOW_SECONDS', 'between 1 and 86400'),
    (env(S3_BUCKET='audit', S3_MAX_RECORDS='1000000'), 'AGENTGOV_AUDIT_S3_MAX_RECORDS', 'between'),
    (env(S3_BUCKET='audit', S3_OBJECT_LOCK_MODE='FOREVER'), 'AGENTGOV_AUDIT_S3_OBJECT_LOCK_MODE', 'GOVERNANCE'),
    (env(S3_BUCKET='audit', S3_REGION='EU Central'), 'AGENTGOV_AUDIT_S3_REGION', 'region'),
    (env(S3_BUCKET='audit', S3_ENDPOINT='s3.local'), 'AGENTGOV_AUDIT_S3_ENDPOINT', 'http:// or https://'),
    (env(STDOUT='maybe'), 'AGENTGOV_AUDIT_STDOUT', 'true or false'),
    (env(STDOUT='1', SOURCE='pod/../x'), 'AGENTGOV_AUDIT_SOURCE', 'letters, digits'),
], ids=lambda v: v if isinstance(v, str) and v.startswith('AGENTGOV') else None)
def test_a_bad_variable_is_refused_naming_it(variables: dict[str, str], named: str, says: str) -> None:
    with pytest.raises(SinkConfigError) as caught:
        sinks_from_env(variables, default_source='operator-0')
    assert caught.value.setting == named
    assert str(caught.value).startswith(f'{named}: ')
    assert says in caught.value.message


def test_a_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(SinkConfigError) as caught:
        sinks_from_env(env(ES_URL=f'https://shipper:{CANARY}@es.example:9200'), default_source='operator-0')
    assert caught.value.setting == 'AGENTGOV_AUDIT_ES_URL'
    assert 'credentials' in caught.value.message
    assert CANARY not in str(caught.value) and CANARY not in repr(caught.value)


def test_every_variable_is_documented_in_the_sinks_guide() -> None:
    guide = (Path(__file__).resolve().parents[2] / 'docs' / 'audit-sinks.md').read_text(encoding='utf-8')
    assert [v for v in ENV_VARIABLES if f'`{v}`' not in guide] == []


@pytest.mark.parametrize('hostname, source', [
    ('research-assistant-7d9c5b-x2x4q', 'research-assistant-7d9c5b-x2x4q'),
    ('dev box.local', 'dev-box.local'),
    ('../../etc', '-..-etc'),
    ('', 'unknown'),
], ids=['a pod name is kept', 'a space becomes a dash', 'slashes cannot make a path', 'an empty name gets one'])
def test_a_host_name_becomes_a_usable_source(hostname: str, source: str) -> None:
    assert source_name(hostname) == source


# --- the AgentDeployment and its bundle ----------------------------------------------------

SINKS = {
    'stdout': True,
    'elasticsearch': {'url': 'https://es.logging.svc:9200', 'indexPrefix': 'research-audit',
                      'basicAuth': {'username': 'shipper', 'passwordSecretRef': {'name': 'es-shipper', 'key': 'password'}},
                      'caSecretRef': {'name': 'es-ca', 'key': 'ca.crt'}, 'flushSeconds': 2},
    's3': {'bucket': 'audit-archive', 'region': 'eu-central-1', 'windowSeconds': 120,
           'credentialsSecretRef': {'name': 'aws-audit', 'key': 'credentials'}, 'objectLockMode': 'COMPLIANCE'},
}


def agent_with_sinks(sinks: dict[str, object]) -> dict[str, object]:
    return changed(AGENT, {'spec.audit.sinks': sinks})


def test_spec_sinks_compile_into_the_bundle_with_credentials_as_mounted_files() -> None:
    bundle = compile_bundle(make_inputs(agent_with_sinks(SINKS)))
    sinks = bundle.audit_sinks
    assert sinks is not None and sinks.stdout
    assert sinks.elasticsearch is not None and sinks.s3 is not None
    assert sinks.elasticsearch.password_file == SecretFile(secret='es-shipper', key='password')
    assert sinks.elasticsearch.ca_file == SecretFile(secret='es-ca', key='ca.crt')
    assert sinks.s3.credentials_file == SecretFile(secret='aws-audit', key='credentials')
    assert bundle.audit.sinks is None, 'the bundle carries sinks once, resolved, in auditSinks'
    mounted = mounted_secrets(bundle)
    assert mounted['es-shipper'] == ['password'] and mounted['aws-audit'] == ['credentials']
    assert 'https://es.logging.svc:9200' in upstream_urls(bundle)
    assert 'https://s3.eu-central-1.amazonaws.com' in upstream_urls(bundle)


def test_the_sidecar_reads_the_compiled_sinks_as_files_under_its_secrets_dir() -> None:
    bundle = compile_bundle(make_inputs(agent_with_sinks(SINKS)))
    sinks = sinks_from_bundle(bundle.audit_sinks, stream='research/research-assistant', source='pod-1',
                              secrets_dir=Path('/etc/agentgov/secrets'))
    assert sinks.elasticsearch is not None and sinks.s3 is not None and sinks.stdout is not None
    assert sinks.elasticsearch.password_file == '/etc/agentgov/secrets/es-shipper/password'
    assert sinks.s3.aws.credentials_file == '/etc/agentgov/secrets/aws-audit/credentials'
    assert (sinks.s3.window_seconds, sinks.s3.object_lock_mode, sinks.s3.prefix) == (120, 'COMPLIANCE', 'agentgov-audit')


def test_no_sinks_leave_the_bundle_as_it_was() -> None:
    plain = compile_bundle(make_inputs())
    assert plain.audit_sinks is None
    assert 'auditSinks' not in plain.model_dump(by_alias=True, exclude_none=True)


def test_the_network_policy_lets_the_sidecar_reach_its_sinks() -> None:
    sinks = {'elasticsearch': {'url': 'http://10.20.30.40:9201'}}
    policy = child(build_children(make_inputs(agent_with_sinks(sinks))), 'NetworkPolicy')
    rules = policy['spec']['egress']
    assert {'to': [{'ipBlock': {'cidr': '10.20.30.40/32'}}], 'ports': [{'protocol': 'TCP', 'port': 9201}]} in rules


@pytest.mark.parametrize('sinks, field', [
    ({'elasticsearch': {'url': 'https://user:secret@es.example'}}, 'url'),
    ({'elasticsearch': {'url': 'https://es.example', 'indexPrefix': 'Audit'}}, 'indexPrefix'),
    ({'elasticsearch': {'url': 'https://es.example', 'basicAuth': {'username': 'u'}}}, 'passwordSecretRef'),
    ({'s3': {'bucket': 'audit', 'prefix': 'p' * 300}}, 'prefix'),
    ({'s3': {'bucket': 'audit', 'windowSeconds': 0}}, 'windowSeconds'),
    ({'s3': {'bucket': 'audit', 'objectLockMode': 'Forever'}}, 'objectLockMode'),
    ({'s3': {'bucket': 'Audit'}}, 'bucket'),
], ids=['credentials in the url', 'an uppercase index prefix', 'a user without a password',
        'an oversized prefix', 'a zero window', 'an unknown lock mode', 'an invalid bucket'])
def test_the_schema_refuses_bad_sink_fields(sinks: dict[str, object], field: str) -> None:
    spec = changed(AGENT, {'spec.audit.sinks': sinks})['spec']
    with pytest.raises(pydantic.ValidationError) as caught:
        AgentDeploymentSpec.model_validate(spec)
    assert field in str(caught.value)


@pytest.mark.parametrize('sinks, field, says', [
    ({'s3': {'bucket': 'audit', 'prefix': 'a/./b'}}, 'spec.audit.sinks.s3.prefix', "'.'"),
    ({'elasticsearch': {'url': 'https://es.example', 'apiKeySecretRef': {'name': 'k', 'key': 'k'},
                        'basicAuth': {'username': 'u', 'passwordSecretRef': {'name': 'p', 'key': 'p'}}}},
     'spec.audit.sinks.elasticsearch.apiKeySecretRef', 'not both'),
], ids=['a prefix with a dot segment', 'both basic authentication and an API key'])
def test_sinks_the_schema_admits_but_cannot_work_stall_naming_the_field(sinks: dict[str, object], field: str,
                                                                        says: str) -> None:
    error = build_error(make_inputs(agent_with_sinks(sinks)))
    assert error.field == field
    assert says in error.message
