"""Networks over NAS-Bench-201 cells on the fixed 8-node DAG (PyG layers; no noise-level logic).

* :class:`CellTransformer` — the score network: a graph transformer (``TransformerConv``) with
  full attention over the 8 nodes, structural edge encodings (DAG edge forward / backward /
  not adjacent), learned node-position and Laplacian positional encodings and a time embedding.
  ``x: [B, 8, 7]``, ``t: [B]`` -> ``[B, 8, 7]``.
* :class:`CellPredictor` — the noise-aware accuracy predictor: a directed GIN (``GINConv`` along
  and against the DAG edges) conditioned on time and on the target dataset.
  ``x: [B, 8, 7]``, ``t: [B]``, ``dataset: LongTensor [B]`` -> standardised accuracy ``[B]``.
* :class:`PredictorEnsemble` — K independently initialised predictors; the prediction is their mean.

Both take the fixed input/output rows from a ``fixed_mask`` / ``fixed_types`` pair and overwrite
those rows of their input with the known signed one-hot, so they never depend on what a sampler
keeps in the fixed entries.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .data import ADJACENCY, N_NODES, N_TYPES

__all__ = ["CellTransformer", "CellPredictor", "PredictorEnsemble", "time_embedding", "laplacian_pe"]


def time_embedding(t: Tensor, dim: int, max_period: float = 1000.0) -> Tensor:
    """Sinusoidal embedding of ``t: [B]`` (t in [0, 1] or any float) -> ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]  # t in [0, 1] spread over the periods
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def laplacian_pe(adj: Tensor, k: int) -> Tensor:
    """First ``k`` non-trivial eigenvectors of the symmetric normalised Laplacian of the
    undirected version of ``adj: [N, N]`` -> ``[N, k]`` (float32)."""
    a = ((adj + adj.t()) > 0).double()
    deg = a.sum(1)
    dinv = deg.clamp_min(1).rsqrt()
    lap = torch.eye(a.shape[0], dtype=torch.float64) - dinv[:, None] * a * dinv[None]
    _, vec = torch.linalg.eigh(lap)
    return vec[:, 1:k + 1].float()


def _relations(adj: Tensor) -> tuple[Tensor, Tensor]:
    """Complete directed graph on N nodes without self loops: ``edge_index [2, N(N-1)]`` and
    relation ids ``[N(N-1)]``: 0 = DAG edge forward, 1 = DAG edge backward, 2 = not adjacent."""
    n = adj.shape[0]
    src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = src != dst
    src, dst = src[keep], dst[keep]
    rel = torch.full_like(src, 2)
    rel[adj[src, dst] > 0] = 0
    rel[adj[dst, src] > 0] = 1
    return torch.stack([src, dst]), rel


def _batched(edge_index: Tensor, B: int, n: int) -> Tensor:
    """Repeat ``edge_index [2, E]`` for B graphs of n nodes -> ``[2, B * E]``."""
    off = (torch.arange(B, device=edge_index.device) * n).repeat_interleave(edge_index.shape[1])
    return edge_index.repeat(1, B) + off[None]


class _FixedRows(nn.Module):
    """Holds the fixed rows (``fixed_mask: [8]`` bool, ``fixed_types: [8]`` long)."""

    def __init__(self, fixed_mask: Tensor, fixed_types: Tensor):
        super().__init__()
        fm = torch.as_tensor(fixed_mask, dtype=torch.bool)
        ft = torch.as_tensor(fixed_types, dtype=torch.long)
        if fm.shape != (N_NODES,) or ft.shape != (N_NODES,):
            raise ValueError(f"fixed_mask and fixed_types must have shape [{N_NODES}]")
        self.register_buffer("fixed_mask", fm, persistent=False)
        signed = 2.0 * torch.nn.functional.one_hot(ft.clamp(0, N_TYPES - 1), N_TYPES).float() - 1.0
        self.register_buffer("fixed_signed", signed, persistent=False)  # [8, 7]

    def apply(self, x: Tensor) -> Tensor:
        """``x: [B, 8, 7]`` with fixed rows replaced by their signed one-hot."""
        return torch.where(self.fixed_mask[None, :, None], self.fixed_signed.to(x.dtype)[None], x)


