"""Deep eutectic solvents (the seed paper's second part, smallest honest version): generate the
mole fraction of a binary mixture that melts at a target temperature.

Data: 1,648 measured liquidus points of 237 binary mixtures (``des_eutectic_points.csv.gz``,
MIT; see ``DATA_SOURCES.md``): components as SMILES, their pure melting points ``T#1, T#2`` (K)
and fusion enthalpies ``H#1, H#2`` (kJ/mol), the mole fraction ``X#1`` of component 1 and the
melting (liquidus) temperature ``T_EP`` (K) of the mixture at that composition.

* **Pair features** ``[F]``: ``T_i / 500``, ``H_i / 50`` (missing -> training mean, with a flag)
  and RDKit descriptors of each component (molecular weight, logP, TPSA, H-bond donors /
  acceptors, net and absolute formal charge, heavy atoms), both components side by side.
* **Forward model** :class:`DesForward`: MLP ``(pair features, X#1) -> T`` (scaled): scores the
  generated compositions (its own held-out R² is reported, so its scores can be weighed).
* **Inverse design** :class:`DesDenoiserNet`: a 1-D diffusion model over ``x = 2 X#1 - 1`` with
  ``shared`` losses, CFG and samplers, always given the pair and conditioned on the target
  temperature (dropped with probability ``cond_drop`` in training: classifier-free guidance).
  The liquidus is V-shaped, so a target below the pure melting points has two compositions (one
  per branch): a distribution, not a single answer.

Splits are by mixture (no pair is in two parts), seeded, so held-out scores are for unseen pairs.
The decoded fraction is ``clip((x + 1) / 2, 0, 1)``; how often clipping was needed is reported.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from shared import grid as grids
from shared import guidance as G
from shared import solvers
from shared.loss import diffusion_loss, drop_condition
from shared.param import Denoiser
from shared.process import make as make_process
from shared.sample import prior, sample

from .backbones import TimeEmbedding
from .data import InvalidReport, _open_text, _rdkit, _vendored

__all__ = ["DesTable", "load_des", "pair_features", "group_split", "DesForward", "DesDenoiserNet",
           "DesModel", "train_des", "sample_fractions", "run_des_benchmark"]

_T_SCALE, _H_SCALE = 500.0, 50.0


@dataclass
class DesTable:
    """Binary mixtures, one row per measured point: ``smiles1/2 [M]``, ``t_pure [M, 2]`` (K),
    ``h_fus [M, 2]`` (kJ/mol, NaN where unknown), ``x1 [M]`` mole fraction of component 1,
    ``t_melt [M]`` (K), ``pair [M]`` mixture id (equal SMILES pair = equal id), ``invalid``."""

    smiles1: list
    smiles2: list
    t_pure: np.ndarray
    h_fus: np.ndarray
    x1: np.ndarray
    t_melt: np.ndarray
    pair: np.ndarray
    invalid: InvalidReport

    def __len__(self) -> int:
        return len(self.x1)

    def subset(self, idx) -> "DesTable":
        idx = np.asarray(idx)
        return DesTable([self.smiles1[i] for i in idx], [self.smiles2[i] for i in idx], self.t_pure[idx],
                        self.h_fus[idx], self.x1[idx], self.t_melt[idx], self.pair[idx], self.invalid)


def _num(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def load_des(path: str | Path | None = None) -> DesTable:
    """Read the eutectic-points CSV (columns ``Smiles#1, Smiles#2, T#1, T#2, H#1, H#2, X#1,
    T_EP``; default: the vendored file). Rows with an unparsable SMILES, a missing pure
    melting point / composition / temperature, or ``X#1`` outside [0, 1] are reported (one
    warning: count and examples) and skipped."""
    Chem = _rdkit()
    p = Path(path) if path is not None else _vendored("des_eutectic_points.csv.gz")
    with _open_text(p) as f:
        rows = list(csv.DictReader(f))
    need = ["Smiles#1", "Smiles#2", "T#1", "T#2", "X#1", "T_EP"]
    if not rows or any(c not in rows[0] for c in need):
        cols = list(rows[0]) if rows else []
        raise ValueError(f"{p}: a DES eutectic-points file needs columns {need}; found {cols}")
    rep = InvalidReport()
    s1, s2, tp, hf, x1, tm = [], [], [], [], [], []
    for i, r in enumerate(rows):
        a, b = r["Smiles#1"].strip(), r["Smiles#2"].strip()
        if not a or not b or Chem.MolFromSmiles(a) is None or Chem.MolFromSmiles(b) is None:
            rep.add(i, f"{a} + {b}", "SMILES not parsable by RDKit")
            continue
        vals = [_num(r[k]) for k in ("T#1", "T#2", "X#1", "T_EP")]
        if not all(math.isfinite(v) for v in vals) or not 0.0 <= vals[2] <= 1.0:
            rep.add(i, f"{a} + {b}", "missing temperature / composition or X#1 outside [0, 1]")
            continue
        s1.append(a)
        s2.append(b)
        tp.append(vals[:2])
        hf.append([_num(r.get("H#1")), _num(r.get("H#2"))])
        x1.append(vals[2])
        tm.append(vals[3])
    rep.warn("load_des")
    ids: dict = {}
    pair = np.array([ids.setdefault((a, b), len(ids)) for a, b in zip(s1, s2)], dtype=np.int64)
    return DesTable(s1, s2, np.array(tp, dtype=np.float64).reshape(-1, 2),
                    np.array(hf, dtype=np.float64).reshape(-1, 2), np.array(x1, dtype=np.float64),
                    np.array(tm, dtype=np.float64), pair, rep)


def group_split(pair: np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> list[np.ndarray]:
    """Row indices of a seeded split by mixture: every pair lands in exactly one part."""
    if abs(sum(fractions) - 1) > 1e-6 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    groups = np.unique(pair)
    perm = np.random.default_rng(seed).permutation(groups)
    cuts = np.round(np.cumsum(fractions)[:-1] * len(groups)).astype(int)
    return [np.sort(np.flatnonzero(np.isin(pair, g))) for g in np.split(perm, cuts)]


def _descriptors(smiles: str) -> list[float]:
    from rdkit.Chem import Descriptors, rdMolDescriptors

    Chem = _rdkit()
    m = Chem.MolFromSmiles(smiles)
    q = [a.GetFormalCharge() for a in m.GetAtoms()]
    return [Descriptors.MolWt(m) / 200.0, Descriptors.MolLogP(m) / 5.0, rdMolDescriptors.CalcTPSA(m) / 100.0,
            rdMolDescriptors.CalcNumHBD(m) / 3.0, rdMolDescriptors.CalcNumHBA(m) / 3.0, sum(q) / 2.0,
            sum(abs(v) for v in q) / 2.0, m.GetNumHeavyAtoms() / 20.0]


def pair_features(table: DesTable, h_mean: np.ndarray | None = None) -> tuple[Tensor, np.ndarray]:
    """``[M, F]`` float features of each row's pair (see module docstring) and the enthalpy
    means used for missing values (pass the training split's to the other splits)."""
    h = table.h_fus
    if h_mean is None:
        h_mean = np.array([np.nanmean(h[:, 0]), np.nanmean(h[:, 1])])
    miss = ~np.isfinite(h)
    hf = np.where(miss, h_mean[None], h)
    cache: dict = {}
    desc = np.array([cache.setdefault(a, _descriptors(a)) + cache.setdefault(b, _descriptors(b))
                     for a, b in zip(table.smiles1, table.smiles2)], dtype=np.float64).reshape(len(table), -1)
    f = np.concatenate([table.t_pure / _T_SCALE, hf / _H_SCALE, miss.astype(np.float64), desc], axis=1)
    return torch.tensor(f, dtype=torch.float32), h_mean


def _mlp(d_in: int, hidden: int, d_out: int, layers: int = 3) -> nn.Sequential:
    mods: list = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.SiLU()]
        d = hidden
    return nn.Sequential(*mods, nn.Linear(d, d_out))


