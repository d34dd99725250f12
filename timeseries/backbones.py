"""Backbones: a deliberately simple residual MLP over a whole window (GPD, 2024).

Channel-independent: every channel of every series is one row ``[L]``, so one network serves
series of any dimension. No noise-level logic lives here: the network gets ``t`` (whatever
:class:`shared.param.Denoiser` passes, a float ``[B]``) and returns an output with ``x``'s layout.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["TimeEmbedding", "ResidualMLPBlock", "MLPDiffusionNet"]


class TimeEmbedding(nn.Module):
    """Sinusoidal features of ``t: [B]`` (scaled by ``scale``) -> MLP -> ``[B, dim]``."""

    def __init__(self, *, dim: int, scale: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        self.dim, self.scale = dim, scale
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        a = (t.float() * self.scale)[:, None] * freqs[None, :]  # [B, half]
        return self.mlp(torch.cat([a.sin(), a.cos()], dim=-1))


class ResidualMLPBlock(nn.Module):
    """``h + W2 dropout(SiLU(W1 LN(h) * (1 + scale(temb)) + shift(temb)))`` on ``h: [B, hidden]``."""

    def __init__(self, *, hidden: int, expansion: int = 2, time_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden * expansion)
        self.film = nn.Linear(time_dim, 2 * hidden * expansion)
        self.fc2 = nn.Linear(hidden * expansion, hidden)
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        scale, shift = self.film(temb).chunk(2, dim=-1)
        u = self.fc1(self.norm(h)) * (1 + scale) + shift
        return h + self.fc2(self.drop(nn.functional.silu(u)))


class MLPDiffusionNet(nn.Module):
    """Stacked residual MLP blocks with a time embedding, over windows of ``length`` points.

    Args:
        length: window length ``L``.
        hidden: width of the residual stream.
        depth: number of residual blocks.
        expansion: inner width factor of each block.
        time_dim: width of the time embedding.
        dropout: dropout inside the blocks.
        time_scale: ``t`` is multiplied by this before the sinusoidal features (1000 for t in [0, 1]).
        linear_skip: add a full-rank linear map of the input window, gated per output position
            by the time embedding (``skip(x) * (1 + gate(temb))``, zero at initialisation): a
            DLinear-like path from context to future beside the ``hidden``-wide MLP stream.
    Shapes: ``x: [B, L]`` or ``[B, 1, L]``, ``t: [B]`` -> same layout as ``x``.
    """

    def __init__(self, *, length: int, hidden: int = 512, depth: int = 4, expansion: int = 2,
                 time_dim: int = 128, dropout: float = 0.0, time_scale: float = 1000.0,
                 linear_skip: bool = False):
        super().__init__()
        if length < 2 or hidden < 1 or depth < 1:
            raise ValueError(f"need length >= 2, hidden >= 1, depth >= 1; got {length}, {hidden}, {depth}")
        self.length = length
        self.time = TimeEmbedding(dim=time_dim, scale=time_scale)
        self.inp = nn.Linear(length, hidden)
        self.blocks = nn.ModuleList([ResidualMLPBlock(hidden=hidden, expansion=expansion, time_dim=time_dim,
                                                      dropout=dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, length)
        self.skip = self.skip_gate = None
        if linear_skip:
            self.skip = nn.Linear(length, length)
            self.skip_gate = nn.Linear(time_dim, length)
            for lin in (self.skip, self.skip_gate):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def _temb(self, t: Tensor) -> Tensor:
        """Time embedding of ``t: [B]``. When all ``B`` values are equal (every sampling step:
        the solver passes one time for the whole batch) it is computed once, ``[1, time_dim]``,
        and broadcast, and so are the FiLM and skip-gate maps of it: about a quarter of the
        forward FLOPs of a row at hidden 256 go to those per-row copies otherwise."""
        t = t.reshape(-1)
        if t.numel() > 1 and not t.requires_grad and bool((t == t[0]).all()):
            return self.time(t[:1])
        return self.time(t)

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        if cond is not None:
            raise ValueError("MLPDiffusionNet is unconditional (GPD): pass cond=None")
        shape = x.shape
        if x.shape[-1] != self.length or x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[1] != 1):
            raise ValueError(f"expected x of shape [B, {self.length}] or [B, 1, {self.length}], got {tuple(shape)}")
        x2 = x.reshape(shape[0], self.length)
        h = self.inp(x2)  # [B, hidden]
        temb = self._temb(t)  # [B, time_dim], or [1, time_dim] when every row has the same t
        for blk in self.blocks:
            h = blk(h, temb)
        y = self.out(self.norm(h))
        if self.skip is not None:
            y = y + self.skip(x2) * (1 + self.skip_gate(temb))
        return y.reshape(shape)
