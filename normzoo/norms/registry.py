"""Registry of interchangeable normalization layers: names -> constructors.

Shaped after timm's ``create_norm.py``: a plain dict from a name to a factory, with
``get_norm_layer`` resolving a name, class, callable or ``functools.partial`` into a
constructor that takes ``num_features`` first, and ``create_norm_layer`` building a module.
Unlike timm, one name covers both feature vectors (``dims=1``, MLPs) and conv maps
(``dims=2``, CNNs), and an unknown name is an error that lists the valid ones.

A registered factory has the signature ``factory(num_features, dims, **options)``;
registering a new norm takes a few lines and makes it nameable from YAML::

    from normzoo.norms import register_norm

    @register_norm("scaled_bn")
    def scaled_bn(num_features: int, dims: int, scale: float = 2.0) -> nn.Module:
        return nn.Sequential(create_norm_layer("bn", num_features, dims), Scale(scale))
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from normzoo.errors import ConfigError, UnknownNormError
from normzoo.norms.introspect import keeps_mean_and_variance
from normzoo.norms.layout import check_dims

NormFactory = Callable[..., nn.Module]
"""``factory(num_features, dims, **options) -> nn.Module``: what the registry stores."""

NormConstructor = Callable[..., nn.Module]
"""``constructor(num_features) -> nn.Module``: what models receive (the norm_layer convention)."""

NormSpec = str | type[nn.Module] | Callable[..., nn.Module]
"""A registry name, a module class, or any callable taking ``num_features`` first."""

_REGISTRY: dict[str, NormFactory] = {}


def register_norm(
    name: str, factory: NormFactory | None = None, *, overwrite: bool = False
) -> Any:
    """Register ``factory`` under ``name``; usable as a decorator or as a plain call.

    Args:
        name: the key users write (``norm: name`` in YAML, ``norm="name"`` in Python).
        factory: ``factory(num_features, dims, **options) -> nn.Module``. It raises
            ``ValueError`` for a ``dims`` it does not support.
        overwrite: replace an existing registration instead of refusing it.

    Raises:
        ValueError: the name is taken and ``overwrite`` is False.
    """

    def add(f: NormFactory) -> NormFactory:
        if name in _REGISTRY and not overwrite:
            raise ConfigError(
                f"A norm named {name!r} is already registered. Pick another name, or pass "
                "overwrite=True to replace it."
            )
        _REGISTRY[name] = f
        return f

    return add if factory is None else add(factory)


def available_norms() -> list[str]:
    """The registered norm names, sorted."""
    return sorted(_REGISTRY)


def get_norm_factory(name: str) -> NormFactory:
    """The factory registered under ``name``; raises ``UnknownNormError`` listing the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNormError(
            f"Unknown norm {name!r}. Registered norms: {', '.join(available_norms())}. "
            "Register a new one with normzoo.norms.register_norm."
        ) from None


def get_norm_layer(norm: NormSpec, dims: int = 2, **options: Any) -> NormConstructor:
    """Resolve ``norm`` into a constructor ``f(num_features) -> nn.Module``.

    Args:
        norm: a registry name, an ``nn.Module`` class, a callable or a ``functools.partial``;
            classes and callables are returned as they are (with ``options`` bound), since
            they already take ``num_features`` first.
        dims: 1 for feature vectors ``(N, C)``, 2 for conv maps ``(N, C, H, W)``; used by
            registry names only.
        **options: keyword arguments of the norm (``num_groups`` for ``gn``, ``eps``, ...).

    Raises:
        UnknownNormError: ``norm`` is a name that is not registered.
        ValueError: ``dims`` is not 1 or 2, or ``options`` names an argument the norm lacks.
    """
    check_dims(dims)
    if isinstance(norm, str):
        factory = get_norm_factory(norm)
        _check_options(norm, factory, options)
        return functools.partial(factory, dims=dims, **options)
    if callable(norm):
        return functools.partial(norm, **options) if options else norm
    raise TypeError(
        f"norm must be a registered name, an nn.Module class or a callable, got {type(norm).__name__}."
    )


def create_norm_layer(name: NormSpec, num_features: int, dims: int = 2, **options: Any) -> nn.Module:
    """Build one norm layer for ``num_features`` channels (see ``get_norm_layer``).

    Raises:
        ConfigError: ``num_features`` is not a positive integer, or the name or options are unknown.
    """
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
        raise ConfigError(f"A norm layer needs num_features >= 1 (the channels it normalizes), got {num_features!r}.")
    return get_norm_layer(name, dims=dims, **options)(num_features)


def norms_with_running_statistics() -> list[str]:
    """The registered norms whose layers (or a layer inside them) normalize eval inputs with running mean and
    variance buffers, BN-style: the names a message about missing running statistics offers."""
    names = []
    for name in available_norms():
        try:
            layer = create_norm_layer(name, 4, dims=2)
        except ConfigError:  # a norm that needs options or other shapes
            continue
        if any(keeps_mean_and_variance(module) for module in layer.modules()):
            names.append(name)
    return names


def _check_options(name: str, factory: NormFactory, options: dict[str, Any]) -> None:
    """Refuse option names the factory does not accept, listing the ones it does."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p in params if p not in ("num_features", "dims")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"Norm {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(accepted) or 'none'}."
        )
