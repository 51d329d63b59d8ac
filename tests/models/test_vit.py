"""The Vision Transformer family: per-token norms, the three placements, training, checkpoints, CLI, diagnostics.

The oracle (``reference_logits``) is the ViT written from its formulas in float64, with every norm
from its definition per token (BatchNorm: per channel over the batch and the tokens); timm's
``VisionTransformer`` checks the Pre-LN layout against an independent implementation.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from normzoo.cli import NormZooCLI, main, own_arguments_only
from normzoo.data import SyntheticDataModule
from normzoo.errors import ConfigError
from normzoo.models import VIT_VARIANTS, ViT, ViTClassifier
from normzoo.models.optim import decay_groups
from normzoo.models.vit import PLACEMENTS
from normzoo.norms import available_norms, brings_activation, is_norm
from normzoo.studies.estimate import quiet_lightning

ROOT = Path(__file__).resolve().parents[2]
TOKEN_NORMS = ("ln", "rms", "bn", "none", "dyt", "derf")
NORM_ACT = ("frn", "evonorm_b0", "evonorm_s0")
SHAPE = (3, 8, 8)  # 4x4 patches: 4 tokens


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_vit(norm: str = "ln", placement: str = "pre", **options) -> ViT:
    torch.manual_seed(0)
    return ViT("vit_mini", input_shape=options.pop("input_shape", SHAPE), num_classes=5, norm=norm,
               placement=placement, patch_size=4, **options)


# ----------------------------------------------------------------------------- the oracle


def reference_norm(kind: str, prefix: str, params: dict[str, Tensor], x: Tensor) -> Tensor:
    """The norm ``kind`` of tokens ``x`` (N, T, C), from its definition, with the layer's parameters."""
    if kind == "none":
        return x
    weight, bias = params.get(prefix + "weight"), params.get(prefix + "bias")
    if kind in ("ln", "bn"):
        dims = (-1,) if kind == "ln" else (0, 1)  # a token's features / a channel over batch and tokens
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)  # biased, as both normalize with
        return (x - mean) / torch.sqrt(var + 1e-5) * weight + bias
    if kind == "rms":
        return x / torch.sqrt((x**2).mean(dim=-1, keepdim=True) + 1e-6) * weight
    alpha = params[prefix + "alpha"]
    if kind == "dyt":  # Zhu et al. 2025
        return weight * torch.tanh(alpha * x) + bias
    assert kind == "derf"  # Chen et al. 2025
    return weight * torch.erf(alpha * x + params[prefix + "shift"]) + bias


def reference_logits(model: ViT, x: Tensor, kind: str, placement: str) -> Tensor:
    """The ViT of the module docstring in float64, from the formulas: patches, attention, GELU MLP, placements."""
    p = {name: value.detach().double() for name, value in model.state_dict().items()}
    x = x.double()
    dim, depth, heads = VIT_VARIANTS["vit_mini"]
    n, c, h, w = x.shape
    patches = x.reshape(n, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * 16)
    z = patches @ p["patch_embed.weight"].reshape(dim, -1).T + p["patch_embed.bias"] + p["pos_embed.embedding"]

    def linear(name: str, t: Tensor) -> Tensor:
        return t @ p[name + ".weight"].T + p[name + ".bias"]

    def attention(b: str, t: Tensor) -> Tensor:  # Vaswani et al. 2017, Eq. 1, per head
        q, k, v = (part.reshape(n, -1, heads, dim // heads) for part in linear(b + "attn.qkv", t).split(dim, -1))
        scores = torch.einsum("nthd,nshd->nhts", q, k) / math.sqrt(dim // heads)
        mixed = torch.einsum("nhts,nshd->nthd", scores.softmax(dim=-1), v).reshape(n, -1, dim)
        return linear(b + "attn.proj", mixed)

    def mlp(b: str, t: Tensor) -> Tensor:
        hidden = linear(b + "mlp.fc1", t)
        return linear(b + "mlp.fc2", 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2))))  # exact GELU

    def norm(name: str, t: Tensor) -> Tensor:
        return reference_norm(kind, name + ".", p, t)

    for i in range(depth):
        b = f"blocks.{i}."
        if placement == "pre":  # x + F(N(x))
            z = z + attention(b, norm(b + "norm1", z))
            z = z + mlp(b, norm(b + "norm2", z))
        elif placement == "post":  # N(x + F(x))
            z = norm(b + "norm1", z + attention(b, z))
            z = norm(b + "norm2", z + mlp(b, z))
        else:  # x + N_out(F(N_in(x)))
            z = z + norm(b + "norm1_out", attention(b, norm(b + "norm1", z)))
            z = z + norm(b + "norm2_out", mlp(b, norm(b + "norm2", z)))
    if placement != "post":
        z = norm("norm", z)
    return linear("head", z.mean(dim=1))


