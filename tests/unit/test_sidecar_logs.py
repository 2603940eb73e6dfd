"""Structured log lines: JSON per line, with the ids of the request they were logged in."""
from __future__ import annotations

import asyncio
import json
import logging

from agentgov.sidecar.logs import JsonFormatter, annotate, context, formatter, request_scope
from agentgov.audit.redact import RedactingFilter


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord('agentgov.sidecar.egress', logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_line_is_one_json_object_with_the_request_ids() -> None:
    with request_scope():
        annotate(request_id='req_1', execution_id='exe_1', ignored=None)
        line = JsonFormatter().format(record('upstream %s failed', 'eu-west-1'))
    data = json.loads(line)
    assert data['message'] == 'upstream eu-west-1 failed'
    assert (data['level'], data['logger']) == ('WARNING', 'agentgov.sidecar.egress')
    assert (data['request_id'], data['execution_id']) == ('req_1', 'exe_1')
    assert 'ignored' not in data and '\n' not in line


def test_outside_a_request_there_are_no_ids_and_annotate_does_nothing() -> None:
    annotate(execution_id='exe_stray')
    assert context() == {}
    assert 'execution_id' not in json.loads(JsonFormatter().format(record('idle')))


async def test_concurrent_requests_never_see_each_others_ids() -> None:
    seen: dict[str, str] = {}

    async def request(execution: str) -> None:
        with request_scope():
            annotate(execution_id=execution)
            await asyncio.sleep(0)
            seen[execution] = json.loads(JsonFormatter().format(record('x')))['execution_id']

    await asyncio.gather(*(request(f'exe_{n}') for n in range(20)))
    assert seen == {f'exe_{n}': f'exe_{n}' for n in range(20)}


def test_a_traceback_stays_on_one_line_and_is_redacted() -> None:
    try:
        raise RuntimeError('token Bearer abc.def.ghi leaked?')
    except RuntimeError as e:
        rec = record('failed', exc=e)
    RedactingFilter().filter(rec)
    line = JsonFormatter().format(rec)
    assert '\n' not in line
    data = json.loads(line)
    assert 'RuntimeError' in data['message'] and 'abc.def.ghi' not in line


def test_text_format_is_the_classic_one() -> None:
    assert not isinstance(formatter('text'), JsonFormatter)
    assert isinstance(formatter('json'), JsonFormatter)
