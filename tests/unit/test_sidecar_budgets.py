"""Budget decisions (sidecar/budgets.py): who is charged, prices, worst-case estimates, alerts, the 429."""
from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from agentgov.api import spendstore
from agentgov.api.bundle import Price
from agentgov.sidecar import budgets
from agentgov.sidecar.budgets import (
    MAX_OUTPUT_TOKENS, MAX_PROMPT_TOKENS, TOKENS_PER_IMAGE, Refusal, applicable_charges, budget_exceeded,
    cost_micros, crossed_thresholds, estimate_output_tokens, estimate_prompt_tokens, plan_reservation, price_of,
    thresholds_to_alert, usage_tokens,
)
from budget_support import NOON, TEST_MODEL, TEST_PRICE, budget, bundle_with, chat, identity

AGENT = 'research-assistant'  # make_bundle's agent name


# --- who is charged ---------------------------------------------------------------------------

@pytest.mark.parametrize('users,agents,teams,scope,caller_team,expected', [
    (['*'], [], [], 'Each', 'research', ['user:alice']),
    (['alice', 'bob'], [], [], 'Each', 'research', ['user:alice']),
    (['bob'], [], [], 'Each', 'research', []),
    ([], ['*'], [], 'Each', 'research', [f'agent:{AGENT}']),
    ([], [AGENT], [], 'Each', 'research', [f'agent:{AGENT}']),
    ([], ['other-agent'], [], 'Each', 'research', []),
    ([], [], ['*'], 'Each', 'research', ['team:research']),
    ([], [], ['*'], 'Each', None, []),
    ([], [], ['research'], 'Each', 'sales', []),
    (['*'], [], ['research'], 'Each', 'research', ['user:alice', 'team:research']),
    (['*'], ['*'], ['*'], 'Each', 'research', ['user:alice', f'agent:{AGENT}', 'team:research']),
    (['*'], [], ['research'], 'Shared', 'research', ['shared']),
    (['bob'], [], [], 'Shared', 'research', []),
], ids=[
    'a star in users charges every user',
    'a named user is charged',
    'a user not named is not charged',
    'a star in agents charges the agent',
    'the named agent is charged',
    'another agent name does not match',
    'a star in teams charges the caller team',
    'a caller without a team never matches a team star',
    'another team does not match',
    'user and team both match so both are charged',
    'all three kinds charged at once',
    'a shared budget is charged once whatever matched',
    'a shared budget that matches no one is not charged',
])
def test_applicable_charges(users: list[str], agents: list[str], teams: list[str], scope: str,
                            caller_team: str | None, expected: list[str]) -> None:
    bundle = bundle_with(budget(users=users, agents=agents, teams=teams, scope=scope))
    charges = applicable_charges(bundle, identity('alice', caller_team), AGENT)
    assert [c.subject for c in charges] == expected
    assert all(c.budget.name == 'team-budget' for c in charges)


def test_each_budget_is_considered_in_bundle_order() -> None:
    bundle = bundle_with(budget('a', users=['alice']), budget('b', users=['bob']), budget('c', users=[], teams=['*']))
    assert [(c.budget.name, c.subject) for c in applicable_charges(bundle, identity(), AGENT)] == [
        ('a', 'user:alice'), ('c', 'team:research')]


def test_a_user_id_cannot_forge_a_subject_separator() -> None:
    bundle = bundle_with(budget(users=['*']))
    [charge] = applicable_charges(bundle, identity('eve,user:bob x'), AGENT)
    assert charge.subject == 'user:eve%2Cuser%3Abob%20x'


# --- prices and costs -------------------------------------------------------------------------

PRICES = {'gpt-4o': Price(input_per_1k=0.0025, output_per_1k=0.01),
          'gpt-4o-mini': Price(input_per_1k=0.00015, output_per_1k=0.0006),
          'claude-sonnet-4': Price(input_per_1k=0.003, output_per_1k=0.015)}


