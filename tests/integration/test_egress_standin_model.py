"""The stand-in OpenAI-compatible model the egress tests, the demo and the benchmarks call,
checked against the official ``openai`` SDK directly (no sidecar): if it were not faithful, the
egress tests would prove nothing about real providers."""
from __future__ import annotations

import asyncio

import openai
import pytest

from agentgov.demo.model import ModelConfig, serving_model
from harness.waiting import async_wait_for

HELLO = [{'role': 'user', 'content': 'one two three four'}]


def client(url: str, key: str = 'k') -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=10)


async def test_answers_are_deterministic_and_usage_counts_words() -> None:
    async with serving_model() as model:
        first = await client(model.url).chat.completions.create(model='gpt-4o', messages=HELLO)
        again = await client(model.url).chat.completions.create(model='gpt-4o', messages=HELLO)
        capped = await client(model.url).chat.completions.create(model='gpt-4o', messages=HELLO, max_tokens=2)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content.endswith('You said: one two three four')
    assert first.usage is not None and first.usage.prompt_tokens == 4 + 4
    assert first.usage.completion_tokens == 7 and first.choices[0].finish_reason == 'stop'
    assert capped.usage is not None and capped.usage.completion_tokens == 2
    assert capped.choices[0].finish_reason == 'length'
    assert model.calls['/v1/chat/completions'] == 3


async def test_a_stream_sends_usage_last_only_when_asked() -> None:
    async with serving_model() as model:
        with_usage = [c async for c in await client(model.url).chat.completions.create(
            model='gpt-4o', messages=HELLO, stream=True, stream_options={'include_usage': True})]
        without = [c async for c in await client(model.url).chat.completions.create(
            model='gpt-4o', messages=HELLO, stream=True)]
    assert with_usage[-1].choices == [] and with_usage[-1].usage is not None
    assert all(c.usage is None for c in with_usage[:-1])
    assert all(c.choices and c.usage is None for c in without)
    text = ''.join(c.choices[0].delta.content or '' for c in without)
    assert text.endswith('You said: one two three four')


async def test_embeddings_come_as_floats_or_base64_and_are_unit_vectors() -> None:
    async with serving_model(ModelConfig(embedding_dimensions=16)) as model:
        sdk = await client(model.url).embeddings.create(model='text-embedding-3-small', input='same text')
        floats = await client(model.url).embeddings.create(model='text-embedding-3-small', input='same text',
                                                           encoding_format='float')
    assert model.requests[0].body['encoding_format'] == 'base64'  # the SDK's default
    assert sdk.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert sum(v * v for v in floats.data[0].embedding) == pytest.approx(1.0)


async def test_a_key_when_configured_and_known_models_are_required() -> None:
    async with serving_model(ModelConfig(api_key='right')) as model:
        with pytest.raises(openai.AuthenticationError) as wrong_key:
            await client(model.url, 'wrong').chat.completions.create(model='gpt-4o', messages=HELLO)
        with pytest.raises(openai.NotFoundError) as unknown:
            await client(model.url, 'right').chat.completions.create(model='gpt-99', messages=HELLO)
    assert wrong_key.value.body['code'] == 'invalid_api_key'
    assert unknown.value.body['code'] == 'model_not_found'


async def test_the_failure_rate_is_reproducible_with_a_seed() -> None:
    outcomes = []
    for _ in range(2):
        async with serving_model(ModelConfig(failure_rate=0.3, seed=5)) as model:
            run = []
            for _ in range(40):
                try:
                    await client(model.url).chat.completions.create(model='gpt-4o', messages=HELLO)
                    run.append(200)
                except openai.InternalServerError as e:
                    run.append(e.status_code)
            outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert 5 <= sum(1 for s in outcomes[0] if s != 200) <= 20
    assert set(outcomes[0]) <= {200, 500, 503}


async def test_hang_mode_answers_nothing_until_released() -> None:
    async with serving_model(ModelConfig(hang=True)) as model:
        pending = asyncio.ensure_future(client(model.url).chat.completions.create(model='gpt-4o', messages=HELLO))
        await async_wait_for(lambda: asyncio.sleep(0, model.calls['/v1/chat/completions']), what='the call to arrive')
        assert not pending.done()
        model.release_hangs()
        with pytest.raises(openai.InternalServerError) as released:
            await pending
    assert released.value.status_code == 503
