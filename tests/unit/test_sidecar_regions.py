"""Region selection (agentgov.sidecar.regions): the data-class header, the selection table
(residency rules, EU preference, default region, latency order, the 403 cases), picking under
capacity and breakers, and the per-region timeout."""
from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings, strategies as st

from agentgov.api.base import DATA_CLASSES, DataClass
from agentgov.api.bundle import PolicyBundle
from agentgov.api.regionpolicy import DEFAULT_RULES, Region, RoutingRule, RuleMatch, RuleRoute
from agentgov.sidecar.errors import BadRequest, Forbidden
from agentgov.sidecar.regions import (
    MAX_DATA_CLASS_HEADER, REGION_RETRIES, RoutePlan, pick_region, plan_route, region_timeout_seconds,
    request_data_classes,
)
from sidecar_support import make_bundle

ALL: list[DataClass] = list(DATA_CLASSES)  # type: ignore[arg-type]


def region(name: str, latency: int, classes: Sequence[str] = ('public', 'internal'), on_premise: bool = False,
           capacity: int = 100) -> Region:
    return Region(name=name, endpoint=f'https://{name}.models.example', on_premise=on_premise,
                  latency_slo_ms=latency, capacity=capacity, data_classes=list(classes))  # type: ignore[arg-type]


ONPREM = region('onprem-frankfurt', 50, ALL, on_premise=True, capacity=2)
EU_WEST = region('eu-west-1', 120, ['public', 'internal', 'confidential'])
EU_CENTRAL = region('eu-central-1', 80)
US_EAST = region('us-east-1', 40, ['public', 'internal', 'confidential'])
REGIONS = [EU_WEST, US_EAST, ONPREM, EU_CENTRAL]
EU_ONLY_FOR_EU = RoutingRule(name='eu-users-only-eu', match=RuleMatch(user_regions=['eu-*']),
                             route=RuleRoute(regions=['eu-*']), enforcement='Required')


def bundle(regions: Sequence[Region] = REGIONS, rules: Sequence[RoutingRule] = DEFAULT_RULES,
           default_region: str | None = None,
           agent_classes: Sequence[str] = ('internal', 'confidential', 'pii')) -> PolicyBundle:
    return make_bundle().model_copy(update={
        'regions': list(regions), 'routing_rules': list(rules), 'default_region': default_region,
        'data_classes': list(agent_classes),
    })


# --- the selection table ---------------------------------------------------------------------

SELECTION = {
    'internal data from the US goes to the lowest latency first':
        (bundle(), ['internal'], 'us-east-1',
         ['us-east-1', 'onprem-frankfurt', 'eu-central-1', 'eu-west-1'], [], False),
    'internal data from an EU user prefers EU regions, then the rest by latency':
        (bundle(), ['internal'], 'eu-west-1',
         ['eu-central-1', 'eu-west-1', 'us-east-1', 'onprem-frankfurt'], ['eu-users-eu-regions'], False),
    'a caller location is matched case-insensitively':
        (bundle(), ['internal'], 'EU-West-1',
         ['eu-central-1', 'eu-west-1', 'us-east-1', 'onprem-frankfurt'], ['eu-users-eu-regions'], False),
    'a caller without a location gets no EU preference':
        (bundle(), ['internal'], None,
         ['us-east-1', 'onprem-frankfurt', 'eu-central-1', 'eu-west-1'], [], False),
    'pii goes on-premise only':
        (bundle(), ['pii'], 'us-east-1', ['onprem-frankfurt'], ['sensitive-on-premise'], True),
    'pii from an EU user still goes on-premise only (Required beats Preferred)':
        (bundle(), ['internal', 'pii'], 'eu-west-1', ['onprem-frankfurt'],
         ['sensitive-on-premise', 'eu-users-eu-regions'], True),
    'confidential data skips regions that may not hold it':
        (bundle(), ['confidential'], None, ['us-east-1', 'onprem-frankfurt', 'eu-west-1'], [], False),
    'every class of a request must be allowed by the region':
        (bundle(), ['internal', 'confidential'], 'eu-north-1',
         ['eu-west-1', 'us-east-1', 'onprem-frankfurt'], ['eu-users-eu-regions'], False),
    'the default region comes first when no rule prefers another':
        (bundle(default_region='eu-west-1'), ['internal'], 'us-east-1',
         ['eu-west-1', 'us-east-1', 'onprem-frankfurt', 'eu-central-1'], [], False),
    'the default region leads the preferred regions too':
        (bundle(default_region='eu-west-1'), ['internal'], 'eu-south-2',
         ['eu-west-1', 'eu-central-1', 'us-east-1', 'onprem-frankfurt'], ['eu-users-eu-regions'], False),
    'a Preferred rule never brings back a region a Required rule excluded':
        (bundle(default_region='us-east-1'), ['pii'], 'eu-west-1', ['onprem-frankfurt'],
         ['sensitive-on-premise', 'eu-users-eu-regions'], True),
    'a Required user-region rule keeps EU callers in EU regions':
        (bundle(rules=[*DEFAULT_RULES, EU_ONLY_FOR_EU]), ['internal'], 'eu-west-1',
         ['eu-central-1', 'eu-west-1'], ['eu-users-eu-regions', 'eu-users-only-eu'], True),
    'without the shipped rules pii may go wherever a region holds it':
        (bundle(rules=[], regions=[*REGIONS, region('us-west-2', 10, ALL)]), ['pii'], None,
         ['us-west-2', 'onprem-frankfurt'], [], False),
    'no regions in the bundle: an empty plan (the model route endpoint serves)':
        (bundle(regions=[]), ['pii'], 'eu-west-1', [], [], False),
}


