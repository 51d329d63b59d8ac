"""Cells of seeds and the verdict on a claim: agrees, unclear or disagrees, on runs built in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from normzoo.errors import ConfigError
from normzoo.report.cells import cell_name, group_cells, seeded_name
from normzoo.report.claims import Claim, judge, tally, verdict
from normzoo.report.intervals import Interval
from normzoo.report.metrics import Metric
from normzoo.report.runs import Run, Series
from normzoo.report.tables import pivot


def seeds_of(name: str, finals: list[float], diverged: tuple[int, ...] = (), **hparams) -> list[Run]:
    """A cell's runs ``<name>_seed<k>``, each with one final ``val/acc``; the seeds in ``diverged`` diverged."""
    runs = []
    for seed, value in enumerate(finals):
        scalars = {"val/acc": Series((100,), (value,)), "zoo/run/diverged": Series((100,), (float(seed in diverged),)),
                   "zoo/run/completed": Series((100,), (1.0,))}
        label = seeded_name(name, seed)
        runs.append(Run(Path("runs") / label / "version_0", label, {"norm": name, **hparams, "seed": seed}, scalars))
    return runs


def cells(**finals: list[float]):
    return group_cells([run for name, values in finals.items() for run in seeds_of(name, values)])


ACC = Metric("val/acc")


@pytest.mark.parametrize(("bn", "none", "expected"), [
    ([0.95, 0.96, 0.97], [0.90, 0.91, 0.92], "agrees"),       # [0.9352, 0.9848] above [0.8852, 0.9348]
    ([0.95, 0.96, 0.97], [0.93, 0.94, 0.95], "unclear"),      # [0.9352, 0.9848] overlaps [0.9152, 0.9648]
    ([0.90, 0.91, 0.92], [0.95, 0.96, 0.97], "disagrees"),
    ([0.95], [0.90, 0.91, 0.92], "unclear"),                  # one seed: no interval
    ([0.95, 0.96, 0.97, 0.96, 0.95], [0.90, 0.91, 0.92], "agrees"),  # cells of 5 and 3 seeds
])
def test_the_verdict_follows_the_intervals_of_the_two_cells(bn, none, expected):
    judgement = judge(Claim.parse("BN is more accurate: bn > none on val/acc"), cells(bn=bn, none=none))
    assert judgement.verdict == expected, judgement.reason
    assert (judgement.left.n, judgement.right.n) == (len(bn), len(none))
    flipped = judge(Claim.parse("none < bn on val/acc"), cells(bn=bn, none=none))  # the same claim, turned round
    assert flipped.verdict == expected


def test_the_rule_at_its_edges():
    assert verdict(Interval(1.0, 0.1, 3), Interval(0.5, 0.1, 3))[0] == "agrees"
    assert verdict(Interval(1.0, 0.25, 3), Interval(0.5, 0.25, 3))[0] == "unclear"  # touching: 0.75 = 0.75
    assert verdict(Interval(1.0, 0.0, 3), Interval(0.0, 0.0, 3))[0] == "agrees"  # every seed alike
    assert verdict(Interval(1.0, 0.0, 3), Interval(1.0, 0.0, 3))[0] == "unclear"
    assert verdict(None, Interval(1.0, 0.1, 3)) == ("unclear", "a cell has 0 runs with a value: no interval")


def test_diverged_seeds_are_left_out_except_from_the_run_records():
    runs = seeds_of("none", [0.10, 0.90, 0.91, 0.92], diverged=(0,), lr=0.1) + seeds_of("bn", [0.95, 0.97], lr=0.1)
    none, bn = group_cells(runs)
    assert none.legend_name == "none (1/4 diverged)" and none.status_text == "3 completed, 1 **diverged**"
    assert none.interval(ACC).n == 3 and none.interval(ACC).mean == pytest.approx(0.91)
    assert none.interval(Metric("zoo/run/diverged")).n == 4
    assert judge(Claim.parse("none > bn on zoo/run/diverged"), [none, bn]).verdict == "unclear"  # 1 of 4 is no rule
    square = pivot(runs, "norm", "lr", ACC)  # a pivot's square of seeds follows the same rule
    assert square.text("none", 0.1) == "0.9100 ± 0.0248 (1/4 diverged)"
    all_diverged = group_cells(seeds_of("none", [0.1, 0.1, 0.1], diverged=(0, 1, 2)) + seeds_of("bn", [0.9, 0.9]))
    assert judge(Claim.parse("none > bn on zoo/run/diverged"), all_diverged).verdict == "agrees"
    assert judge(Claim.parse("bn > none on val/acc"), all_diverged).reason == ("a cell has 0 runs with a value: "
                                                                                "no interval")


