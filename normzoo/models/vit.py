"""Small Vision Transformers (Dosovitskiy et al. 2021) for CIFAR-sized images, with any per-token norm and placement.

An image of ``(C, H, W)`` is cut into ``P x P`` patches (a conv with kernel = stride = P), each
patch a token of ``dim`` features; a learned position embedding is added; ``depth`` blocks of
multi-head self-attention and an MLP (GELU, hidden ratio 4) follow; the tokens are averaged
and a linear head classifies them. With the default patch of 4, a 32 x 32 CIFAR image is 64
tokens and a 28 x 28 MNIST digit 49.

Norms are per token: every norm layer gets the tokens flattened to rows, ``(N * T, C)``, and
reshaped back, so each ``dims=1`` registry key works unchanged: ``ln`` (LayerNorm over a token's
features, the ViT's own), ``rms``, ``bn`` (statistics per channel over the batch *and* the
tokens), the point-wise ``dyt``/``derf``, ``none``. A norm-activation layer (FRN, EvoNorm:
``normzoo.norms.brings_activation``) is refused: a transformer block has no activation after
its norms for it to replace.

Placement (``PLACEMENTS``), for a sub-layer ``F`` (attention or MLP) and a norm ``N``:

- ``pre``: ``x + F(N(x))``, and a final norm before the head: Pre-LN (Xiong et al. 2020, "On
  Layer Normalization in the Transformer Architecture", their Fig. 1(b)); the residual stream
  is never normalized, so gradients reach early blocks undiminished. ViT's and timm's layout.
- ``post``: ``N(x + F(x))`` and no final norm (the last block's output is already normalized):
  Post-LN, the original Transformer (Vaswani et al. 2017, Sec 3.1: "LayerNorm(x + Sublayer(x))").
  Xiong et al. show that its gradients near the output are large at initialization, which is
  why it needs a learning-rate warmup.
- ``peri``: ``x + N_out(F(N_in(x)))``, and a final norm as in ``pre``: Peri-LN (Kim et al. 2025,
  "Peri-LN: Revisiting Normalization Layer in the Transformer Architecture"), norms around each
  sub-layer as in Gemma 2; the output norm bounds what each sub-layer adds to the residual
  stream, whose variance then grows steadily with depth instead of exploding as in Pre-LN.

Pooling: global average over tokens, not a class token. Beyer, Zhai & Kolesnikov 2022 ("Better
plain ViT baselines for ImageNet-1k") find average pooling as good as the class token, and it
keeps every token alike, which matters here: a batch-statistics norm (``bn``) would otherwise
pool one learned constant token with the patch tokens in its per-channel statistics, and there
is no extra parameter to exempt from weight decay.

Init (``init=None``, the default, ``"trunc_normal"``): timm's recipe for ViTs, every ``nn.Linear``
weight (the head's too) and the position embedding drawn from a normal of std 0.02 truncated at
two standard deviations, linear biases zero, the patch conv left at PyTorch's default; norms at
their own init. ``init`` may instead name one of normzoo's schemes (``INIT_SCHEMES``: xavier,
kaiming, ...), applied by ``init_weights`` to the conv and every linear; the position embedding
keeps its std 0.02 then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normzoo.errors import ConfigError
from normzoo.models.layers import INIT_SCHEMES, init_weights, make_activation
from normzoo.norms import NormConstructor, NormSpec, brings_activation, get_norm_layer

Placement = Literal["pre", "post", "peri"]
PLACEMENTS: tuple[str, ...] = ("pre", "post", "peri")
"""Where the norms sit in a block: Pre-LN (Xiong et al. 2020), Post-LN (Vaswani et al. 2017), Peri-LN
(Kim et al. 2025)."""

# variant -> (embedding dim, depth, heads)
VIT_VARIANTS: dict[str, tuple[int, int, int]] = {
    "vit_mini": (64, 4, 4),  # a quick CPU model
    "vit_tiny": (192, 12, 3),  # DeiT-Ti (Touvron et al. 2021)
    "vit_small": (384, 12, 6),  # DeiT-S
}

DEFAULT_PATCH = 4
"""Patch side: 32 x 32 -> 64 tokens, 28 x 28 -> 49 tokens."""

MLP_RATIO = 4
"""The MLP's hidden width over the embedding width, as in ViT and DeiT."""

TRUNC_NORMAL_STD = 0.02
"""Std of the default init (``trunc_normal``), truncated at two standard deviations."""

VIT_INITS = ("trunc_normal", *INIT_SCHEMES)
"""The ``init`` values a ViT takes: timm's truncated normal (the default), or one of normzoo's schemes."""

PER_TOKEN_NORMS = "ln, rms, bn, dyt, derf or none"
"""The per-token norms an error message suggests."""