@pytest.mark.parametrize(('policy', 'classes', 'user_region', 'expected', 'rules', 'required'),
                         list(SELECTION.values()), ids=list(SELECTION))
def test_region_selection(policy: PolicyBundle, classes: list[DataClass], user_region: str | None,
                          expected: list[str], rules: list[str], required: bool) -> None:
    plan = plan_route(policy, classes, user_region)
    assert list(plan.names) == expected
    assert list(plan.rules) == rules
    assert plan.required is required


REFUSALS = {
    'pii with no on-premise region':
        (bundle(regions=[EU_WEST, US_EAST]), ['pii'], 'eu-west-1',
         ['pii', 'sensitive-on-premise', 'on-premise']),
    'pii with an on-premise region that may not hold pii':
        (bundle(regions=[EU_WEST, region('onprem-x', 5, ['internal'], on_premise=True)]), ['internal', 'pii'], None,
         ['pii', 'sensitive-on-premise', 'onprem-x']),
    'confidential data with no region that may hold it':
        (bundle(regions=[EU_CENTRAL]), ['internal', 'confidential'], None, ['confidential', 'eu-central-1']),
    'a Required EU rule with no EU region that may hold the data':
        (bundle(regions=[US_EAST, EU_CENTRAL], rules=[EU_ONLY_FOR_EU]), ['confidential'], 'eu-west-1',
         ['confidential', 'eu-users-only-eu']),
}


@pytest.mark.parametrize(('policy', 'classes', 'user_region', 'named'), list(REFUSALS.values()), ids=list(REFUSALS))
def test_no_allowed_region_is_a_403_naming_the_data_class_and_rule(
        policy: PolicyBundle, classes: list[DataClass], user_region: str | None, named: list[str]) -> None:
    with pytest.raises(Forbidden) as caught:
        plan_route(policy, classes, user_region)
    error = caught.value
    assert (error.status, error.code) == (403, 'region_not_allowed')
    for word in named:
        assert word in error.message
    assert error.body()['error']['code'] == 'region_not_allowed'


def test_the_pii_refusal_names_pii_and_not_the_innocent_classes() -> None:
    with pytest.raises(Forbidden) as caught:
        plan_route(bundle(regions=[EU_WEST, US_EAST]), ['internal', 'pii'], None)
    assert 'data class pii' in caught.value.message
    assert 'internal' not in caught.value.message


@settings(max_examples=300, deadline=None)
@given(classes=st.lists(st.sampled_from(ALL), min_size=1, unique=True),
       user_region=st.one_of(st.none(), st.sampled_from(['eu-west-1', 'eu-central-1', 'us-east-1', 'ap-south-1'])),
       default=st.one_of(st.none(), st.sampled_from([r.name for r in REGIONS])))
