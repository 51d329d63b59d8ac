"""Speed options: precision defaults, SpeedUp's fallbacks, and compiled norms equal to eager ones."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from normzoo.errors import ConfigError
from normzoo.models import CNNClassifier, MLPClassifier
from normzoo.norms import available_norms, create_norm_layer
from normzoo.speed import SpeedUp, compile_unavailable, resolve_precision


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend a CUDA GPU exists; the fixture's value sets whether it supports bfloat16."""

    def install(bf16: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)

    return install


@pytest.mark.parametrize("accelerator", ["auto", "gpu", "cuda", None])
def test_precision_defaults_to_bf16_mixed_on_a_bf16_gpu(fake_gpu, accelerator):
    fake_gpu(bf16=True)
    assert resolve_precision(None, accelerator) == "bf16-mixed"
    assert resolve_precision("32-true", accelerator) == "32-true"  # an explicit choice stays


def test_precision_falls_back_to_float16_on_an_older_gpu(fake_gpu):
    fake_gpu(bf16=False)
    assert resolve_precision(None, "gpu") is None  # Lightning's 32-true
    with pytest.warns(UserWarning, match="no bfloat16 support.*16-mixed"):
        assert resolve_precision("bf16-mixed", "gpu") == "16-mixed"


def test_precision_is_untouched_on_the_cpu(fake_gpu):
    fake_gpu(bf16=True)
    assert resolve_precision(None, "cpu") is None
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_an_unknown_compile_mode_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="'fastest' is not a torch.compile mode.*reduce-overhead"):
        SpeedUp(compile="fastest")


def make_images(count: int = 32) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, 3, 8, 8, generator=generator)
    return DataLoader(TensorDataset(x, (x.mean(dim=(1, 2, 3)) > 0).long()), batch_size=8)


def fit(model: L.LightningModule, callback: SpeedUp | None, trainer_kwargs, data: DataLoader, steps: int = 4) -> None:
    trainer = L.Trainer(**trainer_kwargs(max_steps=steps, callbacks=[callback] if callback else []))
    trainer.fit(model, data)


def small_cnn(norm: str = "bn") -> CNNClassifier:
    L.seed_everything(0, verbose=False)
    return CNNClassifier(input_shape=(3, 8, 8), num_classes=2, arch="resnet8", norm=norm, width_factor=0.25)


def test_cuda_graph_on_the_cpu_warns_and_trains_eagerly(trainer_kwargs):
    model = small_cnn()
    speed = SpeedUp(cuda_graph=True)
    with pytest.warns(UserWarning, match="CUDA graphs need a CUDA device and this run is on cpu"):
        fit(model, speed, trainer_kwargs, make_images())
    assert speed.applied == []
    assert getattr(model, "_compiled_call_impl", None) is None


