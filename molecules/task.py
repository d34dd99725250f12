"""The molecules DomainTask: QM9 graph diffusion (headline), a forward property model, and
seed-paper SMILES inverse design with classifier-free guidance.

Python API::

    from molecules.task import MoleculesTask
    task = MoleculesTask()
    cfg = task.config("tiny")
    data = task.load_data(cfg)
    model = task.build(cfg)
    model = task.train(cfg, model, data, Trainer(cfg.train))
    samples = task.generate(model, 64, solver=solvers.make("ddim"), grid=grid.make("uniform", 50,
                            process=model.process))
    task.evaluate(samples, data)        # validity, uniqueness, novelty, ...

Property-conditioned generation: :func:`sample_smiles` (CFG on any property subset) and
``generate(..., guidance=PropertyGuidance({"gap": 0.25}, scale=...))`` (predictor guidance on
the graph model, energy guidance through ``shared.guidance.energy``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from shared import guidance as G
from shared.config import from_dict
from shared.loss import diffusion_loss, drop_condition
from shared.param import Denoiser
from shared.process import make as make_process
from shared.registry import Splits
from shared.sample import prior, sample

from . import configs as C
from .backbones import GraphRegressor, GraphTransformer, SmilesTransformer, SmilesUNet1D
from .data import (ATOM_TYPES, BOND_ORDERS, MAX_NODES, PROPERTY_NAMES, PROPERTY_UNITS, SMILES_ALPHABET,
                   SMILES_LENGTH, MoleculeDataset, MoleculeTable, PropertyScaler, dense_to_mol, load_qm9,
                   load_qm9_smiles, mol_to_dense, onehot_to_smiles, random_split, scaffold_split)
from .metrics import (descriptor_table, distribution_metrics, draw_grid, regression_metrics, sanitize,
                      validity_report)
from .space import MolGraphSpace, decode_dense, encode_dense, pack, unpack

__all__ = ["MoleculesTask", "MoleculeModel", "PARTS", "MoleculeSamples", "PropertyGuidance", "sample_graphs",
           "sample_smiles", "select_best", "best_rows", "predict_properties"]

K_ATOMS, C_BONDS = len(ATOM_TYPES), len(BOND_ORDERS)
#: The networks of a :class:`MoleculeModel` (attribute names), in training order.
PARTS: tuple[str, ...] = ("graph", "predictor", "smiles")


# --------------------------------------------------------------------------- model


class MoleculeModel(nn.Module):
    """The three networks of the domain plus what sampling needs.

    * ``graph``: :class:`shared.param.Denoiser` over packed graphs (:class:`MolGraphSpace`);
    * ``predictor``: :class:`GraphRegressor` forward model (scaled properties) or None;
    * ``smiles``: :class:`shared.param.Denoiser` over SMILES one-hots ``[B, 32, 22]`` or None;
    * buffers ``prop_lo, prop_hi: [P]`` (min-max scaler) and ``n_atoms_prob: [N + 1]`` (the
      training distribution of heavy-atom counts, sampled for each generated graph).

    ``forward(batch, generator) -> [B]`` is the training loss (sum of the enabled models'
    losses), so one Trainer (and DDP) trains everything. ``process`` is the noise process;
    ``space_for(node_mask)`` gives the per-batch graph space.
    """

    def __init__(self, cfg: C.MoleculesConfig):
        super().__init__()
        self.cfg = cfg
        self.property_names = tuple(cfg.data.properties)
        P = len(self.property_names)
        self.process = make_process(cfg.process)
        g = cfg.graph
        net = GraphTransformer(n_atom_types=K_ATOMS, n_bond_types=C_BONDS, max_nodes=MAX_NODES,
                               hidden=g.hidden, edge_hidden=g.edge_hidden, layers=g.layers, heads=g.heads,
                               node_positions=g.node_positions, simplex=g.simplex,
                               valence_features=g.valence_features, self_condition=g.self_condition > 0)
        self.graph = Denoiser(net, self.process, g.prediction)
        p = cfg.predictor
        self.predictor = (GraphRegressor(n_atom_types=K_ATOMS, n_bond_types=C_BONDS, max_nodes=MAX_NODES,
                                         hidden=p.hidden, edge_hidden=p.edge_hidden, layers=p.layers,
                                         heads=p.heads, n_out=P) if p.enabled else None)
        s = cfg.smiles
        if s.backbone == "unet":
            snet = SmilesUNet1D(vocab=len(SMILES_ALPHABET), length=SMILES_LENGTH, n_props=P,
                                channels=tuple(s.unet_channels), heads=s.heads, simplex=s.simplex,
                                self_condition=s.self_condition > 0)
        else:
            snet = SmilesTransformer(vocab=len(SMILES_ALPHABET), length=SMILES_LENGTH, n_props=P,
                                     d_model=s.d_model, layers=s.layers, heads=s.heads,
                                     simplex=s.simplex, self_condition=s.self_condition > 0)
        self.smiles = Denoiser(snet, self.process, s.prediction) if s.enabled else None
        self.register_buffer("prop_lo", torch.zeros(P, dtype=torch.float64))
        self.register_buffer("prop_hi", torch.ones(P, dtype=torch.float64))
        prob = torch.zeros(MAX_NODES + 1)
        prob[MAX_NODES] = 1.0
        self.register_buffer("n_atoms_prob", prob)

    # ---- helpers

    @property
    def space(self) -> None:
        """Graphs have a per-batch space: use :meth:`space_for`."""
        return None

    @staticmethod
    def space_for(node_mask: Tensor, node_weight: float = 1.0) -> MolGraphSpace:
        """The packed-graph space for ``node_mask: [B, N]`` (``node_weight``: an atom's loss
        entries relative to an atom pair's in the space's mean; 1 = the plain mean)."""
        return MolGraphSpace(node_mask.bool(), K_ATOMS, C_BONDS, node_weight=node_weight)

    @property
    def scaler(self) -> PropertyScaler:
        return PropertyScaler(self.prop_lo.cpu(), self.prop_hi.cpu())

    def set_data_stats(self, scaler: PropertyScaler, n_atoms_prob: Tensor) -> None:
        """Store the property scaler and atom-count distribution of the training split."""
        with torch.no_grad():
            self.prop_lo.copy_(scaler.lo)
            self.prop_hi.copy_(scaler.hi)
            self.n_atoms_prob.copy_(n_atoms_prob)

    # ---- training loss

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None,
                parts: Sequence[str] | None = None) -> Tensor:
        """Per-sample training loss ``[B]`` for a batch of :class:`MoleculeDataset` items: the sum
        over ``parts`` (a subset of :data:`PARTS`; None = every enabled network)."""
        cfg, g = self.cfg, generator
        if parts is not None:
            bad = [p for p in parts if p not in PARTS]
            if bad:
                raise ValueError(f"unknown model parts {bad}; choose from {PARTS}")
        use = set(PARTS if parts is None else parts)
        X, E, nm = encode_dense(batch["atoms"], batch["bonds"], K_ATOMS, C_BONDS)
        x0 = pack(X, E)  # [B, N*K + N*N*C]
        space = self.space_for(nm, cfg.graph.node_weight)  # node_weight only changes the loss mean
        B, dev = x0.shape[0], x0.device
        loss = torch.zeros(B, device=dev)
        if "graph" in use:
            loss = loss + diffusion_loss(self.graph, x0, space=space, generator=g,
                                         weighting=cfg.graph.weighting,
                                         time_sampler=cfg.graph.time_sampler,
                                         self_condition=cfg.graph.self_condition, objective=cfg.graph.objective,
                                         node_mask=nm)
        y, known = batch["y"].float(), batch["y_known"].bool()
        if "predictor" in use and self.predictor is not None and y.shape[1]:
            aug = (torch.rand(B, generator=g, device=dev) < 0.5).float() * \
                torch.rand(B, generator=g, device=dev) * cfg.predictor.noise_aug
            x_in = x0 + space.bcast(aug, x0) * space.noise(x0, g)
            err = (self.predictor(x_in, node_mask=nm) - y) ** 2 * known
            loss = loss + cfg.predictor.loss_weight * err.sum(1) / known.sum(1).clamp_min(1)
        if "smiles" in use and self.smiles is not None:
            seq = 2.0 * nn.functional.one_hot(batch["tokens"], len(SMILES_ALPHABET)).float() - 1.0
            keep_rate = torch.rand(B, 1, generator=g, device=dev)
            subset = torch.rand(y.shape, generator=g, device=dev) < keep_rate
            cond = {"y": y, "mask": subset & known}
            cond = drop_condition(cond, cfg.smiles.cond_drop, generator=g, null={"y": 0.0, "mask": False})
            loss = loss + diffusion_loss(self.smiles, seq, cond=cond, generator=g,
                                         weighting=cfg.smiles.weighting,
                                         self_condition=cfg.smiles.self_condition,
                                         objective=cfg.smiles.objective)
        return loss


# --------------------------------------------------------------------------- samples


@dataclass
class MoleculeSamples:
    """Generated molecules.

    kind:     'graph' or 'smiles'.
    mols:     sanitised RDKit ``Mol`` or None (invalid), ``[n]``.
    smiles:   canonical SMILES or None, ``[n]`` (for 'smiles' also ``raw``: the decoded strings).
    atoms, bonds: dense classes ``[n, N]``, ``[n, N, N]`` ('graph' only).
    pred:     forward-model properties ``[n, P]`` in raw units (NaN where invalid / no model).
    targets:  requested properties ``[n, P]`` in raw units (NaN where not targeted) or None.
    names:    property names ``[P]``.
    """

    kind: str
    mols: list
    smiles: list
    raw: list = field(default_factory=list)
    atoms: Tensor | None = None
    bonds: Tensor | None = None
    pred: Tensor | None = None
    targets: Tensor | None = None
    names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.mols)

    def take(self, rows: Sequence[int]) -> "MoleculeSamples":
        """The samples at ``rows`` (in that order)."""
        rows = [int(r) for r in rows]
        pick = lambda t: None if t is None else t[torch.as_tensor(rows, dtype=torch.long)]  # noqa: E731
        return MoleculeSamples(self.kind, [self.mols[r] for r in rows], [self.smiles[r] for r in rows],
                               [self.raw[r] for r in rows] if self.raw else [], pick(self.atoms), pick(self.bonds),
                               pick(self.pred), pick(self.targets), self.names)

    def graphs(self) -> list:
        """PyG ``Data`` graphs of the valid molecules (None for invalid)."""
        from .data import mol_to_graph

        return [mol_to_graph(m) if m is not None else None for m in self.mols]


@dataclass(frozen=True)
class PropertyGuidance:
    """Predictor guidance for the graph model toward target properties (raw units, e.g.
    ``{"gap": 0.25}`` Hartree, or per-sample tensors ``[n]``). ``scale`` multiplies the gradient
    of the energy ``sum_p (f_p(x0_hat) - y_p)^2`` (scaled units) through the denoiser
    (``shared.guidance.energy``); ``interval`` restricts it to ``(t_lo, t_hi)``. The effect grows
    with the number of sampling steps as well as with ``scale``: on validation gap targets (QM9
    sample, benchmark recipe) R² / validity were 0.37 / 0.70 at the default scale with 50 DDPM
    steps and 0.86 / 0.73 at scale 1000 with 150 steps, the setting ``benchmarks/molecules.py``
    uses; larger scales trade validity for R²."""

    targets: Mapping[str, Any]
    scale: float = 200.0
    interval: tuple[float, float] | None = None


def _per_sample_generators(generator, n: int, device) -> list[torch.Generator]:
    if isinstance(generator, (list, tuple)):
        if len(generator) != n:
            raise ValueError(f"got {len(generator)} per-sample generators for n={n}")
        return list(generator)
    if generator is None:
        base = int(torch.randint(0, 2**62, (1,)))
    else:
        base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return [torch.Generator(device=device).manual_seed(base + 7919 * i) for i in range(n)]


def _targets_tensor(model: MoleculeModel, targets: Mapping[str, Any] | None, n: int) -> Tensor | None:
    if not targets:
        return None
    names = model.property_names
    out = torch.full((n, len(names)), float("nan"), dtype=torch.float64)
    for k, v in targets.items():
        if k not in names:
            raise ValueError(f"unknown target property {k!r}; the model knows {names}")
        v = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
        if v.numel() not in (1, n):
            raise ValueError(f"target {k!r} must be a number or have n={n} values, got {v.numel()}")
        out[:, names.index(k)] = v.expand(n) if v.numel() == 1 else v
    return out


def select_best(model: MoleculeModel, samples: MoleculeSamples, k: int) -> MoleculeSamples:
    """Best-of-``k`` selection by the forward model ("self-criticism", as in STGG+,
    Jolicoeur-Martineau et al. 2024): ``samples`` holds ``k`` candidates for each of ``n`` targets,
    candidate ``j`` of target ``i`` at row ``i + j n`` (the order ``sample_graphs`` /
    ``sample_smiles(..., best_of=k)`` draw them in). For each target keep the valid candidate whose
    properties by ``model``'s forward model (``samples.pred``) are nearest its targets: squared
    error summed over the targeted properties in the model's min-max scaled units, the first
    candidate on ties; a target with no valid candidate keeps its first (invalid) one. Returns
    ``n`` samples. The forward model that selects should not be the one that grades: score the
    selected molecules with an independent model (``benchmarks/molecules.py`` does)."""
    rows = best_rows(model, samples, k)
    return samples if k == 1 else samples.take(rows)


def best_rows(model: MoleculeModel, samples: MoleculeSamples, k: int) -> list[int]:
    """The rows :func:`select_best` keeps (``n`` indices into ``samples``), so that values already
    computed for every candidate (e.g. another model's predictions) can be indexed instead of
    recomputed."""
    if k < 1 or len(samples) % k:
        raise ValueError(f"best-of-k needs k >= 1 dividing the {len(samples)} samples, got k={k}")
    n = len(samples) // k
    if k == 1:
        return list(range(n))
    if samples.targets is None or samples.pred is None:
        raise ValueError("best-of-k selection needs targeted samples with forward-model predictions "
                         "(sample with targets / guidance and a model with a predictor)")
    tgt = model.scaler.transform(samples.targets)
    pred = model.scaler.transform(samples.pred)
    known = torch.isfinite(tgt)
    err = torch.where(known, (pred - torch.nan_to_num(tgt)) ** 2, torch.zeros_like(pred)).sum(-1)
    ok = torch.tensor([m is not None for m in samples.mols]) & (torch.isfinite(pred) | ~known).all(-1)
    err = torch.where(ok, err, torch.full_like(err, float("inf"))).reshape(k, n)
    best = err.argmin(0)  # the first minimum: candidate 0 when none is valid
    return (best * n + torch.arange(n)).tolist()


def _tile(targets: Mapping[str, Any], n: int, k: int) -> dict:
    """``targets`` (a number or ``[n]`` values per property) for ``k`` candidates per target."""
    out = {}
    for name, v in targets.items():
        v = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
        if v.numel() not in (1, n):
            raise ValueError(f"target {name!r} must be a number or have n={n} values, got {v.numel()}")
        out[name] = v if v.numel() == 1 else v.repeat(k)
    return out


def _check_best_of(best_of: int, generator) -> None:
    if not isinstance(best_of, int) or best_of < 1:
        raise ValueError(f"best_of must be an int >= 1, got {best_of!r}")
    if best_of > 1 and isinstance(generator, (list, tuple)):
        raise ValueError("best_of > 1 draws its own per-candidate generators: pass one torch.Generator, not a list")


@torch.no_grad()
def predict_properties(model: MoleculeModel, mols: Sequence, *, batch_size: int = 1024) -> Tensor:
    """Forward-model properties ``[n, P]`` (raw units) of RDKit molecules (NaN for None or for
    molecules outside the representation)."""
    P = len(model.property_names)
    out = torch.full((len(mols), P), float("nan"), dtype=torch.float64)
    if model.predictor is None:
        return out
    idx, A, Bd = [], [], []
    for i, m in enumerate(mols):
        if m is None:
            continue
        try:
            a, b = mol_to_dense(m, MAX_NODES)
        except ValueError:
            continue
        idx.append(i)
        A.append(a)
        Bd.append(b)
    if not idx:
        return out
    dev = model.prop_lo.device
    A, Bd = torch.stack(A).to(dev), torch.stack(Bd).to(dev)
    preds = []
    for s in range(0, len(idx), batch_size):
        X, E, nm = encode_dense(A[s:s + batch_size], Bd[s:s + batch_size], K_ATOMS, C_BONDS)
        preds.append(model.predictor(pack(X, E), node_mask=nm).double().cpu())
    out[idx] = model.scaler.inverse(torch.cat(preds))
    return out


def _decode_graphs(atoms: Tensor, bonds: Tensor) -> tuple[list, list]:
    from .data import canonical_smiles

    mols, smi = [], []
    for a, b in zip(atoms, bonds):
        m = dense_to_mol(a, b)
        mols.append(m)
        smi.append(canonical_smiles(m) if m is not None else None)
    return mols, smi


def sample_graphs(model: MoleculeModel, n: int, *, solver, grid: Tensor, generator=None,
                  guidance: PropertyGuidance | None = None, batch_size: int = 500,
                  progress: bool = False, best_of: int = 1) -> MoleculeSamples:
    """Generate ``n`` molecular graphs with the graph model (unconditional, or predictor-guided
    toward ``guidance.targets``). Every sample has its own generator (derived from
    ``generator``), so a sample does not depend on the batch it was drawn in. ``best_of=k``
    (guided only): draw ``k`` candidates per target and keep the one the forward model puts
    nearest the target (:func:`select_best`); the first candidates are the ``best_of=1`` samples."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check_best_of(best_of, generator)
    if best_of > 1:
        if guidance is None:
            raise ValueError("best_of > 1 selects by the distance to the targets: it needs guidance")
        g = dataclasses.replace(guidance, targets=_tile(guidance.targets, n, best_of))
        allc = sample_graphs(model, n * best_of, solver=solver, grid=grid, generator=generator, guidance=g,
                             batch_size=batch_size, progress=progress)
        return select_best(model, allc, best_of)
    model.eval()
    dev = model.prop_lo.device
    gens = _per_sample_generators(generator, n, dev)
    prob = model.n_atoms_prob.float()
    n_atoms = torch.stack([torch.multinomial(prob.to(gg.device), 1, generator=gg).cpu() for gg in gens]).reshape(n)
    node_mask = (torch.arange(MAX_NODES)[None] < n_atoms[:, None]).to(dev)
    targets = _targets_tensor(model, guidance.targets if guidance else None, n)
    D = MAX_NODES * K_ATOMS + MAX_NODES * MAX_NODES * C_BONDS
    outs = []
    chunks = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc="graphs", leave=False)
    for s in chunks:
        nm, gg = node_mask[s:s + batch_size], gens[s:s + batch_size]
        space = model.space_for(nm)
        x_T = prior((nm.shape[0], D), process=model.process, t=float(grid[0]), space=space, generator=gg,
                    device=dev)
        if model.cfg.graph.self_condition > 0:  # feeds the previous x0 estimate (one closure per batch)
            denoise = G.self_conditioned(model.graph, None, node_mask=nm)
        else:
            denoise = model.graph.bind(None, node_mask=nm)
        if guidance is not None and guidance.scale != 0:
            if model.predictor is None:
                raise ValueError("predictor guidance needs a model with a predictor (predictor.enabled)")
            tgt = model.scaler.transform(targets[s:s + batch_size]).to(dev)
            known = torch.isfinite(tgt)
            tgt = torch.nan_to_num(tgt)

            def energy_fn(x0, x, t, nm=nm, tgt=tgt, known=known):
                pred = model.predictor(x0, node_mask=nm)
                return (((pred - tgt) ** 2) * known).sum(-1)

            denoise = G.energy(denoise, energy_fn, guidance.scale, interval=guidance.interval,
                               process=model.process, space=space)
        # no autograd graph across steps (guidance takes its gradients under its own enable_grad):
        # without this every step's activations stay alive and memory grows with the step count
        with torch.no_grad():
            x = sample(denoise, x_T, grid, solver, process=model.process, space=space, hooks=(G.project(space),),
                       generator=gg)
        outs.append(x)
    x = torch.cat(outs)
    X, E = unpack(x, MAX_NODES, K_ATOMS, C_BONDS)
    atoms, bonds = decode_dense(X, E, node_mask)
    mols, smi = _decode_graphs(atoms.cpu(), bonds.cpu())
    pred = predict_properties(model, mols)
    return MoleculeSamples("graph", mols, smi, [], atoms.cpu(), bonds.cpu(), pred, targets, model.property_names)