@pytest.mark.parametrize("norm", TOKEN_NORMS)
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_every_placement_and_norm_computes_the_formulas(placement, norm):
    model = tiny_vit(norm, placement).double().train()
    with torch.no_grad():  # off their init, so a swapped or missing affine parameter shows
        for name, param in model.named_parameters():
            if param.dim() == 1 and "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logits = model(x)
    assert logits.shape == (3, 5)
    torch.testing.assert_close(logits, reference_logits(model, x, norm, placement), rtol=1e-9, atol=1e-10)


def test_pre_norm_matches_timm_vision_transformer():
    timm = pytest.importorskip("timm")
    ours = tiny_vit("ln", "pre", norm_kwargs={"eps": 1e-6}).eval()  # timm's ViT LayerNorm eps
    theirs = timm.models.vision_transformer.VisionTransformer(
        img_size=8, patch_size=4, in_chans=3, num_classes=5, global_pool="avg", fc_norm=False, class_token=False,
        embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, qkv_bias=True).eval()
    state = ours.state_dict()
    state["pos_embed"] = state.pop("pos_embed.embedding").unsqueeze(0)
    state["patch_embed.proj.weight"] = state.pop("patch_embed.weight")
    state["patch_embed.proj.bias"] = state.pop("patch_embed.bias")
    theirs.load_state_dict(state)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- structure and refusals


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_post_norm_has_no_final_norm_and_pre_and_peri_have_one(placement):
    model = tiny_vit("ln", placement)
    norms = [name for name, module in model.named_modules() if is_norm(module)]
    depth = VIT_VARIANTS["vit_mini"][1]
    per_block = 4 if placement == "peri" else 2
    assert len(norms) == depth * per_block + (placement != "post")
    assert ("norm" in norms) == (placement != "post")
    tokens = model.tokens(torch.randn(2, *SHAPE) * 5 + 3)
    # every placement ends in a LayerNorm at its init (gamma 1, beta 0): each output token is standardized
    torch.testing.assert_close(tokens.mean(dim=-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.var(dim=-1, unbiased=False), torch.ones(2, 4), atol=1e-3, rtol=0)


def test_without_a_final_norm_the_tokens_are_not_standardized():
    tokens = tiny_vit("none", "pre").tokens(torch.randn(2, *SHAPE) * 5 + 3)
    assert tokens.mean(dim=-1).abs().max() > 0.1


@pytest.mark.parametrize("norm", NORM_ACT)
def test_a_norm_activation_layer_is_refused_with_the_per_token_norms(norm):
    with pytest.raises(ConfigError, match=rf"Norm '{norm}' .* is a norm-activation layer.*"
                                          r"per-token norm: ln, rms, bn, dyt, derf or none\."):
        tiny_vit(norm)


def test_every_registered_norm_builds_trains_a_step_and_round_trips_its_state_or_is_refused():
    """Each ``dims=1`` key works per token; only norm-activation layers and InstanceNorm (no tokens of its own) fail.
    After an SGD step, a second ViT built alike loads the state dict and computes the same in eval mode."""
    x, y = torch.randn(4, *SHAPE), torch.arange(4)
    refused = {}
    for norm in available_norms():
        try:
            model = tiny_vit(norm, "peri")
        except ConfigError as error:
            refused[norm] = str(error)
            continue
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        assert math.isfinite(loss.item()) and model.head.weight.grad.abs().sum() > 0, norm
        with torch.no_grad():
            for param in model.parameters():
                if param.grad is not None:
                    param.sub_(0.1 * param.grad)
        restored = tiny_vit(norm, "peri")
        restored.load_state_dict(model.state_dict())
        torch.testing.assert_close(restored.eval()(x), model.eval()(x), msg=norm)
    assert set(refused) == {*NORM_ACT, "in"}, sorted(refused)
    assert all("norm-activation" in refused[norm] for norm in NORM_ACT)


def test_point_wise_norms_are_registered_and_used():
    assert {"dyt", "derf"} <= set(available_norms())
    model = tiny_vit("dyt")
    assert type(model.blocks[0].norm1).__name__ == "DynamicTanh" and not brings_activation(model.blocks[0].norm1)


@pytest.mark.parametrize(("options", "message"), [
    ({"input_shape": (1, 28, 28), "patch_size": 8}, r"patch_size=8 does not divide the 28x28 .*\[1, 2, 4, 7, 14, 28\]"),
    ({"input_shape": (1, 12, 8), "patch_size": 3}, r"patch_size=3 .* one of \[1, 2, 4\]"),
    ({"input_shape": (20,)}, r"shape \(C, H, W\)"),
    ({"placement": "sandwich"}, r"Unknown norm placement 'sandwich'. Choose one of: pre, post, peri"),
    ({"variant": "vit_huge"}, r"Unknown ViT variant 'vit_huge'. Choose one of: vit_mini, vit_tiny, vit_small"),
    ({"init": "orthogonal"}, r"Unknown ViT init 'orthogonal'. Choose one of: trunc_normal, default, xavier"),
])
def test_bad_arguments_name_the_fix(options, message):
    options = {"variant": "vit_mini", "input_shape": SHAPE, **options}
    with pytest.raises(ConfigError, match=message):
        ViT(options.pop("variant"), **options)


def test_variants_have_their_published_shapes_and_28_pixel_images_take_49_tokens():
    model = ViT("vit_tiny", input_shape=(1, 28, 28))
    assert model.pos_embed.embedding.shape == (49, 192) and len(model.blocks) == 12
    assert model.blocks[0].attn.heads == 3 and model.blocks[0].mlp.fc1.out_features == 4 * 192
    assert VIT_VARIANTS == {"vit_mini": (64, 4, 4), "vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6)}


def test_default_init_is_truncated_normal_with_zero_biases_and_a_scheme_replaces_it():
    model = ViT("vit_tiny")
    qkv = torch.cat([block.attn.qkv.weight.flatten() for block in model.blocks])
    assert abs(qkv.std().item() - 0.02 * 0.88) < 0.001  # std of N(0, 0.02^2) truncated at 2 std: 0.88 * 0.02
    assert qkv.abs().max() <= 0.04 and model.pos_embed.embedding.abs().max() <= 0.04
    assert all(block.mlp.fc1.bias.abs().max() == 0 for block in model.blocks)
    xavier = ViT("vit_tiny", init="xavier").blocks[0].mlp.fc1.weight  # 192 -> 768: sqrt(2 / 960)
    assert abs(xavier.std().item() - math.sqrt(2 / 960)) < 0.002


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize(("placement", "norm"), [("pre", "ln"), ("post", "ln"), ("peri", "rms"), ("pre", "bn"),
                                                 ("pre", "dyt"), ("peri", "derf")])
def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(placement, norm):
    model = tiny_vit(norm, placement)
    generator = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, *SHAPE, generator=generator), torch.randint(0, 5, (16,), generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0], losses


@pytest.mark.parametrize("norm", TOKEN_NORMS)
def test_bf16_autocast_stays_finite_and_close(norm):
    model = tiny_vit(norm, "peri").eval()
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), model(x), atol=0.05, rtol=0.05)


