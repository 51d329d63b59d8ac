"""Every config in configs/ parses and runs fast_dev_run on the embedded data.

configs/studies/ holds layers over these configs; tests/studies runs them as the studies do.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from normzoo.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml") if "studies" not in p.parts)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_config_runs_fast_dev_run_on_embedded_data(config, tmp_path):
    overrides = ["--runs_dir", str(tmp_path), "--trainer.fast_dev_run", "2", "--trainer.enable_progress_bar", "false"]
    if "quickstart" not in config.name:  # the MNIST / CIFAR-10 configs read torchvision data otherwise
        overrides += ["--data.dataset", "mnist5k", "--data.batch_size", "8", "--data.val_size", "0"]
    before = sorted(p.name for p in ROOT.iterdir())
    main(["fit", "--config", str(config), *overrides])
    assert sorted(p.name for p in ROOT.iterdir()) == before, "the run wrote into the checkout, not runs_dir"


def test_there_is_a_config_per_family_and_norm():
    names = {p.name for p in CONFIGS}
    for dataset in ("mnist", "cifar10"):
        for family in ("mlp", "vgg", "resnet"):
            for norm in ("bn", "ln", "gn", "none", "noisy_bn") + (("in",) if family != "mlp" else ()):
                assert Path("configs", dataset, f"{family}_{norm}.yaml") in CONFIGS, (dataset, family, norm)
    assert "quickstart.yaml" in names


def test_generated_configs_match_their_generator():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_configs
    finally:
        sys.path.pop(0)
    for path, text in make_configs.expected_configs().items():
        assert path.read_text() == text, f"{path} is stale: run python scripts/make_configs.py"


def test_run_name_and_runs_dir_place_the_run(tmp_path):
    main(["fit", "--config", "configs/quickstart.yaml", "--runs_dir", str(tmp_path / "mine"), "--run_name", "bn_try",
          "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    run_dir = tmp_path / "mine" / "bn_try" / "version_0"
    assert (run_dir / "config.yaml").exists() and list(run_dir.glob("events.out.tfevents.*"))
