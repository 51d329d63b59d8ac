"""The README's main job: the quickstart trains on MNIST-5k to val accuracy >= 0.85 and logs it."""

from __future__ import annotations

import yaml

from normzoo.cli import main
from tests.tb_events import hparams_plugin, load_events, scalar_series


def test_quickstart_reaches_85_percent_and_logs_to_tensorboard(tmp_path, capsys):
    main(["fit", "--config", "configs/quickstart.yaml", "--runs_dir", str(tmp_path),
          "--trainer.enable_progress_bar", "false"])
    run_dir = tmp_path / "quickstart" / "version_0"

    events = load_events(run_dir)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert tag in events.Tags()["scalars"], tag
    val_acc = scalar_series(events, "val/acc")
    assert len(val_acc) == 10  # one validation per epoch
    assert val_acc[-1][1] >= 0.85
    train_loss = scalar_series(events, "train/loss")
    assert train_loss[-1][1] < train_loss[0][1]

    plugin = hparams_plugin(events)
    metric_tags = {m.name.tag for m in plugin["_hparams_/experiment"].experiment.metric_infos}
    assert {"val/acc", "val/loss"} <= metric_tags  # the hparams tab shows the real curves' values
    session = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert session["norm"].string_value == "bn" and session["lr"].number_value == 0.1
    assert session["data/batch_size"].number_value == 60
    assert session["model"].string_value == "MLPClassifier" and session["world_size"].number_value == 1
    assert session["precision"].string_value == "32-true"
    assert not [key for key in session if key.startswith("_") or "/_" in key]  # no LightningCLI internals

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["init_args"]["norm"] == "bn"
    assert yaml.safe_load((run_dir / "hparams.yaml").read_text())["input_shape"] == [1, 28, 28]
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert len(list((run_dir / "checkpoints").glob("*.ckpt"))) == 2  # last + best val/acc

    summary = capsys.readouterr().out
    assert "normzoo fit finished" in summary and "val/acc" in summary and str(run_dir) in summary


def test_test_subcommand_evaluates_the_last_checkpoint(tmp_path, capsys):
    common = ["--config", "configs/quickstart.yaml", "--runs_dir", str(tmp_path),
              "--trainer.enable_progress_bar", "false"]
    main(["fit", *common, "--trainer.max_steps", "5", "--trainer.limit_val_batches", "2"])
    checkpoint = tmp_path / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    assert checkpoint.exists()
    capsys.readouterr()
    main(["test", *common, "--ckpt_path", str(checkpoint)])
    out = capsys.readouterr().out
    assert "normzoo test finished" in out and "test/acc" in out
    assert list((tmp_path / "quickstart" / "version_1").glob("events.out.tfevents.*"))
