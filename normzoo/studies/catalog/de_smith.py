"""De & Smith 2020, "Batch Normalization Biases Residual Blocks Towards the Identity Function in Deep
Networks" (SkipInit), with the signal propagation plots of Brock, De & Smith 2021.

    normzoo study de_smith --quick        # MNIST-5k at 32 x 32, ResNet-56 at 1/4 width, one epoch per run
    normzoo study de_smith                # CIFAR-10, ResNet-56, 60 epochs per run

A deep ResNet with BN, without a norm, and without a norm but with SkipInit (``--model.residual_scale
0.0``), trained at the ResNet paper's LR 0.1. ``SignalPropagation`` measures each untrained network
on its first training batch: per layer the average over channels of the squared channel mean and of
the channel variance, per residual block the variance of its branch and of its skip.

The plain network diverges within a few steps (in trials of one seed at LR 0.1, 0.01 and 0.001), and
the report leaves a diverged run's metrics out, but for values read at a step before it diverged:
so the claims read the signal at step 0 (``TAG@0``), the weights at initialization. Every block at
every depth is tabulated by ``python scripts/signal_table.py runs/studies/de_smith/quick``.
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyRun

LAST_BLOCK = "backbone.stages.2.8"
"""ResNet-56's last residual block: the 9th of the third stage."""
SIGNAL = "zoo/signal_propagation"


def runs() -> tuple[StudyRun, ...]:
    """BN, no norm, and no norm with SkipInit."""
    return (
        StudyRun("bn", ("--model.norm", "bn")),
        StudyRun("none", ("--model.norm", "none")),
        StudyRun("skipinit", ("--model.norm", "none", "--model.residual_scale", "0.0")),
    )


def signal(statistic: str, block: str = LAST_BLOCK) -> str:
    """A residual block's statistic (``branch_var``, ``skip_var``, ``branch_skip_ratio``) at initialization:
    read at step 0, so a run that diverged later counts."""
    return f"{SIGNAL}/{block}/{statistic}@0"


def claims() -> tuple[str, ...]:
    """The signal at initialization (the last block, where depth has acted most), then training."""
    return (
        "without a norm the skip's variance grows about 2x per block (He init), with BN about linearly (in a stage): "
        f"none > bn on {signal('skip_var')}",
        "BN downscales the residual branch against its skip (variance ratio ~ 1/depth); without a norm the "
        f"branch is as large as the skip: none > bn on {signal('branch_skip_ratio')}",
        f"SkipInit makes every block the identity at init: bn > skipinit on {signal('branch_skip_ratio')}",
        f"SkipInit keeps the unnormalized signal's scale: none > skipinit on {signal('skip_var')}",
        "the deep unnormalized ResNet diverges, SkipInit trains it: none > skipinit on zoo/run/diverged",
    )


STUDY = Study(
    name="de_smith",
    title="De & Smith 2020: BN, no norm and SkipInit in a deep ResNet, signal propagation at init",
    claim="""
**Setup**: deep residual networks (Wide-ResNets on CIFAR-10, ResNet-50-V2 on ImageNet) with BN,
without normalization, and with SkipInit: a learned scalar multiplying each residual branch,
initialized at 0 (or below 1/sqrt(d) for d blocks), without normalization; signal propagation
plots (Brock, De & Smith 2021): on one batch at initialization, the average over channels of
the squared channel mean and of the channel variance at each depth, and the variance of each
residual branch against its skip.
Here: the CIFAR ResNet-56 of He et al. 2016 (27 post-activation blocks in 3 stages, He init, SGD
with momentum 0.9 at LR 0.1); its downsampling shortcuts are 1x1 conv + norm, so with BN the skip's
variance starts again at the first block of each stage. Quick mode: MNIST-5k at 32 x 32, 1/4 width,
one epoch.

**Claims**: at initialization BN downscales each residual branch relative to its skip by a
factor of order sqrt(depth) (the skip's variance grows with depth, the normalized branch's stays
O(1)), so deep BN ResNets start close to the identity; without normalization (He init) the
variance roughly doubles per block and deep ResNets cannot be trained; SkipInit makes every
block start as the identity and trains the deep unnormalized ResNet.
""",
    configs=("configs/cifar10/resnet.yaml", "studies/catalog/de_smith.yaml"),
    quick_configs=("studies/catalog/de_smith.quick.yaml",),
    runs=runs(),
    report_args=("--curves", "train/loss", "val/acc", "val/loss", "--columns", "norm", "residual_scale", "model",
                 "lr", "data.batch_size", "--no-diagnostics", "--no-bands"),
    claims=claims(),
    root=PACKAGE_ROOT,
)
