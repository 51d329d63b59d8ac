"""Check that 2 DDP ranks with batch B train like 1 process with batch 2B.

    python scripts/ddp_equivalence.py --norm gn                                   # CPU, gloo
    python scripts/ddp_equivalence.py --norm bn --sync --accelerator gpu          # synced BN on one GPU

Both runs train the quickstart config for ``--epochs`` epochs of ``--limit-train-batches``
steps through the ``normzoo`` CLI. The two ranks are launched as two single-device "nodes"
on this machine (``NODE_RANK`` 0 and 1, ``LOCAL_RANK`` 0), which is how two ranks share one
GPU: both use ``cuda:0``, so they talk over gloo (NCCL refuses two ranks on one device).
Batch-independent norms (ln, gn, in, none) must match without ``--sync``; bn needs ``--sync``
(``--trainer.sync_batchnorm true``: statistics over all 2B samples). Prints the largest
differences of the validation curves and final weights and exits with 1 if they exceed the
tolerance.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from normzoo.report.runs import load_run

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"gn": ["--model.norm_kwargs", "{num_groups: 10}"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(args: argparse.Namespace, name: str, ranks: int) -> list[str]:
    backend = args.backend or ("gloo" if args.accelerator == "cpu" or ranks > torch.cuda.device_count() else "nccl")
    strategy = (["--trainer.strategy", "auto"] if ranks == 1 else
                ["--trainer.strategy", "lightning.pytorch.strategies.DDPStrategy",
                 "--trainer.strategy.init_args.process_group_backend", backend, "--trainer.num_nodes", str(ranks)])
    return [sys.executable, "-m", "normzoo", "fit", "--config", "configs/quickstart.yaml",
            "--runs_dir", str(args.runs_dir), "--run_name", name, "--model.norm", args.norm,
            *GROUPS.get(args.norm, []), "--trainer.accelerator", args.accelerator, "--trainer.devices", "1",
            *strategy, "--trainer.sync_batchnorm", str(args.sync and ranks > 1).lower(),
            "--trainer.max_epochs", str(args.epochs), "--trainer.limit_train_batches", str(args.limit_train_batches),
            "--trainer.precision", "32-true", "--trainer.enable_progress_bar", "false",
            "--data.batch_size", str(args.batch_size // ranks), "--data.eval_batch_size", str(100 // ranks)]


def run(args: argparse.Namespace, name: str, ranks: int) -> Path:
    """Train ``name`` with ``ranks`` processes; the run folder."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if ranks == 1:
        processes = [subprocess.Popen(command(args, name, 1), cwd=ROOT, env=env)]
    else:
        node = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "LOCAL_RANK": "0",
                "WORLD_SIZE": str(ranks)}
        processes = [subprocess.Popen(command(args, name, ranks), cwd=ROOT, env={**env, **node, "NODE_RANK": str(r)})
                     for r in range(ranks)]
    codes = [process.wait(timeout=args.timeout) for process in processes]
    if any(codes):
        raise SystemExit(f"{name}: a process exited with {codes}")
    return args.runs_dir / name / "version_0"


def compare(single: Path, ddp: Path, tolerance: float) -> bool:
    """Print the largest differences; True when all are within ``tolerance`` (relative, with an absolute floor)."""
    worst = 0.0
    for tag in ("val/loss", "val/acc"):
        a, b = load_run(single).scalars[tag].values, load_run(ddp).scalars[tag].values
        if len(a) != len(b):
            print(f"{tag}: {len(a)} values vs {len(b)}")
            return False
        gap = max(abs(x - y) / max(abs(x), 1e-3) for x, y in zip(a, b, strict=True))
        print(f"{tag}: single {' '.join(f'{v:.5f}' for v in a)}  ddp {' '.join(f'{v:.5f}' for v in b)}  "
              f"largest rel. diff {gap:.2e}")
        worst = max(worst, gap)
    weights = [torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"] for run in (single, ddp)]
    gaps = {key: float((weights[1][key] - value).abs().max() / value.abs().max().clamp_min(1e-3))
            for key, value in weights[0].items() if value.is_floating_point()}
    key = max(gaps, key=gaps.get)
    print(f"final weights: largest rel. diff {gaps[key]:.2e} ({key})")
    return max(worst, gaps[key]) <= tolerance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--norm", default="gn")
    parser.add_argument("--sync", action="store_true", help="--trainer.sync_batchnorm true for the 2 ranks")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--backend", choices=["gloo", "nccl"], default=None,
                        help="default: gloo on CPU or when the ranks share a GPU, else nccl")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit-train-batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32, help="the single process's batch (2B)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/ddp_equivalence"))
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args()
    args.runs_dir = args.runs_dir.resolve()
    label = f"{args.norm}{'_sync' if args.sync else ''}_{args.accelerator}"
    single = run(args, f"{label}_single", 1)
    ddp = run(args, f"{label}_2ranks", 2)
    same = compare(single, ddp, args.tolerance)
    print(f"{'PASS' if same else 'FAIL'}: 2 ranks x {args.batch_size // 2} vs 1 x {args.batch_size}, norm "
          f"{args.norm}{' synced' if args.sync else ''}, on {args.accelerator}")
    raise SystemExit(0 if same else 1)


if __name__ == "__main__":
    main()
