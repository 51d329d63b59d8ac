"""What a table column or a claim measures of a run: a tag's final or best value, optionally at a step.

A ``Metric`` reads one number per run. Over several runs (the seeds of a cell, the runs of a
pivot's square) ``Metric.values`` keeps the runs that count: a run that diverged is left
out, since its metrics are those of broken weights, except for the run records
(``zoo/run/diverged``, ``zoo/run/completed``), which say what became of every run, and for a
value read at a step before the run diverged (``TAG@STEP``, STEP below the divergence step:
a measurement at initialization, ``zoo/signal_propagation/...@0``, is that of sound weights).

In text (``normzoo report --claim``) a metric is ``[best ]TAG[@STEP]``: ``val/acc``,
``best val/acc``, ``val/acc@1000`` (the last value logged at or before step 1,000).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from normzoo.errors import ConfigError
from normzoo.report.runs import Run
from normzoo.tags import tag as zoo_tag

RECORD_PREFIX = zoo_tag("run") + "/"
"""Tags under it record what became of a run; diverged runs count for them."""
TEXT = re.compile(r"^(?P<best>best\s+)?(?P<tag>[^\s@]+)(?:@(?P<step>\d+))?$")


@dataclass(frozen=True)
class Metric:
    """A final-value column: ``tag``'s last value, or its best (largest), optionally as an error in %.

    With ``step``, the value (or the best) over the steps up to ``step`` only: "accuracy at
    step 1,000" tells which run learns faster.
    """

    tag: str
    best: bool = False
    error: bool = False
    step: int | None = None

    @classmethod
    def parse(cls, text: str) -> Metric:
        """``[best ]TAG[@STEP]`` as a ``Metric``.

        Raises:
            ConfigError: ``text`` is not of that form.
        """
        match = TEXT.match(text.strip())
        if match is None:
            raise ConfigError(f"{text!r} is not a metric: write [best ]TAG[@STEP], e.g. val/acc, best val/acc or "
                              "val/acc@1000.")
        step = match["step"]
        return cls(match["tag"], best=bool(match["best"]), step=int(step) if step is not None else None)

    @property
    def text(self) -> str:
        """The form ``parse`` reads (``error`` aside)."""
        return ("best " if self.best else "") + self.tag + (f"@{self.step}" if self.step is not None else "")

    @property
    def title(self) -> str:
        name = f"best {self.tag}" if self.best else self.tag
        name += f" at step {self.step:,}" if self.step is not None else ""
        return f"{name} error %" if self.error else name

    def of(self, run: Run) -> float | None:
        """The run's value; None if it logged none (up to ``step``)."""
        series = run.scalars.get(self.tag)
        if series is None:
            return None
        values = [v for s, v in zip(series.steps, series.values, strict=True) if self.step is None or s <= self.step]
        if not values:
            return None
        if self.best:
            finite = [v for v in values if math.isfinite(v)]
            value = max(finite) if finite else None
        else:
            value = values[-1]
        if value is None or not self.error:
            return value
        return 100.0 * (1.0 - value)

    @property
    def is_record(self) -> bool:
        """Whether the tag records what became of a run (``zoo/run/...``): diverged runs count for it."""
        return self.tag.startswith(RECORD_PREFIX)

    def counts(self, run: Run) -> bool:
        """Whether ``run`` counts in a statistic of this metric: it did not diverge, the tag is a run record, or
        the metric reads a step before the run diverged."""
        if run.status != "diverged" or self.is_record:
            return True
        return self.step is not None and run.diverged_at is not None and self.step < run.diverged_at

    def values(self, runs: Sequence[Run]) -> list[float]:
        """The finite values of the runs that count (see ``counts``), in the order of ``runs``."""
        found = [self.of(run) for run in runs if self.counts(run)]
        return [value for value in found if value is not None and math.isfinite(value)]