@pytest.mark.parametrize('model,expected', [
    ('gpt-4o', 'gpt-4o'),
    ('GPT-4o', 'gpt-4o'),
    ('gpt-4o-2024-08-06', 'gpt-4o'),
    ('gpt-4o-mini-2024-07-18', 'gpt-4o-mini'),
    ('claude-sonnet-4-20250514', 'claude-sonnet-4'),
    ('gpt-4o-latest', 'gpt-4o'),
    ('gpt-4o-audio-preview', None),
    ('llama-3-70b', None),
    ('', None),
], ids=['exact name', 'case does not matter', 'a dated snapshot is priced as its base',
        'the longest base wins for a mini snapshot', 'a compact date suffix is a snapshot', 'latest is a snapshot',
        'a different variant is not the base model', 'an unknown model has no price', 'an empty name has no price'])
def test_price_of(model: str, expected: str | None) -> None:
    assert price_of(model, PRICES) == (PRICES[expected] if expected else None)


def test_an_unpriced_model_is_charged_at_the_highest_prices_the_budget_knows() -> None:
    b = budget(pricing={'cheap': Price(input_per_1k=0.0, output_per_1k=0.0)})
    price, unpriced = budgets.budget_price('mystery-model', b)
    assert unpriced
    assert price.input_per_1k == max(p.input_per_1k for p in b.pricing.values()) == 1.0  # TEST_PRICE
    assert price.output_per_1k == max(p.output_per_1k for p in b.pricing.values()) == 2.0
    assert budgets.budget_price(TEST_MODEL, b) == (TEST_PRICE, False)


def test_a_budget_with_an_empty_price_list_falls_back_to_the_shipped_ceiling() -> None:
    assert budgets.ceiling_price({}) == Price(input_per_1k=0.03, output_per_1k=0.06)  # gpt-4's


@pytest.mark.parametrize('price,tokens_in,tokens_out,micros', [
    (Price(input_per_1k=0.0025, output_per_1k=0.01), 1000, 1000, 12_500),
    (Price(input_per_1k=0.0025, output_per_1k=0.01), 1, 0, 3),
    (Price(input_per_1k=0.00015, output_per_1k=0.0006), 1, 0, 1),
    (Price(input_per_1k=0.1, output_per_1k=0.2), 3, 3, 900),
    (Price(input_per_1k=1.0, output_per_1k=2.0), 0, 0, 0),
    (Price(input_per_1k=1.0, output_per_1k=2.0), -5, -5, 0),
], ids=['exact decimal arithmetic with no float drift', 'a fraction of a micro-dollar rounds up',
        'a tiny call still costs one micro-dollar', 'point one times three is exactly three hundred',
        'no tokens cost nothing', 'negative counts cost nothing'])
def test_cost_micros(price: Price, tokens_in: int, tokens_out: int, micros: int) -> None:
    assert cost_micros(price, tokens_in, tokens_out) == micros


@pytest.mark.parametrize('value,expected', [
    (120, 120), (0, 0), (12.0, 12), (-1, None), (True, None), ('12', None), (1.5, None), (float('nan'), None),
    (float('inf'), None), (1e300, None), (10**12, None), (None, None), ([1], None), ({'n': 1}, None),
], ids=['an int', 'zero', 'an integral float', 'negative', 'a bool', 'a string', 'a fraction', 'nan', 'infinity',
        'an absurd float', 'an absurd int', 'missing', 'a list', 'an object'])
def test_usage_tokens_believes_only_plausible_counts(value: object, expected: int | None) -> None:
    assert usage_tokens(value) == expected


# --- worst-case estimates ---------------------------------------------------------------------

def test_a_short_chat_prompt_is_estimated_from_its_bytes_and_message_overhead() -> None:
    # 4 per message + 3 priming; role(2) user(2) content(3) hi(1)
    assert estimate_prompt_tokens({'messages': [{'role': 'user', 'content': 'hi'}]}) == 15


def test_the_estimate_is_at_least_the_real_token_count_of_english_text() -> None:
    text = 'The quick brown fox jumps over the lazy dog. ' * 200  # ~2,000 real tokens (10 per sentence)
    assert estimate_prompt_tokens({'messages': [{'role': 'user', 'content': text}]}) >= 2000


