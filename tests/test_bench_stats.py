"""The bench statistics, the regression decision and the schedules, on synthetic rows."""

from __future__ import annotations

import math
import statistics

import pytest

from orchestrator.bench import schedule, stats
from orchestrator.bench.stats import Spread, compare, steady_start, t_cdf, t_quantile
from orchestrator.profiles.schema import ModelProfile

# ---------------------------------------------------------------- Student's t


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.7062),  # textbook table values
        (0.975, 2, 4.3027),
        (0.975, 5, 2.5706),
        (0.975, 10, 2.2281),
        (0.975, 30, 2.0423),
        (0.95, 4, 2.1318),
        (0.995, 7, 3.4995),
        (0.975, math.inf, 1.9600),
    ],
)
def test_t_quantile_matches_tables(p: float, df: float, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=5e-4)


def test_t_cdf_is_symmetric_and_inverts_the_quantile() -> None:
    for df in (1.0, 3.0, 7.5, 40.0):
        assert t_cdf(0.0, df) == pytest.approx(0.5)
        assert t_cdf(-1.3, df) == pytest.approx(1 - t_cdf(1.3, df))
        assert t_cdf(t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-9)


# ---------------------------------------------------------------- steady state

SETTLED = [22.4, 21.9, 22.3, 22.1, 22.6, 21.8, 22.2, 22.5]


@pytest.mark.parametrize(
    ("name", "tg", "start"),
    [
        ("seed 003: slow first runs", [15.0, 18.5, *SETTLED], 2),
        ("jitter: one early run back in band, the next out again", [22.0, 16.0, *SETTLED], 2),
        ("fast first run (a cache) counts as warm-up too", [30.0, *SETTLED], 1),
        ("noise only", SETTLED, 0),
        ("too few runs to judge", [10.0, 22.0, 22.0], 0),
        ("never more than half", [5.0, 5.0, 5.0, 5.0, 5.0, 22.0, 22.0, 22.0, 22.0, 22.0], 5),
        ("late outlier is kept (noise, not warm-up)", [*SETTLED, 12.0], 0),
    ],
)
def test_steady_start(name: str, tg: list[float], start: int) -> None:
    assert steady_start(tg) == start, name


def test_steady_band_is_at_least_five_percent() -> None:
    settled, band = stats.steady_band([20.0] * 8)
    assert settled == 20.0 and band == pytest.approx(1.0)


def test_steady_band_widens_with_noise() -> None:
    noisy = [10.0, 30.0, 12.0, 28.0, 15.0, 25.0, 11.0, 29.0]
    settled, band = stats.steady_band(noisy)
    assert band > 0.05 * settled * 3
    assert steady_start(noisy) == 0  # noisy throughout: nothing looks like warm-up


def test_spread() -> None:
    s = Spread.of([19.13, 22.5, 24.04])
    assert (s.n, s.min, s.max) == (3, 19.13, 24.04)
    assert s.mean == pytest.approx(21.89, abs=0.01)
    assert s.cv == pytest.approx(statistics.stdev([19.13, 22.5, 24.04]) / s.mean)
    assert Spread.of([]) == Spread(0, 0.0, 0.0, 0.0, 0.0)


# ---------------------------------------------------------------- regression decision

NOISE = [0.8, -1.1, 0.3, 1.4, -0.6, -0.2, 1.0, -1.3]
"""Fixed run-to-run noise (tok/s), the size seed 003 shows around 22.5."""


def _runs(level: float, noise: list[float] = NOISE) -> list[float]:
    return [level + n for n in noise]


def test_clear_regression() -> None:
    ref, new = _runs(22.5), _runs(18.0, NOISE[::-1])
    change = compare("TG", ref, new, paired=True, threshold=0.05)
    assert change.verdict == "regression"
    assert change.change == pytest.approx(18.0 / 22.5 - 1, abs=0.02)
    assert change.low is not None and change.high is not None
    assert change.low < change.change < change.high < 0
    assert change.pairs == 8 and change.method == "paired t"


def test_noise_is_no_change() -> None:
    ref, new = _runs(22.5), _runs(22.5, NOISE[3:] + NOISE[:3])
    change = compare("TG", ref, new, paired=True, threshold=0.05)
    assert change.verdict == "no significant change"
    assert change.low is not None and change.high is not None
    assert change.low < 0 < change.high


def test_significant_but_below_threshold_is_no_regression() -> None:
    # 3 % slower with almost no noise: real, but smaller than the 5 % that counts.
    ref = [22.5 + n / 100 for n in NOISE]
    new = [x * 0.97 for x in ref]
    change = compare("TG", ref, new, paired=True, threshold=0.05)
    assert change.high is not None and change.high < 0
    assert change.verdict == "no significant change"
    assert compare("TG", ref, new, paired=True, threshold=0.02).verdict == "regression"


def test_large_but_noisy_is_no_regression() -> None:
    ref = [22.0, 10.0, 30.0, 12.0]
    new = [14.0, 9.0, 25.0, 7.0]
    change = compare("TG", ref, new, paired=False, threshold=0.05)
    assert change.change < -0.05
    assert change.verdict == "no significant change"  # the interval reaches above 0


def test_improvement() -> None:
    change = compare("PP", _runs(160.0), _runs(200.0), paired=True, threshold=0.05)
    assert change.verdict == "improvement" and change.low is not None and change.low > 0


@pytest.mark.parametrize("paired", [True, False])
def test_too_few_runs(paired: bool) -> None:
    change = compare("TG", [22.5, 22.4], [10.0, 10.1], paired=paired, threshold=0.05)
    assert change.verdict == "too few runs"
    assert change.low is None and change.high is None
    assert change.change == pytest.approx(-0.55, abs=0.01)


