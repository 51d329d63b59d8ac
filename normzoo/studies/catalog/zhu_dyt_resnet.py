"""Zhu, Chen, He, LeCun & Liu 2025 (Transformers without Normalization), their stated limitation: does Dynamic
Tanh replace BatchNorm in a ResNet?

    normzoo study zhu_dyt_resnet --quick      # MNIST-5k at 32 x 32, ResNet-20 at 1/2 width, 2 epochs per run
    normzoo study zhu_dyt_resnet              # CIFAR-10, ResNet-18, 60 epochs per run

The same ResNet with BN, with DyT (``tanh(alpha x)`` with a learned scalar alpha at 0.5, then a per-channel
affine) in every BN's place, with Derf (Chen et al. 2025, ``erf(alpha x + s)``), and without a norm, at the
ResNet recipe's learning rate. DyT and Derf use no statistics at all, so nothing in them depends on the batch;
nor does anything keep the pre-activations' scale in check but the squashing.
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyRun

NORMS = ("bn", "dyt", "derf", "none")

STUDY = Study(
    name="zhu_dyt_resnet",
    title="Zhu et al. 2025's limitation: DyT (and Derf) in place of BN in a ResNet",
    claim="""
**Setup**: DyT replaces the normalization layers of Transformers (ViT, ConvNeXt's LN, LLaMA's RMSNorm)
and matches or beats them; the paper's limitations section reports that replacing BN in classic
convolutional networks (ResNet-50, VGG19 on ImageNet) directly with DyT costs accuracy.
Here: a CIFAR-style ResNet with its BN layers replaced by DyT, by Derf, or removed, trained with the
ResNet recipe (SGD with momentum 0.9 at LR 0.1, cosine decay). Quick mode: MNIST-5k at 32 x 32,
ResNet-20 at half width, two epochs.

**Claims**: DyT does not reach BN's accuracy in a ResNet (the paper's limitation), nor does Derf.
""",
    configs=("configs/cifar10/resnet.yaml",),
    quick_configs=("studies/catalog/zhu_dyt_resnet.quick.yaml",),
    runs=tuple(StudyRun(norm, ("--model.norm", norm)) for norm in NORMS),
    report_args=("--curves", "train/loss", "val/acc", "val/loss", "--columns", "norm", "model", "lr",
                 "data.batch_size", "--no-diagnostics"),
    claims=(
        "DyT does not replace BN in a ResNet (the paper's limitation): bn > dyt on val/acc",
        "nor does Derf: bn > derf on val/acc",
    ),
    root=PACKAGE_ROOT,
)
