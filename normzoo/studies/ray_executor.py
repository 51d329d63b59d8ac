"""Runs of a study or sweep as Ray tasks: a local Ray cluster, or any cluster Ray reaches (SLURM, Kubernetes, cloud).

    normzoo sweep s --config c.yaml --grid model.norm=bn,ln --executor ray                  # a local cluster
    normzoo sweep s --config c.yaml --grid model.norm=bn,ln --executor ray --ray-address auto  # the running one

Each run is one task (``train_run``) that claims the run's lock (``<root>/logs/<run>.lock``: a
run is never trained by two processes at once, whichever executor started them), then runs
``python -m normzoo fit`` for it in a subprocess on the node Ray picked, writing the run's log
next to the lock. The folders, logs, index and report are those of the local executor, so the
run folder must be on a filesystem every node shares (the runs directory of the sweep).

Resources per task: ``cpus_per_run`` CPUs (the run's thread count) and, on a cluster with GPUs,
``1 / runs_per_gpu`` of a GPU (Ray's fractional GPUs: ``runs_per_gpu`` small runs share one GPU).

Preemption: a run whose process ends by a signal (the scheduler's SIGTERM, after which
``normzoo fit`` saves ``last.ckpt``; or SIGKILL) raises ``RunPreempted``; Ray retries the task up to
``retries`` times (also when a node dies), and the retry resumes the run from its ``last.ckpt``
(``normzoo.studies.spec.resume_args``), exactly as an uninterrupted run would have gone on.

Ray is an optional dependency (``pip install normzoo[ray]``), imported only here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from normzoo.errors import ConfigError, RunPreempted
from normzoo.studies.runner import BUSY, claim_run, was_preempted
from normzoo.studies.spec import PlannedRun, is_finished, resume_args


def train_run(fit_args: list[str], folder: str, log: str, lock: str, env: dict[str, str]) -> int:
    """The body of one Ray task: claim the run, train it to its end (resuming if it can), return the exit status.

    Raises:
        RunPreempted: the run's process was ended by a signal (Ray retries the task).
    """
    descriptor = claim_run(Path(lock))
    if descriptor is None:
        return BUSY
    if is_finished(Path(folder)):  # trained by another process after the sweep planned it
        os.close(descriptor)
        return 0
    try:
        args = ["fit", *fit_args, *resume_args(Path(folder))]
        with open(log, "a") as handle:
            handle.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} normzoo {' '.join(args)}\n")
            handle.flush()
            process = subprocess.Popen([sys.executable, "-m", "normzoo", *args], stdout=handle,
                                       stderr=subprocess.STDOUT, env={**os.environ, **env}, pass_fds=(descriptor,))
            status = process.wait()
    finally:
        os.close(descriptor)
    if was_preempted(status):
        raise RunPreempted(f"status {status}")
    return status


def execute_on_ray(todo: list[PlannedRun], log_dir: Path, report: Callable[[PlannedRun, int, float, Path], Any],
                   address: str | None = None, cpus_per_run: int = 1, runs_per_gpu: int = 1,
                   retries: int = 2, jobs: int | None = None) -> None:
    """Run ``todo`` as Ray tasks and call ``report(run, status, start, log)`` as each ends (``start``: its
    submission's ``time.perf_counter()``).

    Args:
        address: a Ray cluster's address (``auto``: the one started on this machine with ``ray start``);
            None starts a local cluster for this call (with ``jobs`` CPUs) and stops it afterwards.
        cpus_per_run: CPUs (and threads) per run.
        runs_per_gpu: runs sharing one GPU, where the cluster has GPUs.
        retries: how many times a preempted run is started again.

    Raises:
        ConfigError: Ray is not installed, or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'normzoo[ray]' (or pip install ray).") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, num_cpus=None if address else (jobs or os.cpu_count()),
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConfigError(f"--executor ray: cannot reach a Ray cluster at {address or 'a new local one'}: "
                              f"{error}") from None
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        device = ("--trainer.accelerator", "gpu", "--trainer.devices", "1") if gpus else (
            "--trainer.accelerator", "cpu", "--trainer.devices", "1")
        threads = str(cpus_per_run)
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        task = ray.remote(train_run).options(num_cpus=cpus_per_run, num_gpus=1 / runs_per_gpu if gpus else 0,
                                             max_retries=retries, retry_exceptions=[RunPreempted])
        log_dir.mkdir(parents=True, exist_ok=True)
        pending = {}
        for run in todo:
            log = log_dir / f"{run.name}.log"
            ref = task.remote([*run.fit_args, *device], str(run.folder), str(log),
                              str(log_dir / f"{run.name}.lock"), env)
            pending[ref] = (run, time.perf_counter(), log)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            run, start, log = pending.pop(done[0])
            try:
                status = ray.get(done[0])
            except Exception as error:  # noqa: BLE001 - a failed task must not stop the sweep
                status = 128 + 15 if isinstance(getattr(error, "cause", None), RunPreempted) else 1
            report(run, status, start, log)
    finally:
        if started:
            ray.shutdown()
