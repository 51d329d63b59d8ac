"""The 95% interval over seeds: Student's t quantile against the printed table and scipy, and intervals of seeds."""

from __future__ import annotations

import math

import pytest

from normzoo.errors import ConfigError
from normzoo.report.intervals import Interval, central_probability, t_quantile

TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 19: 2.093, 29: 2.045, 30: 2.042, 120: 1.980}
"""t(0.975, df) as statistics tables print it (3 decimals): the factor of a two-sided 95% interval."""


def test_the_t_quantile_matches_the_printed_table():
    for df, printed in TABLE_975.items():
        assert round(t_quantile(0.975, df), 3) == printed, df
    assert round(t_quantile(0.95, 3), 3) == 2.353 and round(t_quantile(0.995, 4), 3) == 4.604
    assert t_quantile(0.975, 1000) == pytest.approx(1.96234, abs=1e-5)  # near the normal's 1.95996


def test_the_t_quantile_matches_scipy_to_machine_precision():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 31):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-11), (p, df)


def test_the_closed_form_probability_of_small_degrees_of_freedom():
    assert central_probability(1.0, 1) == pytest.approx(0.5)  # Cauchy: P(|T| <= 1) = 2 atan(1) / pi
    for t in (0.3, 1.0, 4.0):
        assert central_probability(t, 2) == pytest.approx(t / math.sqrt(2 + t * t))
        theta = math.atan(t / math.sqrt(3))
        assert central_probability(t, 3) == pytest.approx(2 / math.pi * (theta + math.sin(theta) * math.cos(theta)))
    with pytest.raises(ConfigError, match="whole number of degrees of freedom"):
        t_quantile(0.975, 0)
    with pytest.raises(ConfigError, match=r"probability in \(0.5, 1\)"):
        t_quantile(0.4, 3)


def test_the_interval_of_three_and_five_seeds():
    three = Interval.of([0.90, 0.92, 0.94])  # s = 0.02
    assert three.n == 3 and three.mean == pytest.approx(0.92)
    assert three.half_width == pytest.approx(4.302653 * 0.02 / math.sqrt(3))
    assert (three.low, three.high) == pytest.approx((0.92 - 0.0496828, 0.92 + 0.0496828), abs=1e-7)
    five = Interval.of([1.0, 2.0, 3.0, 4.0, 5.0, math.nan])  # a NaN is left out; s = sqrt(2.5)
    assert five.n == 5 and five.half_width == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5))
    one = Interval.of([0.7])
    assert (one.mean, one.half_width, one.low, one.high) == (0.7, None, None, None)
    assert Interval.of([]) is None and Interval.of([math.inf]) is None
    assert Interval.of([0.5, 0.5, 0.5]).half_width == 0.0