def test_an_inline_image_counts_a_fixed_allowance_not_its_base64_bytes() -> None:
    image = {'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,' + 'A' * 3_000_000}}
    body = {'messages': [{'role': 'user', 'content': [{'type': 'text', 'text': 'what is this'}, image]}]}
    assert TOKENS_PER_IMAGE < estimate_prompt_tokens(body) < TOKENS_PER_IMAGE + 50


def test_tools_count_as_prompt_tokens() -> None:
    plain = {'messages': [{'role': 'user', 'content': 'hi'}]}
    tool = {'type': 'function', 'function': {'name': 'search', 'description': 'x' * 300, 'parameters': {}}}
    assert estimate_prompt_tokens({**plain, 'tools': [tool]}) > estimate_prompt_tokens(plain) + 100


@pytest.mark.parametrize('body,low,high', [
    ({'input': 'hello world'}, 4, 4),
    ({'input': ['ab', 'cd', 'ef']}, 3, 3),
    ({'input': [1, 2, 3, 4, 5]}, 5, 5),
    ({'input': [[1, 2], [3, 4, 5]]}, 5, 5),
    ({'prompt': 'abcdef'}, 2, 2),
    ({}, 1, 1),
    ({'messages': 'not a list'}, 4, 4),
    ({'messages': None}, 1, 1),
    ({'messages': [None, 3, 'x']}, 4 * 3 + 3 + 3, 4 * 3 + 3 + 3),
], ids=['an embeddings string', 'a list of strings', 'a pre-tokenized input counts its ids',
        'a batch of token arrays', 'a legacy prompt', 'an empty body still counts one token',
        'messages that are not a list are counted as text', 'null messages', 'junk message items'])
def test_prompt_estimates(body: dict[str, object], low: int, high: int) -> None:
    assert low <= estimate_prompt_tokens(body) <= high


def test_a_huge_prompt_is_capped_and_estimated_quickly() -> None:
    body = {'messages': [{'role': 'user', 'content': 'x' * (40 * 1024 * 1024)}]}
    assert estimate_prompt_tokens(body) == MAX_PROMPT_TOKENS


def test_deeply_nested_content_does_not_exhaust_the_stack() -> None:
    nested: object = 'leaf'
    for _ in range(100_000):
        nested = [nested]
    assert estimate_prompt_tokens({'messages': nested}) >= 1


def test_a_body_with_millions_of_nodes_is_bounded_work_and_not_zero() -> None:
    body = {'messages': [{}] * 2_000_000}
    tokens = estimate_prompt_tokens(body)
    assert budgets.MAX_NODES <= tokens <= MAX_PROMPT_TOKENS


@pytest.mark.parametrize('body,expected', [
    ({'messages': [], 'max_tokens': 100}, 100),
    ({'messages': [], 'max_completion_tokens': 50, 'max_tokens': 100}, 50),
    ({'messages': []}, 4096),
    ({'messages': [], 'max_tokens': -5}, 4096),
    ({'messages': [], 'max_tokens': 0}, 4096),
    ({'messages': [], 'max_tokens': True}, 4096),
    ({'messages': [], 'max_tokens': '100'}, 4096),
    ({'messages': [], 'max_tokens': 1.5}, 4096),
    ({'messages': [], 'max_tokens': float('inf')}, 4096),
    ({'messages': [], 'max_tokens': 10**18}, MAX_OUTPUT_TOKENS),
    ({'messages': [], 'max_tokens': 100, 'n': 3}, 300),
    ({'messages': [], 'max_tokens': 100, 'n': 10**9}, 100 * budgets.MAX_CHOICES),
    ({'messages': [], 'max_tokens': 100, 'n': -2}, 100),
    ({'input': 'embed me', 'max_tokens': 100}, 0),
], ids=['max_tokens', 'max_completion_tokens wins', 'no cap reserves the default', 'a negative cap is ignored',
        'a zero cap is ignored', 'a bool cap is ignored', 'a string cap is ignored', 'a fractional cap is ignored',
        'an infinite cap is ignored', 'an absurd cap is clamped', 'n choices multiply the cap',
        'absurd n is clamped', 'negative n counts one choice', 'embeddings produce no output tokens'])
