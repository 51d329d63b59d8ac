"""Wu & He 2018 (Group Normalization): error vs images per device for BN, GN, LN and IN.

    normzoo study wu_he --quick           # MNIST-5k at 32 x 32, ResNet-8, 1 epoch per run
    normzoo study wu_he                   # CIFAR-10, ResNet-18, 60 epochs per run
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyRun

BATCH_SIZES = (2, 4, 8, 16, 32)
NORMS = ("bn", "gn", "ln", "in")
BASE_LR, BASE_BATCH = 0.1, 128  # the LR scales linearly with the batch (Goyal et al. 2017)


def runs() -> tuple[StudyRun, ...]:
    """Every norm at every per-device batch size, the LR scaled with the batch."""
    return tuple(
        StudyRun(
            f"{norm}_b{batch}",
            ("--model.norm", norm, "--data.batch_size", str(batch),
             "--optimizer.init_args.lr", f"{BASE_LR * batch / BASE_BATCH:g}"),
            # ResNet-8's 16 channels would make the default 32 groups one channel each (= IN)
            quick_args=("--model.norm_kwargs", "{num_groups: 4}") if norm == "gn" else (),
        )
        for norm in NORMS for batch in BATCH_SIZES
    )


STUDY = Study(
    name="wu_he",
    title="Wu & He 2018: normalization error vs batch size per device",
    claim="""
**Setup**: ResNet-50 on ImageNet, BN statistics per GPU (not synced), 32 groups for GN.
Here: a CIFAR-style ResNet, the LR scaled linearly with the per-device batch, the same number of
epochs at every batch size.

**The paper's top-1 error (%)** (Table / Fig 1):

| images/GPU | 32 | 16 | 8 | 4 | 2 |
|---|---|---|---|---|---|
| BN | 23.6 | 23.7 | 24.8 | 27.3 | 34.7 |
| GN | 24.1 | 24.2 | 24.0 | 24.2 | 24.1 |

At 32 images/GPU: LN 25.3, IN 28.4.

**Claims**: BN's error grows quickly as the batch shrinks below 16; GN's stays flat, and GN beats
LN and IN at every batch size.
""",
    configs=("configs/cifar10/resnet.yaml", "studies/catalog/wu_he.yaml"),
    quick_configs=("studies/catalog/wu_he.quick.yaml",),
    runs=runs(),
    report_args=("--versus", "data.batch_size", "--series", "norm", "--error", "--no-diagnostics"),
    claims=(  # accuracy = 1 - error: the more accurate has the smaller error
        "BN's error grows as the batch shrinks (23.7% at 16, 34.7% at 2): bn_b16 > bn_b2 on val/acc",
        "GN beats BN at 2 images per device (24.1% vs 34.7%): gn_b2 > bn_b2 on val/acc",
        "BN beats GN at 32 (23.6% vs 24.1%): bn_b32 > gn_b32 on val/acc",
        "GN beats LN at 32 (24.1% vs 25.3%): gn_b32 > ln_b32 on val/acc",
        "GN beats IN at 32 (24.1% vs 28.4%): gn_b32 > in_b32 on val/acc",
    ),
    root=PACKAGE_ROOT,
)
