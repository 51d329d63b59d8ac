"""Write configs/{mnist,cifar10}/<family>_<norm>.yaml: one short config per model family x norm.

The configs differ only in the norm line (and the norm's options), so they are generated
from the recipes below to stay consistent; edit a recipe here and run

    python scripts/make_configs.py

A test checks that the files on disk match this script's output.
"""

from __future__ import annotations

import sys
from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

NORMS = {
    "bn": "BatchNorm: batch statistics per channel (Ioffe & Szegedy 2015)",
    "ln": "LayerNorm: per sample over all features / (C, H, W)",
    "in": "InstanceNorm: per sample and channel over (H, W)",
    "gn": "GroupNorm: per sample over groups of channels (Wu & He 2018)",
    "none": "no normalization: the plain network",
    "noisy_bn": "BatchNorm + time-varying noise after it (Santurkar et al. 2018, Fig 2)",
}

# norm options that a family needs (gn's default of 32 groups does not divide 100 units)
NORM_KWARGS = {("mnist", "mlp", "gn"): "{num_groups: 10}          # 100 units -> 10 groups of 10"}

RECIPES = {
    "mnist": {
        "mlp": {
            "title": "Ioffe & Szegedy 2015 Sec 4.1: 3 x 100 sigmoid units, batch 60, 50,000 steps",
            "model": ["class_path: normzoo.models.MLPClassifier", "init_args:",
                      "  depth: 3",
                      "  width: 100",
                      "  activation: sigmoid          # the paper's nonlinearity",
                      "  init: normal                 # \"small Gaussian\" init: N(0, 0.1^2)",
                      "  init_gain: 0.1"],
            "data": ["dataset: mnist", "batch_size: 60                 # the paper's mini-batch",
                     "val_size: 0                    # validate on the test set: the paper's test curves"],
            "optimizer": ["class_path: torch.optim.SGD", "init_args:",
                          "  lr: 0.1                      # plain SGD; one LR for every norm"],
            "trainer": ["max_steps: 50000              # the paper's 50,000 steps",
                        "val_check_interval: 1000       # validate every 1,000 steps ...",
                        "check_val_every_n_epoch: null  # ... counted across epochs"],
        },
        "vgg": {
            "title": "VGG-11 on MNIST (28x28; pooling uses ceil_mode), Santurkar-style plain SGD",
            "model": ["class_path: normzoo.models.CNNClassifier", "init_args:",
                      "  arch: vgg11"],
            "data": ["dataset: mnist", "batch_size: 128"],
            "optimizer": ["class_path: torch.optim.SGD", "init_args:",
                          "  lr: 0.05                     # plain SGD, no momentum"],
            "trainer": ["max_epochs: 5"],
        },
        "resnet": {
            "title": "ResNet-20 on MNIST, SGD with momentum and cosine decay",
            "model": ["class_path: normzoo.models.CNNClassifier", "init_args:",
                      "  arch: resnet20"],
            "data": ["dataset: mnist", "batch_size: 128"],
            "optimizer": ["class_path: torch.optim.SGD", "init_args:",
                          "  lr: 0.1", "  momentum: 0.9",
                          "  weight_decay: 0.0005         # decays conv/linear weights only, never norm params"],
            "scheduler": ["class_path: torch.optim.lr_scheduler.CosineAnnealingLR", "init_args:",
                          "  T_max: 10                    # = max_epochs"],
            "trainer": ["max_epochs: 10"],
        },
    },
    "cifar10": {
        "mlp": {
            "title": "MLP on CIFAR-10: 3 x 512 ReLU units",
            "model": ["class_path: normzoo.models.MLPClassifier", "init_args:",
                      "  depth: 3", "  width: 512", "  activation: relu"],
            "data": ["dataset: cifar10", "batch_size: 128"],
            "optimizer": ["class_path: torch.optim.SGD", "init_args:",
                          "  lr: 0.05", "  momentum: 0.9"],
            "trainer": ["max_epochs: 30"],
        },
        "vgg": {
            "title": "Santurkar et al. 2018: VGG on CIFAR-10, plain SGD, batch 128, LR 0.1, no augmentation",
            "model": ["class_path: normzoo.models.CNNClassifier", "init_args:",
                      "  arch: vgg11",
                      "  init: xavier                 # Glorot init, as in the paper"],
            "data": ["dataset: cifar10", "batch_size: 128",
                     "augment: false                 # the paper trains without augmentation",
                     "val_size: 0                    # test-set curves, as in the paper's figures"],
            "optimizer": ["class_path: torch.optim.SGD", "init_args:",
                          "  lr: 0.1                      # constant LR, no momentum (0.5 in Fig 1)"],
            "trainer": ["max_steps: 15000              # (secondary) the paper's training length",
                        "val_check_interval: 500        # validate every 500 steps ...",
                        "check_val_every_n_epoch: null  # ... counted across epochs"],
        },
        "resnet": {
            "title": "ResNet-18 (CIFAR variant) on CIFAR-10, the Wu & He 2018 comparison model",
            "model": ["class_path: normzoo.models.CNNClassifier", "init_args:",
                      "  arch: resnet18"],
            "data": ["dataset: cifar10",
                     "batch_size: 128                # per device; BN statistics are per device",
                     "augment: true                  # random crop (pad 4) + flip"],
            "optimizer": ["class_path: torch.optim.SGD", "init_args:",
                          "  lr: 0.1", "  momentum: 0.9", "  weight_decay: 0.0005"],
            "scheduler": ["class_path: torch.optim.lr_scheduler.CosineAnnealingLR", "init_args:",
                          "  T_max: 60                    # = max_epochs"],
            "trainer": ["max_epochs: 60"],
        },
    },
}