def _smiles_denoiser(model: MoleculeModel, cond, uncond, scale: float):
    """The SMILES denoiser for one sampling call: unconditional (``cond`` None) or CFG; with a
    self-conditioned network, each call gets the previous call's (guided) x0 estimate."""
    def one(kw):
        if cond is None:
            return model.smiles.bind(uncond, **kw)
        return G.cfg(model.smiles, cond, uncond, scale, **kw)

    if model.cfg.smiles.self_condition <= 0:
        return one({})
    prev: list = [None]

    def d(x: Tensor, t: Tensor) -> Tensor:
        sc = prev[0] if prev[0] is not None else torch.zeros_like(x)
        out = one({"self_cond": sc})(x, t)
        prev[0] = out.detach()
        return out

    return d


def sample_smiles(model: MoleculeModel, n: int, *, solver, grid: Tensor, targets: Mapping[str, Any] | None = None,
                  scale: float | None = None, generator=None, batch_size: int = 500,
                  progress: bool = False, best_of: int = 1) -> MoleculeSamples:
    """Seed-paper inverse design: generate ``n`` SMILES one-hot sequences, conditioned on the
    properties in ``targets`` (raw units; a number or ``[n]`` values per property; the other
    properties are dropped exactly as in CFG training) with classifier-free guidance ``scale``
    (``shared.guidance.cfg``; default ``cfg.smiles.guidance_scale``; 1 = conditional only).
    ``best_of=k`` (with targets): ``k`` candidates per target, the one the forward model puts
    nearest the target kept (:func:`select_best`; it needs a predictor)."""
    if model.smiles is None:
        raise ValueError("this model has no SMILES diffusion model (smiles.enabled=False)")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check_best_of(best_of, generator)
    if best_of > 1:
        if not targets:
            raise ValueError("best_of > 1 selects by the distance to the targets: it needs targets")
        if model.predictor is None:
            raise ValueError("best_of > 1 selects with the forward model: this model has none (predictor.enabled)")
        allc = sample_smiles(model, n * best_of, solver=solver, grid=grid, targets=_tile(targets, n, best_of),
                             scale=scale, generator=generator, batch_size=batch_size, progress=progress)
        return select_best(model, allc, best_of)
    model.eval()
    dev = model.prop_lo.device
    scale = model.cfg.smiles.guidance_scale if scale is None else scale
    gens = _per_sample_generators(generator, n, dev)
    tgt_raw = _targets_tensor(model, targets, n)
    P = len(model.property_names)
    outs = []
    chunks = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc="smiles", leave=False)
    with torch.no_grad():
        for s in chunks:
            gg = gens[s:s + batch_size]
            b = len(gg)
            x_T = prior((b, SMILES_LENGTH, len(SMILES_ALPHABET)), process=model.process, t=float(grid[0]),
                        generator=gg, device=dev)
            uncond = {"y": torch.zeros(b, P, device=dev), "mask": torch.zeros(b, P, dtype=torch.bool, device=dev)}
            cond = None
            if tgt_raw is not None:
                y = model.scaler.transform(tgt_raw[s:s + batch_size])
                cond = {"y": torch.nan_to_num(y).to(dev), "mask": torch.isfinite(y).to(dev)}
            denoise = _smiles_denoiser(model, cond, uncond, scale)
            outs.append(sample(denoise, x_T, grid, solver, process=model.process, generator=gg))
    x = torch.cat(outs)
    raw = onehot_to_smiles(x.cpu())
    from .data import canonical_smiles

    from rdkit import Chem

    mols = [sanitize(Chem.MolFromSmiles(r)) if r else None for r in raw]
    smi = [canonical_smiles(m) if m is not None else None for m in mols]
    pred = predict_properties(model, mols)
    return MoleculeSamples("smiles", mols, smi, raw, None, None, pred, tgt_raw, model.property_names)