def test_output_estimates(body: dict[str, object], expected: int) -> None:
    assert estimate_output_tokens(body) == expected


def test_the_configured_default_cap_applies_when_the_body_names_none() -> None:
    assert estimate_output_tokens({'messages': []}, default_output_tokens=1000) == 1000


def test_a_reservation_holds_the_worst_case_at_each_budgets_own_price() -> None:
    cheap = budget('cheap', pricing={TEST_MODEL: Price(input_per_1k=0.5, output_per_1k=1.0)})
    dear = budget('dear', users=['*'], teams=['*'], daily=5.0, monthly=50.0, thresholds=[50, 120, 0])
    plan = plan_reservation(bundle_with(cheap, dear), identity(), TEST_MODEL, chat(100), hold_id='h1', now=NOON,
                            hold_seconds=60)
    assert (plan.prompt_tokens, plan.output_tokens) == (15, 100)
    first, second = plan.lines
    assert (first.budget, first.subjects, first.amount_micros) == ('cheap', ('user:alice',), 15 * 500 + 100 * 1000)
    assert (second.budget, second.subjects, second.amount_micros) == (
        'dear', ('user:alice', 'team:research'), 15 * 1000 + 100 * 2000)
    assert (second.day_limit_micros, second.month_limit_micros) == (5_000_000, 50_000_000)
    assert second.thresholds == (50, 100)  # out-of-range percents dropped, 100 always there
    assert (second.deadline - second.created_at, second.enforce, second.unpriced) == (60, True, False)
    assert second.period_key('day') == spendstore.period_key('research', 'dear', 'day',
                                                             dt.datetime.fromtimestamp(NOON, dt.timezone.utc))


def test_a_call_no_budget_governs_plans_no_hold() -> None:
    plan = plan_reservation(bundle_with(budget(users=['bob'])), identity(), TEST_MODEL, chat(), hold_id='h',
                            now=NOON, hold_seconds=60)
    assert plan.lines == ()


# --- thresholds -------------------------------------------------------------------------------

@pytest.mark.parametrize('before,after,expected', [
    (0, 79, []),
    (0, 80, [80]),
    (79, 85, [80]),
    (85, 95, [90]),
    (0, 100, [80, 90, 100]),
    (95, 250, [100]),
    (100, 120, []),
    (80, 80, []),
], ids=['below the first threshold', 'exactly at a threshold crosses it', 'crossing one', 'crossing the next',
        'one big call crosses all', 'crossing the limit', 'already over the limit', 'no spend no crossing'])
def test_crossed_thresholds(before: int, after: int, expected: list[int]) -> None:
    assert crossed_thresholds(before, after, 100, [80, 90]) == expected