def test_classifier_defaults_to_adamw_and_never_decays_one_dimensional_parameters_or_the_position_embedding():
    model = ViTClassifier(input_shape=SHAPE, num_classes=5)
    optimizer = model.configure_optimizers()
    assert type(optimizer).__name__ == "AdamW" and optimizer.defaults["lr"] == 1e-3
    assert optimizer.param_groups[0]["weight_decay"] == 0.05 and optimizer.param_groups[1]["weight_decay"] == 0.0
    decayed, undecayed = ({id(p) for p in group["params"]} for group in decay_groups(model))
    for name, param in model.named_parameters():
        if param.dim() < 2:  # norm gains, biases, DyT's alpha
            assert id(param) in undecayed, name
        elif name.endswith((".qkv.weight", ".proj.weight", ".fc1.weight", ".fc2.weight", "head.weight")):
            assert id(param) in decayed, name
    assert set(model.backbone.no_weight_decay()) <= {name for name, _ in model.backbone.named_parameters()}
    assert id(model.backbone.pos_embed.embedding) in undecayed  # 2-D, but exempted as in DeiT and timm
    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05}}
    assert type(ViTClassifier(input_shape=SHAPE, optimizer=sgd).configure_optimizers()).__name__ == "SGD"


def test_checkpoint_round_trip(tmp_path, trainer_kwargs):
    L.seed_everything(0)
    model = ViTClassifier(input_shape=SHAPE, num_classes=3, norm="bn", placement="peri")
    data = SyntheticDataModule(num_samples=48, input_shape=SHAPE, num_classes=3, batch_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(**trainer_kwargs(max_steps=2, limit_val_batches=1, num_sanity_val_steps=0))
    trainer.fit(model, data)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), "no parameter moved"
    path = tmp_path / "vit.ckpt"
    trainer.save_checkpoint(path)
    restored = ViTClassifier.load_from_checkpoint(path, map_location="cpu").eval()
    assert (restored.hparams.norm, restored.hparams.placement, restored.hparams.arch) == ("bn", "peri", "vit_mini")
    x = torch.randn(5, *SHAPE)
    torch.testing.assert_close(restored(x), model.eval()(x), rtol=0, atol=0)


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["normzoo"])


