"""Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm": the normalization batch apart from the optimizer's.

    normzoo study wu_johnson --quick      # MNIST-5k, 10 epochs of the 3 x 100 MLP per run: minutes on a CPU
    normzoo study wu_johnson              # MNIST, 20 epochs

The BN MLP trained with one optimizer batch (128) while its BN layers normalize chunks of 2 ...
128 samples (``ghost_bn``'s ``virtual_batch_size``; 128 is plain BN over the batch).
``PreciseBNGap`` evaluates the validation split, at a fixed step cadence, three ways: with the EMA
running statistics (eval mode, what ``val/acc`` uses), with precise statistics (the average of
200 training batches' statistics under the current weights, capped to an epoch), and in train
mode (each validation batch of 128 normalized by its own chunks, as in training).

The train-test inconsistency (train-mode error minus eval-mode error, per run) is tabulated by
``python scripts/cell_table.py runs/studies/wu_johnson/quick --difference
zoo/precise_bn/val_error_batch zoo/precise_bn/val_error_ema``.
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyDiagnostic, StudyRun

NORMALIZATION_BATCHES = (2, 4, 8, 16, 32, 128)


def runs() -> tuple[StudyRun, ...]:
    """Ghost BN at every normalization batch size, the optimizer's batch fixed."""
    return tuple(StudyRun(f"nbs{size}", ("--model.norm", "ghost_bn",
                                         "--model.norm_kwargs", f"{{virtual_batch_size: {size}}}"))
                 for size in NORMALIZATION_BATCHES)


STUDY = Study(
    name="wu_johnson",
    title="Wu & Johnson 2021: error against the normalization batch size; EMA against precise statistics",
    claim="""
**Setup**: ResNet-50 on ImageNet, a total batch of 1,024 (SGD, 100 epochs), BN statistics computed over
"normalization batches" of 2 ... 1,024 samples (per-GPU batches, or chunks of them); evaluation with the
EMA population statistics, with precise statistics (averaged over about 200 batches under the final
weights), and with mini-batch statistics ("train mode").
Here: the 3 x 100 ReLU MLP of `configs/quickstart.yaml` with ghost BN (the batch of 128 split into chunks
of 2 ... 128 samples, each normalized by its own statistics), SGD with momentum 0.9, lr 0.1; MNIST
(quick mode: MNIST-5k, 10 epochs).

**Claims**: the error is U-shaped in the normalization batch size: too small is noisy, too large loses
BN's regularization. At small normalization batches, evaluating with population statistics is worse
than evaluating in train mode with mini-batch statistics of the same size (the train-test
inconsistency), and the gap shrinks as the normalization batch grows. EMA statistics are a biased
estimate of the population statistics while the weights move fast; precise statistics do at least as
well.
""",
    configs=("configs/quickstart.yaml", "studies/catalog/wu_johnson.yaml"),
    quick_configs=("studies/catalog/wu_johnson.quick.yaml",),
    runs=runs(),
    diagnostics=(StudyDiagnostic("PreciseBNGap", 940, 64, {"batch_statistics": True}),),
    report_args=("--versus", "norm_kwargs.virtual_batch_size", "--error",
                 "--curves", "val/acc", "train/loss", "zoo/precise_bn/val_error_ema", "zoo/precise_bn/val_error_batch",
                 "zoo/precise_bn/val_error_gap"),
    claims=(
        "too small a normalization batch is noisy: nbs16 > nbs2 on val/acc",
        "... and 4 samples are still too few: nbs16 > nbs4 on val/acc",
        "too large a normalization batch loses BN's regularization: nbs16 > nbs128 on val/acc",
        "population statistics gathered over chunks of 2 evaluate worse than over 128: "
        "nbs2 > nbs128 on zoo/precise_bn/val_error_ema",
        "the EMA lags precise statistics more at small normalization batches: "
        "nbs2 > nbs128 on zoo/precise_bn/val_error_gap",
    ),
    root=PACKAGE_ROOT,
)
