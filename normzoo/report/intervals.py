"""The 95% confidence interval of a mean over seeds: Student's t, computed exactly without scipy.

A cell's seeds give ``n`` values x_1 ... x_n. Their mean m lies in

    m ± t(0.975, n - 1) * s / sqrt(n)       (s: the sample standard deviation, divisor n - 1)

with 95% confidence, if the values are roughly normal. ``t(p, df)`` is the p-quantile of
Student's t with ``df`` degrees of freedom: 12.706 for 2 seeds, 4.303 for 3, 2.776 for 5.

How ``t_quantile`` computes it (normzoo depends on numpy only, not scipy): for a whole number
of degrees of freedom the probability P(|T| <= t) has a closed form, a finite sum in
theta = arctan(t / sqrt(df)) (Abramowitz & Stegun 26.7.3 and 26.7.4):

- df odd: (2 / pi) * (theta + sin(theta) * (cos(theta) + 2/3 cos^3(theta) + ... + (2*4...(df-3)) /
  (1*3...(df-2)) cos^(df-2)(theta))), only 2 theta / pi for df = 1;
- df even: sin(theta) * (1 + 1/2 cos^2(theta) + (1*3)/(2*4) cos^4(theta) + ... + (1*3...(df-3)) /
  (2*4...(df-2)) cos^(df-2)(theta)).

It rises from 0 to 1 as theta goes from 0 to pi/2, so bisection on theta inverts it to
machine precision for any df (the tests check it against the printed table and scipy).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from normzoo.errors import ConfigError

CONFIDENCE = 0.95
"""The confidence of every interval the report shows."""
FORMULA = "Student's t: mean ± t(0.975, n-1) s / sqrt(n), s the standard deviation over the n runs"
"""``Interval.of`` in words, as the report states it."""
BISECTIONS = 100
"""Halvings of theta's bracket (0 to pi/2): past double precision, which it reaches after ~55."""


def central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (a whole number >= 1) degrees of freedom."""
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2:
        term = total = math.cos(theta)
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * cos2
            total += term
        return 2 / math.pi * (theta + (math.sin(theta) * total if df > 1 else 0.0))
    term = total = 1.0
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * cos2
        total += term
    return math.sin(theta) * total


@lru_cache(maxsize=256)
def t_quantile(probability: float, df: int) -> float:
    """The ``probability``-quantile (in (0.5, 1)) of Student's t with ``df`` degrees of freedom.

    ``t_quantile(0.975, 2)`` = 4.303: the factor of a two-sided 95% interval over 3 seeds.

    Raises:
        ConfigError: ``df`` is not a whole number >= 1, or ``probability`` is outside (0.5, 1).
    """
    if not isinstance(df, int) or isinstance(df, bool) or df < 1:
        raise ConfigError(f"Student's t needs a whole number of degrees of freedom >= 1, got {df!r}.")
    if not 0.5 < probability < 1.0:
        raise ConfigError(f"t_quantile takes a probability in (0.5, 1), got {probability!r}.")
    target = 2 * probability - 1  # P(|T| <= t)
    low, high = 0.0, math.pi / 2
    for _ in range(BISECTIONS):
        middle = (low + high) / 2
        if central_probability(math.sqrt(df) * math.tan(middle), df) < target:
            low = middle
        else:
            high = middle
    return math.sqrt(df) * math.tan((low + high) / 2)


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values and the half-width of its confidence interval (None with one value)."""

    mean: float
    half_width: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float], confidence: float = CONFIDENCE) -> Interval | None:
        """The Student-t interval of the mean of the finite ``values``; None if there are none."""
        finite = [float(v) for v in values if math.isfinite(v)]
        n = len(finite)
        if n == 0:
            return None
        mean = math.fsum(finite) / n
        if n == 1:
            return cls(mean, None, 1)
        s = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (n - 1))
        return cls(mean, t_quantile((1 + confidence) / 2, n - 1) * s / math.sqrt(n), n)

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width
