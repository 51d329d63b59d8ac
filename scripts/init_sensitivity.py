"""Study: BN vs no BN over init scales: Kaiming init times gains 0.1 ... 10 (final accuracy heat map).

    python scripts/init_sensitivity.py --quick  # MNIST-5k, 5 epochs per run
    python scripts/init_sensitivity.py          # MNIST, 10 epochs per run
"""

from __future__ import annotations

import sys
from pathlib import Path

from normzoo.studies import Study, StudyRun, main

GAINS = ("0.1", "0.3", "1", "3", "10")

STUDY = Study(
    name="init_sensitivity",
    title="Initialization-scale sensitivity with and without BatchNorm",
    claim="""
**Setup**: the 3 x 100 ReLU MLP of `configs/quickstart.yaml` (SGD with momentum 0.9, LR 0.1,
batch 60) on MNIST, weights drawn from Kaiming's N(0, 2/fan_in) times a gain of 0.1 to 10.

**Claim** (the tutorials; Ioffe & Szegedy Sec 3.3): BN makes training robust to the scale of the
initial weights (BN(aWu) = BN(Wu)); without it, small gains stall and large ones blow up.
""",
    configs=("configs/quickstart.yaml", "configs/studies/sensitivity.yaml"),
    quick_configs=("configs/studies/sensitivity.quick.yaml",),
    runs=tuple(StudyRun(f"{norm}_gain{gain}", ("--model.norm", norm, "--model.init", "kaiming",
                                                "--model.init_gain", gain))
               for norm in ("bn", "none") for gain in GAINS),
    report_args=("--heatmap", "norm", "init_gain", "--columns", "norm", "init", "init_gain", "lr",
                 "--no-diagnostics"),
    root=Path(__file__).resolve().parents[1],
)

if __name__ == "__main__":
    sys.exit(main(STUDY))