class DesForward(nn.Module):
    """Forward model ``forward(feat [B, F], x1 [B]) -> T [B]`` (K)."""

    def __init__(self, n_feat: int, hidden: int = 128):
        super().__init__()
        self.net = _mlp(n_feat + 2, hidden, 1)

    def forward(self, feat: Tensor, x1: Tensor) -> Tensor:
        x1 = x1.to(feat.dtype)[:, None]
        return self.net(torch.cat([feat, x1, x1 * (1 - x1)], dim=1))[:, 0] * _T_SCALE


class DesDenoiserNet(nn.Module):
    """Denoiser backbone over ``x [B, 1]`` (``2 X#1 - 1``): ``forward(x, t, cond, *, feat)``;
    ``cond`` is ``{"T": [B] target / 500 K, "has_T": [B] 1 or 0}`` (0 = dropped for CFG)."""

    def __init__(self, n_feat: int, hidden: int = 128):
        super().__init__()
        self.time = TimeEmbedding(hidden, freq_dim=32)
        self.inp = nn.Linear(1 + n_feat + 2, hidden)
        self.net = _mlp(hidden, hidden, 1, layers=2)

    def forward(self, x: Tensor, t: Tensor, cond=None, *, feat: Tensor, **kw) -> Tensor:
        B = x.shape[0]
        if cond is None:
            T, has = torch.zeros(B, device=x.device), torch.zeros(B, device=x.device)
        else:
            T, has = cond["T"].to(x.dtype), cond["has_T"].to(x.dtype)
        h = self.inp(torch.cat([x.to(feat.dtype), feat, (T * has)[:, None], has[:, None]], dim=1))
        return self.net(h + self.time(t))


