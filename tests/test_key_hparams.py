"""The key hyperparameters of a run: what its command line overrides, then the core ones."""

from __future__ import annotations

from normzoo.key_hparams import command_line_paths, hparams_of_path, key_hparams

NAMES = ["activation", "norm", "norm_kwargs/num_groups", "model", "lr", "optimizer/class_path",
         "optimizer/init_args/lr", "optimizer/init_args/momentum", "data/class", "data/batch_size", "precision",
         "seed", "world_size"]


def test_command_line_paths_skip_values_and_config_files():
    argv = ["fit", "--config", "a.yaml", "--model.norm", "gn", "--optimizer.init_args.lr=0.5",
            "--trainer.callbacks+=normzoo.callbacks.DeadUnits", "--trainer.max_steps", "3"]
    assert command_line_paths(argv) == ["model.norm", "optimizer.init_args.lr", "trainer.callbacks+",
                                        "trainer.max_steps"]


def test_each_kind_of_path_names_its_hyperparameter():
    assert hparams_of_path("model.norm", NAMES) == ["norm"]
    assert hparams_of_path("optimizer.init_args.lr", NAMES) == ["lr"]
    assert hparams_of_path("optimizer.momentum", NAMES) == ["optimizer/init_args/momentum"]
    assert hparams_of_path("optimizer", NAMES) == ["optimizer/class_path"]
    assert hparams_of_path("data.init_args.batch_size", NAMES) == ["data/batch_size"]
    assert hparams_of_path("data", NAMES) == ["data/class"]
    assert hparams_of_path("model", NAMES) == ["model"]
    assert hparams_of_path("model.norm_kwargs", NAMES) == ["norm_kwargs/num_groups"]
    assert hparams_of_path("trainer.precision", NAMES) == ["precision"]
    assert hparams_of_path("seed_everything", NAMES) == ["seed"]
    assert hparams_of_path("trainer.max_steps", NAMES) == []
    assert hparams_of_path("trainer.callbacks+", NAMES) == []


def test_overrides_come_before_the_core_hyperparameters():
    paths = ["model.activation", "model.norm", "trainer.max_steps"]
    assert key_hparams(NAMES, paths) == ["activation", "norm", "model", "lr", "data/batch_size", "precision",
                                         "seed", "world_size"]
