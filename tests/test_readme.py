"""The README's Python examples run as written (a checkpoint path they cannot know aside)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from normzoo.norms import registry

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_python_examples_run(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    namespace: dict = {}
    blocks = python_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        code = "\n".join(line for line in block.splitlines() if "load_from_checkpoint" not in line)
        exec(compile(code, str(README), "exec"), namespace)
    assert namespace["logits"].shape == (8, 10)

    from normzoo.models import MLP

    model = MLP(input_shape=(12,), num_classes=3, depth=2, width=16, norm="rms")  # the README's own norm
    x = torch.randn(4, 12)
    assert model(x).shape == (4, 3)
    rms = namespace["RMSNorm"](6)(torch.randn(5, 6, 3, 3))
    torch.testing.assert_close(rms.pow(2).mean(dim=1), torch.ones(5, 3, 3), atol=1e-4, rtol=1e-4)