# --------------------------------------------------------------------------- data


def _add_descriptors(table: MoleculeTable, names: Sequence[str]) -> Tensor:
    """``[M, len(names)]`` property matrix: QM9 columns from the table, RDKit descriptors computed."""
    cols = []
    for nm in names:
        if nm in PROPERTY_NAMES:
            if table.props is None or nm not in table.names:
                raise ValueError(f"property {nm!r} is not in the data file (columns: {table.names})")
            cols.append(table.props[:, table.names.index(nm)])
        else:
            cols.append(torch.from_numpy(descriptor_table(table.mols, [nm])[:, 0]))
    return torch.stack(cols, dim=1).to(torch.float64)


@functools.lru_cache(maxsize=4)
def _load_splits(data_cfg: C.DataConfig) -> Splits:
    table = load_qm9(data_cfg.path, limit=data_cfg.limit)
    props = _add_descriptors(table, data_cfg.properties)
    table = MoleculeTable(table.smiles, table.mols, props, tuple(data_cfg.properties), table.ids, table.invalid)
    if data_cfg.split == "scaffold":
        parts = scaffold_split(table.smiles, data_cfg.fractions, data_cfg.seed)
    else:
        parts = random_split(len(table), data_cfg.fractions, data_cfg.seed)
    scaler = PropertyScaler.fit(props[parts[0]])
    sets = [MoleculeDataset(table.subset(p), scaler) for p in parts]
    counts = torch.bincount((sets[0].atoms >= 0).sum(1), minlength=MAX_NODES + 1).float()
    extra = {"scaler": scaler, "property_names": tuple(data_cfg.properties), "n_atoms_prob": counts / counts.sum(),
             "train_smiles": frozenset(sets[0].smiles), "units": {k: PROPERTY_UNITS.get(k, "") for k in data_cfg.properties},
             "tables": [table.subset(p) for p in parts]}
    return Splits(sets[0], sets[1], sets[2], extra)


