"""``normzoo report RUN_DIR...``: compare runs in PNG figures and a Markdown table.

It reads the TensorBoard event files and ``hparams.yaml`` of any normzoo runs (a run
folder, or any folder above runs) and writes into ``--out``:

- ``report.md``: the verdict of each ``--claim`` (agrees, unclear or disagrees, decided by
  ``normzoo.report.claims.verdict`` from 95% intervals over seeds), a table of the cells (the
  runs that differ only by their seed: mean ± 95% Student-t interval of each final metric)
  when some cell has several runs, a table of every run (status, steps, hyperparameters,
  final metrics), a table of the evaluations of checkpoints (``normzoo validate/test/predict``:
  the fit run, the checkpoint and its step, the metrics), optionally a pivot of a final metric
  over two hyperparameters (mean ± interval over the runs of each square), and the figures
  (of the fit runs);
- ``curves/<tag>.png``: each ``--curves`` tag over steps, a line per cell (the mean over its
  seeds) in a shaded band (the 95% interval of that mean);
- ``diagnostics/<callback>_<stat>.png``: every diagnostics callback's statistic, a panel
  per layer, a banded line per cell;
- ``bands/<prefix>.png``: the percentile bands of ``<prefix>/p<q>`` (Ioffe & Szegedy Fig 1), a
  panel per cell (each percentile's mean over its seeds) on one y scale, for every layer
  ActivationDrift logged (at most 8, spread over the network), or for the ``--bands PREFIX``
  given (an unknown one is an error that lists the valid ones; ``--no-bands``: none); in
  ``--bands`` and ``--curves``, ``*`` stands for one part of a tag (a layer's name);
- with ``--versus X --series S``: ``versus.png``, the final ``--metric`` against
  hyperparameter X, a line per value of S (Wu & He's error vs batch size) with 95% error bars
  over seeds, and its table;
- with ``--heatmap ROW COLUMN``: ``heatmap.png``, the final ``--metric`` as a grid
  (learning-rate sweeps), and its table.

Every PNG carries a ``Legend`` text chunk naming the runs it draws.

A diverged run (``zoo/run/diverged``, or a NaN/inf ``train/loss``) is marked as such in every
table and figure. Example::

    normzoo report runs/studies/wu_he/quick --versus data.batch_size --series norm --error \
        --claim "GN beats BN at 2 images per device: gn_b2 > bn_b2 on val/acc"
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from normzoo.errors import ConfigError
from normzoo.files import writable_folder
from normzoo.report.cells import group_cells, has_seeds
from normzoo.report.claims import Claim, claims_table, judge_all, tally
from normzoo.report.figures import (
    MAX_PANELS,
    all_band_prefixes,
    band_prefixes,
    diagnostic_groups,
    file_name,
    plot_bands,
    plot_curves,
    plot_diagnostic,
    plot_heatmap,
    plot_versus,
    spread,
    unknown_band_patterns,
)
from normzoo.report.metrics import Metric
from normzoo.report.runs import Run, Series, load_runs, matching_tags, split_evaluations
from normzoo.report.tables import SEEDS_NOTE, cells_table, evaluations_table, pivot, pivot_table, runs_table

DEFAULT_CURVES = ("val/acc", "val/loss", "train/loss")
DEFAULT_COLUMNS = ("norm", "model", "lr", "data.batch_size")
REPORT_FILE = "report.md"

__all__ = ["DEFAULT_COLUMNS", "DEFAULT_CURVES", "Claim", "Metric", "ReportOptions", "Run", "Series", "load_runs",
           "main", "write_report"]


@dataclass
class ReportOptions:
    """What ``write_report`` draws and tabulates (the command's options, see ``main``)."""

    title: str = "normzoo report"
    curves: Sequence[str] = DEFAULT_CURVES
    columns: Sequence[str] = DEFAULT_COLUMNS
    metric: str = "val/acc"
    error: bool = False
    diagnostics: bool = True
    bands: Sequence[str] | None = None  # None: every layer with percentiles (at most MAX_PANELS); (): none
    versus: tuple[str, str] | None = None  # (x hyperparameter, series hyperparameter)
    heatmap: tuple[str, str] | None = None  # (row hyperparameter, column hyperparameter)
    notes: str = ""
    claims: Sequence[Claim] = ()


def write_report(runs: Sequence[Run], out_dir: str | Path, options: ReportOptions | None = None) -> Path:
    """Write the figures and ``report.md`` for ``runs`` into ``out_dir``; returns the Markdown file.

    Evaluations of checkpoints among ``runs`` get their own table, beside their fit runs; the
    runs table, pivots and figures are of the fit runs.
    """
    options = options or ReportOptions()
    runs, evaluations = split_evaluations(runs)
    bands = chosen_bands(runs, options.bands)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pivot_metric = Metric(options.metric, error=options.error)
    finals = [Metric(options.metric), Metric(options.metric, best=True)]
    finals += [pivot_metric] if options.error else []
    finals += [Metric(tag) for tag in ("val/loss", "train/loss", "test/acc") if tag != options.metric]
    cells = group_cells(runs)
    sections = [f"# {options.title}", options.notes.strip()]
    if options.claims:
        sections += ["## Claims", claims_table(judge_all(options.claims, cells))]
    if has_seeds(cells):
        sections += ["## Cells", "The runs that differ only by their seed, each metric as mean ± half-width of its 95% "
                                 f"interval over them ({SEEDS_NOTE}).",
                     cells_table(cells, options.columns, finals)]
    sections += ["## Runs", runs_table(runs, options.columns, finals), _legend_of_status()]
    if evaluations:
        sections += ["## Evaluations of checkpoints", evaluations_table(evaluations, runs)]

    for kind, keys, draw in (("versus", options.versus, plot_versus), ("heatmap", options.heatmap, plot_heatmap)):
        if keys is None:
            continue
        row_key, column_key = (keys[1], keys[0]) if kind == "versus" else keys
        table = pivot(runs, row_key, column_key, pivot_metric)
        sections += [f"## {pivot_metric.title} by {row_key} and {column_key}"]
        if not table.rows:
            sections += [f"No run has both `{row_key}` and `{column_key}` in its hparams.yaml."]
            continue
        figure = draw(table, out / f"{kind}.png")
        sections += [pivot_table(table), _image(figure, out)]

    if bands:
        sections += ["## Percentile bands"]
        for prefix in bands:
            figure = plot_bands(runs, prefix, out / "bands" / file_name(prefix))
            sections += [_image(figure, out) if figure else f"No run logged percentiles under `{prefix}`."]

    sections += ["## Curves"]
    if has_seeds(cells):
        sections += ["A line per cell: its mean over seeds; the shaded band is the 95% interval of that mean (where at "
                     "least 2 seeds logged the step)."]
    for tag in [tag for pattern in options.curves for tag in matching_tags(runs, pattern)]:
        figure = plot_curves(runs, tag, out / "curves" / file_name(tag), log_y=tag.endswith("loss"))
        if figure:
            sections += [_image(figure, out)]

    groups = diagnostic_groups(runs) if options.diagnostics else {}
    if groups:
        sections += ["## Diagnostics"]
        for (callback, stat), layers in sorted(groups.items()):
            path = out / "diagnostics" / file_name(f"{callback}_{stat}")
            figure = plot_diagnostic(runs, callback, stat, layers, path)
            sections += [f"### {callback}: {stat}", _image(figure, out)]

    report = out / REPORT_FILE
    report.write_text("\n\n".join(section for section in sections if section) + "\n")
    return report


def chosen_bands(runs: Sequence[Run], patterns: Sequence[str] | None) -> list[str]:
    """The prefixes whose bands are drawn: ``patterns`` resolved, or by default every layer with
    percentiles (at most ``MAX_PANELS``, spread from the first to the last).

    Raises:
        ConfigError: a pattern under which no run logged percentiles; the message lists the valid ones.
    """
    if patterns is None:
        return spread(all_band_prefixes(runs), MAX_PANELS)
    unknown = unknown_band_patterns(runs, patterns)
    if unknown:
        valid = all_band_prefixes(runs)
        listed = ("valid prefixes: " + ", ".join(valid) + f" (or {valid[0].rsplit('/', 1)[0]}/* for every layer)"
                  if valid else "no run logged percentiles (normzoo.callbacks.ActivationDrift logs them)")
        raise ConfigError(f"--bands {' '.join(unknown)}: no run logged percentiles under it; {listed}.")
    return [prefix for pattern in patterns for prefix in band_prefixes(runs, pattern)]


def _image(path: Path, root: Path) -> str:
    relative = path.relative_to(root).as_posix()
    return f"![{relative}]({relative})"


def _legend_of_status() -> str:
    return ("Status: *completed* ran to its end; **diverged** stopped when the training loss became NaN/inf "
            "(its metrics are those of the broken weights); *incomplete* was interrupted or is still running.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="normzoo report",
        description="Compare normzoo runs (their TensorBoard event files) in PNG figures and a Markdown table.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run folders (runs/<name>/version_N) or any folder above them")
    parser.add_argument("--out", default="report", help="output folder (default: report)")
    parser.add_argument("--title", default="normzoo report")
    parser.add_argument("--curves", nargs="*", default=list(DEFAULT_CURVES), metavar="TAG",
                        help="scalar tags drawn over steps; * stands for one part of a tag (default: %(default)s)")
    parser.add_argument("--columns", nargs="*", default=list(DEFAULT_COLUMNS), metavar="KEY",
                        help="hparams.yaml keys shown in the table, dotted for nested ones (default: %(default)s)")
    parser.add_argument("--metric", default="val/acc", help="the final metric of --versus/--heatmap (default: val/acc)")
    parser.add_argument("--error", action="store_true", help="show that metric as an error in %%: 100 * (1 - value)")
    parser.add_argument("--bands", nargs="*", default=None, metavar="PREFIX",
                        help="tag prefixes with p<q> percentiles drawn as bands, e.g. "
                             "zoo/activation_drift/backbone.blocks.2; * stands for one layer: "
                             "zoo/activation_drift/* (default: every layer ActivationDrift logged, "
                             "at most 8; an unknown prefix is an error that lists the valid ones)")
    parser.add_argument("--versus", metavar="X_KEY", help="plot the final metric against this hyperparameter")
    parser.add_argument("--series", metavar="KEY", default="norm", help="one line per value of it (default: norm)")
    parser.add_argument("--heatmap", nargs=2, metavar=("ROW_KEY", "COLUMN_KEY"),
                        help="grid of the final metric over two hyperparameters")
    parser.add_argument("--notes", metavar="FILE", help="Markdown put under the title (e.g. the paper's claim)")
    parser.add_argument("--claim", action="append", default=[], metavar="CLAIM",
                        help="a claim to judge over seeds, '[STATEMENT: ]LEFT > RIGHT on METRIC' (or <), LEFT and "
                             "RIGHT cells (run names without _seed<k>), METRIC [best ]TAG[@STEP], e.g. "
                             "'BN is more accurate: bn > none on val/acc'; repeatable")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the diagnostics callbacks' figures")
    parser.add_argument("--no-bands", action="store_true", help="skip the percentile bands")
    return parser


def read_notes(path: str | None) -> str:
    if path is None:
        return ""
    if not Path(path).is_file():
        raise ConfigError(f"--notes {path}: no such file. Pass a Markdown file, or leave --notes out.")
    return Path(path).read_text()


def main(argv: Sequence[str] | None = None) -> Path:
    """``normzoo report``: parse ``argv``, load the runs, write the report and say where it is."""
    args = build_parser().parse_args(argv)
    runs = load_runs(args.run_dirs)
    options = ReportOptions(
        title=args.title, curves=args.curves, columns=args.columns, metric=args.metric, error=args.error,
        diagnostics=not args.no_diagnostics, bands=() if args.no_bands else args.bands,
        versus=(args.versus, args.series) if args.versus else None,
        heatmap=tuple(args.heatmap) if args.heatmap else None,
        notes=read_notes(args.notes), claims=[Claim.parse(text) for text in args.claim],
    )
    report = write_report(runs, writable_folder(args.out, "--out"), options)
    fits, evaluations = split_evaluations(runs)
    diverged = sum(run.status == "diverged" for run in fits)
    cells = group_cells(fits)
    grouped = f" in {len(cells)} cells" if has_seeds(cells) else ""
    evaluated = f", {len(evaluations)} evaluations of checkpoints" if evaluations else ""
    claims = f"; claims: {tally(judge_all(options.claims, cells))}" if options.claims else ""
    print(f"normzoo report: {len(fits)} runs ({diverged} diverged){grouped}{evaluated}{claims} -> {report}",
          flush=True)
    return report
