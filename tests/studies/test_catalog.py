"""``normzoo study``: the catalog is listed, every study's files are in the package, quick mode changes the cadence."""

from __future__ import annotations

import pytest

from normzoo.cli import main
from normzoo.studies import MODES, STUDIES, plan_runs
from normzoo.studies.estimate import build
from normzoo.studies.spec import PACKAGE_ROOT


def test_study_list_prints_every_study_with_its_runs_and_claim(capsys):
    main(["study", "--list"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(STUDIES) == 7
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
    main(["study", "tutorial", "--tiny", "--dry-run", "--no-estimate", "--runs-dir", str(tmp_path), "--only", "bn",
          "--", "--seed_everything", "3"])
    out = capsys.readouterr().out
    (command,) = [line for line in out.splitlines() if line.strip().startswith("normzoo fit")]
    assert "--run_name bn" in command and command.endswith("--seed_everything 3 --runs_dir "
                                                           f"{tmp_path}/tutorial/tiny --run_name bn "
                                                           "--trainer.accelerator cpu --trainer.devices 1")
    assert not (tmp_path / "tutorial").exists()


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