class _GatheredBatches:
    """A :class:`MoleculeDataset` whose ``__getitems__`` gathers the whole batch with one index
    per field (:meth:`MoleculeDataset.batch`); with the identity collate the trainer gets the same
    batches as from the dataset itself."""

    def __init__(self, ds: MoleculeDataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.ds[i]

    def __getitems__(self, idx) -> dict[str, Tensor]:
        return self.ds.batch(idx)


def _identity(batch):
    return batch


# --------------------------------------------------------------------------- the task


class MoleculesTask:
    """QM9 molecule generation (graph diffusion; headline: validity) with a forward property
    model and seed-paper SMILES inverse design. See the module docstring."""

    name = "molecules"
    headline_metric = ("validity", "max")
    extra = "molecules"

    def config(self, preset: str) -> C.MoleculesConfig:
        return C.preset(preset)

    def load_data(self, cfg: C.MoleculesConfig) -> Splits:
        """Splits of :class:`MoleculeDataset`; ``extra`` holds the scaler, property names,
        the atom-count distribution, the training SMILES (novelty reference) and the tables."""
        return _load_splits(cfg.data)

    def build(self, cfg: C.MoleculesConfig) -> MoleculeModel:
        torch.manual_seed(cfg.train.seed)
        return MoleculeModel(cfg)

    def train(self, cfg: C.MoleculesConfig, model: MoleculeModel, data: Splits, trainer) -> MoleculeModel:
        """Fit all enabled networks with one ``shared.training.Trainer`` run; returns the EMA
        model when EMA is on."""
        if len(data.train) == 0:
            raise ValueError("training split is empty")
        model.set_data_stats(data.extra["scaler"], data.extra["n_atoms_prob"])
        trainer.fit(model, lambda m, batch, g: m(batch, g), data.train)
        out = trainer.sampling_model
        return out.eval()

    def train_separately(self, cfg: C.MoleculesConfig, model: MoleculeModel, data: Splits,
                         plan: Mapping[str, Any], *, progress: bool = False, log=None,
                         on_error: str = "raise") -> tuple[MoleculeModel, dict]:
        """Fit the networks one after another, each with its own :class:`shared.config.TrainConfig`
        (``plan``: part name -> TrainConfig, in training order; parts of :data:`PARTS`), e.g. to give
        each a wall-clock budget (``max_seconds``). Only the part being trained has gradients; with
        EMA on, that part's EMA weights replace its trained weights when its run ends. Returns the
        model (eval mode, on the training device) and per part ``{"steps", "seconds",
        "loss_last"}`` (``{"error": str}`` for a part that raised, with ``on_error="record"``;
        ``{"skipped": ...}`` for a disabled part)."""
        import time

        from shared.training import Trainer

        if len(data.train) == 0:
            raise ValueError("training split is empty")
        bad = [p for p in plan if p not in PARTS]
        if bad:
            raise ValueError(f"unknown model parts {bad}; choose from {PARTS}")
        if on_error not in ("raise", "record"):
            raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
        model.set_data_stats(data.extra["scaler"], data.extra["n_atoms_prob"])
        info: dict = {}
        for part, tcfg in plan.items():
            sub = getattr(model, part)
            if sub is None:
                info[part] = {"skipped": "disabled in the config"}
                continue
            model.requires_grad_(False)
            sub.requires_grad_(True)
            trainer = None
            t0 = time.perf_counter()
            try:
                trainer = Trainer(tcfg, None, progress=progress)
                trainer.fit(model, lambda m, batch, g, part=part: m(batch, g, parts=(part,)),
                            _GatheredBatches(data.train), collate_fn=_identity)
            except Exception as e:  # noqa: BLE001 - recorded for the caller (a benchmark keeps going)
                if on_error == "raise":
                    model.requires_grad_(True)
                    raise
                info[part] = {"error": f"{type(e).__name__}: {e}", "steps": trainer.step if trainer else 0}
            else:
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize(trainer.device)
                if trainer.ema_model is not None:
                    sub.load_state_dict(getattr(trainer.ema_model, part).state_dict())
                info[part] = {"steps": trainer.step, "seconds": time.perf_counter() - t0,
                              "loss_last": trainer.history[-1]["loss_avg"] if trainer.history else None}
            finally:
                if trainer is not None:
                    trainer.ema_model = None  # the copy is no longer needed
            if log is not None:
                log(f"trained {part}: {info[part]}")
        model.requires_grad_(True)
        return model.eval(), info

    def generate(self, model: MoleculeModel, n: int, *, solver, grid, guidance=None, generator=None,
                 data: Splits | None = None, best_of: int = 1) -> MoleculeSamples:
        """``n`` molecules from the graph model; ``guidance`` is None, a
        :class:`PropertyGuidance`, or a dict ``{property: value}`` (predictor guidance with the
        default scale); ``best_of``: candidates per guided sample (:func:`select_best`)."""
        if isinstance(guidance, Mapping):
            guidance = PropertyGuidance(dict(guidance))
        return sample_graphs(model, n, solver=solver, grid=grid, generator=generator, guidance=guidance,
                             best_of=best_of)

    def evaluate(self, samples: MoleculeSamples, data: Splits) -> dict[str, float]:
        """Validity, uniqueness, novelty (vs training SMILES; ``novelty_qm9`` vs all 133k QM9
        when ``data.extra['novelty_vs_qm9']`` is true), connectivity, QED/SA statistics and,
        for conditional samples, MAE / R² of targets vs forward-model predictions
        (``cond_mae_<p>``, ``cond_r2_<p>``) and vs exact RDKit values for RDKit descriptors."""
        out = validity_report(samples.mols, reference=data.extra.get("train_smiles", ()))
        if data.extra.get("novelty_vs_qm9"):
            out.update({k: v for k, v in validity_report(samples.mols, load_qm9_smiles(),
                                                          "novelty_qm9").items() if k == "novelty_qm9"})
        out.update(distribution_metrics(samples.mols))
        if samples.targets is not None:
            for j, nm in enumerate(samples.names):
                tgt = samples.targets[:, j].numpy()
                if not np.isfinite(tgt).any():
                    continue
                if samples.pred is not None:
                    r = regression_metrics(tgt, samples.pred[:, j].numpy())
                    out[f"cond_mae_{nm}"], out[f"cond_r2_{nm}"] = r["mae"], r["r2"]
                if nm in C.RDKIT_DESCRIPTORS:
                    r = regression_metrics(tgt, descriptor_table(samples.mols, [nm])[:, 0])
                    out[f"cond_mae_{nm}_rdkit"], out[f"cond_r2_{nm}_rdkit"] = r["mae"], r["r2"]
        return out

    def save(self, model: MoleculeModel, cfg: C.MoleculesConfig, path) -> None:
        from shared.checkpoint import save_checkpoint

        save_checkpoint(path, {"model": model}, cfg,
                        meta={"domain": self.name, "property_names": list(model.property_names)})

    def load(self, path) -> tuple[MoleculeModel, C.MoleculesConfig]:
        from shared.checkpoint import load_checkpoint, load_into

        ckpt = load_checkpoint(path)
        if ckpt.meta.get("domain") not in (None, self.name):
            raise ValueError(f"{path}: checkpoint of domain {ckpt.meta.get('domain')!r}, not {self.name!r}")
        cfg = from_dict(C.MoleculesConfig, ckpt.config)
        model = MoleculeModel(cfg)
        load_into(ckpt, {"model": model})
        return model.eval(), cfg

    def plot(self, samples: MoleculeSamples, data: Splits, path) -> None:
        """Grid of generated molecules with SMILES and forward-model gap (Hartree) as legends."""
        names = samples.names
        legends = []
        for i, s in enumerate(samples.smiles):
            lg = s or ""
            if samples.pred is not None and "gap" in names and s:
                v = float(samples.pred[i, names.index("gap")])
                if math.isfinite(v):
                    lg += f"\ngap {v:.3f} Ha"
            legends.append(lg)
        if not any(m is not None for m in samples.mols):
            from PIL import Image, ImageDraw

            img = Image.new("RGB", (480, 120), "white")
            ImageDraw.Draw(img).text((10, 50), f"no valid molecules among {len(samples)} samples", fill="black")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            img.save(str(path))
            return
        draw_grid(samples.mols, path, legends=legends)
