"""Study: Ioffe & Szegedy 2015, Sec 4.1 and Fig 1: BN on a 3 x 100 sigmoid MLP on MNIST.

    python scripts/ioffe_mnist.py --quick     # MNIST-5k, 5,000 steps: ~4 minutes on 2 CPU cores
    python scripts/ioffe_mnist.py             # the paper: MNIST, 50,000 steps of batch 60
"""

from __future__ import annotations

import sys
from pathlib import Path

from normzoo.studies import Study, StudyRun, main

STUDY = Study(
    name="ioffe_mnist",
    title="Ioffe & Szegedy 2015, Fig 1: BN vs no BN on a sigmoid MLP",
    claim="""
**Setup** (Sec 4.1): 28x28 MNIST, 3 fully connected hidden layers of 100 sigmoid units, small Gaussian
init, softmax cross-entropy, 50,000 steps of mini-batches of 60, BN on every hidden layer.

**Claims**: (a) the BN network reaches a higher test accuracy, faster; (b, c) the {15, 50, 85}th
percentiles of a typical sigmoid's input in the last hidden layer drift over training without BN
and stay put with BN.
""",
    configs=("configs/mnist/mlp_bn.yaml", "configs/studies/ioffe_mnist.yaml"),
    quick_configs=("configs/studies/ioffe_mnist.quick.yaml",),
    runs=(StudyRun("bn", ("--model.norm", "bn")), StudyRun("none", ("--model.norm", "none"))),
    report_args=("--bands", "diagnostics/activation_drift/backbone.blocks.2.act"),
    root=Path(__file__).resolve().parents[1],
)

if __name__ == "__main__":
    sys.exit(main(STUDY))