def test_channels_last_is_off_by_default_on_the_cpu_and_skipped_without_convs(trainer_kwargs):
    cnn = small_cnn()
    fit(cnn, SpeedUp(), trainer_kwargs, make_images(), steps=1)
    first_conv = next(m for m in cnn.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.is_contiguous()  # auto: NHWC only on GPUs
    mlp = MLPClassifier(input_shape=(3, 8, 8), num_classes=2, depth=1, width=8)
    with pytest.warns(UserWarning, match="no Conv2d layers"):
        fit(mlp, SpeedUp(channels_last=True), trainer_kwargs, make_images(), steps=1)


def test_channels_last_on_the_cpu_warns_and_keeps_nchw(trainer_kwargs):
    """torch's CPU conv backward gets strided 1x1 NHWC weight gradients wrong now and then."""
    model = small_cnn()
    speed = SpeedUp(channels_last=True)
    with pytest.warns(UserWarning, match="applies on CUDA GPUs only.*wrong weight gradients"):
        fit(model, speed, trainer_kwargs, make_images(), steps=1)
    assert speed.applied == []


def test_compile_falls_back_without_a_cpp_compiler(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert "C++ compiler" in compile_unavailable(torch.device("cpu"))
    speed = SpeedUp(compile=True)
    with pytest.warns(UserWarning, match="torch.compile cannot run here.*training eagerly"):
        assert speed._compile_mode(torch.device("cpu")) is None


EAGER_BY_DESIGN = ("batch_renorm",)
"""Norms whose normalization runs eagerly inside torch.compile (``torch.compiler.disable``): a graph break."""


class AllNorms(nn.Module):
    """The given norms for conv maps, side by side on the same input."""

    def __init__(self, keys: tuple[str, ...], channels: int) -> None:
        super().__init__()
        self.norms = nn.ModuleDict({key: create_norm_layer(key, channels, dims=2) for key in keys})
        for index, parameter in enumerate(self.parameters()):  # non-trivial affines
            parameter.data.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(index))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {key: norm(x) for key, norm in self.norms.items()}


@pytest.mark.skipif(compile_unavailable(torch.device("cpu")) is not None, reason="torch.compile unavailable")
@torch._inductor.config.patch(fallback_random=True)  # noisy_bn draws eager's noise
@pytest.mark.parametrize(("keys", "fullgraph"), [
    (tuple(key for key in available_norms() if key not in EAGER_BY_DESIGN), True),
    (EAGER_BY_DESIGN, False),
], ids=["one-graph", "eager-by-design"])
def test_compiled_norms_equal_their_eager_modules(keys, fullgraph):
    """Outputs, input and parameter gradients and running statistics, after two training steps.

    Every norm but those eager by design compiles into one graph (``fullgraph=True`` refuses a graph
    break): one compilation for all of them, and a norm that breaks the graph fails here.
    """
    eager = AllNorms(keys, channels=8)
    compiled = AllNorms(keys, channels=8)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile(fullgraph=fullgraph)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        x = torch.randn(6, 8, 5, 5, generator=generator) * 3 + 1
        results = {}
        for name, module in (("eager", eager), ("compiled", compiled)):
            module.zero_grad()
            torch.manual_seed(1)
            inputs = x.clone().requires_grad_(True)
            outputs = module(inputs)
            weights = torch.linspace(-1, 1, x.numel()).view_as(x)
            sum((out * weights).sum() for out in outputs.values()).backward()
            results[name] = (outputs, inputs.grad)
        for key in keys:
            torch.testing.assert_close(results["compiled"][0][key], results["eager"][0][key], rtol=1e-4, atol=1e-5,
                                       msg=lambda text, key=key: f"{key}: {text}")
        torch.testing.assert_close(results["compiled"][1], results["eager"][1], rtol=1e-4, atol=1e-5)
        assert_same_tensors(dict(compiled.named_parameters()), dict(eager.named_parameters()), grad=True)
    assert_same_tensors(dict(compiled.named_buffers()), dict(eager.named_buffers()))


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], grad: bool = False) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in actual.items():
        value, reference = (tensor.grad, expected[name].grad) if grad else (tensor, expected[name])
        torch.testing.assert_close(value, reference, rtol=1e-4, atol=1e-5, msg=lambda text, n=name: f"{n}: {text}")


@pytest.mark.skipif(compile_unavailable(torch.device("cpu")) is not None, reason="torch.compile unavailable")
def test_a_compiled_fit_trains_like_the_eager_one(trainer_kwargs):
    weights = {}
    for compile_ in (False, True):
        model = small_cnn("gn")
        speed = SpeedUp(compile=compile_)
        fit(model, speed, trainer_kwargs, make_images(), steps=2)
        assert speed.applied == (["torch.compile (mode default)"] if compile_ else [])
        assert (getattr(model, "_compiled_call_impl", None) is not None) == compile_
        weights[compile_] = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-4, atol=1e-5)


def test_the_cli_reads_speed_options_and_redraws_the_progress_bar_when_metrics_change(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import TQDMProgressBar

    from normzoo.cli import NormZooCLI, own_arguments_only

    monkeypatch.setattr("normzoo.progress.interactive", lambda: True)  # on a terminal: the live bar
    common = ["--config", "configs/quickstart.yaml", "--runs_dir", str(tmp_path), "--trainer.accelerator", "cpu"]
    with own_arguments_only():
        cli = NormZooCLI(args=[*common, "--speed.compile", "max-autotune", "--speed.cuda_graph", "true"], run=False)
        quiet = NormZooCLI(args=[*common, "--trainer.enable_progress_bar", "false"], run=False)
    (speed,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, SpeedUp)]
    assert (speed.compile, speed.cuda_graph, speed.channels_last) == ("max-autotune", True, None)
    (bar,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, TQDMProgressBar)]
    assert bar.refresh_rate == 10  # the quickstart's log_every_n_steps
    assert cli.trainer.precision == "32-true"  # bf16-mixed is the default on GPUs only
    assert not [cb for cb in quiet.trainer.callbacks if isinstance(cb, TQDMProgressBar)]
