"""A study stopped by a signal stops its training runs too; a run is never trained by two processes; a rerun
with other overrides is refused rather than mixed into the same report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from normzoo.errors import ConfigError
from normzoo.studies import Study, StudyRun, run_study
from normzoo.studies.runner import claim_run

ROOT = Path(__file__).resolve().parents[2]

LONG_STUDY = """
import sys
from pathlib import Path
from normzoo.studies import Study, StudyRun, main
STUDY = Study(name="long", title="Long runs", claim="None.", configs=("configs/quickstart.yaml",),
              quick_configs=("normzoo/studies/catalog/mlp_sweep.quick.yaml",),
              runs=(StudyRun("a", ("--trainer.max_epochs", "200")), StudyRun("b", ("--trainer.max_epochs", "200"))),
              root=Path({root!r}))
sys.exit(main(STUDY))
"""


def alive_runs(runs_dir: Path) -> list[int]:
    """PIDs of live processes whose command line names ``runs_dir`` (the study's training runs)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode()
            except OSError:
                continue
            if str(runs_dir) in command and "normzoo" in command and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_a_signal_to_the_study_stops_and_saves_its_runs(tmp_path):
    script = tmp_path / "long_study.py"
    script.write_text(LONG_STUDY.format(root=str(ROOT)))
    runs = tmp_path / "runs"
    study = subprocess.Popen([sys.executable, str(script), "--quick", "--seeds", "1", "--jobs", "2", "--no-estimate",
                              "--runs-dir", str(runs)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    logs = runs / "long" / "quick" / "logs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # both runs training
        if all((logs / f"{n}_seed0.log").is_file() and "BatchNorm batch" in (logs / f"{n}_seed0.log").read_text()
               for n in "ab"):
            break
        time.sleep(0.5)
    assert len(alive_runs(runs)) >= 2
    study.send_signal(signal.SIGINT)  # to the study alone, as `kill -INT <pid>` does
    _, err = study.communicate(timeout=180)
    assert study.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "interrupted by SIGINT; its running runs were stopped and saved" in err
    assert alive_runs(runs) == []
    for name in ("a_seed0", "b_seed0"):
        assert (runs / "long" / "quick" / name / "version_0" / "checkpoints" / "last.ckpt").is_file()
        assert "SIGTERM stopped the fit at step" in (logs / f"{name}.log").read_text()


def test_a_run_claimed_by_another_process_is_left_to_it(tmp_path, capsys):
    study = Study(name="probe", title="t", claim="c", configs=("configs/quickstart.yaml",),
                  quick_configs=("normzoo/studies/catalog/mlp_sweep.quick.yaml",), runs=(StudyRun("only"),), root=ROOT)
    logs = tmp_path / "probe" / "tiny" / "logs"
    logs.mkdir(parents=True)
    held = claim_run(logs / "only_seed0.lock")  # as a study still training it would
    assert held is not None and claim_run(logs / "only_seed0.lock") is None
    try:
        assert run_study(study, "tiny", tmp_path, estimate=False, in_process=True, seeds=1) == 1
    finally:
        os.close(held)
    assert "only_seed0: another process is training it" in capsys.readouterr().out
    assert not (tmp_path / "probe" / "tiny" / "only_seed0").exists()  # nothing started, nothing deleted


def test_a_rerun_with_other_overrides_is_refused(tmp_path):
    study = Study(name="probe", title="t", claim="c", configs=("configs/quickstart.yaml",),
                  quick_configs=("normzoo/studies/catalog/mlp_sweep.quick.yaml",), runs=(StudyRun("only"),), root=ROOT)
    overrides = ["--optimizer.init_args.lr", "0.05"]
    assert run_study(study, "tiny", tmp_path, estimate=False, in_process=True, extra_args=overrides, seeds=1) == 0
    with pytest.raises(ConfigError, match=r"made with the overrides \['--optimizer.init_args.lr', '0.05'\], not none"):
        run_study(study, "tiny", tmp_path, estimate=False, in_process=True, seeds=1)