def test_a_diverged_run_counts_for_values_read_before_it_diverged():
    """Its measurement at initialization (``TAG@0``) is that of sound weights; its final values are not."""
    runs = seeds_of("none", [0.1, 0.2, 0.3], diverged=(0,))  # seed 0 diverged at step 100
    for run, rank in zip(runs, (1.5, 1.2, 1.1), strict=True):
        run.scalars["zoo/signal/x/stable_rank"] = Series((0,), (rank,))
    (none,) = group_cells(runs)
    assert none.interval(Metric.parse("zoo/signal/x/stable_rank@0")).n == 3  # before step 100: all three
    assert none.interval(Metric.parse("zoo/signal/x/stable_rank")).n == 2  # a final value: the diverged one is out
    assert none.interval(Metric.parse("val/acc@100")).n == 2  # at the divergence step itself: out


def test_cells_group_seeds_of_one_name_and_one_setup():
    runs = seeds_of("bn", [0.9, 0.91]) + seeds_of("bn", [0.5], lr=1.0) + seeds_of("none", [0.8])
    grouped = group_cells(runs)
    assert [(cell.label, len(cell.runs), cell.seeds) for cell in grouped] == [
        ("bn", 2, [0, 1]), ("bn [2]", 1, [0]), ("none", 1, [0])]
    assert grouped[0].hparams() == {"norm": "bn"}  # the seed differs, so it is not shared
    assert [cell_name(label) for label in ("bn_seed12", "bn/version_3", "x/bn_seed0/version_0", "seed")] == [
        "bn", "bn", "x/bn", "seed"]


def test_claims_read_and_write_their_text_and_bad_ones_are_refused():
    claim = Claim.parse("Ioffe & Szegedy: faster: bn > none on best val/acc@1000")
    assert (claim.statement, claim.left, claim.relation, claim.right) == ("Ioffe & Szegedy: faster", "bn", ">", "none")
    assert claim.metric == Metric("val/acc", best=True, step=1000) and Claim.parse(claim.text) == claim
    assert claim.metric.title == "best val/acc at step 1,000"
    for bad in ("bn beats none", "bn > bn on val/acc", "bn > none on val/acc@soon"):
        with pytest.raises(ConfigError, match="is not a"):
            Claim.parse(bad)
    missing = judge(Claim.parse("bn > gn on val/acc"), cells(bn=[0.9, 0.91]))
    assert (missing.verdict, missing.reason) == ("unclear", "no runs of gn (cells: bn)")
    judgements = [judge(Claim.parse(text), cells(bn=[0.95, 0.96, 0.97], none=[0.90, 0.91, 0.92]))
                  for text in ("bn > none on val/acc", "none > bn on val/acc", "bn > none on val/loss")]
    assert [j.verdict for j in judgements] == ["agrees", "disagrees", "unclear"]
    assert tally(judgements) == "1 agree, 1 unclear, 1 disagree"


def test_a_metric_at_a_step_reads_the_last_value_up_to_it():
    run = Run(Path("r"), "r", {}, {"val/acc": Series((250, 1000, 5000), (0.5, 0.8, 0.9))})
    assert [Metric("val/acc", step=step).of(run) for step in (100, 250, 999, 1000, 10_000)] == [
        None, 0.5, 0.5, 0.8, 0.9]
    assert Metric("val/acc", error=True, step=1000).of(run) == pytest.approx(20.0)
