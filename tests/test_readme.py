"""The README's Python examples run as written (a checkpoint path they cannot know aside)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from normzoo.norms import available_norms, cancels_bias, is_norm, norm_layers, registry, uses_batch_statistics

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
    without_bn, with_bn = (namespace["reports"][norm].layers[-1].stable_rank for norm in ("none", "bn"))
    assert without_bn < 1.2 and 2.0 < with_bn < 4.0  # "~1.0: every sample on one line; ~3 with BN"
    assert list((tmp_path / "runs" / "mine" / "lightning_logs" / "version_0").glob("events.out.tfevents.*"))

    from normzoo.models import MLP

    model = MLP(input_shape=(12,), num_classes=3, depth=2, width=16, norm="mean_only_bn")  # the README's norm
    assert model(torch.randn(4, 12)).shape == (4, 3)
    centred = namespace["MeanOnlyBatchNorm"](6)(torch.randn(5, 6, 3, 3) + 4)
    norms = [module for _, module in norm_layers(model)]  # the protocol's attributes reach the norm tools
    assert len(norms) == 2 and all(type(m).__name__ == "MeanOnlyBatchNorm" for m in norms)
    assert all(is_norm(m) and cancels_bias(m) and uses_batch_statistics(m) for m in norms)
    torch.testing.assert_close(centred.mean(dim=(0, 2, 3)), torch.zeros(6), atol=1e-5, rtol=0)


def test_readme_quotes_the_unknown_norm_message_as_the_cli_prints_it():
    from normzoo.errors import UnknownNormError
    from normzoo.norms import create_norm_layer

    quoted = re.search(r"`normzoo: error: (Unknown norm 'batchnorm'.*?)`", README.read_text()).group(1)
    try:
        create_norm_layer("batchnorm", 4, dims=1)
    except UnknownNormError as error:
        message = str(error)
    pieces = [piece.strip() for piece in quoted.split("...")]
    assert message.startswith(pieces[0]) and message.endswith(pieces[-1]), (quoted, message)


def layout_entries() -> dict[str, set[str]]:
    """The README's layout block: each folder it names, with the file names listed beside it."""
    block = re.search(r"## Layout\n\n```\n(.*?)```", README.read_text(), flags=re.DOTALL).group(1)
    entries: dict[str, set[str]] = {}
    folder = ""
    for line in block.splitlines():
        if not line.startswith(" "):
            head = line.split()[0]
            folder = head if head.endswith("/") else str(Path(head).parent) + "/"
            entries.setdefault(folder, set())
        entries[folder] |= set(re.findall(r"\b[\w]+\.(?:py|yaml|sh|md)\b", line))
    return entries


def test_readme_layout_names_files_that_exist_and_every_module_of_the_packages():
    root = README.parent
    entries = layout_entries()
    missing = [f"{folder}{name}" for folder, names in entries.items() for name in names
               if not list((root / folder).rglob(name))]
    assert missing == []
    for package in ("normzoo/norms/", "normzoo/models/", "normzoo/data/", "normzoo/studies/", "normzoo/report/"):
        modules = {path.name for path in (root / package).glob("*.py")} - {"__init__.py"}
        assert modules <= entries[package], (package, sorted(modules - entries[package]))
    top_level = {path.name for path in (root / "normzoo").glob("*.py")} - {"__init__.py", "__main__.py"}
    named_top_level = set().union(*(names for folder, names in entries.items() if folder == "normzoo/"))
    assert top_level <= named_top_level, sorted(top_level - named_top_level)


def glossary_patterns() -> list[re.Pattern]:
    """The README's tag glossary as regexes: a row's first column names tags that share the first one's prefix."""
    section = README.read_text().split("### Tag glossary", 1)[1].split("\n### ", 1)[0]
    patterns = []
    for row in re.findall(r"^\| (`.*?) \|", section, flags=re.MULTILINE):
        names = re.findall(r"`([^`]+)`", row)
        prefix = names[0].rsplit("/", 1)[0] + "/"
        for name in [names[0], *(name if "/" in name else prefix + name for name in names[1:])]:
            if "/" in name and not name.startswith(("train/", "val/", "test/", "zoo/")):
                name = "zoo/" + name
            patterns.append(re.compile(re.escape(name).replace(re.escape("<layer>"), "[^/]+") + "$"))
    return patterns


def test_readme_glossary_covers_every_tag_a_diagnostics_run_logs(tmp_path, monkeypatch):
    from normzoo.cli import main
    from tests.tb_events import load_events

    monkeypatch.chdir(README.parent)
    main(["fit", "--config", "configs/quickstart.yaml", "--config", "configs/diagnostics.yaml", "--runs_dir",
          str(tmp_path), "--trainer.max_steps", "23", "--trainer.val_check_interval", "23",
          "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    tags = load_events(tmp_path / "diagnostics" / "version_0").Tags()["scalars"]
    patterns = glossary_patterns()
    assert len(tags) > 40 and [tag for tag in tags if not any(p.match(tag) for p in patterns)] == []


def test_readme_norm_table_has_a_row_for_every_registered_norm_and_only_those():
    table = README.read_text().split("## The norms\n", 1)[1].strip().split("\n\n", 1)[0]
    keys = [key for row in re.findall(r"^\| (`[^|]*`) \|", table, flags=re.MULTILINE)
            for key in re.findall(r"`([^`]+)`", row)]
    assert sorted(keys) == available_norms()
