"""``normzoo study``: the catalog is listed, every study's files are in the package, runs are planned once per seed,
quick mode changes the cadence."""

from __future__ import annotations

from dataclasses import replace

import pytest

from normzoo.cli import main
from normzoo.errors import ConfigError
from normzoo.studies import MODES, STUDIES, TINY_ARGS, plan_runs
from normzoo.studies.estimate import build
from normzoo.studies.spec import PACKAGE_ROOT


def test_study_list_prints_every_study_with_its_runs_and_claim(capsys):
    main(["study", "--list"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(STUDIES) == 15
    for line, (name, study) in zip(lines, STUDIES.items(), strict=True):
        assert line.split()[:3] == [name, str(len(study.runs)), "runs"] and line.endswith(study.title)


def test_an_unknown_study_or_option_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["study", "santurkr"])
    assert exit_.value.code == 2
    assert "No study named 'santurkr'. Studies: ioffe_mnist, santurkar" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["study", "tutorial", "--fast"])
    assert exit_.value.code == 2 and "unrecognized arguments: --fast" in capsys.readouterr().err


@pytest.mark.parametrize("name", STUDIES)
def test_every_file_a_study_needs_is_in_the_package(name):
    study = STUDIES[name]
    for mode in MODES:
        paths = study.config_files(mode)  # raises if one is missing
        assert all(path.is_relative_to(PACKAGE_ROOT) for path in paths)


def test_a_study_runs_as_a_command_with_fit_arguments_after_the_dashes(tmp_path, capsys):
    main(["study", "tutorial", "--tiny", "--seeds", "2", "--dry-run", "--no-estimate", "--runs-dir", str(tmp_path),
          "--only", "bn", "--", "--trainer.max_steps", "2"])
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if line.strip().startswith("normzoo fit")]
    assert "2 runs (1 x 2 seeds)" in out and len(commands) == 2
    for seed, command in enumerate(commands):
        assert command.endswith(f"--seed_everything {seed} --trainer.enable_model_summary false "
                                f"{' '.join(TINY_ARGS)} --trainer.max_steps 2 --runs_dir {tmp_path}/tutorial/tiny "
                                f"--run_name bn_seed{seed} --trainer.accelerator cpu --trainer.devices 1")
    assert not (tmp_path / "tutorial").exists()


def test_every_run_trains_once_per_seed_3_in_quick_mode_5_in_full_mode(tmp_path):
    study = STUDIES["ioffe_mnist"]
    for mode, count in (("quick", 3), ("full", 5), ("tiny", 2)):
        planned = plan_runs(study, mode, tmp_path)
        assert [(run.study_run.name, run.seed) for run in planned] == [
            (name, seed) for seed in range(count) for name in ("bn", "none")]  # every run at seed 0 first
        assert all(run.fit_args[run.fit_args.index("--seed_everything") + 1] == str(run.seed) for run in planned)
        assert [run.folder.name for run in planned[:2]] == ["bn_seed0", "none_seed0"]
    assert len(plan_runs(study, "quick", tmp_path, seeds=1)) == 2
    own = replace(study, seeds={"full": 2})  # a study's own count for a mode
    assert own.seeds_for("full") == 2 and own.seeds_for("quick") == 3 and len(plan_runs(own, "full", tmp_path)) == 4
    with pytest.raises(ConfigError, match=r"set by the study, once per seed \(0 ... N-1\), not by the arguments after"):
        plan_runs(study, "quick", tmp_path, ["--seed_everything=3"])
    with pytest.raises(ConfigError, match="--seeds 0: a study trains each run with at least 1 seed"):
        plan_runs(study, "quick", tmp_path, seeds=0)
    with pytest.raises(ConfigError, match=r"the claim 'bn > gn on val/acc' names gn, not a run of the study"):
        replace(study, claims=("bn > gn on val/acc",))
    with pytest.raises(ConfigError, match="seeds"):
        replace(study, seeds={"quick": 0})


def callbacks_of(mode: str, tmp_path) -> dict[str, dict]:
    """The diagnostics callbacks santurkar's first run gets in ``mode``: class name -> its plain settings."""
    _, _, trainer = build(plan_runs(STUDIES["santurkar"], mode, tmp_path)[0])
    plain = (int, float, str, bool, list, tuple, type(None))
    return {type(cb).__name__: {key: value for key, value in vars(cb).items() if isinstance(value, plain)}
            for cb in trainer.callbacks if type(cb).__name__ in ("ActivationDrift", "GradientICS", "LossLandscape")}


def test_quick_mode_changes_only_the_cadence_of_a_studys_diagnostics(tmp_path):
    full, quick = callbacks_of("full", tmp_path), callbacks_of("quick", tmp_path)
    assert {name: c["every_n_steps"] for name, c in full.items()} == {"ActivationDrift": 500, "GradientICS": 1000,
                                                                      "LossLandscape": 500}
    assert {name: c["every_n_steps"] for name, c in quick.items()} == dict.fromkeys(full, 100)
    assert full["ActivationDrift"]["log_figure"] is False and full["LossLandscape"]["num_points"] == 8
    for name in full:
        assert [key for key in full[name] if full[name][key] != quick[name][key]] == ["every_n_steps"], name
