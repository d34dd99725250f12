"""Spaces own everything shape-specific: noise, projection, broadcasting of per-sample
coefficients and per-sample reductions. Solvers never reshape data themselves.

* :class:`Euclidean` — ``x: [B, *S]``.
* :class:`Masked` — ``x: [B, *S]`` with a boolean ``mask`` (True = free entry). Noise is zero and
  values stay fixed where the mask is False; reductions count free entries only.
* :class:`Ragged` — PyG style ``x: [num_nodes, F]`` with ``batch: [num_nodes]`` graph index;
  a "sample" is a graph, so ``t`` is ``[num_graphs]``.
* :class:`CenterOfMass` — ragged (``batch``) or dense (``x: [B, N, D]`` + ``node_mask: [B, N]``)
  point clouds whose centre of mass is zero per molecule (EDM-style E(3) diffusion).
* :class:`SymmetricAdjacency` — ``x: [B, N, N, *C]`` symmetric in the two node axes with a zero
  diagonal, optional ``node_mask: [B, N]``.

Randomness: ``generator`` may be a ``torch.Generator``, a list of per-sample generators (one per
sample, so a sample does not depend on its batch), or a callable ``noise_fn(shape, dtype, device)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import torch
from torch import Tensor

from .process import uniform_value

Generator = Union[torch.Generator, Sequence[torch.Generator], Callable, None]

__all__ = [
    "Space",
    "Euclidean",
    "Masked",
    "Ragged",
    "CenterOfMass",
    "SymmetricAdjacency",
    "randn",
    "Generator",
    "coef",
    "scalar",
]


def coef(c: Tensor, x: Tensor, space: "Space"):
    """``space.bcast(c, x)``, or the plain Python float when ``c`` is a cached uniform
    coefficient from a process (see ``shared.process``): multiplying by a float needs no
    broadcast copy, which is most of the per-step cost of a sampling loop on small tensors."""
    u = uniform_value(c)
    return u if u is not None else space.bcast(c, x)


_SCALARS: dict[tuple[float, torch.dtype], Tensor] = {}
_SCALAR_DTYPES = (torch.float32, torch.float64)


def scalar(c: float, x: Tensor):
    """The Python float ``c`` as a cached 0-d tensor of ``x``'s dtype when ``x`` is a float32 /
    float64 CPU tensor, else ``c`` itself. Multiplying by a 0-d tensor gives the same result as
    multiplying by the float but skips wrapping the number into a tensor on every op, which is
    about half the cost of an elementwise op on a small tensor."""
    if not x.is_cpu or x.dtype not in _SCALAR_DTYPES:
        return c
    key = (c, x.dtype)
    s = _SCALARS.get(key)
    if s is None:
        if len(_SCALARS) > 8192:
            _SCALARS.clear()
        s = _SCALARS[key] = torch.tensor(c, dtype=x.dtype)
    return s


def randn(shape: Sequence[int], *, generator: Generator = None, dtype=torch.float32,
          device=None) -> Tensor:
    """Standard normal noise ``[*shape]`` from a generator, a per-sample list of generators
    (one per leading index) or a noise function ``fn(shape, dtype, device)``."""
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        dev = device
        if isinstance(generator, torch.Generator):
            dev = generator.device
        z = torch.randn(shape, generator=generator, dtype=dtype, device=dev)
        return z.to(device) if device is not None else z
    if callable(generator) and not isinstance(generator, (list, tuple)):
        return generator(shape, dtype, device)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"got {len(gens)} per-sample generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype, device=g.device)
                        for g in gens]).to(device)


class Space:
    """Base space: Euclidean semantics on ``x: [B, *S]``."""

    def batch_size(self, x: Tensor) -> int:
        return x.shape[0]

    def bcast(self, c: Tensor, x: Tensor) -> Tensor:
        """Per-sample coefficient ``c: [B]`` -> broadcastable against ``x``, in ``x.dtype``."""
        return c.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))

    def noise(self, x: Tensor, generator: Generator = None) -> Tensor:
        """Standard normal noise in this space, shaped like ``x``."""
        return self.project_noise(randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))

    def project_noise(self, z: Tensor) -> Tensor:
        return z

    def project(self, x: Tensor) -> Tensor:
        """Project a point onto the space (identity for Euclidean)."""
        return x

    def sum(self, x: Tensor) -> Tensor:
        """Per-sample sum ``[B]`` over the free entries of ``x``."""
        return x.reshape(x.shape[0], -1).sum(-1)

    def dim(self, x: Tensor) -> Tensor:
        """Degrees of freedom per sample ``[B]`` (for likelihoods and mean reductions)."""
        return torch.full((x.shape[0],), float(x[0].numel()), dtype=torch.float64, device=x.device)

    def mean(self, x: Tensor) -> Tensor:
        return self.sum(x) / self.dim(x).to(x.dtype)

    def dot(self, a: Tensor, b: Tensor) -> Tensor:
        return self.sum(a * b)

    def check(self, x: Tensor) -> None:
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or inf values")


@dataclass(frozen=True)
class Euclidean(Space):
    """Plain ``[B, *S]`` tensors."""


@dataclass(frozen=True, eq=False)
class Masked(Space):
    """``x: [B, *S]`` with ``mask`` broadcastable to ``x`` (True = free / generated entry).
    Fixed entries receive no noise and keep their value through ``project``; pass ``fixed``
    to hold them at given values (else they are held at whatever the caller put there)."""

    mask: Tensor
    fixed: Tensor | None = None

    def _m(self, x):
        return self.mask.to(x.device).expand_as(x)

    def project_noise(self, z):
        return z * self._m(z).to(z.dtype)

    def project(self, x):
        if self.fixed is None:
            return x
        return torch.where(self._m(x), x, self.fixed.to(x))

    def sum(self, x):
        return (x * self._m(x).to(x.dtype)).reshape(x.shape[0], -1).sum(-1)

    def dim(self, x):
        return self._m(x).reshape(x.shape[0], -1).sum(-1).to(torch.float64)


def _scatter_sum(v: Tensor, index: Tensor, n: int) -> Tensor:
    out = torch.zeros((n,) + v.shape[1:], dtype=v.dtype, device=v.device)
    return out.index_add_(0, index, v)


@dataclass(frozen=True, eq=False)
class Ragged(Space):
    """PyG-style node tensors ``x: [num_nodes, *F]`` with ``batch: [num_nodes]`` (graph id).
    ``num_graphs`` defaults to ``batch.max() + 1``."""

    batch: Tensor
    num_graphs: int | None = None

    def __post_init__(self):
        if self.batch.ndim != 1:
            raise ValueError("batch must be a 1-D tensor [num_nodes] of graph indices")
        if self.num_graphs is None:
            n = int(self.batch.max()) + 1 if self.batch.numel() else 0
            object.__setattr__(self, "num_graphs", n)

    def batch_size(self, x):
        return self.num_graphs

    def bcast(self, c, x):
        c = c.to(device=x.device, dtype=x.dtype)[self.batch.to(x.device)]
        return c.reshape(-1, *([1] * (x.ndim - 1)))

    def noise(self, x, generator=None):
        if isinstance(generator, (list, tuple)):
            # per-graph generators: draw each graph's nodes from its own stream
            z = torch.empty_like(x)
            for g_id, g in enumerate(generator):
                sel = self.batch == g_id
                z[sel] = torch.randn((int(sel.sum()),) + x.shape[1:], generator=g,
                                     dtype=x.dtype, device=g.device).to(x.device)
            return self.project_noise(z)
        return self.project_noise(randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))

    def sum(self, x):
        return _scatter_sum(x.reshape(x.shape[0], -1).sum(-1), self.batch.to(x.device), self.num_graphs)

    def dim(self, x):
        per_node = float(x[0].numel()) if x.shape[0] else 0.0
        counts = torch.bincount(self.batch, minlength=self.num_graphs).to(torch.float64)
        return counts.to(x.device) * per_node


@dataclass(frozen=True, eq=False)
class CenterOfMass(Space):
    """Zero centre of mass per molecule (Hoogeboom et al. 2022). Ragged: ``batch: [num_nodes]``
    with ``x: [num_nodes, D]``; dense: ``node_mask: [B, N]`` with ``x: [B, N, D]``. Noise is
    projected to the zero-CoM subspace, so ``dim`` is ``(n - 1) * D`` per molecule."""

    batch: Tensor | None = None
    node_mask: Tensor | None = None
    num_graphs: int | None = None

    def __post_init__(self):
        if (self.batch is None) == (self.node_mask is None):
            raise ValueError("CenterOfMass needs exactly one of batch= (ragged) or node_mask= (dense)")
        if self.batch is not None and self.num_graphs is None:
            object.__setattr__(self, "num_graphs", int(self.batch.max()) + 1)

    def batch_size(self, x):
        return self.num_graphs if self.batch is not None else x.shape[0]

    def bcast(self, c, x):
        if self.batch is not None:
            return Ragged(self.batch, self.num_graphs).bcast(c, x)
        return super().bcast(c, x)

    def project(self, x):
        if self.batch is not None:
            b = self.batch.to(x.device)
            counts = torch.bincount(b, minlength=self.num_graphs).clamp_min(1).to(x.dtype)
            mean = _scatter_sum(x, b, self.num_graphs) / counts[:, None]
            return x - mean[b]
        m = self.node_mask.to(x.device, x.dtype)[..., None]  # [B, N, 1]
        mean = (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)
        return (x - mean) * m

    def project_noise(self, z):
        return self.project(z)

    def noise(self, x, generator=None):
        if self.batch is not None:
            return self.project(Ragged(self.batch, self.num_graphs).noise(x, generator))
        return self.project(randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))

    def sum(self, x):
        if self.batch is not None:
            return Ragged(self.batch, self.num_graphs).sum(x)
        m = self.node_mask.to(x.device, x.dtype)[..., None]
        return (x * m).reshape(x.shape[0], -1).sum(-1)

    def dim(self, x):
        d = x.shape[-1]
        if self.batch is not None:
            n = torch.bincount(self.batch, minlength=self.num_graphs).to(torch.float64)
        else:
            n = self.node_mask.sum(1).to(torch.float64)
        return ((n - 1).clamp_min(0) * d).to(x.device)


@dataclass(frozen=True, eq=False)
class SymmetricAdjacency(Space):
    """Dense adjacency ``x: [B, N, N, *C]``, symmetric with zero diagonal; optional
    ``node_mask: [B, N]`` zeroes rows/columns of absent nodes. Noise is drawn on the strict upper
    triangle and mirrored, so ``dim = n (n - 1) / 2 * C`` per graph."""

    node_mask: Tensor | None = None

    def _pair_mask(self, x: Tensor) -> Tensor:
        B, N = x.shape[0], x.shape[1]
        m = ~torch.eye(N, dtype=torch.bool, device=x.device)
        m = m.expand(B, N, N)
        if self.node_mask is not None:
            nm = self.node_mask.to(x.device).bool()
            m = m & nm[:, :, None] & nm[:, None, :]
        return m.reshape(B, N, N, *([1] * (x.ndim - 3)))

    def project(self, x):
        x = 0.5 * (x + x.transpose(1, 2))
        return x * self._pair_mask(x).to(x.dtype)

    def project_noise(self, z):
        upper = torch.triu(torch.ones(z.shape[1], z.shape[1], dtype=z.dtype, device=z.device), 1)
        upper = upper.reshape(1, z.shape[1], z.shape[1], *([1] * (z.ndim - 3)))
        u = z * upper
        return (u + u.transpose(1, 2)) * self._pair_mask(z).to(z.dtype)

    def sum(self, x):
        # each free pair counted once (upper triangle)
        upper = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=x.dtype, device=x.device), 1)
        upper = upper.reshape(1, x.shape[1], x.shape[1], *([1] * (x.ndim - 3)))
        return (x * upper * self._pair_mask(x).to(x.dtype)).reshape(x.shape[0], -1).sum(-1)

    def dim(self, x):
        c = float(x[0, 0, 0].numel())
        if self.node_mask is not None:
            n = self.node_mask.sum(1).to(torch.float64)
        else:
            n = torch.full((x.shape[0],), float(x.shape[1]), dtype=torch.float64)
        return (n * (n - 1) / 2 * c).to(x.device)
