"""Study: the BatchNorm tutorial's task: saturated tanh units with and without BN.

    python scripts/tutorial.py --quick        # 5 epochs (the task is synthetic: no download)
    python scripts/tutorial.py                # 20 epochs
"""

from __future__ import annotations

import sys
from pathlib import Path

from normzoo.studies import Study, StudyRun, main

STUDY = Study(
    name="tutorial",
    title="The BatchNorm tutorial: saturation of tanh units with and without BN",
    claim="""
**Setup**: 10,000 samples of 500 Gaussian inputs, 2 classes, one hidden layer of 100 tanh units,
batch 32, with and without BN.

**Claims**: without BN many tanh units sit on the flat tails (|tanh| > 0.97) and pass almost no
gradient; BN keeps their inputs standardized, so few units saturate and the network trains better.
""",
    configs=("configs/studies/tutorial.yaml",),
    quick_configs=("configs/studies/tutorial.quick.yaml",),
    runs=(StudyRun("bn", ("--model.norm", "bn")), StudyRun("none", ("--model.norm", "none"))),
    report_args=("--curves", "val/acc", "train/loss",
                 "diagnostics/dead_units/backbone.blocks.0.act/saturated_fraction"),
    root=Path(__file__).resolve().parents[1],
)

if __name__ == "__main__":
    sys.exit(main(STUDY))