def per_token(norm: nn.Module, tokens: Tensor) -> Tensor:
    """``norm`` applied to each token: ``(N, T, C)`` flattened to ``(N * T, C)`` rows and reshaped back.

    Every ``dims=1`` norm then reads one token as one sample: LayerNorm and RMSNorm normalize a
    token's features; BatchNorm takes each channel's statistics over the batch and the tokens.
    """
    return norm(tokens.reshape(-1, tokens.shape[-1])).reshape(tokens.shape)


def token_norm_layer(norm: NormSpec, norm_kwargs: dict[str, Any] | None) -> NormConstructor:
    """A constructor of per-token norm layers (``get_norm_layer`` with ``dims=1``) that refuses norm-activation layers.

    A registry key whose layer exists for maps only (FRN, EvoNorm-B0 refuse ``dims=1``) is recognized
    by its maps layer, so every norm-activation key gets the same transformer-specific message.

    Raises:
        ConfigError: the norm is unknown, it is a norm-activation layer (``brings_activation``), or its
            factory refuses feature vectors.
    """
    norm_layer = get_norm_layer(norm, dims=1, **(norm_kwargs or {}))

    def refuse(layer: nn.Module) -> ConfigError:
        name = norm if isinstance(norm, str) else type(layer).__name__
        return ConfigError(
            f"Norm {name!r} ({type(layer).__name__}) is a norm-activation layer: its forward ends in its own "
            "nonlinearity, which replaces the activation after a norm, and a transformer block has none (its "
            f"norms feed attention, the MLP or the residual stream). Use a per-token norm: {PER_TOKEN_NORMS}."
        )

    def build(dim: int) -> nn.Module:
        try:
            layer = norm_layer(dim)
        except ConfigError:
            maps_layer = _maps_layer(norm, norm_kwargs, dim)
            if maps_layer is not None and brings_activation(maps_layer):
                raise refuse(maps_layer) from None
            raise
        if brings_activation(layer):
            raise refuse(layer)
        return layer

    return build


def _maps_layer(norm: NormSpec, norm_kwargs: dict[str, Any] | None, dim: int) -> nn.Module | None:
    """The ``dims=2`` layer of a registry key (to tell what kind of layer it is), or None where there is none."""
    if not isinstance(norm, str):
        return None
    try:
        return get_norm_layer(norm, dims=2, **(norm_kwargs or {}))(dim)
    except ConfigError:
        return None


