"""The README's Python examples run as written (a checkpoint path they cannot know aside)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from normzoo.norms import registry

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_python_examples_run(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.chdir(tmp_path)  # the examples write runs/ where they are run
    namespace: dict = {}
    blocks = python_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        code = "\n".join(line for line in block.splitlines() if "load_from_checkpoint" not in line)
        exec(compile(code, str(README), "exec"), namespace)
    assert namespace["logits"].shape == (8, 10)
    assert namespace["trainer"].global_step == 50  # the user's own LightningModule trained with normzoo parts
    assert [record["step"] for record in namespace["diagnostics"][1].history] == [0.0, 25.0]
    assert list((tmp_path / "runs" / "mine" / "lightning_logs" / "version_0").glob("events.out.tfevents.*"))

    from normzoo.models import MLP

    model = MLP(input_shape=(12,), num_classes=3, depth=2, width=16, norm="mean_only_bn")  # the README's norm
    assert model(torch.randn(4, 12)).shape == (4, 3)
    centred = namespace["MeanOnlyBatchNorm"](6)(torch.randn(5, 6, 3, 3) + 4)
    torch.testing.assert_close(centred.mean(dim=(0, 2, 3)), torch.zeros(6), atol=1e-5, rtol=0)