def families_for(norm: str) -> list[str]:
    """Model families a norm applies to: InstanceNorm needs conv maps, so no MLP."""
    return ["vgg", "resnet"] if norm == "in" else ["mlp", "vgg", "resnet"]


def render(dataset: str, family: str, norm: str) -> str:
    recipe = RECIPES[dataset][family]
    name = f"configs/{dataset}/{family}_{norm}.yaml"
    lines = [f"# {recipe['title']}.", f"# Norm: {NORMS[norm]}.", f"#   normzoo fit --config {name}",
             "seed_everything: 0", "model:"]
    lines += [f"  {line}" for line in recipe["model"]]
    lines.append(f"    norm: {norm}")
    if (dataset, family, norm) in NORM_KWARGS:
        lines.append(f"    norm_kwargs: {NORM_KWARGS[(dataset, family, norm)]}")
    lines += ["data:", "  class_path: normzoo.data.ImageDataModule", "  init_args:"]
    lines += [f"    {line}" for line in recipe["data"]]
    lines.append("optimizer:")
    lines += [f"  {line}" for line in recipe["optimizer"]]
    if "scheduler" in recipe:
        lines.append("lr_scheduler:")
        lines += [f"  {line}" for line in recipe["scheduler"]]
    lines.append("trainer:")
    lines += [f"  {line}" for line in recipe["trainer"]]
    lines += speed_lines(family)
    return "\n".join(lines) + "\n"


def speed_lines(family: str) -> list[str]:
    """The ``speed:`` block (normzoo.speed.SpeedUp), with the defaults spelled out."""
    layout = "# NHWC: CNNs only" if family == "mlp" else "# null: NHWC on GPUs for CNNs where it helps"
    return [
        "speed:                          # normzoo.speed.SpeedUp; precision defaults to bf16-mixed on GPUs",
        f"  channels_last: null           {layout}",
        "  compile: false                # torch.compile the model (fuses GN/LN/IN statistics; first steps compile)",
        "  cuda_graph: false             # replay the compiled step as CUDA graphs: small launch-bound models",
    ]


def expected_configs() -> dict[Path, str]:
    """Every generated config path and its text."""
    return {
        CONFIGS_DIR / dataset / f"{family}_{norm}.yaml": render(dataset, family, norm)
        for dataset in RECIPES
        for norm in NORMS
        for family in families_for(norm)
    }


def main() -> int:
    for path, text in expected_configs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path.relative_to(CONFIGS_DIR.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
