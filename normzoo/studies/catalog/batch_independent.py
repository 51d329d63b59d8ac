"""The Wu & He question for the newer layers: FRN+TLU, EvoNorm-B0/S0 and GN+WS against BN across batch sizes.

    normzoo study batch_independent --quick   # MNIST-5k at 32 x 32, ResNet-8, 1 epoch per run
    normzoo study batch_independent           # CIFAR-10, ResNet-18, 60 epochs per run

Filter Response Normalization with its Thresholded Linear Unit (Singh & Krishnan 2020), EvoNorm-B0 (batch
statistics) and EvoNorm-S0 (per-sample group statistics) (Liu et al. 2020), and GroupNorm on standardized
weights (Qiao et al. 2019; BiT's GN+WS), each replacing BN (and, for FRN and EvoNorm, the ReLU after it) in
the same ResNet, at 2, 8 and 32 images per device, the LR scaled linearly with the batch as in ``wu_he``.
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyRun

BATCH_SIZES = (2, 8, 32)
NORMS: dict[str, tuple[str, ...]] = {
    "bn": ("--model.norm", "bn"),
    "frn": ("--model.norm", "frn"),
    "evonorm_b0": ("--model.norm", "evonorm_b0"),
    "evonorm_s0": ("--model.norm", "evonorm_s0"),
    "gn_ws": ("--model.norm", "gn", "--model.weight_norm", "ws"),
}
"""Run name prefix -> the options that make the norm (GN+WS is a norm and a weight option)."""
GROUPED = ("evonorm_s0", "gn_ws")
"""The norms with channel groups: 32 by default, 4 of ResNet-8's 16 channels in quick mode (as wu_he's GN)."""
BASE_LR, BASE_BATCH = 0.1, 128  # the LR scales linearly with the batch (Goyal et al. 2017)


def runs() -> tuple[StudyRun, ...]:
    """Every norm at every per-device batch size, the LR scaled with the batch."""
    return tuple(
        StudyRun(
            f"{name}_b{batch}",
            (*options, "--data.batch_size", str(batch),
             "--optimizer.init_args.lr", f"{BASE_LR * batch / BASE_BATCH:g}"),
            quick_args=("--model.norm_kwargs", "{num_groups: 4}") if name in GROUPED else (),
        )
        for name, options in NORMS.items() for batch in BATCH_SIZES
    )


STUDY = Study(
    name="batch_independent",
    title="FRN+TLU, EvoNorm and GN+WS against BN across batch sizes",
    claim="""
**Setup**: ResNets on ImageNet at small and large per-device batches. Singh & Krishnan 2020 (FRN)
report ResNet-50 with FRN+TLU matching or beating BN at 32 images per GPU and staying there as the batch
shrinks, where BN degrades; Liu et al. 2020 report EvoNorm-S0 (batch-independent) ahead of BN-ReLU and
GN-ReLU at small batches, EvoNorm-B0 (batch-dependent) matching BN at large ones; Qiao et al. 2019
report GN with Weight Standardization matching BN at large batches and beating it at 1-2 images per GPU.
Here: a CIFAR-style ResNet (the same as ``wu_he``), the LR scaled linearly with the per-device batch,
the same number of epochs at every batch size. Quick mode: MNIST-5k at 32 x 32, ResNet-8, one epoch.

**Claims**: BN degrades at 2 images per device; FRN+TLU, EvoNorm-S0 and GN+WS, which use no batch
statistics, beat BN there; EvoNorm-B0, which does, falls behind S0 at 2.
""",
    configs=("configs/cifar10/resnet.yaml",),
    quick_configs=("studies/catalog/wu_he.quick.yaml",),
    runs=runs(),
    report_args=("--versus", "data.batch_size", "--series", "norm", "--error", "--no-diagnostics"),
    claims=(  # accuracy = 1 - error
        "BN degrades as the batch shrinks: bn_b32 > bn_b2 on val/acc",
        "FRN+TLU beats BN at 2 images per device: frn_b2 > bn_b2 on val/acc",
        "EvoNorm-S0 beats BN at 2: evonorm_s0_b2 > bn_b2 on val/acc",
        "GN+WS beats BN at 2: gn_ws_b2 > bn_b2 on val/acc",
        "EvoNorm-B0's batch statistics cost it at 2, where S0 has none: evonorm_s0_b2 > evonorm_b0_b2 on val/acc",
    ),
    root=PACKAGE_ROOT,
)