def test_mnist_config_fits_two_steps_on_mnist5k(tmp_path, at_root):
    main(["fit", "--config", "configs/mnist/vit.yaml", "--runs_dir", str(tmp_path), "--trainer.max_steps", "2",
          "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false"])
    checkpoint = torch.load(tmp_path / "vit" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2
    hparams = checkpoint["hyper_parameters"]
    assert tuple(hparams["input_shape"]) == (1, 28, 28) and hparams["num_classes"] == 10  # linked from the data
    assert (hparams["arch"], hparams["norm"], hparams["placement"]) == ("vit_mini", "ln", "pre")
    assert hparams["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert checkpoint["state_dict"]["backbone.pos_embed.embedding"].shape == (16, 64)  # 7x7 patches


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_cifar_config_builds_each_placement(placement, at_root):
    args = ["--config", "configs/cifar10/vit.yaml", "--model.placement", placement, "--model.norm", "dyt",
            "--model.arch", "vit_mini", "--trainer.logger", "false"]
    with quiet_lightning(), own_arguments_only():
        cli = NormZooCLI(args=args, run=False)
    model = cli.model
    assert isinstance(model, ViTClassifier) and tuple(model.hparams.input_shape) == (3, 32, 32)
    assert (model.backbone.norm is None) == (placement == "post")
    assert model.backbone.pos_embed.embedding.shape == (64, 64)


def test_cli_refuses_a_norm_activation_norm_in_one_line(at_root, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", "configs/mnist/vit.yaml", "--model.norm", "evonorm_s0", "--trainer.logger", "false"])
    assert stopped.value.code == 2
    assert "norm-activation layer" in capsys.readouterr().err


# ----------------------------------------------------------------------------- diagnostics


def fit_with(callbacks: list, norm: str, logger=False) -> dict[str, Tensor]:
    """Six steps of a ViT classifier on synthetic 8x8 images, on SDPA's default kernels: Sharpness differentiates
    twice, which the fused kernels cannot, and takes its Hessian products on the math kernel itself."""
    L.seed_everything(0)
    model = ViTClassifier(input_shape=SHAPE, num_classes=3, norm=norm, placement="pre")
    data = SyntheticDataModule(num_samples=64, input_shape=SHAPE, num_classes=3, batch_size=16)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=6, limit_val_batches=0, logger=logger,
                        callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, data)
    return model.state_dict()


@pytest.mark.parametrize("norm", ["bn", "ln"])
def test_every_diagnostic_measures_a_vit_and_leaves_training_bit_identical(norm, tmp_path):
    """As tests/callbacks/test_gallery.py runs them on other people's modules: finishes, logs, changes nothing."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from tests.callbacks.test_gallery import EVERY, diagnostics
    from tests.tb_events import custom_scalars_layout, load_events
    from tests.test_readme import glossary_patterns

    callbacks = diagnostics()
    measured = fit_with(callbacks, norm, TensorBoardLogger(str(tmp_path), name="vit", default_hp_metric=False))
    expected = {"activation_drift", "dead_units", "gradient_flow", "running_stats", "gradient_ics", "loss_landscape",
                "signal_propagation", "sharpness"} - ({"running_stats"} if norm != "bn" else set())
    stopped = {callback.name: callback.stopped for callback in callbacks if callback.stopped}
    assert set(stopped) == {c.name for c in callbacks} - expected, stopped
    assert "no weight whose output goes straight into a norm" in stopped["effective_lr"]  # no norm follows a weight
    events = load_events(next((tmp_path / "vit").glob("version_*")))
    scalars = events.Tags()["scalars"]
    glossary = glossary_patterns()
    assert [tag for tag in scalars if tag.startswith("zoo/") and not any(p.match(tag) for p in glossary)] == []
    for name in expected:
        tags = [tag for tag in scalars if tag.startswith(f"zoo/{name}/")]
        assert tags and all(events.Scalars(tag)[0].step % EVERY == 0 for tag in tags), f"{name} logged nothing"
    assert set(custom_scalars_layout(events)) >= {f"zoo/{c}" for c in expected - {"signal_propagation"}}

    by_name = {callback.name: callback.history[0] for callback in callbacks if callback.history}
    depth = VIT_VARIANTS["vit_mini"][1]
    gelus = {f"backbone.blocks.{i}.mlp.fc1" for i in range(depth)}  # each GELU is named after the fc1 it reads
    assert {key.rpartition("/")[0] for key in by_name["activation_drift"] if "/" in key} == gelus
    assert {key.rpartition("/")[0] for key in by_name["dead_units"] if "/" in key} == gelus
    assert {f"backbone.blocks.{i}/branch_skip_ratio" for i in range(depth)} <= set(by_name["signal_propagation"])
    if norm == "bn":  # all 9 BatchNorms (2 a block, the final one), named after the weight layer before each
        watched = {key.rpartition("/")[0] for key in by_name["running_stats"] if key.endswith("/var_gap")}
        assert len(watched) == 2 * depth + 1, sorted(watched)

    plain = fit_with([], norm)
    assert [key for key in plain if not torch.equal(plain[key], measured[key])] == []
