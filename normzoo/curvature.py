"""The curvature of a loss: Hessian-vector products, the top Hessian eigenvalue, the Hessian trace.

Plain torch. ``HessianOperator`` runs a loss closure once, keeps the graph of its gradient
(``create_graph=True``) and then gives ``v -> H v`` by double backward through that graph: one
backward pass per product (one to three times a training step's cost), and never a dense Hessian
(``n`` parameters would take ``n^2`` numbers). On top of any such product:

- ``top_eigenvalue``: the largest (most positive) eigenvalue by the Lanczos method with full
  reorthogonalization. Each iteration is one product; it stops when the Ritz pair's residual
  bound proves the value accurate to ``tol`` relative, or after ``iterations``. A Ritz value never
  exceeds the largest eigenvalue, so an unconverged estimate errs low.
- ``hutchinson_trace``: ``tr H = E[z^T H z]`` over Rademacher vectors ``z`` (entries +-1), the
  mean of ``probes`` products with its standard error.

Random vectors come from a ``torch.Generator`` the caller passes, so both estimates are
deterministic given its seed. Vectors are flat: the parameters' values laid end to end.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Matvec = Callable[[Tensor], Tensor]
"""``v -> H v`` for a flat vector ``v`` of a symmetric operator ``H``; ``hutchinson_trace(batch=k)`` also passes
a ``(k, n)`` block of vectors, one per row, and expects their products in the same layout."""


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """The tensors laid end to end as one flat vector (in their common dtype)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """A flat vector cut into pieces shaped (and typed) like ``like``."""
    pieces = vector.split([t.numel() for t in like])
    return [piece.view_as(t).to(t.dtype) for piece, t in zip(pieces, like, strict=True)]


def twice_differentiable_attention() -> contextlib.AbstractContextManager:
    """Scaled dot-product attention on its math kernel inside the block: the fused kernels (flash, memory-efficient,
    the CPU's flash) have no second derivative, the math kernel's is autograd's. A no-op before torch 2.3."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


class HessianOperator:
    """The Hessian of one loss with respect to ``params``, as products ``v -> H v`` (double backward).

    The closure runs once, here: its loss is differentiated with ``create_graph=True`` and that
    graph is kept (until ``release``), so each product is one backward pass with no new forward.
    Attention in the closure runs on the math kernel (``twice_differentiable_attention``), so
    Transformers have products too.
    Parameters the loss does not use have zero rows. ``.grad`` is never touched.

    Args:
        closure: ``() -> scalar loss`` at the parameters' current values.
        params: the parameters (leaf tensors requiring grad) the Hessian is taken with respect to.
        reduce: applied to every flat product before it is returned, e.g. an average over DDP ranks
            (each rank then holds the Hessian of the rank-averaged loss).

    Example::

        hessian = HessianOperator(lambda: F.mse_loss(model(x), y), list(model.parameters()))
        estimate = top_eigenvalue(hessian.matvec, hessian.dim, generator=torch.Generator().manual_seed(0))
    """

    def __init__(self, closure: Callable[[], Tensor], params: Sequence[Tensor],
                 reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        self.params = list(params)
        with torch.enable_grad(), twice_differentiable_attention():
            loss = closure()
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        self.loss = loss.detach()
        self._grads: list[Tensor | None] = [g if g is not None and g.requires_grad else None for g in grads]
        self.reduce = reduce
        first = self.params[0]
        self.dtype = torch.promote_types(first.dtype, torch.float32)
        """The dtype of the flat vectors: the parameters' own, at least float32 (a bf16 basis loses the value)."""
        self.device = first.device

    @property
    def dim(self) -> int:
        """The number of parameters: the size of the flat vectors."""
        return sum(p.numel() for p in self.params)

    def matvec(self, vector: Tensor) -> Tensor:
        """``H v`` for a flat ``v``, or for each row of a ``(k, n)`` block (one vmapped backward pass:
        faster for small models, ``k`` times the memory of the graph's gradients)."""
        return self._product(range(len(self.params)), vector)

    def block(self, indices: Sequence[int]) -> Matvec:
        """``v -> H_SS v``: the Hessian restricted to ``params[i]`` for ``i`` in ``indices`` (the others held
        fixed), on flat vectors of those parameters only."""
        indices = list(indices)
        return lambda vector: self._product(indices, vector)

    def block_dim(self, indices: Sequence[int]) -> int:
        """The size of the flat vectors of ``block(indices)``."""
        return sum(self.params[i].numel() for i in indices)

    def release(self) -> None:
        """Drop the retained graph (its memory); no product can be taken afterwards."""
        self._grads = []

    def _product(self, indices: Sequence[int], vector: Tensor) -> Tensor:
        params = [self.params[i] for i in indices]
        batched = vector.dim() == 2
        rows = vector if batched else vector[None]
        pieces = [piece.reshape(len(rows), *p.shape).to(p.dtype)
                  for piece, p in zip(rows.split([p.numel() for p in params], dim=1), params, strict=True)]
        used = [(self._grads[i], piece if batched else piece[0]) for i, piece in zip(indices, pieces, strict=True)
                if self._grads[i] is not None]
        if not used:
            return torch.zeros_like(vector)
        products = torch.autograd.grad([g for g, _ in used], params, grad_outputs=[v for _, v in used],
                                       retain_graph=True, allow_unused=True, is_grads_batched=batched)
        flat = torch.cat([(torch.zeros_like(piece) if h is None else h.reshape(piece.shape)).reshape(len(rows), -1)
                          for h, piece in zip(products, pieces, strict=True)], dim=1).to(vector.dtype)
        flat = flat if batched else flat[0]
        return flat if self.reduce is None else self.reduce(flat)


