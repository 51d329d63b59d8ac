"""What a model computes, captured during one measured forward: activation inputs, layer inputs.

Activations are caught where they are computed, not where modules happen to be: a
``TorchFunctionMode`` sees every call of an activation function during the block, whether
it comes from a module (``nn.ReLU``), a function (``torch.relu``, ``F.gelu``) or a tensor
method (``x.sigmoid()``). Each call's input is copied before the function runs, so an
in-place nonlinearity (``nn.ReLU(inplace=True)``) cannot overwrite it.

Sites are named after the module that computes them: an activation module by its own
path (``layer1.0.relu``), a functional activation by the calling module's path and the
function's name (``encoder.relu``; ``relu`` in the LightningModule's own forward). A
site computed several times per forward gets one name per call, in call order:
``layer1.0.relu``, ``layer1.0.relu#2``, ... (torchvision's BasicBlock calls its ReLU twice,
on different inputs; pooling them would mix two distributions). Other named layers
(``layers=["features.1"]``, a BN layer) have their inputs captured by a forward pre-hook,
per call in the same way. Each capture also notes the weight layer called last before it, which
names the layer in the tags. A function called inside a norm layer is part of that layer, not an
activation site: DyT's ``tanh``, EvoNorm-S0's ``sigmoid`` (a norm-activation layer is measured as a norm).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from normzoo.callbacks.layer_names import LastWeightLayer, tracking_weight_layers
from normzoo.norms import is_norm

ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                      nn.Softplus, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish)
"""Modules whose job is one nonlinearity: their calls are named after the module itself."""

ACTIVATION_FUNCTIONS = frozenset({"relu", "relu6", "leaky_relu", "prelu", "elu", "selu", "celu", "gelu", "silu",
                                  "mish", "softplus", "tanh", "sigmoid", "hardtanh", "hardsigmoid", "hardswish"})
"""Function names (``torch.relu``, ``F.gelu``, ``Tensor.sigmoid``, in-place ``relu_`` too) that are activations."""

SATURATING = frozenset({"tanh", "sigmoid"})
"""Activations with flat tails on both sides, measured by saturation rather than by death."""


def activation_kind(function: Any) -> str | None:
    """The activation a torch function computes (``"relu"`` for ``torch.relu_``), or None if it is none."""
    name = getattr(function, "__name__", "").rstrip("_")
    return name if name in ACTIVATION_FUNCTIONS else None


def site_root(name: str) -> str:
    """A site's name without its call number: ``layer1.0.relu#2`` -> ``layer1.0.relu``."""
    return name.split("#", 1)[0]


class Captured(dict):
    """Site name -> the captured input (detached copy), plus each site's activation kind and the weight
    layer the forward called last before it (``normzoo.callbacks.layer_names``)."""

    def __init__(self, weight_layers: LastWeightLayer | None = None) -> None:
        super().__init__()
        self.kinds: dict[str, str | None] = {}
        self.weight_of: dict[str, str | None] = {}
        self._weight_layers = weight_layers or LastWeightLayer()
        self._calls: dict[str, int] = {}

    def add(self, root: str, kind: str | None, value: Tensor, wanted: set[str] | None) -> None:
        """Record one call of site ``root``; keep a copy of its input if its numbered name is wanted."""
        calls = self._calls.get(root, 0) + 1
        self._calls[root] = calls
        name = root if calls == 1 else f"{root}#{calls}"
        self.kinds[name] = kind
        self.weight_of[name] = self._weight_layers.last
        if wanted is None or name in wanted:
            self[name] = value.detach().clone()


