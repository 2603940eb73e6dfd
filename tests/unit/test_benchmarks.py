"""The pure parts of ``benchmarks/sidecar_latency.py``: percentiles, the summary over rounds (added
latency paired by round, throughput against the direct calls), the table's number format, and
the command line."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / 'benchmarks' / 'sidecar_latency.py'


@pytest.fixture(scope='module')
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location('sidecar_latency_under_test', SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_percentiles_of_one_to_a_thousand_milliseconds(bench: ModuleType) -> None:
    stats = bench.percentile_stats([i / 1000 for i in range(1, 1001)])
    assert stats['p50'] == pytest.approx(500.5)
    assert stats['p90'] == pytest.approx(900.1)
    assert stats['p99'] == pytest.approx(990.01)
    assert (stats['min'], stats['max']) == pytest.approx((1.0, 1000.0))
    assert stats['mean'] == pytest.approx(500.5)


def test_percentiles_never_decrease_whatever_the_order_of_the_samples(bench: ModuleType) -> None:
    samples = [0.004, 0.001, 0.050, 0.002, 0.003, 0.0015, 0.2]
    stats = bench.percentile_stats(samples)
    assert stats['min'] <= stats['p50'] <= stats['p90'] <= stats['p99'] <= stats['p999'] <= stats['max']


def test_one_sample_is_every_percentile_and_none_is_nan(bench: ModuleType) -> None:
    assert set(bench.percentile_stats([0.002]).values()) == {2.0}
    assert all(math.isnan(v) for v in bench.percentile_stats([]).values())


def run(bench: ModuleType, contender: str, round_: int, p50: float, p99: float, rps: float,
        phase: str = 'c1') -> dict[str, Any]:
    return {'upstream_latency_ms': 0.0, 'round': round_, 'contender': contender, 'phase': phase,
            'concurrency': 1, 'requests': 100, 'throughput_rps': rps, 'error_count': 1 if contender == 'miss' else 0,
            'latency_ms': {'p50': p50, 'p90': p99, 'p99': p99},
            'cpu_ms_per_request': {'model': 0.1, 'client': 0.2}}


def test_added_latency_is_paired_with_the_direct_run_of_the_same_round(bench: ModuleType) -> None:
    runs = [run(bench, 'direct', 1, 1.0, 2.0, 1000), run(bench, 'miss', 1, 3.0, 9.0, 250),
            run(bench, 'direct', 2, 5.0, 6.0, 500), run(bench, 'miss', 2, 6.0, 8.0, 250),
            run(bench, 'direct', 3, 2.0, 3.0, 800), run(bench, 'miss', 3, 4.0, 5.0, 400)]
    rows = {r['contender']: r for r in bench.summarise(runs)}
    miss = rows['miss']
    # per round: +2, +1, +2 at p50 and +7, +2, +2 at p99 (not a difference of medians: 4 - 2)
    assert miss['added_p50'] == {'median': 2.0, 'min': 1.0, 'max': 2.0}
    assert miss['added_p99'] == {'median': 2.0, 'min': 2.0, 'max': 7.0}
    assert miss['p50'] == {'median': 4.0, 'min': 3.0, 'max': 6.0}
    assert miss['throughput_vs_direct'] == pytest.approx(0.5)  # 0.25, 0.5, 0.5
    assert (miss['rounds'], miss['requests'], miss['errors']) == (3, 300, 3)
    assert rows['direct']['added_p50'] == {'median': 0.0, 'min': 0.0, 'max': 0.0}


def test_a_contender_without_direct_runs_has_no_added_latency(bench: ModuleType) -> None:
    rows = bench.summarise([run(bench, 'hit', 1, 1.0, 2.0, 100)])
    assert rows[0]['added_p50'] is None and 'throughput_vs_direct' not in rows[0]


@pytest.mark.parametrize(('spread', 'signed', 'text'), [
    ({'median': 1.234, 'min': 1.2, 'max': 1.3}, False, '1.23 (1.20 … 1.30)'),
    ({'median': 1.234, 'min': 1.231, 'max': 1.234}, False, '1.23'),
    ({'median': 0.5, 'min': -0.25, 'max': 0.75}, True, '+0.50 (-0.25 … +0.75)'),
    (None, False, '–'),
], ids=['a range is shown when rounds differ', 'no range when they agree at the shown precision',
        'added latency carries its sign', 'a missing figure is a dash'])
def test_the_table_shows_the_median_and_the_range_over_rounds(bench: ModuleType, spread: Any, signed: bool,
                                                              text: str) -> None:
    assert bench._ms(spread, signed=signed) == text


def test_quick_fills_only_the_options_not_given(bench: ModuleType) -> None:
    args = bench.parse_args(['--quick', '--latency-ms', '0,5'])
    assert (args.requests, args.sequential, args.concurrency, args.rounds, args.latency_ms) == (40, 20, 4, 1, '0,5')
    full = bench.parse_args([])
    assert (full.requests, full.sequential, full.concurrency, full.rounds) == (1000, 300, 16, 3)
    assert full.latency_ms == '0,50'


@pytest.mark.parametrize('argv', [['--requests', '1'], ['--concurrency', '0'], ['--rounds', '0']],
                         ids=['one request has no percentiles', 'nothing in flight', 'no rounds'])
def test_impossible_sizes_are_refused_by_name(bench: ModuleType, argv: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        bench.parse_args(argv)
    assert exited.value.code == 2
    assert argv[0] in capsys.readouterr().err
