"""`python -m agentgov.demo.agent`, the example agent image's entrypoint, as a real process: it
serves on $PORT, answers a task through an OpenAI-compatible model at $OPENAI_BASE_URL, stops
cleanly on SIGTERM (what `docker stop` and the kubelet send), and refuses bad settings with a
one-line message instead of a traceback."""
from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
import pytest

from agentgov.demo.model import serving_model
from harness.waiting import async_wait_for
from sidecar_support import free_port


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ('OPENAI_BASE_URL', 'PORT', 'HOST')}
    env.update(extra)
    return env


async def test_the_entrypoint_serves_a_task_and_stops_on_sigterm() -> None:
    async with serving_model() as model:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, '-m', 'agentgov.demo.agent', env=environment(OPENAI_BASE_URL=model.url, PORT=str(port)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                async def health() -> int:
                    async with session.get(f'http://127.0.0.1:{port}/healthz') as response:
                        return response.status

                await async_wait_for(health, lambda s: s == 200, what='the agent answering /healthz',
                                     ignore=(aiohttp.ClientConnectionError,))
                async with session.post(f'http://127.0.0.1:{port}/run', json={'prompt': 'one two', 'maxTokens': 8},
                                        headers={'X-Agentgov-Execution-Id': 'exe_test'}) as response:
                    assert response.status == 200
                    answer = await response.json()
            assert answer['answer'].endswith('You said: one two')
            assert model.requests[-1].headers['x-agentgov-execution-id'] == 'exe_test'
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), timeout=15) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.parametrize(
    'settings, message',
    [({}, 'OPENAI_BASE_URL is not set'), ({'OPENAI_BASE_URL': 'http://127.0.0.1:9/v1', 'PORT': 'eighty'},
                                          "PORT 'eighty' is not a port"),
     ({'OPENAI_BASE_URL': 'http://127.0.0.1:9/v1', 'PORT': '70000'}, "PORT '70000' is not a port")],
    ids=['no model URL', 'a port that is not a number', 'a port out of range'],
)
async def test_bad_settings_stop_it_with_one_line(settings: dict[str, str], message: str) -> None:
    process = await asyncio.create_subprocess_exec(sys.executable, '-m', 'agentgov.demo.agent', env=environment(**settings),
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    assert stderr.decode().strip().startswith('example agent: ') and message in stderr.decode()
    assert 'Traceback' not in stderr.decode()
