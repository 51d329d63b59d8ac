"""Santurkar et al. 2018, "How Does Batch Normalization Help Optimization?" (Figs 1-4, Sec 3.3).

    normzoo study santurkar --quick       # MNIST-5k at 32 x 32, a slim VGG-11, 600 steps
    normzoo study santurkar               # the paper: VGG-11 on CIFAR-10, 15,000 steps
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyDiagnostic, StudyRun


def runs() -> tuple[StudyRun, ...]:
    """Standard, BN and noisy BN at LR 0.1 and 0.5 (Fig 1); l1, l2 and linf normalization at 0.1 (Sec 3.3)."""
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
    configs=("configs/cifar10/vgg.yaml", "studies/catalog/santurkar.yaml"),
    quick_configs=("studies/catalog/santurkar.quick.yaml",),
    runs=runs(),
    diagnostics=(
        # Fig 2: each nonlinearity's input distribution (noisy BN moves it); the report draws every layer's bands
        StudyDiagnostic("ActivationDrift", 500, 100, {"log_figure": False}),
        StudyDiagnostic("GradientICS", 1000, 100),  # Fig 3: ||G - G'|| and cos(G, G') per layer
        # Fig 4: loss variation, gradient predictiveness and beta-smoothness along steps of [0.5, 4] x LR
        StudyDiagnostic("LossLandscape", 500, 100, {"step_range": [0.5, 4.0], "num_points": 8}),
    ),
    report_args=("--heatmap", "norm", "lr", "--curves", "val/acc", "train/loss", "val/loss",
                 "--bands", "zoo/activation_drift/*"),
    claims=(
        "BN reaches a higher test accuracy (83% vs 80%): bn_lr0.1 > none_lr0.1 on val/acc",
        "Fig 1: BN tolerates LR 0.5: bn_lr0.5 > none_lr0.5 on val/acc",
        "Fig 2: noisy BN trains better than no BN: noisy_bn_lr0.1 < none_lr0.1 on train/loss",
        "Fig 4: with BN the loss varies less along the gradient: bn_lr0.1 < none_lr0.1 on "
        "zoo/loss_landscape/loss_variation@500",
        "Fig 4: with BN the gradient is more predictive: bn_lr0.1 < none_lr0.1 on "
        "zoo/loss_landscape/grad_change_max@500",
        "Fig 4: BN lowers the effective beta-smoothness: bn_lr0.1 < none_lr0.1 on "
        "zoo/loss_landscape/beta_smoothness@500",
        "Sec 3.3: l2 normalization, like BN, beats no norm: l2_lr0.1 > none_lr0.1 on val/acc",
    ),
    root=PACKAGE_ROOT,
)