def _check_x(x: Tensor, t: Tensor) -> None:
    if x.ndim != 3 or x.shape[1:] != (N_NODES, N_TYPES):
        raise ValueError(f"x must be [B, {N_NODES}, {N_TYPES}], got {tuple(x.shape)}")
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must be [B] = [{x.shape[0]}], got {tuple(t.shape)}")


class CellTransformer(nn.Module):
    """Graph transformer score network over the 8-node cell DAG.

    Args:
        hidden: width; heads: attention heads (``hidden % heads == 0``); layers: blocks.
        head: ``"softmax"``: the output is ``2 softmax(logits) - 1`` per free node (the form
            of the posterior mean ``E[x0 | x_t]`` of signed one-hot data; use with
            ``prediction="x0"``); ``"linear"``: raw per-entry outputs (eps, v, edm, flow).
        fixed_mask, fixed_types: ``[8]``: rows held fixed (input / output nodes) and their type;
            with the softmax head these rows output their fixed signed one-hot.
        n_pe: Laplacian positional-encoding size.

    ``forward(x [B, 8, 7], t [B], cond=None) -> [B, 8, 7]``.
    """

    def __init__(self, *, hidden: int = 64, layers: int = 3, heads: int = 4, dropout: float = 0.0,
                 head: str = "softmax", fixed_mask: Tensor, fixed_types: Tensor, n_pe: int = 4):
        super().__init__()
        from torch_geometric.nn import TransformerConv

        if hidden % heads:
            raise ValueError(f"hidden={hidden} must be divisible by heads={heads}")
        if head not in ("softmax", "linear"):
            raise ValueError(f"head must be 'softmax' or 'linear', got {head!r}")
        self.head = head
        self.fixed = _FixedRows(fixed_mask, fixed_types)
        ei, rel = _relations(ADJACENCY)
        self.register_buffer("edge_index", ei, persistent=False)
        self.register_buffer("relation", rel, persistent=False)
        self.register_buffer("lap_pe", laplacian_pe(ADJACENCY, n_pe), persistent=False)
        self.inp = nn.Linear(N_TYPES, hidden)
        self.pos = nn.Parameter(torch.randn(N_NODES, hidden) * 0.02)
        self.pe = nn.Linear(n_pe, hidden)
        self.rel_emb = nn.Embedding(3, hidden)
        self.t_mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))
        self.convs = nn.ModuleList(
            TransformerConv(hidden, hidden // heads, heads=heads, dropout=dropout, edge_dim=hidden, beta=True)
            for _ in range(layers))
        self.films = nn.ModuleList(nn.Linear(hidden, 2 * hidden) for _ in range(layers))
        self.norm1 = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.norm2 = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))
                                 for _ in range(layers))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, N_TYPES)
        self.hidden = hidden

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        _check_x(x, t)
        B = x.shape[0]
        xin = self.fixed.apply(x)
        temb = self.t_mlp(time_embedding(t, self.hidden).to(x.dtype))  # [B, H]
        h = self.inp(xin) + self.pos[None] + self.pe(self.lap_pe)[None] + temb[:, None]  # [B, 8, H]
        ei = _batched(self.edge_index, B, N_NODES)  # [2, B * 56]
        ea = self.rel_emb(self.relation).repeat(B, 1)  # [B * 56, H]
        for conv, film, n1, n2, ffn in zip(self.convs, self.films, self.norm1, self.norm2, self.ffn):
            scale, shift = film(temb).chunk(2, dim=-1)  # [B, H] each
            a = n1(h) * (1 + scale[:, None]) + shift[:, None]
            h = h + conv(a.reshape(B * N_NODES, -1), ei, ea).reshape(B, N_NODES, -1)
            h = h + ffn(n2(h))
        out = self.out(self.out_norm(h))  # [B, 8, 7]
        if self.head == "softmax":
            out = 2.0 * torch.softmax(out, dim=-1) - 1.0
            out = torch.where(self.fixed.fixed_mask[None, :, None], self.fixed.fixed_signed.to(out.dtype)[None], out)
        return out


