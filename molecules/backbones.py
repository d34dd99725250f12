"""Networks of the molecules domain. No noise-level logic lives here: the kernel's
:class:`shared.param.Denoiser` converts outputs, and ``t`` arrives as a float tensor ``[B]``.

* :class:`GraphTransformer` — dense graph transformer over (atoms, bonds) with attention biased
  by edge features and edge updates from node pairs (in the spirit of DiGress's graph
  transformer); denoiser backbone for the packed :class:`~molecules.space.MolGraphSpace` tensor.
* :class:`GraphRegressor` — the same trunk with a masked-mean readout: the forward model that
  predicts properties from a (relaxed) molecular graph; used to score samples and for guidance.
* :class:`SmilesTransformer` — transformer over the seed paper's SMILES one-hot sequence with
  property tokens (value embedding, or a learned null token where a property is not given) for
  classifier-free guidance on any property subset.
* :class:`SmilesUNet1D` — the seed paper's backbone family: a 1-D convolutional UNet over the
  SMILES sequence, the noise level and the property vector (values and given-mask; all masked =
  the CFG null condition) entering every residual block by FiLM.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .data import MAX_VALENCE
from .space import pack, unpack

__all__ = ["TimeEmbedding", "GraphTransformer", "GraphRegressor", "SmilesTransformer", "SmilesUNet1D",
           "valence_features"]


class TimeEmbedding(nn.Module):
    """Sinusoidal features of ``t: [B]`` (scaled by 1000) -> MLP -> ``[B, dim]``."""

    def __init__(self, dim: int, *, freq_dim: int = 64):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        f = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        a = 1000.0 * t.float()[:, None] * f[None]
        return self.mlp(torch.cat([a.sin(), a.cos()], dim=-1))


def _mlp(d: int, mult: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, mult * d), nn.SiLU(), nn.Linear(mult * d, d))


class _GraphLayer(nn.Module):
    """One block: edge-biased multi-head attention on nodes, node MLP, pair update of edges;
    every sub-block modulated (FiLM) by the conditioning vector ``c: [B, dc]``."""

    def __init__(self, dh: int, de: int, heads: int, dc: int):
        super().__init__()
        if dh % heads:
            raise ValueError(f"hidden={dh} must be divisible by heads={heads}")
        self.heads = heads
        self.ln_h1, self.ln_h2, self.ln_e = nn.LayerNorm(dh), nn.LayerNorm(dh), nn.LayerNorm(de)
        self.qkv = nn.Linear(dh, 3 * dh)
        self.o = nn.Linear(dh, dh)
        self.e_att = nn.Linear(de, 2 * heads)
        self.ff_h = _mlp(dh)
        self.pair_a = nn.Linear(dh, de)
        self.pair_b = nn.Linear(dh, de, bias=False)
        self.ff_e = _mlp(de)
        self.film = nn.Linear(dc, 2 * dh + 2 * de)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: Tensor, e: Tensor, node_mask: Tensor, pair_mask: Tensor, c: Tensor):
        # h: [B, N, dh], e: [B, N, N, de], node_mask: [B, N], pair_mask: [B, N, N], c: [B, dc]
        B, N, dh = h.shape
        sh, bh, se, be = torch.split(self.film(c), [dh, dh, e.shape[-1], e.shape[-1]], dim=-1)
        x = self.ln_h1(h) * (1 + sh[:, None]) + bh[:, None]
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, dh // self.heads).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) / math.sqrt(dh // self.heads)  # [B, H, N, N]
        mul, add = self.e_att(e).permute(0, 3, 1, 2).chunk(2, dim=1)  # [B, H, N, N] each
        s = s * (1 + mul) + add
        s = s.masked_fill(~node_mask[:, None, None, :], float("-inf"))
        a = torch.softmax(s, dim=-1).nan_to_num(0.0)
        h = h + self.o((a @ v).transpose(1, 2).reshape(B, N, dh))
        h = h + self.ff_h(self.ln_h2(h))
        h = h * node_mask[..., None]
        pa, pb = self.pair_a(h), self.pair_b(h)  # [B, N, de] each: pair terms built per node
        p = pa[:, :, None] + pa[:, None, :] + pb[:, :, None] * pb[:, None, :]  # [B, N, N, de], symmetric
        e = e + self.ff_e(self.ln_e(e) * (1 + se[:, None, None]) + be[:, None, None] + p)
        return h, e * pair_mask[..., None]




def valence_features(X: Tensor, E: Tensor, pair: Tensor) -> Tensor:
    """Soft structural features of a relaxed graph, ``[B, N, 4]``: expected bond-order sum
    ``v_i = sum_j sum_c c p_ijc``, the expected class valence ``m_i = sum_k p_ik maxval_k``, the
    free valence ``m_i - v_i`` and the expected number of bonded neighbours, where ``p`` are the
    relaxed one-hots read as weights ``clamp((x + 1) / 2, 0, 1)`` (renormalised). They are
    computed inside the network from whatever graph it is given (the noisy state or its own
    previous x0 estimate): a feature of the input, not a correction of the output."""
    pe = ((E + 1) * 0.5).clamp(0, 1) * pair[..., None]
    pe = pe / pe.sum(-1, keepdim=True).clamp_min(1e-6)
    order = torch.arange(E.shape[-1], device=E.device, dtype=E.dtype)
    v = (pe * order).sum((-1, -2))                       # [B, N] expected bond-order sum
    nb = (1 - pe[..., 0]).mul(pair).sum(-1)             # [B, N] expected neighbour count
    px = ((X + 1) * 0.5).clamp(0, 1)
    px = px / px.sum(-1, keepdim=True).clamp_min(1e-6)
    maxv = torch.tensor(MAX_VALENCE[: X.shape[-1]], device=X.device, dtype=X.dtype)
    m = (px * maxv).sum(-1)
    return torch.stack([v, m, m - v, nb], dim=-1) / 4.0


class _GraphTrunk(nn.Module):
    def __init__(self, n_atom_types, n_bond_types, hidden, edge_hidden, layers, heads, cond_dim,
                 max_nodes: int = 9, node_positions: bool = False, valence: bool = False,
                 self_condition: bool = False):
        super().__init__()
        self.valence, self.self_condition = valence, self_condition
        n_feat = n_atom_types + 1 + n_bond_types + (4 if valence else 0)
        if self_condition:  # the previous x0 estimate (atoms, bond-class degrees, its valence features)
            n_feat += n_atom_types + n_bond_types + (4 if valence else 0)
        self.in_h = nn.Linear(n_feat, hidden)
        # optional learned embedding of the node index: data order is RDKit's (canonical-SMILES)
        # atom order, so neighbours in the order are mostly bonded; off = permutation equivariant
        self.pos = nn.Parameter(torch.randn(max_nodes, hidden) * 0.1) if node_positions else None
        self.in_e = nn.Linear(n_bond_types * (2 if self_condition else 1), edge_hidden)
        self.layers = nn.ModuleList(_GraphLayer(hidden, edge_hidden, heads, cond_dim) for _ in range(layers))

    def forward(self, X, E, node_mask, c, sc: tuple[Tensor, Tensor] | None = None):
        nm = node_mask.bool()
        N = X.shape[1]
        pair = nm[:, :, None] & nm[:, None, :] & ~torch.eye(N, dtype=torch.bool, device=X.device)

        def feats(X, E, with_mask):
            # soft degree per bond class from the (noisy) relaxed one-hots: sum_j (E_ijc + 1) / 2
            deg = (((E + 1) * 0.5).clamp(0, 1) * pair[..., None]).sum(2) / N  # [B, N, C]
            f = [X, nm[..., None].to(X.dtype), deg] if with_mask else [X, deg]
            if self.valence:
                f.append(valence_features(X, E, pair))
            return f

        f = feats(X, E, True)
        e_in = [E]
        if self.self_condition:
            Xs, Es = sc if sc is not None else (torch.zeros_like(X), torch.zeros_like(E))
            f += feats(Xs, Es, False)
            e_in.append(Es)
        h = self.in_h(torch.cat(f, dim=-1))
        if self.pos is not None:
            h = h + self.pos[None, :N]
        h = h * nm[..., None]
        e = self.in_e(torch.cat(e_in, dim=-1)) * pair[..., None]
        for layer in self.layers:
            h, e = layer(h, e, nm, pair, c)
        return h, e, nm, pair


class GraphTransformer(nn.Module):
    """Denoiser backbone on packed graphs.

    ``forward(x [B, N*K + N*N*C], t [B], cond=None, *, node_mask [B, N]) -> [B, N*K + N*N*C]``;
    the output is zero on absent nodes and pairs and symmetric in the bond block.
    ``cond`` (optional ``[B, cond_dim]``) is added to the time embedding. ``node_positions``
    adds a learned node-index embedding (not permutation equivariant; see :class:`_GraphTrunk`).
    ``simplex``: the output per atom / atom pair is ``2 softmax(logits) - 1``, the exact form of
    the posterior mean ``E[x0 | x_t]`` of +-1 one-hots (an x0 head; use with ``prediction="x0"``).
    ``valence_features``: :func:`valence_features` of the input graph as extra node inputs
    (DiGress-style structural features). ``self_condition``: an extra input ``self_cond`` (the
    packed previous x0 estimate, zeros when absent; with ``valence_features`` its features too)."""

    def __init__(self, *, n_atom_types: int = 8, n_bond_types: int = 4, max_nodes: int = 9,
                 hidden: int = 128, edge_hidden: int = 64, layers: int = 4, heads: int = 4,
                 cond_dim: int = 0, node_positions: bool = False, simplex: bool = False,
                 valence_features: bool = False, self_condition: bool = False):
        super().__init__()
        self.n, self.k, self.c = max_nodes, n_atom_types, n_bond_types
        self.simplex = simplex
        self.cond_dim = cond_dim
        self.time = TimeEmbedding(hidden)
        self.cond = nn.Linear(cond_dim, hidden) if cond_dim else None
        self.trunk = _GraphTrunk(n_atom_types, n_bond_types, hidden, edge_hidden, layers, heads, hidden,
                                 max_nodes, node_positions, valence_features, self_condition)
        self.out_h = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, n_atom_types))
        self.out_e = nn.Sequential(nn.LayerNorm(edge_hidden), nn.Linear(edge_hidden, n_bond_types))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None, *, node_mask: Tensor,
                self_cond: Tensor | None = None) -> Tensor:
        X, E = unpack(x, self.n, self.k, self.c)
        c = self.time(t)
        if self.cond is not None and cond is not None:
            c = c + self.cond(cond.to(c.dtype))
        sc = unpack(self_cond.to(x.dtype), self.n, self.k, self.c) if self_cond is not None else None
        h, e, nm, pair = self.trunk(X, E, node_mask, c, sc)
        Xo = self.out_h(h)
        Eo = self.out_e(e)
        Eo = 0.5 * (Eo + Eo.transpose(1, 2))
        if self.simplex:  # the exact form of E[x0 | x_t] for +-1 one-hots: 2 p - 1, p on the simplex
            Xo, Eo = 2 * torch.softmax(Xo, -1) - 1, 2 * torch.softmax(Eo, -1) - 1
        return pack(Xo * nm[..., None], Eo * pair[..., None])


class GraphRegressor(nn.Module):
    """Forward model: packed (relaxed) graph -> ``n_out`` properties.

    ``forward(x [B, N*K + N*N*C], *, node_mask [B, N]) -> [B, n_out]`` (scaled property units).
    Works on soft inputs (``x0_hat`` during guidance) as well as on exact one-hots."""

    def __init__(self, *, n_atom_types: int = 8, n_bond_types: int = 4, max_nodes: int = 9,
                 hidden: int = 128, edge_hidden: int = 64, layers: int = 4, heads: int = 4, n_out: int = 12):
        super().__init__()
        self.n, self.k, self.c = max_nodes, n_atom_types, n_bond_types
        self.trunk = _GraphTrunk(n_atom_types, n_bond_types, hidden, edge_hidden, layers, heads, hidden)
        self.c0 = nn.Parameter(torch.zeros(hidden))
        self.head = nn.Sequential(nn.LayerNorm(2 * hidden + edge_hidden), nn.Linear(2 * hidden + edge_hidden, hidden),
                                  nn.SiLU(), nn.Linear(hidden, n_out))

    def forward(self, x: Tensor, *, node_mask: Tensor) -> Tensor:
        X, E = unpack(x, self.n, self.k, self.c)
        c = self.c0.expand(x.shape[0], -1)
        h, e, nm, pair = self.trunk(X, E, node_mask, c)
        n = nm.sum(1, keepdim=True).clamp_min(1).to(h.dtype)
        hm = h.sum(1) / n                                   # [B, dh] mean
        hs = h.sum(1) / self.n                              # [B, dh] size-aware sum
        em = e.sum((1, 2)) / (n * n)                        # [B, de]
        return self.head(torch.cat([hm, hs, em], dim=-1))


class SmilesTransformer(nn.Module):
    """Backbone for the seed paper's SMILES one-hot sequences with property conditioning.

    ``forward(x [B, L, V], t [B], cond=None, **kw) -> [B, L, V]``. ``cond`` is None
    (unconditional) or a dict ``{"y": [B, P] scaled values, "mask": [B, P] bool}``: property
    ``p`` enters as a token ``y_p w_p + b_p`` where given and as a learned null token ``n_p``
    where not (classifier-free guidance on any subset of properties). ``self_condition``: an
    extra input ``self_cond`` ``[B, L, V]`` (the previous x0 estimate; zeros when absent).
    ``simplex``: output ``2 softmax(logits) - 1`` per position (posterior-mean form; x0 head)."""

    def __init__(self, *, vocab: int = 22, length: int = 32, n_props: int = 12, d_model: int = 128,
                 layers: int = 4, heads: int = 4, dropout: float = 0.0, self_condition: bool = False,
                 simplex: bool = False):
        super().__init__()
        self.vocab, self.length, self.n_props = vocab, length, n_props
        self.simplex = simplex
        self.inp = nn.Linear(vocab, d_model)
        # self-conditioning (Chen et al. 2022, Analog Bits): the previous x0 estimate as a 2nd input
        self.sc = nn.Linear(vocab, d_model, bias=False) if self_condition else None
        self.pos = nn.Parameter(torch.randn(length + n_props + 1, d_model) * 0.5)
        self.time = TimeEmbedding(d_model)
        self.prop_w = nn.Parameter(torch.randn(n_props, d_model) * 0.5)
        self.prop_b = nn.Parameter(torch.zeros(n_props, d_model))
        self.prop_null = nn.Parameter(torch.randn(n_props, d_model) * 0.02)
        enc = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=dropout, activation="gelu",
                                         batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab)

    def prop_tokens(self, cond, B: int, device, dtype) -> Tensor:
        """``[B, P, d]`` property tokens (null tokens where a property is not given)."""
        null = self.prop_null[None].expand(B, -1, -1)
        if cond is None or self.n_props == 0:
            return null
        y, mask = cond["y"].to(dtype), cond["mask"].bool()
        if y.shape != (B, self.n_props) or mask.shape != (B, self.n_props):
            raise ValueError(f"cond y and mask must be [B={B}, P={self.n_props}], got "
                             f"{tuple(y.shape)} and {tuple(mask.shape)}")
        val = y[..., None] * self.prop_w[None] + self.prop_b[None]
        return torch.where(mask[..., None], val, null)

    def forward(self, x: Tensor, t: Tensor, cond=None, *, self_cond: Tensor | None = None, **kw) -> Tensor:
        B, L, V = x.shape
        if (L, V) != (self.length, self.vocab):
            raise ValueError(f"expected x [B, {self.length}, {self.vocab}], got {tuple(x.shape)}")
        tok = self.inp(x)
        if self.sc is not None:
            tok = tok + self.sc(torch.zeros_like(x) if self_cond is None else self_cond.to(x.dtype))
        temb = self.time(t)
        # the noise level enters every position (as the seed paper's UNet does in every block),
        # not only through one extra token that each position would have to attend to
        tok = tok + temb[:, None]
        extra = torch.cat([temb[:, None], self.prop_tokens(cond, B, x.device, tok.dtype)], dim=1)
        hseq = torch.cat([extra, tok], dim=1) + self.pos[None]
        hseq = self.encoder(hseq)
        out = self.out(self.norm(hseq[:, -L:]))
        return 2 * torch.softmax(out, -1) - 1 if self.simplex else out


class _ResBlock1D(nn.Module):
    """GroupNorm -> SiLU -> Conv1d (x2) with FiLM from ``c: [B, dc]`` and a residual path."""

    def __init__(self, cin: int, cout: int, dc: int):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(min(8, cin), cin), nn.Conv1d(cin, cout, 3, padding=1)
        self.n2, self.c2 = nn.GroupNorm(min(8, cout), cout), nn.Conv1d(cout, cout, 3, padding=1)
        self.film = nn.Linear(dc, 2 * cout)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.c1(nn.functional.silu(self.n1(x)))
        s, b = self.film(c)[..., None].chunk(2, dim=1)
        h = self.c2(nn.functional.silu(self.n2(h) * (1 + s) + b))
        return self.skip(x) + h


class SmilesUNet1D(nn.Module):
    """1-D convolutional UNet over SMILES one-hots (the seed paper's backbone family).

    ``forward(x [B, L, V], t [B], cond=None, *, self_cond=None) -> [B, L, V]``, same contract as
    :class:`SmilesTransformer`: ``cond`` None or ``{"y": [B, P], "mask": [B, P] bool}``; the
    condition vector is ``(y * mask, mask)`` through an MLP (all-False mask = the CFG null
    condition, which is what ``drop_condition`` trains). ``channels`` per level, halving the
    length at each level below the first (L must be divisible by ``2 ** (levels - 1)``); one
    self-attention layer at the bottom gives every position the whole sequence."""

    def __init__(self, *, vocab: int = 22, length: int = 32, n_props: int = 12, channels: tuple = (64, 128, 128),
                 heads: int = 4, self_condition: bool = False, simplex: bool = False):
        super().__init__()
        if length % (2 ** (len(channels) - 1)):
            raise ValueError(f"length={length} must be divisible by 2**{len(channels) - 1}")
        self.vocab, self.length, self.n_props, self.simplex = vocab, length, n_props, simplex
        dc = 4 * channels[0]
        self.time = TimeEmbedding(dc)
        self.cond = nn.Sequential(nn.Linear(2 * n_props, dc), nn.SiLU(), nn.Linear(dc, dc)) if n_props else None
        self.self_condition = self_condition
        self.inp = nn.Conv1d(vocab * (2 if self_condition else 1), channels[0], 3, padding=1)
        self.pos = nn.Parameter(torch.randn(channels[0], length) * 0.1)
        self.down = nn.ModuleList()
        ch = channels[0]
        for c_out in channels:
            self.down.append(_ResBlock1D(ch, c_out, dc))
            ch = c_out
        self.mid = _ResBlock1D(ch, ch, dc)
        self.attn = nn.MultiheadAttention(ch, heads, batch_first=True)
        self.attn_norm = nn.LayerNorm(ch)
        self.up = nn.ModuleList()
        for c_skip in reversed(channels):
            self.up.append(_ResBlock1D(ch + c_skip, c_skip, dc))
            ch = c_skip
        self.out = nn.Sequential(nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv1d(ch, vocab, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, cond=None, *, self_cond: Tensor | None = None, **kw) -> Tensor:
        B, L, V = x.shape
        if (L, V) != (self.length, self.vocab):
            raise ValueError(f"expected x [B, {self.length}, {self.vocab}], got {tuple(x.shape)}")
        c = self.time(t)
        if self.cond is not None:
            if cond is None:
                y = torch.zeros(B, self.n_props, device=x.device, dtype=x.dtype)
                m = torch.zeros_like(y)
            else:
                m = cond["mask"].to(x.dtype)
                y = cond["y"].to(x.dtype) * m
                if y.shape != (B, self.n_props):
                    raise ValueError(f"cond y and mask must be [B={B}, P={self.n_props}], got {tuple(y.shape)}")
            c = c + self.cond(torch.cat([y, m], dim=-1))
        inp = x
        if self.self_condition:
            inp = torch.cat([x, torch.zeros_like(x) if self_cond is None else self_cond.to(x.dtype)], dim=-1)
        h = self.inp(inp.transpose(1, 2)) + self.pos[None]
        skips = []
        for i, blk in enumerate(self.down):
            if i:
                h = nn.functional.avg_pool1d(h, 2)
            h = blk(h, c)
            skips.append(h)
        h = self.mid(h, c)
        a = self.attn_norm(h.transpose(1, 2))
        h = h + self.attn(a, a, a, need_weights=False)[0].transpose(1, 2)
        for i, blk in enumerate(self.up):
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = nn.functional.interpolate(h, size=skip.shape[-1], mode="nearest")
            h = blk(torch.cat([h, skip], dim=1), c)
        out = self.out(h).transpose(1, 2)
        return 2 * torch.softmax(out, -1) - 1 if self.simplex else out
