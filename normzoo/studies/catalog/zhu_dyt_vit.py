"""Zhu, Chen, He, LeCun & Liu 2025 (DyT) and Chen, Lu, Zhu, Sun & Liu 2025 (Derf): point-wise functions in place of
LayerNorm and RMSNorm in a Vision Transformer, in pre-norm and post-norm blocks.

    normzoo study zhu_dyt_vit --quick         # MNIST-5k, vit_mini (dim 64, depth 4), 10 epochs per run
    normzoo study zhu_dyt_vit                 # CIFAR-10, vit_tiny (DeiT-Ti shape), the config's epochs

Every per-token norm of the ViT is LN, RMSNorm, DyT (``tanh(alpha x)``, alpha a learned scalar at 0.5, then a
per-channel affine) or Derf (``erf(alpha x + s)``), in Pre-LN blocks (``x + F(N(x))``, a final norm before
the head: the ViT of both papers) and in Post-LN blocks (``N(x + F(x))``, the original Transformer's).
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyRun

NORMS = ("ln", "rms", "dyt", "derf")
PLACEMENTS = ("pre", "post")

STUDY = Study(
    name="zhu_dyt_vit",
    title="DyT and Derf against LayerNorm and RMSNorm in a ViT, pre-norm and post-norm",
    claim="""
**Setup**: supervised ViT-B on ImageNet-1K (Pre-LN blocks, AdamW, the DeiT recipe), every LayerNorm
replaced by DyT (Zhu et al. 2025) or by Derf (Chen et al. 2025), alpha initialized at 0.5 and nothing
else tuned.

**The papers' top-1 accuracy (%)** (Chen et al. 2025, Fig. 1): LN 82.3, DyT 82.5, Derf 82.8.

Here: the same replacement in a small ViT (AdamW, cosine decay), in Pre-LN blocks as in the papers and
in Post-LN blocks; RMSNorm as a second normalized baseline. Quick mode: MNIST-5k, vit_mini (dim 64,
depth 4, 4 heads, 16 tokens of 7 x 7 pixels), ten epochs.

**Claims**: DyT matches or beats LN in a Pre-LN ViT; Derf beats DyT and LN; Pre-LN trains better
than Post-LN without a warm-up (Xiong et al. 2020).
""",
    configs=("configs/cifar10/vit.yaml",),
    quick_configs=("studies/catalog/zhu_dyt_vit.quick.yaml",),
    runs=tuple(StudyRun(f"{norm}_{placement}", ("--model.norm", norm, "--model.placement", placement))
               for placement in PLACEMENTS for norm in NORMS),
    report_args=("--curves", "train/loss", "val/acc", "val/loss", "--columns", "norm", "placement", "model", "lr",
                 "--no-diagnostics"),
    claims=(
        "DyT matches or beats LN in a Pre-LN ViT (ViT-B 82.5% vs 82.3%): dyt_pre > ln_pre on val/acc",
        "Derf beats DyT (ViT-B 82.8% vs 82.5%): derf_pre > dyt_pre on val/acc",
        "Derf beats LN (ViT-B 82.8% vs 82.3%): derf_pre > ln_pre on val/acc",
        "Pre-LN trains better than Post-LN without a warm-up (Xiong et al. 2020): ln_pre > ln_post on val/acc",
    ),
    root=PACKAGE_ROOT,
)