def test_welch_equals_pooled_t_for_equal_sizes_and_variances() -> None:
    ref = [math.exp(x) for x in (1.0, 1.2, 1.4, 1.6)]
    new = [math.exp(x) for x in (0.5, 0.7, 0.9, 1.1)]  # same spread on the log scale
    change = compare("TG", ref, new, paired=False, threshold=0.05)
    variance = statistics.variance([1.0, 1.2, 1.4, 1.6])
    half = t_quantile(0.975, 6) * math.sqrt(2 * variance / 4)
    assert change.method == "Welch t"
    assert change.low == pytest.approx(math.expm1(-0.5 - half))
    assert change.high == pytest.approx(math.expm1(-0.5 + half))


def test_pairing_removes_the_spread_of_prompt_sizes() -> None:
    # PP climbs with prompt size (seed 003: ~100 tok/s short, 300+ long); new is 8 % slower.
    ref = [101.0, 160.0, 372.0, 117.0, 155.0, 330.0]
    new = [x * 0.92 * (1 + n / 200) for x, n in zip(ref, NOISE, strict=False)]
    assert compare("PP", ref, new, paired=True, threshold=0.05).verdict == "regression"
    assert compare("PP", ref, new, paired=False, threshold=0.05).verdict == (
        "no significant change"
    )


def test_identical_runs_have_a_zero_width_interval() -> None:
    change = compare("TG", [20.0] * 4, [20.0] * 4, paired=False, threshold=0.05)
    assert change.low == change.high == 0.0 and change.verdict == "no significant change"


# ---------------------------------------------------------------- schedules


def test_series_sizes_follow_seed_003_within_the_context() -> None:
    assert schedule.series_sizes(32_000) == [512, 1024, 2048, 4096, 8192, 16384]
    assert schedule.series_sizes(1856) == [512, 1024, 1856]
    assert schedule.series_sizes(2100) == [512, 1024, 2048]  # 2100 is too close to 2048
    assert schedule.series_sizes(300) == []


def test_series_schedule_interleaves_and_cycles() -> None:
    assert schedule.interleave([512, 1024, 2048, 4096, 8192]) == [512, 8192, 1024, 4096, 2048]
    assert schedule.series_schedule([512, 1024, 1856], 8) == [
        512,
        1856,
        1024,
        512,
        1856,
        1024,
        512,
        1856,
    ]


def test_sweep_depths() -> None:
    assert schedule.sweep_depths(1856) == [0, 512, 1024, 1856]
    depths = schedule.sweep_depths(262144 - 128 - 64)
    assert depths[:4] == [0, 512, 1024, 2048] and 4096 in depths and 16384 in depths
    assert depths[-1] == 262144 - 128 - 64 and depths[-2] == 131072


def _profile(engine: str) -> ModelProfile:
    return ModelProfile.model_validate(
        {
            "architecture": "a",
            "hardware": "h",
            "model": {"path": "/m.gguf", "quant": "F16"},
            "engine": {"kind": "llama.cpp", "ctx": 8192, **_engine(engine)},
            "runtime": {"kind": "process"},
            "publish": {"port": 8080},
        }
    )


def _engine(engine: str) -> dict[str, object]:
    settings: dict[str, dict[str, object]] = {
        "unified by default": {},
        "4 slots": {"parallel": 4},
        "4 slots, unified": {"parallel": 4, "kv_unified": True},
    }
    return settings[engine]


@pytest.mark.parametrize(
    ("engine", "limit"),
    [("unified by default", 8192), ("4 slots", 2048), ("4 slots, unified", 8192)],
)
def test_request_limit(engine: str, limit: int) -> None:
    assert schedule.request_limit(_profile(engine)) == limit
    assert schedule.prompt_limit(limit, 128) == limit - 128 - schedule.TEMPLATE_MARGIN


# ---------------------------------------------------------------- the threshold


def test_noise_threshold_needs_three_benches() -> None:
    assert stats.noise_threshold([]) == (stats.THRESHOLD_FLOOR, None)
    assert stats.noise_threshold([22.5, 18.0]) == (stats.THRESHOLD_FLOOR, None)


def test_quiet_benches_keep_the_floor() -> None:
    threshold, sigma = stats.noise_threshold([22.5, 22.4, 22.6, 22.5])
    assert sigma is not None and sigma < 0.01
    assert threshold == stats.THRESHOLD_FLOOR


def test_drifting_benches_raise_the_threshold() -> None:
    means = [55.7, 189.0, 213.0, 1112.0, 769.0]  # the demo under load: see the README
    threshold, sigma = stats.noise_threshold(means)
    logs = [math.log(m) for m in means]
    assert sigma is not None and sigma == pytest.approx(statistics.stdev(logs))
    assert threshold == pytest.approx(1 - math.exp(-stats.NOISE_SIGMAS * sigma))
    assert 0.5 < threshold < 1  # a slowdown, so always below 100 %


def test_a_slowdown_inside_the_drift_is_no_regression() -> None:
    threshold, _ = stats.noise_threshold([22.5, 20.0, 24.5, 21.0, 23.5])  # ~8 % drift
    ref, new = _runs(22.5), _runs(20.5, NOISE[::-1])  # 9 % slower, significant
    assert compare("TG", ref, new, paired=True, threshold=0.05).verdict == "regression"
    assert compare("TG", ref, new, paired=True, threshold=threshold).verdict == (
        "no significant change"
    )
