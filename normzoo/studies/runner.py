"""Carry out a study: plan, estimate, run side by side on every device, then report.

    normzoo study santurkar --quick            # MNIST-5k, minutes on a CPU
    normzoo study santurkar                    # the paper's setup, every GPU in parallel
    normzoo study santurkar --quick --dry-run  # print the commands and the estimate only

- Each run of the study trains once per seed (``--seeds N``, default ``spec.SEEDS`` of the mode),
  every run at seed 0 first.
- Runs are independent ``normzoo fit`` processes, one per GPU at a time (``CUDA_VISIBLE_DEVICES``),
  or without GPUs one per CPU core (``--jobs`` changes either).
- A run that diverges stops itself (``StopOnDivergence``) and the study goes on; a run
  that crashes is reported with its log at the end, and the study goes on too.
- Restarting skips finished runs; an interrupted run resumes from its ``last.ckpt``. A run whose
  process is ended by a signal while the study goes on (a scheduler's preemption, the OOM killer)
  is started again, up to ``--retries`` times, and resumes from its ``last.ckpt``.
- Executors: ``local`` (this machine: the slots above, ``--runs-per-gpu N`` runs sharing each GPU)
  or ``ray`` (``normzoo.studies.ray_executor``: a local Ray cluster, or ``--ray-address``'s).
- ``<study>/<mode>/index.csv`` lists every run with its status and final metrics
  (``normzoo.studies.index``); a sweep's table grouped by its axes (``sweep.md``) is read from it.
- At the end, ``normzoo report`` over the study's runs writes ``<study>/<mode>/report``: the seeds
  of a run as one cell (mean and 95% interval), and the verdict on each of the study's claims.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from normzoo.errors import ConfigError
from normzoo.files import write_atomically
from normzoo.report.runs import load_run
from normzoo.studies.estimate import estimate_runs, format_duration, schedule_seconds
from normzoo.studies.index import axis_columns, index_path, read_index, summarize, write_index
from normzoo.studies.spec import (
    MODES,
    Mode,
    PlannedRun,
    Study,
    is_finished,
    newest_version,
    plan_runs,
    resume_args,
    study_root,
)


@dataclass
class Slot:
    """Where one run at a time executes: a GPU index, or a share of the CPU threads."""

    label: str
    env: dict[str, str]
    args: tuple[str, ...]


@dataclass
class Outcome:
    name: str
    returncode: int
    seconds: float
    log: Path


def make_slots(jobs: int | None, runs_per_gpu: int = 1) -> list[Slot]:
    """``runs_per_gpu`` slots per visible GPU (at most ``jobs`` GPUs); without GPUs, ``jobs`` CPU slots sharing
    the cores.

    On CPU the default is one slot per core, each run on one thread: small models are bound
    by Python's per-step overhead, so runs side by side finish sooner than one run on all cores.
    """
    gpus = torch.cuda.device_count()
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
        ids = ids[: jobs or len(ids)]
        return [Slot(f"GPU {i}" + (f" share {k}" if runs_per_gpu > 1 else ""), {"CUDA_VISIBLE_DEVICES": i},
                     ("--trainer.accelerator", "gpu", "--trainer.devices", "1"))
                for i in ids for k in range(runs_per_gpu)]
    jobs = jobs or os.cpu_count() or 1
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return [Slot(f"CPU slot {i}", env, ("--trainer.accelerator", "cpu", "--trainer.devices", "1"))
            for i in range(jobs)]


def run_study(
    study: Study,
    mode: Mode,
    runs_dir: str | Path = "runs/studies",
    jobs: int | None = None,
    extra_args: Sequence[str] = (),
    estimate: bool = True,
    dry_run: bool = False,
    in_process: bool = False,
    only: Sequence[str] = (),
    seeds: int | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    runs_per_gpu: int = 1,
    retries: int = 2,
    figures: bool = True,
) -> int:
    """Run every unfinished run of ``study`` at each of its ``seeds`` (default: the mode's) and write its report;
    returns the exit status (1 if a run crashed)."""
    planned = plan_runs(study, mode, runs_dir, extra_args, seeds)
    if only:
        names = [run.name for run in study.runs]
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ConfigError(f"--only {' '.join(unknown)}: no such run in {study.name}. Its runs: {', '.join(names)}.")
        planned = [run for run in planned if run.study_run.name in only]
    if executor not in EXECUTORS:
        raise ConfigError(f"Unknown executor {executor!r}. Choose one of: {', '.join(EXECUTORS)}.")
    if runs_per_gpu < 1 or retries < 0:
        raise ConfigError(f"--runs-per-gpu {runs_per_gpu} / --retries {retries}: give at least 1 run per GPU and "
                          "0 or more retries.")
    root = study_root(study, mode, runs_dir)
    slots = [Slot("in process", {}, ("--trainer.accelerator", "cpu"))] if in_process else make_slots(jobs, runs_per_gpu)
    todo = [run for run in planned if not is_finished(run.folder)]
    per_seed = len({run.study_run.name for run in planned})
    say(f"{study.title}: {len(planned)} runs ({per_seed} x {len(planned) // max(1, per_seed)} seeds) in {root} "
        f"({mode} mode), {len(planned) - len(todo)} already finished, {len(todo)} to run on {len(slots)} x "
        f"{slots[0].label.split(' ')[0]}.")
    if estimate and todo:
        announce_estimate(todo, slots)
    if dry_run:
        for run in todo:
            say("  normzoo fit " + " ".join((*run.fit_args, *slots[0].args)))
        return 0
    check_overrides(root, extra_args)
    if executor == "ray" and not in_process:
        outcomes = execute_ray(todo, root / "logs", ray_address, jobs, runs_per_gpu, retries)
    else:
        outcomes = execute(todo, slots, root / "logs", in_process, retries)
    failed = [o for o in outcomes if o.returncode != 0]
    write_outputs(study, root, planned, figures, {o.name: o.returncode for o in failed if o.returncode != BUSY})
    for outcome in failed:
        if outcome.returncode == BUSY:
            say(f"NOT RUN: {outcome.name} is being trained by another process; run the study again once it ends")
        else:
            say(f"FAILED: {outcome.name} exited with status {outcome.returncode}; see {outcome.log}")
    return 1 if failed else 0


def announce_estimate(todo: list[PlannedRun], slots: list[Slot]) -> None:
    device = torch.device("cuda", 0) if slots[0].label.startswith("GPU") else torch.device("cpu")
    threads = slots[0].env.get("OMP_NUM_THREADS")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        estimates = estimate_runs(todo, device)
    finally:
        torch.set_num_threads(previous)
    total = schedule_seconds([e.seconds for e in estimates.values()], len(slots))
    steps = sum(e.steps for e in estimates.values())
    say(f"Estimated time: about {format_duration(total)} ({steps:,} training steps; "
        f"measured {len({e.step_seconds for e in estimates.values()})} step timings on {device}).")


def execute(todo: list[PlannedRun], slots: list[Slot], log_dir: Path, in_process: bool,
            retries: int = 2) -> list[Outcome]:
    """Run ``todo`` on ``slots``, a run per free slot, and report each as it ends.

    Each run is claimed first (``claim_run``): a run another process is training is left to
    it, and a run that another process finished after this one planned is skipped. A run whose
    process ends by a signal the study did not send (``was_preempted``) goes
    back to the front of the queue, at most ``retries`` times, and resumes from its
    ``last.ckpt``. On SIGINT or SIGTERM the study stops its running children with SIGTERM (each
    saves its state as ``last.ckpt``), waits for them, and raises ``StudyInterrupted``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    queue = list(todo)
    attempts: dict[str, int] = {}
    running: dict[int, tuple[PlannedRun, subprocess.Popen, float, Path, int]] = {}
    outcomes: list[Outcome] = []
    total = len(todo)
    with interrupted_by_signals():
        try:
            while queue or running:
                for index, slot in enumerate(slots):
                    if index in running or not queue:
                        continue
                    run = queue.pop(0)
                    log = log_dir / f"{run.name}.log"
                    lock = claim_run(log_dir / f"{run.name}.lock")
                    if lock is None:
                        say(f"[{total - len(queue)}/{total}] {run.name}: another process is training it (its lock "
                            f"{log_dir / run.name}.lock is held); left to it")
                        outcomes.append(Outcome(run.name, BUSY, 0.0, log))
                        continue
                    if is_finished(run.folder):  # another process trained it after this one planned
                        os.close(lock)
                        say(f"[{total - len(queue)}/{total}] {run.name}: finished by another process meanwhile")
                        continue
                    args = ["fit", *run.fit_args, *slot.args, *resume_args(run.folder)]
                    say(f"[{total - len(queue)}/{total}] {run.name}: started on {slot.label}")
                    start = time.perf_counter()
                    if in_process:
                        returncode = run_in_process(args, log)
                        os.close(lock)
                        outcomes.append(finish(run, returncode, start, log))
                        continue
                    with log.open("a" if attempts.get(run.name) else "w") as handle:  # the child inherits the lock
                        process = subprocess.Popen([sys.executable, "-m", "normzoo", *args], stdout=handle,
                                                   stderr=subprocess.STDOUT, env={**os.environ, **slot.env},
                                                   pass_fds=(lock,))
                    running[index] = (run, process, start, log, lock)
                for index, (run, process, start, log, lock) in list(running.items()):
                    if process.poll() is not None:
                        os.close(lock)
                        del running[index]
                        if was_preempted(process.returncode) and attempts.get(run.name, 0) < retries:
                            attempts[run.name] = attempts.get(run.name, 0) + 1
                            say(f"    {run.name}: ended by a signal (status {process.returncode}); started again "
                                f"({attempts[run.name]}/{retries}), from its last checkpoint")
                            queue.insert(0, run)
                            total += 1
                            continue
                        outcomes.append(finish(run, process.returncode, start, log))
                if running:
                    time.sleep(0.5)
        except StudyInterrupted:
            stop_children([process for _, process, *_ in running.values()])
            raise
    return outcomes


def check_overrides(root: Path, extra_args: Sequence[str]) -> None:
    """Record the ``--`` overrides of a study's runs; refuse a rerun with other ones (it would mix two setups).

    Raises:
        ConfigError: ``root`` holds runs made with other overrides.
    """
    record = root / "overrides.json"
    if record.is_file():
        before = json.loads(record.read_text())
        if before != list(extra_args):
            raise ConfigError(
                f"The runs under {root} were made with the overrides {before or 'none'}, not "
                f"{list(extra_args) or 'none'}: a rerun would mix two setups in one report. Rerun with the same "
                "overrides, or give this setup its own --runs-dir."
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    write_atomically(record, json.dumps(list(extra_args)))


BUSY = -1
"""The return code recorded for a run left to another process that holds its lock."""

PREEMPTED_STATUSES = frozenset({-9, -15, 128 + 9, 128 + 15})
"""Exit statuses of a run ended by SIGKILL or SIGTERM (a subprocess's ``-N``, a shell's or ``normzoo fit``'s
``128 + N``): what a scheduler's preemption or the OOM killer leaves."""

EXECUTORS = ("local", "ray")
"""Where a study's runs execute: this machine's slots, or a Ray cluster (``normzoo.studies.ray_executor``)."""


def was_preempted(status: int) -> bool:
    """Whether a run's exit status says a signal ended it (``PREEMPTED_STATUSES``)."""
    return status in PREEMPTED_STATUSES


def execute_ray(todo: list[PlannedRun], log_dir: Path, address: str | None, jobs: int | None, runs_per_gpu: int,
                retries: int) -> list[Outcome]:
    """Run ``todo`` as Ray tasks (``normzoo.studies.ray_executor``), reporting each as it ends."""
    from normzoo.studies.ray_executor import execute_on_ray

    outcomes: list[Outcome] = []
    say(f"Submitting {len(todo)} runs to Ray ({address or 'a local cluster'})")
    execute_on_ray(todo, log_dir, lambda *ended: outcomes.append(finish(*ended)), address=address,
                   runs_per_gpu=runs_per_gpu, retries=retries, jobs=jobs)
    return outcomes


def write_outputs(study: Study, root: Path, planned: Sequence[PlannedRun], figures: bool,
                  failed: dict[str, int] | None = None) -> None:
    """What a study leaves besides its runs: the index, a grid's table by its axes, and the report (a sweep's
    only with ``figures``)."""
    write_index(study, root, planned, failed)
    if study.sweep_axes:
        write_sweep_table(study, root)
    if figures or not study.sweep_axes:
        write_study_report(study, root)


def write_sweep_table(study: Study, root: Path) -> Path:
    """``<root>/sweep.md``: the sweep's runs grouped by its axes, each metric over seeds, read from the index."""
    rows = read_index(index_path(root))
    text = f"# {study.title}\n\n{summarize(rows, axis_columns(study))}\n"
    path = write_atomically(root / "sweep.md", text)
    say(f"normzoo sweep: {len(rows)} runs in {len({row['cell'] for row in rows})} points -> {path}")
    return path


class StudyInterrupted(BaseException):
    """SIGINT or SIGTERM reached the study; its children were stopped.

    A ``BaseException``, like ``KeyboardInterrupt``: the handlers that keep a crashing run from
    stopping the study must let it through.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise ``StudyInterrupted`` (main thread only)."""

    def handler(signum: int, frame: Any) -> None:
        raise StudyInterrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def stop_children(processes: list[subprocess.Popen], grace_seconds: float = 120.0) -> None:
    """SIGTERM each running child (it saves ``last.ckpt`` and exits), wait for all, kill what outlives the grace."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def claim_run(lock_path: Path) -> int | None:
    """An open descriptor holding an exclusive ``flock`` on ``lock_path``, or None if another process holds it.

    The lock goes with the descriptor's open file: a child given it keeps the run claimed
    after the study itself is gone (``kill -9``), until the child ends too.
    """
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def run_in_process(args: list[str], log: Path) -> int:
    """Run ``normzoo <args>`` in this process (serial; tests and debugging); returns its exit status."""
    from normzoo.cli import main, own_arguments_only

    try:
        with own_arguments_only():
            main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except Exception as error:  # a crashing run must not stop the study
        log.write_text(f"{type(error).__name__}: {error}\n")
        return 1
    return 0


def finish(run: PlannedRun, returncode: int, start: float, log: Path) -> Outcome:
    seconds = time.perf_counter() - start
    outcome = Outcome(run.name, returncode, seconds, log)
    say(f"    {run.name}: {describe(run, returncode)} ({format_duration(seconds)})")
    return outcome


def describe(run: PlannedRun, returncode: int) -> str:
    if returncode == BUSY:
        return "left to the process that holds its lock"
    if returncode != 0:
        return f"FAILED with status {returncode}"
    newest = newest_version(run.folder)
    if newest is None:
        return "finished without logs"
    logged = load_run(newest, run.name)
    accuracy = logged.final("val/acc")
    shown = f", val/acc {accuracy:.4f}" if accuracy is not None else ""
    if logged.status == "diverged":
        return f"diverged at step {logged.diverged_at}{shown}"
    return f"{logged.status} at step {logged.last_step}{shown}"


def write_study_report(study: Study, root: Path) -> Path | None:
    """``normzoo report`` over the study's runs (every seed under ``root``), with the paper's claim on top and
    the verdict on each of the study's claims."""
    from normzoo.report import main as report_main

    if not any(root.glob("*/version_*")):
        say("No finished runs to report.")
        return None
    notes = root / "claim.md"
    notes.write_text(study.claim.strip() + "\n")
    runs = sorted(str(folder) for folder in root.iterdir() if folder.is_dir() and any(folder.glob("version_*")))
    claims = [arg for claim in study.claims for arg in ("--claim", claim)]
    return report_main([*runs, "--out", str(root / "report"), "--title", study.title, "--notes", str(notes),
                        *study.report_args, *claims])


def say(message: str) -> None:
    print(message, flush=True)


def build_parser(study: Study, prog: str | None = None) -> argparse.ArgumentParser:
    """The options of running ``study`` (``normzoo study <name> --help``)."""
    parser = argparse.ArgumentParser(prog=prog,
                                     description=f"{study.title}. Runs `normzoo fit` per run, then `normzoo report`.",
                                     epilog="Arguments after -- go to every `normzoo fit`.")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_const", const="quick", dest="mode",
                       help="MNIST-5k, short and slim: minutes on a CPU")
    modes.add_argument("--tiny", action="store_const", const="tiny", dest="mode",
                       help="quick with 4 steps per run: checks the machinery")
    parser.set_defaults(mode="full")
    add_run_options(parser, "runs/studies", ", ".join(f"{study.seeds_for(mode)} in {mode} mode" for mode in MODES))
    return parser


def add_run_options(parser: argparse.ArgumentParser, runs_dir: str, default_seeds: str) -> None:
    """The options a study and a sweep share: where and how their runs execute."""
    parser.add_argument("--runs-dir", default=runs_dir, help=f"where runs go (default: {runs_dir})")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs side by side: default one per GPU, or one per CPU core (one thread each)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: this machine (default); ray: a Ray cluster (pip install 'normzoo[ray]')")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="the Ray cluster to use (auto: the one `ray start` began here); default: start a local "
                             "one for this call")
    parser.add_argument("--runs-per-gpu", type=int, default=1, metavar="N",
                        help="runs that share each GPU (small models leave a GPU idle; default 1)")
    parser.add_argument("--retries", type=int, default=2, metavar="N",
                        help="times a run ended by a signal (preemption) is started again from its last checkpoint "
                             "(default 2)")
    parser.add_argument("--only", nargs="*", default=[], metavar="RUN", help="run only these runs (at every seed)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help=f"train each run with seeds 0 ... N-1 (default: {default_seeds})")
    parser.add_argument("--no-estimate", action="store_true", help="skip measuring how long the runs take")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, the estimate and the commands")
    parser.add_argument("--in-process", action="store_true", help="run serially inside this process (debugging)")
    parser.add_argument("--report-only", action="store_true",
                        help="only (re)write the index and the report of the runs on disk")


def split_fit_arguments(argv: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """``argv`` (default ``sys.argv[1:]``) as (the command's own arguments, the ``normzoo fit`` ones after ``--``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        return argv[: argv.index("--")], argv[argv.index("--") + 1:]
    return argv, []


def carry_out(study: Study, args: argparse.Namespace, extra: Sequence[str], figures: bool = True) -> int:
    """Run ``study`` with the parsed ``add_run_options`` (or only rewrite its index and report); the exit status."""
    name = study.name
    try:
        if args.report_only:
            write_outputs(study, study_root(study, args.mode, args.runs_dir),
                          plan_runs(study, args.mode, args.runs_dir, extra, args.seeds), figures)
            return 0
        return run_study(study, args.mode, args.runs_dir, args.jobs, extra, estimate=not args.no_estimate,
                         dry_run=args.dry_run, in_process=args.in_process, only=args.only, seeds=args.seeds,
                         executor=args.executor, ray_address=args.ray_address, runs_per_gpu=args.runs_per_gpu,
                         retries=args.retries, figures=figures)
    except ConfigError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, StudyInterrupted) as stop:
        signum = stop.signum if isinstance(stop, StudyInterrupted) else signal.SIGINT
        print(f"{name}: interrupted by {signal.Signals(signum).name}; its running runs were stopped and saved. "
              "Run the same command again to go on: finished runs are skipped and unfinished ones resume from "
              "their last checkpoint.", file=sys.stderr)
        return 128 + signum


def main(study: Study, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run ``study`` as ``normzoo study <name>`` does: parse ``argv`` (``sys.argv[1:]``), run, return the exit status.

    A study of one's own (a ``Study`` in a script) runs the same way: ``sys.exit(main(STUDY))``.
    """
    own, extra = split_fit_arguments(argv)
    return carry_out(study, build_parser(study, prog).parse_args(own), extra)
