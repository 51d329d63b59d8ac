"""What one forward computes, as signal propagation measures it: layer outputs, residual branches and skips.

``SignalTrace`` is a ``TorchFunctionMode`` plus a pre- and a post-hook on every module. While it
is active it hands its sink each tensor to measure at the moment the tensor is computed, so an
in-place operation later in the forward (``out += identity``, ``ReLU(inplace=True)``) cannot
change what is measured:

- ``sink.layer(name, output)``: the output of every activation function (modules, functions and
  tensor methods alike), named as ``normzoo.callbacks.capture`` names activation sites
  (``layer1.0.relu``, ``encoder.gelu``, ``#2`` for a site's later calls); with ``layers=``, only
  the named sites, plus the outputs of the named modules (``features.3``, ``features.3#2``);
  by default also the output of each residual block that is no activation's output (a
  pre-activation block ends with its addition);
- ``sink.residual(name, branch, skip)``: the two operands of each residual block's addition.

Only tensors of the measured batch are layers: at least two dimensions, the batch first
(a gate computed from a parameter alone is not one).

The residual rule. A module call is a residual block when, in its own ``forward`` (not inside
a child), it adds (``+``, ``+=``, ``torch.add``) two tensors of the same shape of which one is a
skip: the block's input itself, or the output of one of its direct children called on that
input (a projection shortcut, torchvision's ``downsample``). The other operand is the branch.
When both operands are skips, the block's input wins, then the child with fewer parameters
(``self.residual(x) + self.shortcut(x)``); a tie (``x + x``) is no residual block. The first
such addition of a call counts, so a transformer layer's attention addition is its block's.
This finds normzoo's ``BasicBlock`` (branch: ``conv2``'s output; skip: ``shortcut``'s) and
torchvision's ``BasicBlock`` and ``Bottleneck`` (branch: ``bn2``'s / ``bn3``'s output; skip: the
input or ``downsample``'s output). A block whose skip passes through other code first (a
pre-activation block whose shortcut takes the activated input) is named with ``residual_blocks=``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from normzoo.callbacks.capture import ACTIVATION_MODULES, activation_kind, site_root
from normzoo.errors import ConfigError

ResidualSpec = Mapping[str | type, tuple[str, str | None]]
"""``residual_blocks=``: a block's path, or a block class (all its instances), -> ``(branch, skip)``,
the names of the block's submodules whose outputs are the branch and the skip (``None``: the
block's input). An instance of a class key that lacks the skip submodule (torchvision's
``downsample = None``) uses its input."""

ADDITIONS = frozenset({"add", "add_", "__add__", "__iadd__", "__radd__"})
"""Names of the torch functions and tensor methods that add two tensors."""


class SignalSink(Protocol):
    """What a ``SignalTrace`` hands the tensors it finds to."""

    def layer(self, name: str, output: Tensor) -> None: ...

    def residual(self, name: str, branch: Tensor, skip: Tensor) -> None: ...


@dataclass
class _Call:
    """One running module call: its name, its input, and what the residual rule needs of it."""

    name: str
    path: str
    module: nn.Module
    input: Tensor | None
    spec: tuple[str, str | None] | None = None
    """Explicit ``(branch path, skip path or None)`` of a block named in ``residual_blocks``."""
    on_input: list[tuple[Tensor, nn.Module]] = field(default_factory=list)
    saved: dict[str, Tensor] = field(default_factory=dict)
    residual: bool = False


def _joined(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _skip_cost(call: _Call, tensor: Tensor) -> int | None:
    """How plain a skip ``tensor`` is in ``call``: 0 for the input itself, 1 + the parameters of the
    direct child that computed it from the input, None if it is neither."""
    if tensor is call.input:
        return 0
    for output, child in call.on_input:
        if tensor is output:
            return 1 + sum(p.numel() for p in child.parameters())
    return None


def branch_and_skip(call: _Call, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
    """The residual rule (module docstring) on one addition ``a + b`` in ``call``: ``(branch, skip)`` or None."""
    cost_a, cost_b = _skip_cost(call, a), _skip_cost(call, b)
    if cost_a is None and cost_b is None or cost_a == cost_b:
        return None
    if cost_b is None or (cost_a is not None and cost_a < cost_b):
        return (b, a) if not isinstance(b, nn.Parameter) else None
    return (a, b) if not isinstance(a, nn.Parameter) else None


class SignalTrace(TorchFunctionMode):
    """Inside ``with SignalTrace(...)``, the model's forward reports what it computes to ``sink`` (module docstring).

    Args:
        model: the module whose submodules name what is found.
        sink: receives the layers and residual blocks.
        batch_size: samples in the measured batch: tensors of another first dimension are not layers.
        layers: names of activation sites and module calls to measure; None: every activation
            site and every residual block output that is no activation's output.
        residual_blocks: the blocks to measure and their branch and skip (``ResidualSpec``);
            None: the residual rule; ``{}``: none.

    Raises:
        ConfigError: ``residual_blocks`` names a module the model does not have.
    """

    def __init__(self, model: nn.Module, sink: SignalSink, batch_size: int, layers: Sequence[str] | None = None,
                 residual_blocks: ResidualSpec | None = None) -> None:
        super().__init__()
        self.model, self.sink, self.batch_size = model, sink, batch_size
        self.wanted = None if layers is None else set(layers)
        self.paths = {id(module): path for path, module in model.named_modules()}
        self.modules = modules = dict(model.named_modules())
        self.watched = {site_root(name) for name in layers or () if site_root(name) in modules
                        and not isinstance(modules[site_root(name)], ACTIVATION_MODULES)}
        self.specs = None if residual_blocks is None else _resolve_specs(model, residual_blocks)
        self.seen: list[str] = []
        """Every name that could be measured, in forward order (for a message naming the valid ones)."""
        self.problems: list[str] = []
        self.stack: list[_Call] = []
        self.last_activation: Tensor | None = None
        self._module_calls: dict[str, int] = {}
        self._site_calls: dict[str, int] = {}
        self._handles: list[Any] = []
        self._busy = False
        """True while this trace's own code runs: its tensor operations are not the model's."""

    def __enter__(self) -> SignalTrace:
        for module in self.model.modules():
            self._handles.append(module.register_forward_pre_hook(self._enter, prepend=True))
            self._handles.append(module.register_forward_hook(self._leave, always_call=True))
        try:
            return super().__enter__()
        except BaseException:
            self._remove_hooks()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._remove_hooks()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self._busy:
            return func(*args, **kwargs)
        if self.specs is None and getattr(func, "__name__", "") in ADDITIONS and len(args) >= 2 \
                and kwargs.get("alpha", 1) == 1:
            self._addition(args[0], args[1])
        result = func(*args, **kwargs)
        kind = activation_kind(func)
        if kind is not None and isinstance(result, Tensor):
            self._activation(kind, result)
        return result

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _numbered(self, counts: dict[str, int], root: str) -> str:
        counts[root] = counts.get(root, 0) + 1
        return root if counts[root] == 1 else f"{root}#{counts[root]}"

    def _is_layer(self, tensor: Any) -> bool:
        return isinstance(tensor, Tensor) and tensor.dim() >= 2 and tensor.shape[0] == self.batch_size

    def _offer(self, name: str, output: Tensor) -> None:
        """A candidate layer: measured if wanted."""
        if self._is_layer(output):
            self.seen.append(name)
            if self.wanted is None or name in self.wanted:
                self.sink.layer(name, output)

    def _activation(self, kind: str, result: Tensor) -> None:
        path, module = (self.stack[-1].path, self.stack[-1].module) if self.stack else ("", None)
        root = path if isinstance(module, ACTIVATION_MODULES) else _joined(path, kind)
        self._offer(self._numbered(self._site_calls, root), result)
        self.last_activation = result

    def _addition(self, a: Any, b: Any) -> None:
        call = self.stack[-1] if self.stack else None
        if call is None or call.residual or call.input is None or not isinstance(a, Tensor) \
                or not isinstance(b, Tensor) or a.shape != b.shape or not a.is_floating_point():
            return
        pair = branch_and_skip(call, a, b)
        if pair is not None and self._is_layer(a):
            call.residual = True
            self.sink.residual(call.name, *pair)

    def _enter(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        path = self.paths.get(id(module), "")
        name = self._numbered(self._module_calls, path or type(module).__name__)
        first = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
        call = _Call(name, path, module, first, spec=self._spec(path, module))
        if call.spec is not None and call.spec[1] is None and first is not None:
            self._busy = True
            try:
                call.saved["skip"] = first.detach().clone()
            finally:
                self._busy = False
        self.stack.append(call)

    def _leave(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not self.stack or self.stack[-1].module is not module:
            return
        self._busy = True
        try:
            self._finish(self.stack.pop(), inputs, output)
        finally:
            self._busy = False

    def _finish(self, call: _Call, inputs: tuple[Any, ...], output: Any) -> None:
        """A module call returned: what it means for its parent, the explicit blocks around it, the layers."""
        module = call.module
        parent = self.stack[-1] if self.stack else None
        if parent is not None and isinstance(output, Tensor) and inputs and inputs[0] is parent.input:
            parent.on_input.append((output, module))
        if isinstance(output, Tensor):
            for block in reversed(self.stack):
                if block.spec is not None and call.path in block.spec:
                    block.saved["branch" if call.path == block.spec[0] else "skip"] = output.detach().clone()
                    break
        if call.spec is not None:
            self._explicit_residual(call)
        if call.path in self.watched or (self.wanted is None and call.residual and output is not self.last_activation):
            self._offer(call.name, output)

    def _spec(self, path: str, module: nn.Module) -> tuple[str, str | None] | None:
        """The explicit ``(branch path, skip path or None)`` of a block named in ``residual_blocks``."""
        if self.specs is None:
            return None
        spec = self.specs.get(path) or next((s for key, s in self.specs.items()
                                             if isinstance(key, type) and isinstance(module, key)), None)
        if spec is None:
            return None
        branch, skip = spec
        has_skip = skip is not None and _joined(path, skip) in self.modules
        return _joined(path, branch), _joined(path, skip) if has_skip else None

    def _explicit_residual(self, call: _Call) -> None:
        if {"branch", "skip"} <= call.saved.keys():
            call.residual = True
            self.sink.residual(call.name, call.saved["branch"], call.saved["skip"])
        else:
            missing = " and ".join(part for part in ("branch", "skip") if part not in call.saved)
            self.problems.append(f"residual_blocks: block {call.name!r} computed no {missing} tensor "
                                 f"(branch {call.spec[0]!r}, skip {call.spec[1] or 'the block input'!r})")


def _resolve_specs(model: nn.Module, residual_blocks: ResidualSpec) -> dict[str | type, tuple[str, str | None]]:
    """``residual_blocks`` checked against the model: every named block and submodule exists."""
    modules = dict(model.named_modules())
    specs: dict[str | type, tuple[str, str | None]] = {}
    for key, value in residual_blocks.items():
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str)
                and (value[1] is None or isinstance(value[1], str))):
            raise ConfigError(f"residual_blocks[{key!r}] must be (branch submodule, skip submodule or None), "
                              f"got {value!r}.")
        branch, skip = value
        if isinstance(key, type):
            blocks = [path for path, module in modules.items() if isinstance(module, key)]
            if not blocks:
                raise ConfigError(f"residual_blocks names the class {key.__name__}, but {type(model).__name__} "
                                  "has no module of that class.")
            required = [(path, branch) for path in blocks]
        elif key in modules:
            blocks = [key]
            required = [(key, name) for name in (branch, skip) if name is not None]
        else:
            raise ConfigError(f"residual_blocks names the block {key!r}, which {type(model).__name__} does not "
                              "have; use a module path (dict(model.named_modules())) or a block class.")
        for path, name in required:
            if _joined(path, name) not in modules:
                raise ConfigError(f"residual_blocks: the block {path or type(model).__name__!r} has no "
                                  f"submodule {name!r}.")
        specs[key] = (branch, skip)
    return specs
