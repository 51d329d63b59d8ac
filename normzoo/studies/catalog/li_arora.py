"""Li & Arora 2020 and Li, Lyu & Arora 2020: weight decay on normalized networks, seen as a learning rate.

    normzoo study li_arora --quick      # MNIST-5k, 20 epochs of the 3 x 100 BN MLP: minutes on a CPU
    normzoo study li_arora              # MNIST, 40 epochs

Three runs of the BN MLP with SGD and momentum 0.9 at a constant learning rate: with weight decay
(``wd``), without (``no_wd``), and without weight decay but with the exponentially increasing
learning rate that Li & Arora prove equivalent to it for scale-invariant weights (``exp_lr``:
``normzoo.models.schedules.WeightDecayAsExponentialLR``). ``EffectiveLR`` measures, for each
weight that feeds a BN layer, its norm, its effective learning rate lr/||w||^2 and the angle of
each update, against the equilibrium sqrt(2 lr wd / (1 + momentum)).

The report judges what one metric of two runs can say; the angular update against its
equilibrium over the steps, per layer, is tabulated by
``python scripts/angular_table.py runs/studies/li_arora/quick --reference wd``.
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyDiagnostic, StudyRun

SCHEDULE = "normzoo.models.schedules.WeightDecayAsExponentialLR"
LAYER = "zoo/effective_lr/backbone.blocks.1"  # the middle hidden layer's weight


def claims() -> tuple[str, ...]:
    """What weight decay does to scale-invariant weights, and that the exponential schedule does the same."""
    return (
        "without weight decay the weights grow, so their updates turn them less and less: "
        f"wd > no_wd on {LAYER}/angular_update",
        f"... and their effective learning rate decays: wd > no_wd on {LAYER}/effective_lr",
        "the exponential schedule keeps the angular update up as weight decay does: "
        f"exp_lr > no_wd on {LAYER}/angular_update",
        f"... and their effective learning rate: exp_lr > no_wd on {LAYER}/effective_lr",
        f"... while the weights' norm grows faster still: exp_lr > no_wd on {LAYER}/weight_norm",
    )


STUDY = Study(
    name="li_arora",
    title="Li & Arora 2020: weight decay, the angular update's equilibrium and the exponential learning rate",
    claim="""
**Setup**: PreResNet32 (and VGG, ResNet) with BN on CIFAR-10, SGD with momentum 0.9, learning rate 0.1,
weight decay 5e-4. Li, Lyu & Arora 2020 (arXiv 2010.02916) and Wan et al. (arXiv 2006.08419): for weights
that feed a normalization, SGD with weight decay reaches an equilibrium where the angle each step turns
them is sqrt(2 lr wd / (1 + momentum)), after about 1 / (lr wd) steps. Li & Arora 2020 (arXiv 1910.07454,
Fig. 1: the fixed-learning-rate phase of PreResNet32 with weight decay, and the same network without weight
decay on the equivalent exponentially increasing learning rate).
Here: the 3 x 100 ReLU MLP with BN of `configs/quickstart.yaml`, SGD with momentum 0.9, lr 0.1, on
MNIST, weight decay 5e-4 (quick mode: MNIST-5k, 20 epochs, weight decay 1e-3, so that the
equilibrium's time scale (1 - momentum) / (2 lr wd) = 500 steps fits in its 1,340 steps).

**Claims**: with weight decay the angular update reaches sqrt(2 lr wd / (1 + momentum)); without it the
weights' norm grows and the angular update and effective learning rate lr/||w||^2 decay. Training
without weight decay, at the learning rate lr alpha^-(2t+1) (alpha the larger root of
x^2 - (1 + momentum - lr wd) x + momentum), follows the run with weight decay: the same directions
of the scale-invariant weights, so the same angular updates and accuracy, while the weights grow.
""",
    configs=("configs/quickstart.yaml", "studies/catalog/li_arora.yaml"),
    quick_configs=("studies/catalog/li_arora.quick.yaml",),
    runs=(
        StudyRun("wd"),
        StudyRun("exp_lr", ("--lr_scheduler", SCHEDULE)),
        StudyRun("no_wd", ("--optimizer.init_args.weight_decay", "0")),
    ),
    diagnostics=(StudyDiagnostic("EffectiveLR", 100, 25),),
    report_args=("--curves", "train/loss", "val/acc", "zoo/effective_lr/*/angular_update",
                 "zoo/effective_lr/*/weight_norm", "zoo/effective_lr/*/effective_lr"),
    claims=claims(),
    root=PACKAGE_ROOT,
)