def hvp(closure: Callable[[], Tensor], params: Sequence[Tensor], vectors: Sequence[Tensor]) -> list[Tensor]:
    """``H v``: one Hessian-vector product of the closure's loss (one forward, backward and double backward).

    ``vectors`` are shaped like ``params``; so is the result.
    """
    hessian = HessianOperator(closure, params)
    try:
        return unflatten(hessian.matvec(flatten(vectors).to(hessian.dtype)), params)
    finally:
        hessian.release()


@dataclass(frozen=True)
class Eigenvalue:
    """A Lanczos estimate of the largest eigenvalue.

    ``residual`` is ``||H y - value * y||`` for the unit Ritz vector ``y``: some eigenvalue of ``H``
    lies within it of ``value``. ``converged``: ``residual <= tol * |value|``, or the Krylov space
    was exhausted (then ``value`` is exact up to rounding).
    """

    value: float
    residual: float
    iterations: int
    converged: bool


@dataclass(frozen=True)
class Trace:
    """A Hutchinson estimate of the trace: the mean of ``probes`` samples ``z^T H z`` and its standard error
    (sample standard deviation over ``sqrt(probes)``; NaN with one probe)."""

    value: float
    stderr: float
    probes: int


def _random(generator: torch.Generator, shape: tuple[int, ...], kind: str, dtype: torch.dtype,
            device: torch.device) -> Tensor:
    """Draws from ``generator`` (on its own device, so they depend on the seed alone), moved to ``device``."""
    if kind == "rademacher":
        draws = torch.randint(0, 2, shape, generator=generator, device=generator.device)
        return (draws * 2 - 1).to(device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def top_eigenvalue(matvec: Matvec, dim: int, *, generator: torch.Generator, iterations: int = 20,
                   tol: float = 1e-3, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> Eigenvalue:
    """The largest eigenvalue of a symmetric operator, by Lanczos with full reorthogonalization.

    Starts from a Gaussian vector of ``generator``. Iteration ``k`` takes one product, inner products
    in ``dtype`` and the eigenvalues of the ``k x k`` tridiagonal matrix (float64); it stops when the top Ritz value's
    residual bound ``|beta_k s_k|`` is at most ``tol`` times its magnitude, when the Krylov space is
    exhausted (``beta`` ~ 0), or after ``min(iterations, dim)`` products. Memory: the Lanczos basis,
    ``iterations`` vectors of ``dim`` numbers.

    Raises:
        ValueError: ``iterations`` < 1, ``tol`` <= 0 or ``dim`` < 1.
    """
    if iterations < 1 or not tol > 0 or dim < 1:
        raise ValueError(f"top_eigenvalue needs iterations >= 1, tol > 0 and dim >= 1; got {iterations}, {tol}, {dim}.")
    device = torch.device(device) if device is not None else torch.device("cpu")
    steps = min(iterations, dim)
    basis = torch.empty((steps, dim), dtype=dtype, device=device)
    q = _random(generator, (dim,), "gaussian", dtype, device)
    basis[0] = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    value, residual = math.nan, math.inf
    for k in range(steps):
        w = matvec(basis[k])
        alphas.append(float(torch.dot(w, basis[k])))
        done = basis[: k + 1]
        for _ in range(2):  # full reorthogonalization, twice (Kahan: "twice is enough")
            w = w - done.T @ (done @ w)
        beta = float(w.norm())
        tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
        ritz_values, ritz_vectors = torch.linalg.eigh(tridiagonal)
        value = float(ritz_values[-1])
        residual = abs(beta * float(ritz_vectors[-1, -1]))
        exhausted = k + 1 == dim or beta <= 1e-10 * max(float(ritz_values.abs().max()), 1e-300)
        if residual <= tol * abs(value) or exhausted:
            return Eigenvalue(value, residual, k + 1, True)
        if k + 1 < steps:
            betas.append(beta)
            basis[k + 1] = w / beta
    return Eigenvalue(value, residual, steps, False)


def hutchinson_trace(matvec: Matvec, dim: int, *, generator: torch.Generator, probes: int = 10, batch: int = 1,
                     dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Trace:
    """``tr H`` by Hutchinson's estimator: the mean of ``z^T H z`` over ``probes`` Rademacher vectors ``z``.

    Unbiased; its variance per probe is ``2 * sum_{i != j} H_ij^2`` (the off-diagonal mass), so the
    standard error shrinks as ``1 / sqrt(probes)``: a network's Hessian, whose mass is far from the
    diagonal, takes tens of thousands of probes for 1%. Cost: ``probes`` products, one host sync.
    With ``batch > 1`` the probes are drawn and multiplied ``batch`` at a time, as ``(batch, n)``
    blocks (see ``Matvec``); the draws then depend on ``batch`` as well as on the seed.

    Raises:
        ValueError: ``probes``, ``batch`` or ``dim`` < 1.
    """
    if probes < 1 or batch < 1 or dim < 1:
        raise ValueError(f"hutchinson_trace needs probes, batch and dim >= 1; got {probes}, {batch}, {dim}.")
    device = torch.device(device) if device is not None else torch.device("cpu")
    samples = []
    for start in range(0, probes, batch):
        count = min(batch, probes - start)
        if batch == 1:
            z = _random(generator, (dim,), "rademacher", dtype, device)
            samples.append(torch.dot(matvec(z), z).reshape(1))
        else:
            z = _random(generator, (count, dim), "rademacher", dtype, device)
            samples.append((matvec(z) * z).sum(dim=1))
    values = torch.cat(samples).double().cpu()
    stderr = float(values.std() / math.sqrt(probes)) if probes > 1 else math.nan
    return Trace(float(values.mean()), stderr, probes)