class _ModuleStack:
    """Forward pre- and post-hooks on every module, keeping the path of the module now running."""

    def __init__(self, model: nn.Module) -> None:
        self.paths: list[tuple[str, nn.Module]] = []
        self.handles = []
        for path, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(self._enter(path), prepend=True))
            self.handles.append(module.register_forward_hook(self._leave, always_call=True))

    def _enter(self, path: str) -> Any:
        def enter(module: nn.Module, inputs: Any) -> None:
            self.paths.append((path, module))

        return enter

    def _leave(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.paths:
            self.paths.pop()

    def inside_norm(self) -> bool:
        """Whether a norm layer is running now (its own functions are not activation sites)."""
        return any(is_norm(module) for _, module in self.paths)

    def site(self, kind: str) -> str:
        """The name of an activation computed now: the activation module's path, or ``<caller>.<kind>``."""
        path, module = self.paths[-1] if self.paths else ("", None)
        if isinstance(module, ACTIVATION_MODULES):
            return path
        return f"{path}.{kind}" if path else kind

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class _ActivationMode(TorchFunctionMode):
    """Records the input of every activation function called inside it, before the function runs."""

    def __init__(self, stack: _ModuleStack, captured: Captured, wanted: set[str] | None) -> None:
        super().__init__()
        self.stack, self.captured, self.wanted = stack, captured, wanted

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        kind = activation_kind(func)
        if kind is not None and args and isinstance(args[0], Tensor) and not self.stack.inside_norm():
            self.captured.add(self.stack.site(kind), kind, args[0], self.wanted)
        return func(*args, **kwargs)


class _InputRecorder:
    """Forward pre-hook that keeps a copy of one layer's input at each of its calls."""

    def __init__(self, captured: Captured, name: str) -> None:
        self.captured, self.name = captured, name

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if inputs and isinstance(inputs[0], Tensor):
            self.captured.add(self.name, None, inputs[0], wanted=None)


@contextmanager
def capture(
    model: nn.Module, sites: Sequence[str] | None = None, layers: Sequence[str] = (), activations: bool = True
) -> Iterator[Captured]:
    """Capture what ``model`` computes inside the block; every hook and mode is gone afterwards.

    Args:
        model: the module whose submodules name the sites.
        sites: keep only these activation sites (with call numbers); None keeps every site
            (the names and kinds of all sites are recorded either way, in call order).
        layers: module paths whose inputs are captured by pre-hook at every call (layers
            that are not activations, such as BN layers).
        activations: capture activation sites too.
    """
    wanted = None if sites is None else set(sites)
    modules = dict(model.named_modules())
    with ExitStack() as stack:
        captured = Captured(stack.enter_context(tracking_weight_layers(model)))
        handles = [modules[name].register_forward_pre_hook(_InputRecorder(captured, name)) for name in layers]
        stack.callback(lambda: [handle.remove() for handle in handles])
        if activations:
            module_stack = _ModuleStack(model)
            stack.callback(module_stack.remove)
            stack.enter_context(_ActivationMode(module_stack, captured, wanted))
        yield captured


LAST_SITE = "last"
"""In ``layers=``, the last activation site the forward computes (an MLP's last hidden nonlinearity, the last
conv layer's in a VGG): a rule, so that "the last layer" is not an index into a model's table."""


def resolve_layers(names: Sequence[str], kinds: dict[str, str | None]) -> list[str]:
    """``names`` with ``LAST_SITE`` replaced by the last activation site in ``kinds`` (site -> kind, in call order).

    ``LAST_SITE`` stays as it is when the forward computes no activation, so that it is reported as missing.
    """
    activations = [site for site, kind in kinds.items() if kind is not None]
    return [activations[-1] if name == LAST_SITE and activations else name for name in names]


DEFAULT_MAX_SITES = 12
"""Above this many candidates, the default selection keeps one per stage (see ``select_per_stage``)."""


def select_per_stage(names: Sequence[str], limit: int = DEFAULT_MAX_SITES) -> list[str]:
    """A readable default subset of ``names`` (dotted module paths, in forward order).

    All of them when there are at most ``limit``. Otherwise one per stage, the last of each:
    the stages are the groups of the shallowest level of the module tree at which the names
    split (torchvision's ResNet-18: the stem, ``layer1`` ... ``layer4``, ``fc``); if there are
    still more than ``limit`` stages, ``limit`` of them evenly spaced, the last included.
    """
    names = list(dict.fromkeys(names))
    if len(names) <= limit:
        return names
    parts = [site_root(name).split(".") for name in names]
    depth = 0
    while len({tuple(p[: depth + 1]) for p in parts}) < 2 and depth < max(len(p) for p in parts):
        depth += 1
    last: dict[tuple[str, ...], str] = {}
    for name, path in zip(names, parts, strict=True):
        last[tuple(path[: depth + 1])] = name
    chosen = list(last.values())
    if len(chosen) > limit:
        step = (len(chosen) - 1) / (limit - 1)
        chosen = [chosen[round(i * step)] for i in range(limit)]
    return chosen
