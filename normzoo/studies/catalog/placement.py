"""BN before vs after the activation (ReLU and sigmoid), with a no-norm baseline.

    normzoo study placement --quick       # MNIST-5k, 5 epochs per run
    normzoo study placement               # MNIST, 10 epochs per run
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyRun


def runs() -> tuple[StudyRun, ...]:
    """BN before and after each activation, then no norm, for ReLU and sigmoid."""
    found = []
    for activation in ("relu", "sigmoid"):
        for position in ("before", "after"):
            found.append(StudyRun(f"bn_{position}_{activation}", ("--model.norm", "bn", "--model.norm_position",
                                                                   position, "--model.activation", activation)))
        found.append(StudyRun(f"none_{activation}", ("--model.norm", "none", "--model.activation", activation)))
    return tuple(found)


STUDY = Study(
    name="placement",
    title="Where to put BatchNorm: before or after the activation",
    claim="""
**Setup**: the 3 x 100 MLP of `configs/quickstart.yaml` (SGD with momentum 0.9, LR 0.1, batch 60)
on MNIST, BN placed before or after a ReLU or sigmoid, and no norm as the baseline.

**Claim**: Ioffe & Szegedy place BN "immediately before the nonlinearity" (and drop the preceding
bias), arguing the pre-activation is more Gaussian; practice reports after-activation placement
works as well or better for ReLU. Both placements should beat no norm.
""",
    configs=("configs/quickstart.yaml", "studies/catalog/mlp_sweep.yaml"),
    quick_configs=("studies/catalog/mlp_sweep.quick.yaml",),
    runs=runs(),
    report_args=("--columns", "norm", "norm_position", "activation", "lr", "--no-diagnostics"),
    claims=(
        "Ioffe & Szegedy: BN before the nonlinearity: bn_before_sigmoid > bn_after_sigmoid on val/acc",
        "BN before ReLU beats no norm: bn_before_relu > none_relu on val/acc",
        "BN after ReLU beats no norm: bn_after_relu > none_relu on val/acc",
        "BN before sigmoid beats no norm: bn_before_sigmoid > none_sigmoid on val/acc",
        "BN after sigmoid beats no norm: bn_after_sigmoid > none_sigmoid on val/acc",
    ),
    root=PACKAGE_ROOT,
)
