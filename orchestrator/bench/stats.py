"""Statistics of benchmark runs: the steady-state cut, min/mean/max, and the regression test.

Pure: sequences of tok/s figures in, numbers and verdicts out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

STEADY_MIN_BAND = 0.05
"""The steady band is never narrower than ±5 % of the settled TG."""
STEADY_SIGMAS = 3.0
"""...nor than ±3 robust standard deviations of the second half's TG."""
MAD_TO_SIGMA = 1.4826
"""Median absolute deviation → standard deviation for normally distributed noise."""
MIN_STEADY_CUT_RUNS = 4
"""Below this many runs there is no second half to judge the first by: nothing is cut."""
MIN_COMPARE_RUNS = 3
"""Fewer runs (per side, or pairs) than this give no confidence interval worth a verdict."""
THRESHOLD_FLOOR = 0.05
"""The smallest slowdown --compare calls a regression: the steady band's own width."""
NOISE_SIGMAS = 2.0
"""The threshold covers this many standard deviations of the bench-to-bench noise."""
MIN_NOISE_RESULTS = 3
"""Repeats of one configuration needed before their spread is taken as its noise."""


def steady_start(tg_tps: Sequence[float]) -> int:
    """Index of the first steady-state run; the runs before it are warm-up.

    The notes (seed 003) see "behavioral jitter" in the first 2-3 requests, then TG settles.
    The second half of the runs defines "settled": its median TG, with a band of
    ±max(5 %, 3 robust σ) around it (σ from the median absolute deviation, so one outlier
    does not widen it). The warm-up is every run up to the last one in the first half that
    falls outside that band: TG has stayed in the band from there on. At most half the runs
    are dropped, and with fewer than four runs nothing is.
    """
    n = len(tg_tps)
    if n < MIN_STEADY_CUT_RUNS:
        return 0
    settled, band = steady_band(tg_tps)
    start = 0
    for index in range(n // 2):
        if abs(tg_tps[index] - settled) > band:
            start = index + 1
    return start


def steady_band(tg_tps: Sequence[float]) -> tuple[float, float]:
    """The settled TG (median of the second half of the runs) and the half-width of its band."""
    tail = tg_tps[len(tg_tps) // 2 :]
    if not tail:
        return 0.0, 0.0
    settled = statistics.median(tail)
    sigma = MAD_TO_SIGMA * statistics.median(abs(x - settled) for x in tail)
    return settled, max(STEADY_MIN_BAND * settled, STEADY_SIGMAS * sigma)


@dataclass(frozen=True)
class Spread:
    """min / mean / max (and sample standard deviation) of one figure over some runs."""

    n: int
    min: float
    mean: float
    max: float
    stdev: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (all zeros when there are none)."""
        if not values:
            return cls(0, 0.0, 0.0, 0.0, 0.0)
        stdev = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(len(values), min(values), statistics.fmean(values), max(values), stdev)

    @property
    def cv(self) -> float:
        """Coefficient of variation (stdev / mean)."""
        return self.stdev / self.mean if self.mean else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "cv": self.cv}


# ---------------------------------------------------------------- Student's t


def _continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return result


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(df):
        return statistics.NormalDist().cdf(t)
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on the CDF)."""
    if math.isinf(df) or df > 1e7:
        return statistics.NormalDist().inv_cdf(p)
    low, high = -1e6, 1e6
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, abs(mid)):
            break
    return (low + high) / 2


# ---------------------------------------------------------------- comparison

Verdict = Literal["regression", "improvement", "no significant change", "too few runs"]


@dataclass(frozen=True)
class Change:
    """The change of one figure (TG or PP tok/s) from a reference result to a new one.

    Computed on log tok/s, so the change and its interval are ratios (new / reference - 1)
    and a halving weighs as much as a doubling.
    """

    metric: str
    ref: Spread
    new: Spread
    change: float
    """Geometric-mean ratio - 1 (paired: mean of the per-pair log ratios)."""
    low: float | None
    """Lower bound of the confidence interval of ``change`` (None: too few runs)."""
    high: float | None
    confidence: float
    method: Literal["paired t", "Welch t"]
    pairs: int
    threshold: float
    verdict: Verdict
    threshold_basis: str = ""
    """Where ``threshold`` came from (given, or measured bench-to-bench noise)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["ref"] = self.ref.to_json()
        data["new"] = self.new.to_json()
        return data


def _logs(values: Sequence[float]) -> list[float]:
    return [math.log(v) for v in values if v > 0]


def compare(
    metric: str,
    ref: Sequence[float],
    new: Sequence[float],
    *,
    paired: bool,
    threshold: float,
    confidence: float = 0.95,
    threshold_basis: str = "",
) -> Change:
    """Whether ``new`` is slower than ``ref`` by more than ``threshold``, with confidence.

    ``paired``: ``ref[i]`` and ``new[i]`` were measured the same way (same prompt size, same
    place in the schedule), so the test runs on the per-pair log ratios (paired t), which
    removes the spread that comes from the prompt sizes. Otherwise Welch's t on the log
    values of each side.

    A regression is a slowdown that is both significant (the whole interval is below 0)
    and larger than ``threshold`` (a fraction, e.g. 0.05); an improvement likewise upwards.
    """
    ref_logs, new_logs = _logs(ref), _logs(new)
    alpha = 1.0 - confidence
    half_width = 0.0
    if paired:
        ratios = [b - a for a, b in zip(ref_logs, new_logs, strict=False)]
        pairs = len(ratios)
        center = statistics.fmean(ratios) if ratios else 0.0
        enough = pairs >= MIN_COMPARE_RUNS
        if enough:
            se = statistics.stdev(ratios) / math.sqrt(pairs)
            half_width = t_quantile(1 - alpha / 2, pairs - 1) * se
    else:
        pairs = 0
        both = bool(ref_logs and new_logs)
        center = statistics.fmean(new_logs) - statistics.fmean(ref_logs) if both else 0.0
        enough = min(len(ref_logs), len(new_logs)) >= MIN_COMPARE_RUNS
        if enough:
            half_width = _welch_half_width(ref_logs, new_logs, alpha)
    low = math.expm1(center - half_width) if enough else None
    high = math.expm1(center + half_width) if enough else None
    change = math.expm1(center)
    verdict: Verdict
    if low is None or high is None:
        verdict = "too few runs"
    elif high < 0 and change < -threshold:
        verdict = "regression"
    elif low > 0 and change > threshold:
        verdict = "improvement"
    else:
        verdict = "no significant change"
    return Change(
        metric=metric,
        ref=Spread.of(list(ref)),
        new=Spread.of(list(new)),
        change=change,
        low=low,
        high=high,
        confidence=confidence,
        method="paired t" if paired else "Welch t",
        pairs=pairs,
        threshold=threshold,
        verdict=verdict,
        threshold_basis=threshold_basis,
    )


def _welch_half_width(a: Sequence[float], b: Sequence[float], alpha: float) -> float:
    """Half the width of Welch's interval for mean(b) - mean(a)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return 0.0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t_quantile(1 - alpha / 2, df) * se


def noise_threshold(
    bench_means: Sequence[float], floor: float = THRESHOLD_FLOOR
) -> tuple[float, float | None]:
    """The slowdown threshold for one configuration, from how much its benches drift.

    The confidence interval of a comparison covers the run-to-run noise within the two
    benches, not what changes between them (other work on the machine, clocks, page
    cache), which moves every run of a bench together. Earlier benches of the very same
    configuration measure that drift: with ``MIN_NOISE_RESULTS`` or more of them, the
    threshold is the slowdown of ``NOISE_SIGMAS`` standard deviations of their log mean
    tok/s, and never below ``floor``.

    Returns:
        The threshold (a fraction), and the standard deviation of the log means (None when
        there are too few benches to tell).
    """
    logs = _logs(bench_means)
    if len(logs) < MIN_NOISE_RESULTS:
        return floor, None
    sigma = statistics.stdev(logs)
    return max(floor, -math.expm1(-NOISE_SIGMAS * sigma)), sigma
