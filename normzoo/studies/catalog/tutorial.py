"""The BatchNorm tutorial's task: saturated tanh units with and without BN.

    normzoo study tutorial --quick        # 5 epochs (the task is synthetic: no download)
    normzoo study tutorial                # 20 epochs
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyDiagnostic, StudyRun

STUDY = Study(
    name="tutorial",
    title="The BatchNorm tutorial: saturation of tanh units with and without BN",
    claim="""
**Setup**: 10,000 samples of 500 Gaussian inputs, 2 classes, one hidden layer of 100 tanh units,
batch 32, with and without BN.

**Claims**: without BN many tanh units sit on the flat tails (|tanh| > 0.97) and pass almost no
gradient; BN keeps their inputs standardized, so few units saturate and the network trains better.
""",
    configs=("studies/catalog/tutorial.yaml",),
    quick_configs=("studies/catalog/tutorial.quick.yaml",),
    runs=(StudyRun("bn", ("--model.norm", "bn")), StudyRun("none", ("--model.norm", "none"))),
    diagnostics=(
        # the saturated fraction of the hidden tanh layer (|tanh| > 0.97) on one batch, so the curve starts at step 0
        StudyDiagnostic("DeadUnits", 100, 50, {"layers": ["last"], "threshold": 0.97, "probe_size": 32}),
    ),
    report_args=("--curves", "val/acc", "train/loss", "zoo/dead_units/*/saturated_fraction"),
    claims=(
        "without BN more tanh units saturate: none > bn on zoo/dead_units/*/saturated_fraction",
        "BN trains better: bn > none on val/acc",
    ),
    root=PACKAGE_ROOT,
)