def test_a_plan_only_ever_holds_regions_allowed_for_every_class(
        classes: list[DataClass], user_region: str | None, default: str | None) -> None:
    try:
        plan = plan_route(bundle(default_region=default), classes, user_region)
    except Forbidden as e:
        assert e.code == 'region_not_allowed'
        return
    assert plan.regions, 'a plan from a bundle with regions is never empty'
    for chosen in plan.regions:
        assert set(classes) <= set(chosen.data_classes)
        if {'sensitive', 'pii'} & set(classes):
            assert chosen.on_premise
    assert len(set(plan.names)) == len(plan.names)


# --- picking at call time ---------------------------------------------------------------------

PLAN = plan_route(bundle(), ['internal'], 'eu-west-1')  # eu-central-1, eu-west-1, us-east-1, onprem


def test_pick_takes_the_first_region_of_the_plan() -> None:
    assert pick_region(PLAN, {}, set()) == EU_CENTRAL


def test_pick_skips_a_region_at_capacity() -> None:
    assert pick_region(PLAN, {'eu-central-1': 100}, set()) == EU_WEST
    assert pick_region(PLAN, {'eu-central-1': 99}, set()) == EU_CENTRAL


def test_pick_skips_a_region_whose_breaker_is_open() -> None:
    assert pick_region(PLAN, {}, {'eu-central-1', 'eu-west-1'}) == US_EAST


def test_pick_returns_none_when_every_region_is_full_or_failing() -> None:
    full = {r.name: r.capacity for r in REGIONS}
    assert pick_region(PLAN, full, set()) is None
    assert pick_region(PLAN, {}, {r.name for r in REGIONS}) is None


def test_pick_never_leaves_the_required_set_even_when_it_is_full() -> None:
    pii = plan_route(bundle(), ['pii'], 'us-east-1')
    assert pick_region(pii, {}, set()) == ONPREM
    assert pick_region(pii, {'onprem-frankfurt': ONPREM.capacity}, set()) is None
    assert pick_region(pii, {}, {'onprem-frankfurt'}) is None


def test_pick_from_an_empty_plan_is_none() -> None:
    assert pick_region(RoutePlan(regions=()), {}, set()) is None


def test_region_timeout_is_twice_the_latency_slo_with_three_retries() -> None:
    assert region_timeout_seconds(EU_WEST) == pytest.approx(0.24)
    assert region_timeout_seconds(region('slow', 1500)) == pytest.approx(3.0)
    assert REGION_RETRIES == 3


# --- the data-class header --------------------------------------------------------------------

AGENT = bundle()  # declares internal, confidential, pii

HEADERS = {
    'no header: the agent declared classes': (None, ('internal', 'confidential', 'pii')),
    'one class narrows': ('pii', ('pii',)),
    'several classes, any case and spacing, canonical order': (' PII , internal', ('internal', 'pii')),
    'duplicates are dropped': ('internal,internal', ('internal',)),
}


@pytest.mark.parametrize(('header', 'expected'), list(HEADERS.values()), ids=list(HEADERS))
def test_request_data_classes(header: str | None, expected: tuple[str, ...]) -> None:
    assert request_data_classes(header, AGENT) == expected


BAD_HEADERS = {
    'an unknown class is named': ('internal,secret', "'secret' is not a data class"),
    'an empty header': ('', 'is empty'),
    'only commas': (' , ', 'is empty'),
    'an empty item': ('internal,,pii', 'empty item'),
    'an oversized header': ('internal,' * 40, f'longer than {MAX_DATA_CLASS_HEADER}'),
    'non-ASCII': ('intérnal', 'printable ASCII'),
    'control characters (header injection)': ('internal\r\nX-Admin: 1', 'printable ASCII'),
    'a hostile value is not echoed': ('<script>alert(1)</script>', 'an unrecognised value is not a data class'),
}


@pytest.mark.parametrize(('header', 'message'), list(BAD_HEADERS.values()), ids=list(BAD_HEADERS))
def test_a_bad_data_class_header_is_a_400(header: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        request_data_classes(header, AGENT)
    assert caught.value.status == 400
    assert message in caught.value.message
    assert 'script' not in caught.value.message and '\n' not in caught.value.message


def test_a_class_the_agent_does_not_declare_is_a_403_naming_it() -> None:
    with pytest.raises(Forbidden) as caught:
        request_data_classes('internal, sensitive', AGENT)
    assert caught.value.code == 'data_class_not_allowed'
    assert 'sensitive' in caught.value.message
    assert 'declared: internal, confidential, pii' in caught.value.message
