"""The molecular-graph space: node types and bond types of a dense graph packed in one tensor.

A molecule with at most ``N`` heavy atoms is the pair

* ``X: [B, N, K]`` — continuous relaxation of the atom-class one-hot (+1 at the class, -1
  elsewhere; rows of absent nodes are 0 and stay 0: :class:`shared.spaces.Masked`);
* ``E: [B, N, N, C]`` — relaxation of the bond-class one-hot (class 0 = no bond), symmetric
  with a zero diagonal, zero for pairs with an absent node (:class:`shared.spaces.SymmetricAdjacency`),

packed as ``x: [B, N*K + N*N*C]`` so the kernel's samplers see one tensor per molecule. The space
delegates noise, projection and reductions to the two kernel spaces; nothing numeric is new here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from shared.spaces import Masked, Space, SymmetricAdjacency, randn

__all__ = ["MolGraphSpace", "pack", "unpack", "encode_dense", "decode_dense"]


def pack(X: Tensor, E: Tensor) -> Tensor:
    """``X: [B, N, K]``, ``E: [B, N, N, C]`` -> ``x: [B, N*K + N*N*C]``."""
    return torch.cat([X.reshape(X.shape[0], -1), E.reshape(E.shape[0], -1)], dim=1)


def unpack(x: Tensor, n: int, k: int, c: int) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`pack`: ``x: [B, N*K + N*N*C]`` -> ``(X [B, N, K], E [B, N, N, C])``."""
    if x.ndim != 2 or x.shape[1] != n * k + n * n * c:
        raise ValueError(f"packed graph tensor must be [B, {n * k + n * n * c}] for N={n}, K={k}, C={c}; "
                         f"got {tuple(x.shape)}")
    return x[:, : n * k].reshape(-1, n, k), x[:, n * k:].reshape(-1, n, n, c)


def encode_dense(atoms: Tensor, bonds: Tensor, k: int, c: int) -> tuple[Tensor, Tensor, Tensor]:
    """Class indices -> relaxed one-hots.

    ``atoms: [B, N]`` (-1 = no node), ``bonds: [B, N, N]`` (0 = no bond) ->
    ``X [B, N, K]``, ``E [B, N, N, C]`` in {-1, +1} on free entries and 0 elsewhere, and
    ``node_mask [B, N]`` bool."""
    node_mask = atoms >= 0
    X = 2.0 * torch.nn.functional.one_hot(atoms.clamp_min(0), k).float() - 1.0
    X = X * node_mask[..., None]
    E = 2.0 * torch.nn.functional.one_hot(bonds, c).float() - 1.0
    n = atoms.shape[1]
    pair = node_mask[:, :, None] & node_mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=atoms.device)
    return X, E * pair[..., None], node_mask


def decode_dense(X: Tensor, E: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Argmax decoding: ``(atoms [B, N] (-1 absent), bonds [B, N, N])``; bonds are read from the
    symmetrised tensor so the result is symmetric."""
    atoms = torch.where(node_mask, X.argmax(-1), torch.full_like(node_mask, -1, dtype=torch.long))
    Es = 0.5 * (E + E.transpose(1, 2))
    bonds = Es.argmax(-1)
    n = X.shape[1]
    pair = node_mask[:, :, None] & node_mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=X.device)
    return atoms, bonds * pair


@dataclass(frozen=True, eq=False)
class MolGraphSpace(Space):
    """Packed ``x: [B, N*K + N*N*C]`` (see module docstring) with ``node_mask: [B, N]``.

    Noise is Masked on the node block and SymmetricAdjacency on the bond block, so
    ``dim = n K + n (n - 1) / 2 C`` per molecule with ``n`` atoms.

    ``node_weight``: weight of the node block in :meth:`mean` (the reduction of the training
    loss): ``(w sum_nodes + sum_edges) / (w dim_nodes + dim_edges)``. 1 is the plain mean over
    entries, where each of the ``n (n - 1) / 2`` atom pairs counts as much as each of the ``n``
    atoms; ``sum``, ``dim`` and everything else ignore it."""

    node_mask: Tensor
    n_atom_types: int
    n_bond_types: int
    node_weight: float = 1.0

    @property
    def n(self) -> int:
        return self.node_mask.shape[1]

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return unpack(x, self.n, self.n_atom_types, self.n_bond_types)

    @property
    def nodes(self) -> Masked:
        return Masked(self.node_mask.bool()[:, :, None])

    @property
    def edges(self) -> SymmetricAdjacency:
        return SymmetricAdjacency(self.node_mask.bool())

    def noise(self, x, generator=None):
        return self.project_noise(randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))

    def project_noise(self, z):
        X, E = self._split(z)
        return pack(self.nodes.project_noise(X), self.edges.project_noise(E))

    def project(self, x):
        X, E = self._split(x)
        return pack(X * self.node_mask.to(x.device, x.dtype)[..., None], self.edges.project(E))

    def sum(self, x):
        X, E = self._split(x)
        return self.nodes.sum(X) + self.edges.sum(E)

    def dim(self, x):
        X, E = self._split(x)
        return self.nodes.dim(X) + self.edges.dim(E)

    def mean(self, x):
        if self.node_weight == 1.0:
            return super().mean(x)
        X, E = self._split(x)
        w = self.node_weight
        num = w * self.nodes.sum(X) + self.edges.sum(E)
        return num / (w * self.nodes.dim(X) + self.edges.dim(E)).to(num.dtype)
