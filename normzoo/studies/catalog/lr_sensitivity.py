"""BN vs no BN over learning rates 0.001 ... 1 (final accuracy as a heat map).

    normzoo study lr_sensitivity --quick  # MNIST-5k, 5 epochs per run
    normzoo study lr_sensitivity          # MNIST, 10 epochs per run
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study
from normzoo.studies.sweep import Axis, grid_runs

LEARNING_RATES = ("0.001", "0.003", "0.01", "0.03", "0.1", "0.3", "1")
AXES = (Axis("model.norm", ("bn", "none")), Axis("optimizer.init_args.lr", LEARNING_RATES))

STUDY = Study(
    name="lr_sensitivity",
    title="Learning-rate sensitivity with and without BatchNorm",
    claim="""
**Setup**: the 3 x 100 ReLU MLP of `configs/quickstart.yaml` (SGD with momentum 0.9, batch 60)
on MNIST, with BN and without, at learning rates from 0.001 to 1.

**Claim** (the tutorials, after Ioffe & Szegedy Sec 3.3): BN tolerates about 10x larger learning
rates (0.1 where the plain network needs 0.01) and trains well over a wider range.
""",
    configs=("configs/quickstart.yaml", "studies/catalog/mlp_sweep.yaml"),
    quick_configs=("studies/catalog/mlp_sweep.quick.yaml",),
    runs=grid_runs(AXES, name=lambda point: f"{point[0]}_lr{point[1]}"),
    sweep_axes=AXES,
    report_args=("--heatmap", "norm", "lr", "--no-diagnostics"),
    claims=(
        "BN trains at LR 0.3, where no BN diverges: none_lr0.3 > bn_lr0.3 on zoo/run/diverged",
        "BN at 0.1 beats no BN at the 0.01 it needs: bn_lr0.1 > none_lr0.01 on val/acc",
        "BN trains better at a small LR: bn_lr0.001 > none_lr0.001 on val/acc",
    ),
    root=PACKAGE_ROOT,
)
