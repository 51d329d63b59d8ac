"""Bad input through the CLI: one clear message and exit status 2, never a deep traceback."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from normzoo.cli import main

QUICK = ["fit", "--config", "configs/quickstart.yaml", "--trainer.fast_dev_run", "1",
         "--trainer.enable_progress_bar", "false"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--model.norm", "batchnorm"], "Unknown norm 'batchnorm'. Registered norms: .*bn_manual.*noisy_bn, none"),
        (["--model.norm", "gn"], "cannot split 100 channels into 32 groups"),
        (["--model.norm", "in"], "'in' .* a feature vector has none"),
        (["--model.activation", "swish"], "Unknown activation 'swish'"),
        (["--data.dataset", "svhn"], "Unknown dataset 'svhn'"),
        (["--data.batch_size", "1"], "batch_size=1 is too small for norm 'bn'.*or a batch-independent norm"),
        (["--data.dataset", "cifar10", "--data.download", "false", "--data.data_dir", "{tmp}"],
         "Dataset 'cifar10' is not in .* download is off"),
        (["--trainer.sync_batchnorm", "true", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
          "--trainer.strategy", "ddp"], "sync_batchnorm=true needs GPUs: torch's SyncBatchNorm refuses CPU tensors"),
    ],
)
def test_bad_input_is_one_clear_message(overrides, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(QUICK + ["--runs_dir", str(tmp_path)] + [o.format(tmp=tmp_path) for o in overrides])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("normzoo: error: ") or "\nnormzoo: error: " in err
    assert "Traceback" not in err
    assert re.search(message, err), err


def test_unknown_cnn_arch_through_the_cli(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", "configs/cifar10/resnet.yaml", "--model.arch", "resnet50",
              "--data.dataset", "mnist5k", "--runs_dir", str(tmp_path), "--trainer.fast_dev_run", "1"])
    assert "Unknown CNN arch 'resnet50'. Choose one of: vgg11" in capsys.readouterr().err


def test_python_dash_m_entry_point_prints_the_config():
    result = subprocess.run(
        [sys.executable, "-m", "normzoo", "fit", "--config", "configs/quickstart.yaml", "--print_config"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "class_path: normzoo.models.MLPClassifier" in result.stdout
    assert "norm: bn" in result.stdout


def test_sync_batchnorm_adds_normzoos_plugin_unless_a_layer_sync_is_given():
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    from normzoo.cli import sync_batchnorm_plugins
    from normzoo.sync_plugin import NormZooSyncBatchNorm

    (added,) = sync_batchnorm_plugins("gpu", None)
    assert isinstance(added, NormZooSyncBatchNorm)
    mine = TorchSyncBatchNorm()
    assert sync_batchnorm_plugins("cuda", [mine]) == [mine]
    assert len(sync_batchnorm_plugins("gpu", "bf16-mixed")) == 2


def test_a_batch_of_one_trains_with_a_batch_independent_norm(tmp_path):
    main(QUICK + ["--runs_dir", str(tmp_path), "--model.norm", "ln", "--data.batch_size", "1"])
