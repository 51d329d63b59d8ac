"""Study: Santurkar et al. 2018, "How Does Batch Normalization Help Optimization?" (Figs 1-4, Sec 3.3).

    python scripts/santurkar.py --quick       # MNIST-5k at 32 x 32, a slim VGG-11, 600 steps
    python scripts/santurkar.py               # the paper: VGG-11 on CIFAR-10, 15,000 steps
"""

from __future__ import annotations

import sys
from pathlib import Path

from normzoo.studies import Study, StudyRun, main


def runs() -> tuple[StudyRun, ...]:
    grid = [StudyRun(f"{norm}_lr{lr}", ("--model.norm", norm, "--optimizer.init_args.lr", lr))
            for norm in ("none", "bn", "noisy_bn") for lr in ("0.1", "0.5")]
    lp = [StudyRun(f"{norm}_lr0.1", ("--model.norm", norm, "--optimizer.init_args.lr", "0.1"))
          for norm in ("l1", "l2", "linf")]
    return tuple(grid + lp)


STUDY = Study(
    name="santurkar",
    title="Santurkar et al. 2018: what BatchNorm does to optimization",
    claim="""
**Setup**: VGG on CIFAR-10, plain SGD, batch 128, constant LR 0.1 (and 0.5 in Fig 1), Glorot init,
no data augmentation; (secondary) 15k steps, test accuracy 83% with BN vs 80% without.

**Claims**:
- Figs 1-2: BN trains faster and tolerates LR 0.5; *noisy* BN (BN followed by noise with a
  non-zero mean and non-unit variance that changes every step) trains about as well as BN and
  better than no BN, although its layer inputs are less stable than without BN.
- Fig 3: BN does not reduce internal covariate shift measured as the change of a layer's gradient
  (||G - G'||, cos(G, G')) after the earlier layers update; it can increase it.
- Fig 4: with BN, the loss varies less along the gradient (loss variation), the gradient changes
  less (gradient predictiveness, ~2 orders early on) and the effective beta-smoothness is smaller.
- Sec 3.3: l1, l2 and l-infinity normalization do as well as BN.
""",
    configs=("configs/cifar10/vgg_bn.yaml", "configs/studies/santurkar.yaml"),
    quick_configs=("configs/studies/santurkar.quick.yaml",),
    runs=runs(),
    report_args=("--heatmap", "norm", "lr", "--curves", "val/acc", "train/loss", "val/loss",
                 "--bands", "diagnostics/activation_drift/backbone.features.19"),  # the last conv layer
    root=Path(__file__).resolve().parents[1],
)

if __name__ == "__main__":
    sys.exit(main(STUDY))