def test_thresholds_use_exact_integer_arithmetic() -> None:
    # 79.9999% of a $3 limit has not reached 80%.
    limit = spendstore.usd_to_micros(3.0)
    assert crossed_thresholds(0, limit * 80 // 100 - 1, limit, [80]) == []
    assert crossed_thresholds(0, math.ceil(limit * 0.8), limit, [80]) == [80]


def test_thresholds_already_alerted_in_the_period_do_not_alert_again() -> None:
    assert thresholds_to_alert(95, 100, [80, 90], already_alerted=[80]) == [90]
    assert thresholds_to_alert(100, 100, [80, 90], already_alerted=[80, 90, 100]) == []


# --- the 429 ----------------------------------------------------------------------------------

def _line(amount: int = 215_000, daily: float = 1.0) -> budgets.HoldLine:
    plan = plan_reservation(bundle_with(budget('daily-cap', daily=daily)), identity(), TEST_MODEL, chat(), hold_id='h',
                            now=NOON, hold_seconds=60)
    [line] = plan.lines
    assert line.amount_micros == 215_000
    return line if amount == 215_000 else budgets.HoldLine(**{**line.__dict__, 'amount_micros': amount})


def test_an_exhausted_budget_says_which_budget_its_limit_spend_and_reset() -> None:
    error = budget_exceeded(_line(), Refusal('user:alice', 'day', 950_000, 0), NOON)
    body = error.body()['error']
    assert (error.status, body['code']) == (429, 'budget_exceeded')
    assert {k: body[k] for k in ('budget', 'subject', 'period', 'limitUsd', 'spentUsd', 'resetsAt')} == {
        'budget': 'daily-cap', 'subject': 'user:alice', 'period': 'day', 'limitUsd': 1.0, 'spentUsd': 0.95,
        'resetsAt': '2025-03-15T00:00:00Z'}
    assert "budget 'daily-cap' (daily limit $1.00) for user:alice is exhausted" in body['message']
    assert error.retry_after == 12 * 3600
    json.dumps(error.body())


def test_a_monthly_refusal_resets_on_the_first_of_next_month() -> None:
    error = budget_exceeded(_line(), Refusal('user:alice', 'month', 99_900_000, 0), NOON)
    assert error.details['resetsAt'] == '2025-04-01T00:00:00Z'
    assert 'monthly limit $100.00' in error.message


def test_room_taken_by_calls_in_flight_says_so_and_retries_soon() -> None:
    error = budget_exceeded(_line(), Refusal('user:alice', 'day', 500_000, 400_000), NOON)
    assert error.retry_after == 1.0
    assert 'reserved by calls in flight' in error.message
    assert error.details['reservedUsd'] == 0.4


def test_a_call_bigger_than_the_whole_limit_says_to_lower_max_tokens() -> None:
    error = budget_exceeded(_line(amount=2_000_000), Refusal('user:alice', 'day', 0, 0), NOON)
    assert 'lower max_tokens' in error.message and error.details['requestedUsd'] == 2.0


# --- hold members -----------------------------------------------------------------------------

def test_a_hold_member_round_trips_with_encoded_subjects() -> None:
    bundle = bundle_with(budget(users=['*'], teams=['*']))
    [line] = plan_reservation(bundle, identity('a b,c', 'r&d team'), TEST_MODEL, chat(), hold_id='abc', now=NOON,
                              hold_seconds=5).lines
    member = budgets.hold_member(line)
    assert member == 'abc 2025-03-14 2025-03 215000 user:a%20b%2Cc,team:r%26d%20team'
    parsed = budgets.parse_hold_member(member)
    assert parsed is not None and parsed.subjects == line.subjects and parsed.amount_micros == 215_000
    assert budgets.parse_hold_member('garbage') is None
    assert budgets.parse_hold_member('a b c notanumber d') is None


def test_every_key_a_budget_script_touches_shares_one_cluster_hash_tag() -> None:
    [line] = plan_reservation(bundle_with(budget()), identity(), TEST_MODEL, chat(), hold_id='h', now=NOON,
                              hold_seconds=5).lines
    keys = [line.period_key('day'), line.period_key('month'), spendstore.holds_key('research', 'team-budget'),
            spendstore.settled_key('research', 'team-budget', 'h')]
    tags = {key[key.index('{'):key.index('}') + 1] for key in keys}
    assert tags == {'{research/team-budget}'}


# --- which name a call is priced by ---------------------------------------------------------

def test_a_call_is_priced_by_the_requested_name_when_something_prices_it() -> None:
    alias = budget('aliased', pricing={'fast': Price(input_per_1k=1, output_per_1k=2)})
    assert budgets.priced_model(bundle_with(alias), 'fast', 'gpt-4o-mini') == 'fast'


def test_a_requested_name_the_shipped_list_prices_is_kept() -> None:
    assert budgets.priced_model(bundle_with(budget()), 'gpt-4o', 'gpt-4o-2024-08-06') == 'gpt-4o'


def test_an_unpriced_alias_falls_back_to_the_upstream_model() -> None:
    assert budgets.priced_model(bundle_with(budget()), 'fast', 'gpt-4o-mini') == 'gpt-4o-mini'