class Attention(nn.Module):
    """Multi-head self-attention: ``softmax(Q K^T / sqrt(d_head)) V`` per head (Vaswani et al. 2017, Eq. 1),
    computed by ``torch.nn.functional.scaled_dot_product_attention``; one linear for Q, K, V, one for the output.

    SDPA's fused kernels (flash on CPU and CUDA, memory-efficient) have no double backward; a
    Hessian-vector product through this layer (``Sharpness``, ``normzoo.curvature``) needs the math
    kernel: ``with torch.nn.attention.sdpa_kernel([SDPBackend.MATH]):`` around the forward.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ConfigError(f"A ViT needs heads dividing the embedding dim, got dim={dim}, heads={heads}.")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v)  # (n, heads, t, d_head)
        return self.proj(attended.transpose(1, 2).reshape(n, t, d))


class FeedForward(nn.Module):
    """The block's MLP: ``fc2(GELU(fc1(x)))``, hidden width ``MLP_RATIO * dim``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_activation("gelu")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Attention then MLP, each a residual sub-layer with its norms placed as ``placement`` says (module docstring).

    ``norm1`` and ``norm2`` are the norms of the attention and of the MLP: their input's (``pre``,
    and ``peri``'s ``N_in``) or the residual sum's (``post``); ``peri`` adds ``norm1_out`` and
    ``norm2_out`` on the sub-layers' outputs.
    """

    def __init__(self, dim: int, heads: int, norm_layer: NormConstructor, placement: Placement) -> None:
        super().__init__()
        self.placement = placement
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, heads)
        self.norm1_out = norm_layer(dim) if placement == "peri" else None
        self.norm2 = norm_layer(dim)
        self.mlp = FeedForward(dim, MLP_RATIO * dim)
        self.norm2_out = norm_layer(dim) if placement == "peri" else None

    def forward(self, x: Tensor) -> Tensor:
        if self.placement == "pre":
            x = x + self.attn(per_token(self.norm1, x))
            return x + self.mlp(per_token(self.norm2, x))
        if self.placement == "post":
            x = per_token(self.norm1, x + self.attn(x))
            return per_token(self.norm2, x + self.mlp(x))
        assert self.norm1_out is not None and self.norm2_out is not None
        x = x + per_token(self.norm1_out, self.attn(per_token(self.norm1, x)))
        return x + per_token(self.norm2_out, self.mlp(per_token(self.norm2, x)))


class PositionEmbedding(nn.Module):
    """Adds a learned ``(tokens, dim)`` table to the tokens (ViT's 1-D position embedding), initialized at zero.

    Its own module, so the diagnostics name it (``pos_embed``) and ``init_weights`` schemes, which
    re-draw every module's ``weight``, leave it alone.
    """

    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(tokens, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.embedding


class ViT(nn.Module):
    """A Vision Transformer for ``(C, H, W)`` images: ``variant`` is vit_mini (the default), vit_tiny or vit_small.

    See the module docstring for the architecture, placements, pooling and init.

    Args:
        variant: a key of ``VIT_VARIANTS`` (embedding dim, depth, heads); None picks ``vit_mini``.
        input_shape: ``(C, H, W)`` of one sample; H and W must be multiples of the patch size.
        num_classes: outputs of the head.
        norm: a registered norm name or a constructor, applied per token (``dims=1``).
        norm_kwargs: options of the norm, e.g. ``{"eps": 1e-6}``.
        placement: ``pre``, ``post`` or ``peri`` (``PLACEMENTS``).
        patch_size: side of the square patches; None picks ``DEFAULT_PATCH`` (4).
        init: ``trunc_normal`` (None, the default) or a scheme of ``INIT_SCHEMES``.
        init_gain: multiplies the init's standard deviation.

    Raises:
        ConfigError: an unknown variant, placement or init; an input that is not ``(C, H, W)`` or whose
            sides the patch size does not divide; a norm-activation norm.
    """

    variants = VIT_VARIANTS
    default_variant = "vit_mini"

    def __init__(
        self,
        variant: str | None = None,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        norm: NormSpec = "ln",
        norm_kwargs: dict[str, Any] | None = None,
        placement: Placement = "pre",
        patch_size: int | None = None,
        init: str | None = None,
        init_gain: float = 1.0,
    ) -> None:
        super().__init__()
        variant = variant or self.default_variant
        if variant not in self.variants:
            raise ConfigError(f"Unknown ViT variant {variant!r}. Choose one of: {', '.join(self.variants)}.")
        if placement not in PLACEMENTS:
            raise ConfigError(f"Unknown norm placement {placement!r}. Choose one of: {', '.join(PLACEMENTS)}.")
        init = init or "trunc_normal"
        if init not in VIT_INITS:
            raise ConfigError(f"Unknown ViT init {init!r}. Choose one of: {', '.join(VIT_INITS)}.")
        if len(input_shape) != 3:
            raise ConfigError(
                f"A ViT needs image inputs of shape (C, H, W), got input_shape={tuple(input_shape)}. "
                "Use MLPClassifier for feature vectors."
            )
        channels, height, width = (int(size) for size in input_shape)
        patch = DEFAULT_PATCH if patch_size is None else int(patch_size)
        if patch < 1 or height % patch or width % patch:
            sides = [p for p in range(1, min(height, width) + 1) if height % p == 0 and width % p == 0]
            raise ConfigError(
                f"patch_size={patch} does not divide the {height}x{width} input into whole patches. Set patch_size "
                f"to one of {sides}, or resize or pad the images (e.g. data.pad_to: 32 with patch_size 4 or 8)."
            )
        dim, depth, heads = self.variants[variant]
        norm_layer = token_norm_layer(norm, norm_kwargs)
        self.placement = placement
        self.patch_embed = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        self.pos_embed = PositionEmbedding((height // patch) * (width // patch), dim)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, norm_layer, placement) for _ in range(depth)))
        self.norm = None if placement == "post" else norm_layer(dim)  # post-norm's last block output is normalized
        self.head = nn.Linear(dim, num_classes)
        self.reset_weights(init, init_gain)

    @torch.no_grad()
    def reset_weights(self, init: str = "trunc_normal", gain: float = 1.0) -> None:
        """Initialize as the module docstring says; norms keep their own init."""
        std = TRUNC_NORMAL_STD * gain
        nn.init.trunc_normal_(self.pos_embed.embedding, std=std, a=-2 * std, b=2 * std)
        if init != "trunc_normal":
            init_weights(self, init, gain)
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
                if module.bias is not None:
                    module.bias.zero_()

    def no_weight_decay(self) -> set[str]:
        """Parameter names an optimizer should not decay (timm's convention): the position embedding.

        normzoo's rule (``normzoo.models.optim.decay_groups``) decays every parameter with
        ``dim() >= 2``, this 2-D table included; ViT recipes (DeiT, timm) exempt it.
        """
        return {"pos_embed.embedding"}

    def tokens(self, x: Tensor) -> Tensor:
        """The patch tokens of a batch of images, ``(N, T, dim)``, after the last block (and final norm)."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, dim, H/P, W/P) -> (N, T, dim)
        x = self.blocks(self.pos_embed(x))
        return x if self.norm is None else per_token(self.norm, x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.tokens(x).mean(dim=1))

