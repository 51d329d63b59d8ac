"""Ioffe & Szegedy 2015, Sec 4.1 and Fig 1: BN on a 3 x 100 sigmoid MLP on MNIST.

    normzoo study ioffe_mnist --quick     # MNIST-5k, 5,000 steps: ~4 minutes on 2 CPU cores
    normzoo study ioffe_mnist             # the paper: MNIST, 50,000 steps of batch 60
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyDiagnostic, StudyRun

STUDY = Study(
    name="ioffe_mnist",
    title="Ioffe & Szegedy 2015, Fig 1: BN vs no BN on a sigmoid MLP",
    claim="""
**Setup** (Sec 4.1): 28x28 MNIST, 3 fully connected hidden layers of 100 sigmoid units, small Gaussian
init, softmax cross-entropy, 50,000 steps of mini-batches of 60, BN on every hidden layer.

**Claims**: (a) the BN network reaches a higher test accuracy, faster; (b, c) the {15, 50, 85}th
percentiles of a typical sigmoid's input in the last hidden layer drift over training without BN
and stay put with BN.
""",
    configs=("configs/mnist/mlp.yaml",),
    quick_configs=("studies/catalog/ioffe_mnist.quick.yaml",),
    runs=(StudyRun("bn", ("--model.norm", "bn")), StudyRun("none", ("--model.norm", "none"))),
    diagnostics=(
        # Fig 1(b, c): one sigmoid of the last hidden layer, on one batch of fixed training samples
        StudyDiagnostic("ActivationDrift", 500, 100, {"layers": ["last"], "unit": 0, "percentiles": [15, 50, 85],
                                                      "probe_size": 60}),
    ),
    report_args=("--bands", "zoo/activation_drift/*"),
    claims=(
        "(a) BN reaches a higher test accuracy: bn > none on val/acc",
        "(a) faster: bn > none on val/acc@1000",
        "(b, c) the sigmoid's input drifts without BN, stays put with BN: none > bn on zoo/activation_drift/*/w1_first",
    ),
    root=PACKAGE_ROOT,
)
