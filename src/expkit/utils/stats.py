"""Statistics of repeated runs, in plain Python (no numpy or scipy at import): the mean, the
sample standard deviation and a Student's t confidence interval of a metric over seeds, and
Welch's t test (with Cohen's d) between two groups of seeds.

With 3-5 seeds these numbers are rough: the interval is wide, Welch's test has little power,
and a p-value above 0.05 says "not shown", never "the same". The README says so once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

LEVEL = 0.95  # the confidence level of every interval expkit shows


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 1000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return result


def beta_regularized(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t distribution with `df` degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * beta_regularized(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


@lru_cache(maxsize=1024)  # a table of many settings asks for the same few df
def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0 < p < 1), by bisection on `t_cdf`."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0  # the median, exactly (the bisection would stop within 1e-7 of it)
    low, high = -1.0, 1.0
    while t_cdf(low, df) > p:
        low *= 2.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * max(1.0, abs(middle)):
            break
    return (low + high) / 2.0


@dataclass(frozen=True)
class Summary:
    """One metric over the runs of a group. `std` is the sample standard deviation (n - 1 in
    the denominator); `low`, `high` bound the `level` confidence interval of the mean (Student's
    t with n - 1 degrees of freedom). With one run, std and the interval are NaN."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        """Half the interval's width: mean ± this."""
        return (self.high - self.low) / 2.0


def summarize(values: Sequence[float], level: float = LEVEL) -> Summary:
    """Mean, sample std and the Student's t interval of the mean of `values` (one per run)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, level)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, level)


@dataclass(frozen=True)
class Welch:
    """Welch's t test of two groups' means (unequal variances): the difference a - b, t, the
    Welch-Satterthwaite degrees of freedom, the two-sided p-value, and Cohen's d (the
    difference over the root mean square of the two standard deviations)."""

    difference: float
    t: float
    df: float
    p: float
    d: float


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Welch's t test of mean(a) = mean(b); each group needs two values or more."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's test needs two values or more in each group")
    sa, sb = summarize(a), summarize(b)
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    difference = sa.mean - sb.mean
    spread = math.sqrt((sa.std ** 2 + sb.std ** 2) / 2.0)
    infinite = 0.0 if difference == 0 else math.copysign(math.inf, difference)
    d = difference / spread if spread > 0 else infinite
    if va + vb == 0:  # both groups constant: the difference is exact
        return Welch(difference, infinite, math.nan, 1.0 if difference == 0 else 0.0, d)
    t = difference / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
    p = 2.0 * (1.0 - t_cdf(abs(t), df))
    return Welch(difference, t, df, min(1.0, p), d)
