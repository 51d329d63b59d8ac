"""A claim's direction and its verdict over seeds: agrees, unclear or disagrees.

A claim names two cells, an order and a metric, in text
``[STATEMENT: ]LEFT > RIGHT on METRIC`` (or ``<``), for example
``BN reaches a higher test accuracy: bn > none on val/acc`` (``METRIC`` as in
``Metric.parse``: ``val/acc``, ``best val/acc``, ``val/acc@1000``; a ``*`` in its tag stands for
one part of a tag, as in ``--curves``). Studies state theirs (``Study.claims``); ``normzoo
report --claim`` takes them too.

The verdict (``verdict``, the only place it is decided) compares the two cells' 95% Student-t
intervals over seeds (``normzoo.report.intervals``):

- **agrees** when the intervals do not overlap and lie in the claimed order;
- **disagrees** when they do not overlap and lie in the opposite order;
- **unclear** when they overlap, or a cell has fewer than 2 runs with a value (no interval).

Why non-overlapping intervals rather than an interval of the paired difference over seeds: it
is what the report's tables and bands show, so a reader can check a verdict by eye; it
needs no pairing, which cells with other seed counts or a diverged seed would break (and seed
k of two setups shares only the data order, not the initial weights, so pairs are not much
alike); and it is the cautious choice: two 95% intervals that do not overlap put the
difference of the means well past a 5% test (near 0.6% with many seeds and equal spreads), so "agrees" is
rarely said by chance, at the price of more "unclear" with few seeds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from normzoo.errors import ConfigError
from normzoo.report.cells import Cell
from normzoo.report.intervals import FORMULA, Interval
from normzoo.report.metrics import Metric
from normzoo.report.runs import matching_tags
from normzoo.report.tables import format_interval, markdown_table

Verdict = Literal["agrees", "unclear", "disagrees"]
Relation = Literal[">", "<"]
TEXT = re.compile(r"^(?:(?P<statement>.*\S):\s+)?(?P<left>\S+)\s+(?P<relation>[<>])\s+(?P<right>\S+)\s+on\s+"
                  r"(?P<metric>\S.*)$", re.DOTALL)
VERDICT_RULE = (
    "A claim `A > B on M` **agrees** when the 95% intervals of A and B over their seeds do not overlap and A's "
    "lies above B's, **disagrees** when they do not overlap and A's lies below, and is **unclear** when they "
    f"overlap or a cell has fewer than 2 runs with a value. Each interval is over the cell's runs ({FORMULA}); "
    "runs that diverged are left out, except for the `zoo/run/*` records and for values read at a step before "
    "the run diverged (`TAG@STEP`)."
)
"""How verdicts are decided, as the report states it under its table of claims."""


@dataclass(frozen=True)
class Claim:
    """``left``'s ``metric`` is larger (``>``) or smaller (``<``) than ``right``'s; ``statement`` says it in words."""

    left: str
    relation: Relation
    right: str
    metric: Metric
    statement: str = ""

    @classmethod
    def parse(cls, text: str) -> Claim:
        """``[STATEMENT: ]LEFT > RIGHT on METRIC`` (or ``<``) as a ``Claim``.

        Raises:
            ConfigError: ``text`` is not of that form, or its metric is not (see ``Metric.parse``).
        """
        match = TEXT.match(text.strip())
        if match is None or match["left"] == match["right"]:
            raise ConfigError(f"{text!r} is not a claim: write [STATEMENT: ]LEFT > RIGHT on METRIC (or <), two "
                              "different cells, e.g. 'BN is more accurate: bn > none on val/acc'.")
        relation: Relation = ">" if match["relation"] == ">" else "<"
        return cls(match["left"], relation, match["right"], Metric.parse(match["metric"]),
                   (match["statement"] or "").strip())

    @property
    def expression(self) -> str:
        """``LEFT > RIGHT on METRIC``, the part ``parse`` reads after the statement."""
        return f"{self.left} {self.relation} {self.right} on {self.metric.text}"

    @property
    def text(self) -> str:
        return f"{self.statement}: {self.expression}" if self.statement else self.expression

    @property
    def cells(self) -> tuple[str, str]:
        return (self.left, self.right)


@dataclass(frozen=True)
class Judgement:
    """A claim, the intervals of its two cells (None: no value), its verdict and why."""

    claim: Claim
    left: Interval | None
    right: Interval | None
    verdict: Verdict
    reason: str


def verdict(larger: Interval | None, smaller: Interval | None) -> tuple[Verdict, str]:
    """The verdict on "``larger``'s mean is the larger one": the rule of this module's docstring, and why.

    Every verdict of the report comes from here.
    """
    bounds = [None if i is None or i.low is None or i.high is None else (i.low, i.high) for i in (larger, smaller)]
    if bounds[0] is None or bounds[1] is None:
        runs = min(0 if i is None else i.n for i in (larger, smaller))
        return "unclear", f"a cell has {runs} run{'s' * (runs != 1)} with a value: no interval"
    (larger_low, larger_high), (smaller_low, smaller_high) = bounds[0], bounds[1]
    if larger_low > smaller_high:
        return "agrees", "the intervals do not overlap, in the claimed order"
    if larger_high < smaller_low:
        return "disagrees", "the intervals do not overlap, in the opposite order"
    return "unclear", "the intervals overlap"


def judge(claim: Claim, cells: Sequence[Cell]) -> Judgement:
    """The claim's verdict on ``cells``; a cell it names that is not there, or a metric pattern that does not name
    one tag, makes it unclear and says why."""
    by_label = {cell.label: cell for cell in cells}
    missing = [name for name in claim.cells if name not in by_label]
    if missing:
        return Judgement(claim, None, None, "unclear",
                         f"no runs of {', '.join(missing)} (cells: {', '.join(by_label) or 'none'})")
    left, right = by_label[claim.left], by_label[claim.right]
    metric = claim.metric
    if "*" in metric.tag:
        tags = matching_tags([*left.runs, *right.runs], metric.tag)
        if len(tags) != 1:
            found = f"{len(tags)} tags: {', '.join(tags)}" if tags else "no tag"
            return Judgement(claim, None, None, "unclear", f"{metric.tag} names {found}")
        metric = Metric(tags[0], best=metric.best, step=metric.step)
    intervals = left.interval(metric), right.interval(metric)
    larger, smaller = intervals if claim.relation == ">" else intervals[::-1]
    outcome, reason = verdict(larger, smaller)
    return Judgement(claim, *intervals, outcome, reason)


def judge_all(claims: Sequence[Claim], cells: Sequence[Cell]) -> list[Judgement]:
    return [judge(claim, cells) for claim in claims]


def claims_table(judgements: Sequence[Judgement]) -> str:
    """A row per claim: the statement, the expression, each cell's ``mean ± half-width (n)``, the verdict and why;
    then ``VERDICT_RULE``."""
    rows = [[judgement.claim.statement or "–", f"`{judgement.claim.expression}`",
             _cell_text(judgement.claim.left, judgement.left), _cell_text(judgement.claim.right, judgement.right),
             f"**{judgement.verdict}**: {judgement.reason}"] for judgement in judgements]
    return markdown_table(["claim", "expected", "left", "right", "verdict"], rows) + "\n\n" + VERDICT_RULE


def tally(judgements: Sequence[Judgement]) -> str:
    """``2 agree, 1 unclear, 0 disagree``."""
    counts = {outcome: sum(j.verdict == outcome for j in judgements) for outcome in ("agrees", "unclear", "disagrees")}
    return f"{counts['agrees']} agree, {counts['unclear']} unclear, {counts['disagrees']} disagree"


def _cell_text(name: str, interval: Interval | None) -> str:
    runs = 0 if interval is None else interval.n
    return f"{name}: {format_interval(interval)} (n={runs})"
