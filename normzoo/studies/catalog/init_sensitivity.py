"""BN vs no BN over init scales: Kaiming init times gains 0.1 ... 10 (final accuracy heat map).

    normzoo study init_sensitivity --quick  # MNIST-5k, 5 epochs per run
    normzoo study init_sensitivity          # MNIST, 10 epochs per run
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study
from normzoo.studies.sweep import Axis, grid_runs

GAINS = ("0.1", "0.3", "1", "3", "10")
AXES = (Axis("model.norm", ("bn", "none")), Axis("model.init_gain", GAINS))

STUDY = Study(
    name="init_sensitivity",
    title="Initialization-scale sensitivity with and without BatchNorm",
    claim="""
**Setup**: the 3 x 100 ReLU MLP of `configs/quickstart.yaml` (SGD with momentum 0.9, LR 0.1,
batch 60) on MNIST, weights drawn from Kaiming's N(0, 2/fan_in) times a gain of 0.1 to 10.

**Claim** (the tutorials; Ioffe & Szegedy Sec 3.3): BN makes training robust to the scale of the
initial weights (BN(aWu) = BN(Wu)); without it, small gains stall and large ones blow up.
""",
    configs=("configs/quickstart.yaml", "studies/catalog/mlp_sweep.yaml"),
    quick_configs=("studies/catalog/mlp_sweep.quick.yaml",),
    runs=grid_runs(AXES, name=lambda point: f"{point[0]}_gain{point[1]}", fixed=("--model.init", "kaiming")),
    sweep_axes=AXES,
    report_args=("--heatmap", "norm", "init_gain", "--columns", "norm", "init", "init_gain", "lr",
                 "--no-diagnostics"),
    claims=(
        "without BN a large init blows up: none_gain10 > bn_gain10 on zoo/run/diverged",
        "without BN a small init stalls: bn_gain0.1 > none_gain0.1 on val/acc",
    ),
    root=PACKAGE_ROOT,
)