class DesModel(nn.Module):
    """Forward model + conditional diffusion model over the mole fraction."""

    def __init__(self, n_feat: int, hidden: int = 128, process: str = "cosine_vp", prediction: str = "v",
                 cond_drop: float = 0.15):
        super().__init__()
        self.process = make_process(process)
        self.forward_model = DesForward(n_feat, hidden)
        self.diffusion = Denoiser(DesDenoiserNet(n_feat, hidden), self.process, prediction)
        self.cond_drop = cond_drop

    def loss(self, feat: Tensor, x1: Tensor, t_melt: Tensor, generator=None) -> Tensor:
        """Per-sample loss ``[B]``: forward-model MSE (scaled) + diffusion loss with CFG dropout."""
        fm = ((self.forward_model(feat, x1) - t_melt.to(feat.dtype)) / _T_SCALE) ** 2
        cond = {"T": t_melt.to(feat.dtype) / _T_SCALE, "has_T": torch.ones_like(x1, dtype=feat.dtype)}
        cond = drop_condition(cond, self.cond_drop, generator=generator, null={"T": 0.0, "has_T": 0.0})
        x0 = (2 * x1.to(feat.dtype) - 1)[:, None]
        return fm + diffusion_loss(self.diffusion, x0, cond=cond, generator=generator, feat=feat)