class CellPredictor(nn.Module):
    """Noise-aware accuracy predictor: directed GIN over the cell DAG.

    Each layer adds a ``GINConv`` along the DAG edges and one against them; time and the target
    dataset (embedding of its id) modulate every layer. Readout = mean of the nodes + the output
    node. ``forward(x [B, 8, 7], t [B], dataset [B] long) -> [B]`` (standardised accuracy).
    """

    def __init__(self, *, hidden: int = 64, layers: int = 3, n_datasets: int = 3, fixed_mask: Tensor,
                 fixed_types: Tensor):
        super().__init__()
        from torch_geometric.nn import GINConv

        self.fixed = _FixedRows(fixed_mask, fixed_types)
        ei = ADJACENCY.nonzero().t().contiguous()
        self.register_buffer("edge_fwd", ei, persistent=False)
        self.register_buffer("edge_bwd", ei.flip(0).contiguous(), persistent=False)

        def mlp():
            return nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

        self.inp = nn.Linear(N_TYPES, hidden)
        self.pos = nn.Parameter(torch.randn(N_NODES, hidden) * 0.02)
        self.t_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.ds_emb = nn.Embedding(n_datasets, hidden)
        self.fwd = nn.ModuleList(GINConv(mlp(), train_eps=True) for _ in range(layers))
        self.bwd = nn.ModuleList(GINConv(mlp(), train_eps=True) for _ in range(layers))
        self.cond = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.readout = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.hidden = hidden
        self.n_datasets = n_datasets

    def forward(self, x: Tensor, t: Tensor, dataset: Tensor) -> Tensor:
        _check_x(x, t)
        B = x.shape[0]
        dataset = torch.as_tensor(dataset, device=x.device, dtype=torch.long).expand(B)
        if ((dataset < 0) | (dataset >= self.n_datasets)).any():
            raise ValueError(f"dataset ids must be in 0..{self.n_datasets - 1}")
        c = self.t_mlp(time_embedding(t, self.hidden).to(x.dtype)) + self.ds_emb(dataset)  # [B, H]
        h = (self.inp(self.fixed.apply(x)) + self.pos[None]).reshape(B * N_NODES, -1)
        ef, eb = _batched(self.edge_fwd, B, N_NODES), _batched(self.edge_bwd, B, N_NODES)
        cn = c.repeat_interleave(N_NODES, 0)  # [B * 8, H]
        for fwd, bwd, cl, norm in zip(self.fwd, self.bwd, self.cond, self.norms):
            a = norm(h) + cl(cn)
            h = h + torch.nn.functional.silu(fwd(a, ef) + bwd(a, eb))
        h = h.reshape(B, N_NODES, -1)
        g = torch.cat([h.mean(1), h[:, -1], c], dim=-1)  # [B, 3H]
        return self.readout(g).squeeze(-1)


class PredictorEnsemble(nn.Module):
    """Deep ensemble of ``members`` (:class:`CellPredictor` s with different initialisations).

    ``forward(x, t, dataset) -> [B]`` is the members' mean; ``forward_all(...) -> [K, B]`` gives
    each member's prediction (training fits every member to the labels)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward_all(self, x: Tensor, t: Tensor, dataset: Tensor) -> Tensor:
        return torch.stack([m(x, t, dataset) for m in self.members])

    def forward(self, x: Tensor, t: Tensor, dataset: Tensor) -> Tensor:
        return self.forward_all(x, t, dataset).mean(0)
