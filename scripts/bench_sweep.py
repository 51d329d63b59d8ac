"""Sweep throughput: the study runner, ``normzoo sweep`` on the local executor and on Ray, side by side.

Each measurement runs the ``lr_sensitivity`` quick grid (BN and no norm at 7 learning rates, 14
runs of the quickstart MLP on MNIST-5k, 5 epochs each, one seed) end to end in a fresh folder,
as a user would, and prints the wall time and the time per run:

- ``study``: ``normzoo study lr_sensitivity --quick --seeds 1`` (the catalog's study);
- ``sweep, local``: ``normzoo sweep`` over the same configs and grid;
- ``sweep, ray``: the same on a local Ray cluster that the sweep starts and stops;
- on a machine with a GPU, ``sweep, local, --runs-per-gpu 1`` against ``8``.

Then the Ray executor's overhead per run (submission, a task's start, collection), from
``--overhead-runs`` runs of 2 steps each on both executors: (Ray's wall - local's wall) / runs.

    python scripts/bench_sweep.py                     # every measurement (minutes on 2 CPU cores)
    python scripts/bench_sweep.py --skip study        # leave some out
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "normzoo" / "studies" / "catalog"
CONFIGS = [ROOT / "configs" / "quickstart.yaml", CATALOG / "mlp_sweep.yaml", CATALOG / "mlp_sweep.quick.yaml"]
GRID = ["--grid", "model.norm=bn,none", "--grid", "optimizer.init_args.lr=0.001,0.003,0.01,0.03,0.1,0.3,1"]
RUNS = 14
TINY = ["--trainer.max_steps", "2", "--trainer.max_epochs", "null", "--trainer.limit_val_batches", "2",
        "--trainer.val_check_interval", "2", "--trainer.check_val_every_n_epoch", "null",
        "--trainer.num_sanity_val_steps", "0"]


def timed(args: Sequence[str]) -> float:
    """Seconds ``normzoo <args>`` takes, end to end; raises if it fails."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "normzoo", *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        raise RuntimeError(f"normzoo {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def sweep_args(name: str, folder: Path, jobs: int | None) -> list[str]:
    configs = [arg for path in CONFIGS for arg in ("--config", str(path))]
    return ["sweep", name, *configs, *GRID, "--runs-dir", str(folder), "--no-estimate",
            *(["--jobs", str(jobs)] if jobs else [])]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="runs side by side (default: one per core or GPU)")
    parser.add_argument("--overhead-runs", type=int, default=8, help="2-step runs that measure Ray's overhead")
    parser.add_argument("--skip", nargs="*", default=[], choices=["study", "local", "ray", "gpu", "overhead"])
    args = parser.parse_args(argv)
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    rows: list[tuple[str, int, float]] = []
    folder = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    try:
        if "study" not in args.skip:
            rows.append(("study (normzoo study lr_sensitivity --quick --seeds 1)", RUNS, timed(
                ["study", "lr_sensitivity", "--quick", "--seeds", "1", "--no-estimate", "--runs-dir",
                 str(folder / "study"), *jobs])))
        if "local" not in args.skip:
            rows.append(("sweep, local executor", RUNS, timed(sweep_args("local", folder, args.jobs))))
        if "ray" not in args.skip:
            rows.append(("sweep, ray executor (local cluster)", RUNS, timed(
                [*sweep_args("ray", folder, args.jobs), "--executor", "ray"])))
        if "gpu" not in args.skip and torch.cuda.is_available():
            for share in (1, 8):
                rows.append((f"sweep, local, --runs-per-gpu {share}", RUNS, timed(
                    [*sweep_args(f"gpu{share}", folder, None), "--runs-per-gpu", str(share)])))
        overhead = None
        if "overhead" not in args.skip:
            n = args.overhead_runs
            grid = ["--grid", "optimizer.init_args.lr=" + ",".join(f"0.{k + 1}" for k in range(n))]
            base = ["--config", str(CONFIGS[0]), *grid, "--no-estimate", *jobs]
            local = timed(["sweep", "tiny_local", *base, "--runs-dir", str(folder), "--", *TINY])
            ray = timed(["sweep", "tiny_ray", *base, "--runs-dir", str(folder), "--executor", "ray", "--", *TINY])
            rows += [(f"{n} runs of 2 steps, local executor", n, local), (f"{n} runs of 2 steps, ray executor", n, ray)]
            overhead = (ray - local) / n
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
    print(f"Sweep throughput on {device}, torch {torch.__version__}\n")
    print("| what | runs | wall (s) | per run (s) |\n|---|---|---|---|")
    for name, runs, seconds in rows:
        print(f"| {name} | {runs} | {seconds:.1f} | {seconds / runs:.2f} |")
    if overhead is not None:
        print(f"\nRay executor overhead per run (its cluster's start and stop included): {overhead:.2f} s")


if __name__ == "__main__":
    main()