def train_des(model: DesModel, feat: Tensor, x1: Tensor, t_melt: Tensor, *, steps: int = 3000,
              batch_size: int = 256, lr: float = 2e-3, seed: int = 0) -> DesModel:
    """AdamW with a cosine schedule on minibatches of rows; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    x1 = torch.as_tensor(x1, dtype=torch.float32)
    t_melt = torch.as_tensor(t_melt, dtype=torch.float32)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x1), (min(batch_size, len(x1)),), generator=g)
        loss = model.loss(feat[idx], x1[idx], t_melt[idx], generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def sample_fractions(model: DesModel, feat: Tensor, t_target: Tensor | None, *, scale: float = 1.0,
                     steps: int = 50, solver: str = "ddpm", seed: int = 0) -> tuple[Tensor, float]:
    """One generated ``X#1`` per row of ``feat`` for the target temperatures ``t_target [B]``
    (K; None = only the pair is given), with CFG ``scale`` on the target. Returns the fractions and
    the share of samples that needed clipping into [0, 1]. Per-row generators: a sample does not
    depend on the batch it was drawn in."""
    B = feat.shape[0]
    gens = [torch.Generator().manual_seed(seed * 100003 + i) for i in range(B)]
    grid = grids.make("uniform", steps, process=model.process)
    x_T = prior((B, 1), process=model.process, t=float(grid[0]), generator=gens)
    null = {"T": torch.zeros(B), "has_T": torch.zeros(B)}
    if t_target is None:
        d = model.diffusion.bind(null, feat=feat)
    else:
        cond = {"T": torch.as_tensor(t_target, dtype=torch.float32) / _T_SCALE, "has_T": torch.ones(B)}
        d = G.cfg(model.diffusion, cond, null, scale, feat=feat)
    x = sample(d, x_T, grid, solvers.make(solver), process=model.process, generator=gens)[:, 0]
    x1 = (x.double() + 1) / 2
    clipped = float(((x1 < 0) | (x1 > 1)).double().mean())
    return x1.clamp(0, 1), clipped


def run_des_benchmark(*, seed: int = 0, steps: int = 3000, scales: Sequence[float] = (1.0, 2.0),
                      path: str | Path | None = None) -> dict:
    """Train on the pairs of the training split, then, for every held-out row, generate a
    composition for its measured melting temperature and score it with the forward model.

    Reports ``des_forward_r2_test`` / ``_mae_test`` (forward model at the measured compositions:
    how far its scores can be trusted), ``des_cond_r2`` / ``des_cond_mae`` per CFG scale
    (target vs forward model at the generated compositions), the same for compositions generated
    without the target (``des_uncond_*``: the pair alone; the measured compositions themselves
    score ``des_forward_*``), and ``des_x1_mae`` (generated vs
    measured composition; not the goal, since a target can have two compositions)."""
    from .metrics import regression_metrics

    tab = load_des(path)
    tr, va, te = group_split(tab.pair, seed=seed)
    train, test = tab.subset(np.concatenate([tr, va])), tab.subset(te)
    f_tr, h_mean = pair_features(train)
    f_te, _ = pair_features(test, h_mean)
    torch.manual_seed(seed)
    model = DesModel(f_tr.shape[1])
    model = train_des(model, f_tr, train.x1, train.t_melt, steps=steps, seed=seed)
    t_te = torch.tensor(test.t_melt, dtype=torch.float32)
    with torch.no_grad():
        pred_true = model.forward_model(f_te, torch.tensor(test.x1, dtype=torch.float32)).double().numpy()
    out: dict = {"des_rows": len(tab), "des_pairs": int(len(np.unique(tab.pair))), "des_skipped": tab.invalid.count,
                 "des_train_rows": len(train), "des_test_rows": len(test),
                 "des_test_pairs": int(len(np.unique(test.pair))), "des_train_steps": steps}
    r = regression_metrics(test.t_melt, pred_true)
    out["des_forward_r2_test"], out["des_forward_mae_test"] = r["r2"], r["mae"]
    x_u, _ = sample_fractions(model, f_te, None, seed=seed)
    with torch.no_grad():
        pu = model.forward_model(f_te, x_u.float()).double().numpy()
    r = regression_metrics(test.t_melt, pu)
    out["des_uncond_r2"], out["des_uncond_mae"] = r["r2"], r["mae"]
    for s in scales:
        x_c, clipped = sample_fractions(model, f_te, t_te, scale=s, seed=seed)
        with torch.no_grad():
            pc = model.forward_model(f_te, x_c.float()).double().numpy()
        r = regression_metrics(test.t_melt, pc)
        key = f"s{s:g}"
        out[f"des_cond_r2_{key}"], out[f"des_cond_mae_{key}"] = r["r2"], r["mae"]
        out[f"des_x1_mae_{key}"] = float(np.abs(x_c.numpy() - test.x1).mean())
        out[f"des_clipped_{key}"] = clipped
    return out


if __name__ == "__main__":  # pragma: no cover - CLI
    import argparse
    import json

    ap = argparse.ArgumentParser(description="DES inverse design: mole fraction for a target melting point")
    ap.add_argument("--json", default=None)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None, help="eutectic-points CSV (default: the vendored file)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    res = run_des_benchmark(seed=a.seed, steps=a.steps, path=a.data)
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
