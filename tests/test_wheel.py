"""The built wheel installs into a fresh virtual environment and works, studies included, outside the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from normzoo.studies import STUDIES

ROOT = Path(__file__).resolve().parents[1]


def readme_import_example() -> str:
    """The README's "From Python" import example, less the line that needs a checkpoint."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    (block,) = [b for b in blocks if "backbone = ResNet(" in b]
    return "\n".join(line for line in block.splitlines() if "load_from_checkpoint" not in line)


def run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_the_readme_example_outside_the_repository(tmp_path):
    source = tmp_path / "source"  # a copy, so that the build leaves the checkout untouched
    shutil.copytree(ROOT / "normzoo", source / "normzoo", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
         str(source)], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("normzoo-*.whl")
    assert {"normzoo/py.typed", "normzoo/cli.py", "normzoo/callbacks/gradient_ics.py",
            "normzoo/configs/quickstart.yaml", "normzoo/configs/cifar10/vgg.yaml",
            "normzoo/studies/catalog/santurkar.quick.yaml"} <= set(zipfile.ZipFile(wheel).namelist())

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site_packages = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             cwd=tmp_path).strip())
    (site_packages / "reuse_installed_torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = readme_import_example() + "\nimport normzoo\nprint(normzoo.__file__)\nprint(tuple(logits.shape))\n"
    location, shape = run([str(python), "-c", code], cwd=elsewhere).strip().splitlines()[-2:]
    assert Path(location).is_relative_to(site_packages)  # the installed wheel, not the checkout
    assert shape == "(8, 10)"
    assert "fit" in run([str(venv / "bin" / "normzoo"), "--help"], cwd=elsewhere)

    studies = run([str(venv / "bin" / "normzoo"), "study", "--list"], cwd=elsewhere).splitlines()
    assert [line.split()[0] for line in studies] == list(STUDIES)
    plan = run([str(venv / "bin" / "normzoo"), "study", "tutorial", "--tiny", "--dry-run", "--runs-dir", "runs"],
               cwd=elsewhere)  # the estimate builds every run from the installed configs
    assert "Estimated time" in plan and f"--config {site_packages}/normzoo/studies/catalog/tutorial.yaml" in plan
    assert not (elsewhere / "runs").exists()
