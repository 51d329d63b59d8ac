"""The configs: each base config runs fast_dev_run on the embedded data, and takes every norm by ``--model.norm``.

``configs/`` holds one base per dataset x model family, ``quickstart.yaml`` and the
``diagnostics.yaml`` overlay (tested in ``test_diagnostics_config``); the studies' overlays
live in ``normzoo/studies/catalog`` and tests/studies runs them as the studies do.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
import yaml

from normzoo.cli import NormZooCLI, main, own_arguments_only
from normzoo.studies.estimate import quiet_lightning

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = {"diagnostics.yaml"}
CONFIGS = sorted(p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml") if p.name not in OVERLAYS)
BASES = [Path("configs", dataset, f"{family}.yaml") for dataset in ("mnist", "cifar10")
         for family in ("mlp", "vgg", "resnet", "vit")]
NORMS = ("ln", "gn", "none", "noisy_bn", "in")  # bn, every base's default, runs in the fast_dev_run test


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_config_runs_fast_dev_run_on_embedded_data(config, tmp_path):
    overrides = ["--runs_dir", str(tmp_path), "--trainer.fast_dev_run", "2", "--trainer.enable_progress_bar", "false"]
    if "quickstart" not in config.name:  # the MNIST / CIFAR-10 configs read torchvision data otherwise
        overrides += ["--data.dataset", "mnist5k", "--data.batch_size", "8", "--data.val_size", "0"]
    before = sorted(p.name for p in ROOT.iterdir())
    main(["fit", "--config", str(config), *overrides])
    assert sorted(p.name for p in ROOT.iterdir()) == before, "the run wrote into the checkout, not runs_dir"


def norm_options(config: Path, norm: str) -> list[str]:
    """The options a base config's header gives for ``norm`` (``--model.norm gn --model.norm_kwargs ...``)."""
    for line in (ROOT / config).read_text().splitlines():
        words = shlex.split(line.lstrip("# ")) if line.startswith("#") else []
        if words[:2] == ["--model.norm", norm]:
            return words[2:]
    return []


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("config", BASES, ids=str)
def test_there_is_a_config_per_family_and_norm(config, norm):
    """Every base builds a trainable model with every norm (InstanceNorm needs conv maps: no MLP, no ViT)."""
    if norm == "in" and config.stem in ("mlp", "vit"):
        pytest.skip("InstanceNorm normalizes conv maps")
    args = ["--config", str(config), "--model.norm", norm, *norm_options(config, norm), "--trainer.logger", "false"]
    with quiet_lightning(), own_arguments_only():
        cli = NormZooCLI(args=args, run=False)
    model = cli.model.train()
    assert model.hparams.norm == norm
    logits = model(torch.randn(2, *model.hparams.input_shape))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_configs_are_few_and_leave_speed_to_its_defaults():
    files = [p for p in (ROOT / "configs").rglob("*") if p.is_file()]
    assert len(files) <= 12, sorted(map(str, files))
    assert set(map(Path, BASES)) <= set(CONFIGS) and Path("configs/quickstart.yaml") in CONFIGS
    for path in files:
        assert "speed" not in yaml.safe_load(path.read_text()), f"{path}: SpeedUp's defaults live in normzoo.speed"


def test_run_name_and_runs_dir_place_the_run(tmp_path):
    main(["fit", "--config", "configs/quickstart.yaml", "--runs_dir", str(tmp_path / "mine"), "--run_name", "bn_try",
          "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    run_dir = tmp_path / "mine" / "bn_try" / "version_0"
    assert (run_dir / "config.yaml").exists() and list(run_dir.glob("events.out.tfevents.*"))
