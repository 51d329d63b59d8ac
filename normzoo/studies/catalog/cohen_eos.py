"""Cohen et al. 2021, "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability".

    normzoo study cohen_eos --quick       # 1,000 MNIST-5k digits in one batch, 300 steps: minutes on a CPU
    normzoo study cohen_eos               # MNIST-5k's 4,500 training digits in one batch, 1,000 steps

Full-batch gradient descent (the batch is the whole training set, plain SGD at a constant LR)
with BN, LN, GN and no norm at three step sizes. ``Sharpness`` measures the top Hessian
eigenvalue of the training loss on that same batch (BN in train mode, over the full batch)
every 10 steps and logs 2/lr beside it.

The report judges the claims the framework can state (one metric of two runs). The claim itself,
sharpness against 2/lr of the same run over the steps, is tabulated by
``python scripts/eos_table.py runs/studies/cohen_eos/quick``.
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyDiagnostic, StudyRun

NORMS = ("none", "bn", "ln", "gn")
LEARNING_RATES = ("0.05", "0.1", "0.2")  # 2 / lr = 40, 20, 10
GN_GROUPS = "{num_groups: 8}"  # 8 units per group of the 64 (the default 32 groups would hold 2 units each)


def runs() -> tuple[StudyRun, ...]:
    """Every norm at every step size."""
    return tuple(
        StudyRun(f"{norm}_lr{lr}",
                 ("--model.norm", norm, "--optimizer.init_args.lr", lr)
                 + (("--model.norm_kwargs", GN_GROUPS) if norm == "gn" else ()))
        for norm in NORMS for lr in LEARNING_RATES
    )


def claims() -> tuple[str, ...]:
    """The directions the edge of stability predicts between step sizes, in the report's claim syntax.

    Sharpness cannot stay above 2/lr for long, so a step size twice as large caps it half as high.
    Without a norm the network starts flat and sharpens until it meets that cap: its peak
    (``best``) follows 2/lr. The normalized networks start sharper than 2/lr at these step sizes;
    GD pulls them down within a few dozen steps, so step 50 compares them after that transient.
    """
    plain = tuple(f"EoS caps the plain net's sharpness near 2/lr ({2 / float(small):g} vs {2 / float(large):g}): "
                  f"none_lr{small} > none_lr{large} on best zoo/sharpness/top_eigenvalue"
                  for small, large in zip(LEARNING_RATES, LEARNING_RATES[1:], strict=False))
    normalized = tuple(f"with {norm.upper()} too, past the first steps sharpness sits near 2/lr or below (20 vs 10): "
                       f"{norm}_lr0.1 > {norm}_lr0.2 on zoo/sharpness/top_eigenvalue@50" for norm in NORMS[1:])
    return plain + normalized


STUDY = Study(
    name="cohen_eos",
    title="Cohen et al. 2021: full-batch gradient descent at the edge of stability",
    claim="""
**Setup**: full-batch gradient descent (plain SGD, constant step size lr, no momentum, no weight decay,
no augmentation) on a 5,000-example CIFAR-10 subset, fully connected tanh / ReLU / ELU networks,
CNNs and VGG (with and without BN), cross-entropy and squared loss; sharpness = the top eigenvalue of
the training loss's Hessian on the training set, by Lanczos.
Here: a 4 x 64 tanh MLP on MNIST-5k's 4,500 training digits (quick mode: 1,000), cross-entropy, one
batch per step, BN / LN / GN (8 groups) / no norm at lr 0.05, 0.1, 0.2 (2/lr = 40, 20, 10).

**Claims**: sharpness first rises (progressive sharpening) until it reaches 2/lr, then hovers just
above 2/lr (the edge of stability) instead of going on rising, while the training loss keeps falling
over long timescales, non-monotonically. With cross-entropy, sharpness falls again late in training,
once the loss is small.
""",
    configs=("configs/mnist/mlp.yaml", "studies/catalog/cohen_eos.yaml"),
    quick_configs=("studies/catalog/cohen_eos.quick.yaml",),
    runs=runs(),
    diagnostics=(
        # the top Hessian eigenvalue on the one training batch (= the training set) and 2/lr, every 10 steps
        StudyDiagnostic("Sharpness", 10, 10, {"num_batches": 1, "iterations": 20, "trace_probes": 0,
                                              "spherical": False}),
    ),
    report_args=("--heatmap", "norm", "lr", "--curves", "zoo/sharpness/top_eigenvalue", "zoo/sharpness/loss",
                 "train/loss", "val/acc", "--no-bands"),
    claims=claims(),
    root=PACKAGE_ROOT,
)
