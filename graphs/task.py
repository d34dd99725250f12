"""The graphs DomainTask: predictor-guided generation of NAS-Bench-201 cells (DiffusionNAG-style).

Pipeline: a score network over node types on the fixed 8-node DAG is trained on the training
split (label-free); a noise-aware accuracy predictor is trained on noisy cells with a counted
budget of benchmark labels; generation uses ``shared.guidance.classifier`` with the predictor's
standardised accuracy as ``log p(y | x_t)`` (times a scale, inside a noise interval); generated
cells are decoded, validated, de-duplicated, ranked by the predictor and the top-k are
"trained" (looked up) in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from shared import guidance as G
from shared.config import TrainConfig, from_dict, preset
from shared.loss import diffusion_loss, sample_t
from shared.param import Denoiser
from shared.process import NoiseProcess
from shared.process import make as make_process
from shared.registry import Splits
from shared.sample import prior, sample
from shared.spaces import Masked

from . import configs as C
from .backbones import CellPredictor, CellTransformer, PredictorEnsemble
from .data import (DATASETS, INPUT, N_NODES, N_TYPES, OUTPUT, NB201Lookup, NB201Table, decode, is_valid,
                   load_nb201, load_split_permutation, ops_to_arch, ops_to_onehot, to_signed)
from .metrics import novelty, uniqueness, validity

__all__ = ["GraphsTask", "GraphsModel", "CellSamples", "Guidance", "cell_space", "train_predictor",
           "search", "random_search", "rank_and_lookup", "FIXED_MASK", "FIXED_TYPES"]

DS_NAMES: tuple[str, ...] = tuple(DATASETS)
#: rows held fixed: node 0 = input, node 7 = output
FIXED_MASK = torch.tensor([True] + [False] * (N_NODES - 2) + [True])
FIXED_TYPES = torch.tensor([INPUT] + [2] * (N_NODES - 2) + [OUTPUT])  # middle entries unused


def cell_space() -> Masked:
    """``shared.spaces.Masked`` over ``[B, 8, 7]``: the input/output rows are fixed at their
    signed one-hot, the 6 operation rows are free."""
    mask = (~FIXED_MASK)[None, :, None].expand(1, N_NODES, N_TYPES).clone()  # [1, 8, 7]
    fixed = to_signed(ops_to_onehot(FIXED_TYPES))[None]  # [1, 8, 7]
    return Masked(mask, fixed)


def _process(m: C.ModelConfig) -> NoiseProcess:
    if m.process == "ve":
        return make_process("ve", sigma_min=0.01, sigma_max=m.sigma_max)
    return make_process(m.process)


def _make_predictor(p: C.PredictorConfig) -> nn.Module:
    """One :class:`CellPredictor`, or a :class:`PredictorEnsemble` of ``p.ensemble`` of them."""
    def one():
        return CellPredictor(hidden=p.hidden, layers=p.layers, n_datasets=len(DS_NAMES),
                             fixed_mask=FIXED_MASK, fixed_types=FIXED_TYPES)
    return one() if p.ensemble == 1 else PredictorEnsemble([one() for _ in range(p.ensemble)])


class GraphsModel(nn.Module):
    """Score network (as a ``shared.param.Denoiser``) + noise-aware predictor.

    Attributes: ``denoiser`` (``.process``, ``.space``), ``predictor`` (:class:`CellPredictor`),
    buffers ``label_mean``/``label_std`` ``[3]`` (label standardisation per dataset) and
    ``label_counts`` ``[3]`` (benchmark labels the predictor was trained with, per dataset).
    """

    def __init__(self, cfg: C.GraphsConfig):
        super().__init__()
        self.cfg = cfg
        m = cfg.model
        head = "softmax" if m.prediction == "x0" else "linear"
        net = CellTransformer(hidden=m.hidden, layers=m.layers, heads=m.heads, dropout=m.dropout, head=head,
                              fixed_mask=FIXED_MASK, fixed_types=FIXED_TYPES)
        self.denoiser = Denoiser(net, _process(m), m.prediction, space=cell_space(), sigma_data=0.7)
        self.predictor = _make_predictor(cfg.predictor)
        self.register_buffer("label_mean", torch.zeros(len(DS_NAMES)))
        self.register_buffer("label_std", torch.ones(len(DS_NAMES)))
        self.register_buffer("label_counts", torch.zeros(len(DS_NAMES), dtype=torch.long))

    def reset_predictor(self, seed: int = 0) -> None:
        """Fresh predictor weights (seeded) and label statistics, e.g. before a new target."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            new = _make_predictor(self.cfg.predictor)
        self.predictor = new.to(self.label_mean.device)
        self.label_mean.zero_()
        self.label_std.fill_(1.0)
        self.label_counts.zero_()

    @property
    def process(self) -> NoiseProcess:
        return self.denoiser.process

    @property
    def space(self) -> Masked:
        return self.denoiser.space

    def predict(self, x: Tensor, t: Tensor, dataset: str | int) -> Tensor:
        """Standardised predicted accuracy ``[B]`` of (noisy) cells ``x: [B, 8, 7]`` at ``t: [B]``.

        Transfer: when the predictor saw no label of ``dataset``, the mean of its standardised
        predictions for the datasets it has labels for is returned."""
        d = DS_NAMES.index(dataset) if isinstance(dataset, str) else int(dataset)
        x = self.space.project(x)
        ids = [d] if int(self.label_counts[d]) > 0 or int(self.label_counts.sum()) == 0 else \
            [k for k in range(len(DS_NAMES)) if int(self.label_counts[k]) > 0]
        outs = [self.predictor(x, t, torch.full((x.shape[0],), k, device=x.device)) for k in ids]
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)

    def predict_accuracy(self, ops: Tensor, dataset: str) -> Tensor:
        """Predicted accuracy of clean cells ``ops: [B, 8]`` (t = 0): in % with
        ``label_transform="zscore"``, else (and in transfer) in the predictor's standardised
        units (monotone in the predicted accuracy)."""
        d = DS_NAMES.index(dataset)
        x = to_signed(ops_to_onehot(ops)).to(self.label_mean.device)
        with torch.no_grad():
            z = self.predict(x, torch.zeros(x.shape[0], device=x.device), dataset)
        if int(self.label_counts[d]) == 0 or self.cfg.predictor.label_transform != "zscore":
            return z  # standardised units (transfer, or rank-gaussianised labels)
        return z * self.label_std[d] + self.label_mean[d]


# ---------------------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Guidance:
    """Predictor guidance: target ``dataset``, ``scale`` (0 = unguided) and time ``interval``."""

    dataset: str = "cifar10"
    scale: float = 5.0
    interval: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise ValueError(f"guidance scale must be a finite number >= 0, got {self.scale}")
        lo, hi = self.interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"guidance interval {self.interval} must satisfy 0 <= lo <= hi <= 1")


@dataclass
class CellSamples:
    """Generated cells.

    x: ``[N, 8, 7]`` continuous samples; ops: ``[N, 8]`` decoded types (argmax); valid: ``[N]``
    bool; scores: ``[N]`` predictor's standardised accuracy of the decoded clean cell on
    ``dataset`` (``-inf`` where invalid); top_k: how many to look up; guidance: what was used.
    """

    x: Tensor
    ops: Tensor
    valid: Tensor
    scores: Tensor
    dataset: str
    top_k: int = 5
    guidance: Guidance | None = None
    label_counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.ops.shape[0]

    def archs(self) -> list[str | None]:
        """Arch strings (None for invalid cells)."""
        return [ops_to_arch(o) if v else None for o, v in zip(self.ops, self.valid.tolist())]

    def ranked(self) -> list[str]:
        """Valid, de-duplicated arch strings, best predicted first."""
        order = torch.argsort(self.scores, descending=True, stable=True).tolist()
        seen, out = set(), []
        for i in order:
            if not bool(self.valid[i]):
                continue
            a = ops_to_arch(self.ops[i])
            if a not in seen:
                seen.add(a)
                out.append(a)
        return out


def rank_and_lookup(samples: CellSamples, lookup: NB201Lookup, k: int | None = None) -> list[tuple[str, float]]:
    """Look up the top-``k`` ranked unique valid cells in order -> ``[(arch, accuracy)]``."""
    k = samples.top_k if k is None else k
    return [(a, lookup.lookup(a, samples.dataset)) for a in samples.ranked()[:k]]


# ---------------------------------------------------------------------------------------- training


def _unwrap(m: nn.Module) -> nn.Module:
    return m.module if hasattr(m, "module") and isinstance(getattr(m, "module"), nn.Module) else m


def _noisy(process: NoiseProcess, space, x0: Tensor, generator, clean_fraction: float = 0.0) -> tuple[Tensor, Tensor]:
    """``(x_t, t)`` with ``t ~ U(0, 1)`` (``shared.loss.sample_t``; the first
    ``clean_fraction`` of the batch at ``t = 0``) and ``x_t = alpha x0 + sigma eps``, eps from
    the space."""
    t = sample_t("uniform", x0.shape[0], process=process, generator=generator, device=x0.device)
    n_clean = int(round(clean_fraction * x0.shape[0]))
    if n_clean:
        t = torch.cat([torch.zeros_like(t[:n_clean]), t[n_clean:]])
    eps = space.noise(x0, generator)
    x_t = space.bcast(process.alpha(t), x0) * x0 + space.bcast(process.sigma(t), x0) * eps
    return x_t, t.to(x0.dtype)


def _rank_gauss(y: Tensor) -> Tensor:
    """Labels ``[n]`` -> standard-normal quantiles of their (average) ranks, ``[n]``."""
    n = y.numel()
    if n == 1:
        return torch.zeros(1)
    order = torch.argsort(y, stable=True)
    r = torch.empty(n, dtype=torch.float64)
    r[order] = torch.arange(n, dtype=torch.float64)
    ys = y[order]
    # ties share their mean rank
    _, inv, cnt = torch.unique_consecutive(ys, return_inverse=True, return_counts=True)
    mean_rank = torch.zeros(cnt.numel(), dtype=torch.float64).index_add_(0, inv, r[order]) / cnt
    r[order] = mean_rank[inv]
    u = (r + 0.5) / n
    return (math.sqrt(2.0) * torch.erfinv(2 * u - 1)).float()


def _label_indices(train_idx: Tensor, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(int(seed))
    return train_idx[torch.randperm(train_idx.numel(), generator=g)[:n]]


def train_predictor(model: GraphsModel, data: Splits, *, dataset: str | None = None,
                    lookup: NB201Lookup | None = None, progress: bool = False,
                    device: str | None = None) -> dict[str, int]:
    """Train ``model.predictor`` on noisy cells (all noise levels) with benchmark labels.

    ``cfg.predictor.labels_target`` cells of the training split are looked up on ``dataset``
    (default ``cfg.search.dataset``) and ``labels_other`` on each other dataset, all through
    ``lookup`` (a fresh :class:`NB201Lookup` if None), so the budget is counted. Loss: MSE on the
    per-dataset standardised accuracy + ``rank_weight`` x pairwise logistic ranking loss (pairs
    of the same dataset in a batch). Returns the labels used per dataset."""
    from shared.training import Trainer

    cfg = model.cfg
    p = cfg.predictor
    dataset = dataset or cfg.search.dataset
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    table: NB201Table = data.extra["table"]
    lookup = lookup or NB201Lookup(table)
    train_idx: Tensor = data.extra["train_idx"]
    xs, ys, ds, counts = [], [], [], {}
    for k, name in enumerate(DS_NAMES):
        n = p.labels_target if name == dataset else p.labels_other
        n = min(n, train_idx.numel())
        counts[name] = n
        if n == 0:
            model.label_mean[k], model.label_std[k] = 0.0, 1.0
            continue
        idx = _label_indices(train_idx, n, p.seed)
        y = torch.tensor([lookup.lookup(table.archs[i], name) for i in idx.tolist()])
        mu, sd = y.mean(), y.std() if n > 1 else torch.tensor(1.0)
        model.label_mean[k], model.label_std[k] = mu, sd.clamp_min(1e-3)
        xs.append(to_signed(ops_to_onehot(table.ops[idx])))
        ys.append(_rank_gauss(y) if p.label_transform == "rank_gauss" else (y - mu) / sd.clamp_min(1e-3))
        ds.append(torch.full((n,), k, dtype=torch.long))
    model.label_counts.copy_(torch.tensor([counts[n] for n in DS_NAMES]))
    dset = torch.utils.data.TensorDataset(torch.cat(xs), torch.cat(ys), torch.cat(ds))
    process, space = model.process, model.space
    rank_w = p.rank_weight

    def loss_fn(pred: nn.Module, batch, g: torch.Generator) -> Tensor:
        x0, y, d = batch
        x_t, t = _noisy(process, space, x0, g, p.clean_fraction)
        xp = space.project(x_t)
        # ensemble: every member is fitted to the labels (sum of the members' losses)
        outs = _unwrap(pred).forward_all(xp, t, d) if isinstance(_unwrap(pred), PredictorEnsemble) \
            else pred(xp, t, d)[None]  # [K, B]
        loss = ((outs - y) ** 2).sum(0)
        if rank_w > 0:
            better = (y[:, None] > y[None, :]) & (d[:, None] == d[None, :])  # [B, B]
            if better.any():
                margin = outs[:, :, None] - outs[:, None, :]  # [K, B, B]
                rank = (torch.nn.functional.softplus(-margin) * better).sum(0)
                loss = loss + rank_w * rank.sum(1) / better.sum(1).clamp_min(1)
        return loss

    tc = TrainConfig(steps=p.steps, batch_size=min(p.batch_size, len(dset)), lr=p.lr, weight_decay=p.weight_decay,
                     warmup_steps=min(50, p.steps // 10), lr_schedule="cosine", ema_decay=0.0,
                     log_every=max(1, p.steps // 10), seed=p.seed, device=device or cfg.train.device)
    trainer = Trainer(tc, None, progress=progress)
    model.predictor.train()
    trainer.fit(model.predictor, loss_fn, dset)
    model.predictor.eval()
    return counts


def _resolve_guidance(model: GraphsModel, guidance: Any) -> Guidance:
    s = model.cfg.search
    if guidance is None:
        return Guidance(s.dataset, s.scale, tuple(s.interval))
    if isinstance(guidance, Guidance):
        return guidance
    if isinstance(guidance, (int, float)) and not isinstance(guidance, bool):
        return Guidance(s.dataset, float(guidance), tuple(s.interval))
    if isinstance(guidance, Mapping):
        unknown = set(guidance) - {"dataset", "scale", "interval"}
        if unknown:
            raise ValueError(f"unknown guidance keys {sorted(unknown)}; valid: dataset, scale, interval")
        return Guidance(guidance.get("dataset", s.dataset), float(guidance.get("scale", s.scale)),
                        tuple(guidance.get("interval", s.interval)))
    raise TypeError(f"guidance must be None, a number (scale), a dict or a Guidance, got {type(guidance).__name__}")


@torch.no_grad()
def search(model: GraphsModel, n: int, *, solver, grid: Tensor, guidance: Any = None, generator=None,
           batch_size: int | None = None, progress: bool = False) -> CellSamples:
    """Generate ``n`` cells with predictor guidance and score them (see :class:`CellSamples`).

    ``guidance``: None (the config's dataset/scale/interval), a number (scale), a dict with
    ``dataset``/``scale``/``interval`` or a :class:`Guidance`; scale 0 = unguided."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    g = _resolve_guidance(model, guidance)
    model.eval()
    dev = model.label_mean.device
    process, space = model.process, model.space
    den = model.denoiser.bind()
    if g.scale > 0:
        den = G.classifier(den, lambda x, t: model.predict(x, t, g.dataset), g.scale, interval=g.interval,
                           process=process, space=space)
    bs = batch_size or model.cfg.search.batch_size
    t0 = float(grid[0])
    outs = []
    for start in range(0, n, bs):
        m = min(bs, n - start)
        x_T = space.project(prior((m, N_NODES, N_TYPES), process=process, t=t0, space=space, generator=generator,
                                  device=dev))
        outs.append(sample(den, x_T, grid, solver, process=process, space=space, hooks=(G.project(space),),
                           generator=generator, progress=progress))
    x = torch.cat(outs)
    ops = decode(x)
    valid = is_valid(ops)
    scores = torch.full((n,), -math.inf)
    if valid.any():
        scores[valid] = model.predict(to_signed(ops_to_onehot(ops[valid])).to(dev),
                                      torch.zeros(int(valid.sum()), device=dev), g.dataset).float().cpu()
    counts = {name: int(c) for name, c in zip(DS_NAMES, model.label_counts.tolist())}
    return CellSamples(x.cpu(), ops.cpu(), valid.cpu(), scores, g.dataset, model.cfg.search.top_k, g, counts)


def random_search(table: NB201Table, dataset: str, k: int, generator: torch.Generator,
                  lookup: NB201Lookup | None = None) -> float:
    """Random search: look up ``k`` distinct random cells of the whole space; best accuracy."""
    lookup = lookup or NB201Lookup(table)
    idx = torch.randperm(len(table.archs), generator=generator)[:k].tolist()
    return max(lookup.lookup(table.archs[i], dataset) for i in idx)


# ---------------------------------------------------------------------------------------- the task


class GraphsTask:
    """NAS-Bench-201 cell generation with a noise-aware accuracy predictor (DiffusionNAG-style).

    Headline metric: ``best_acc`` — the best benchmark accuracy on the target dataset among the
    top-k predictor-ranked generated cells (k = ``search.top_k`` lookups), higher is better."""

    name = "graphs"
    headline_metric = ("best_acc", "max")
    extra = "graphs"

    def config(self, preset_name: str) -> C.GraphsConfig:
        return preset(C, preset_name)

    def load_data(self, cfg: C.GraphsConfig) -> Splits:
        """train / test: signed one-hot cells ``[N, 8, 7]`` of DiffusionNAG's split (15,000 / 625);
        extra: ``table`` (:class:`NB201Table`), ``train_idx``, ``test_idx``, ``train_archs``."""
        table = load_nb201()
        perm = load_split_permutation(n=len(table.archs))
        train_idx, test_idx = perm[:15000], perm[15000:]
        if cfg.train_subset:
            train_idx = train_idx[:cfg.train_subset]
        x = to_signed(ops_to_onehot(table.ops))  # [15625, 8, 7]
        return Splits(train=x[train_idx], val=None, test=x[test_idx],
                      extra={"table": table, "train_idx": train_idx, "test_idx": test_idx,
                             "train_archs": frozenset(table.archs[i] for i in perm[:15000].tolist())})

    def build(self, cfg: C.GraphsConfig) -> GraphsModel:
        torch.manual_seed(cfg.train.seed)
        return GraphsModel(cfg)

    def train(self, cfg: C.GraphsConfig, model: GraphsModel, data: Splits, trainer) -> GraphsModel:
        """Train the score network with ``trainer`` (EMA weights are kept for sampling), then the
        predictor with its own label budget (``cfg.predictor``) on ``cfg.search.dataset``."""
        m = cfg.model

        def loss_fn(den: nn.Module, batch: Tensor, g: torch.Generator) -> Tensor:
            return diffusion_loss(_unwrap(den), batch, time_sampler=m.time_sampler, weighting=m.weighting,
                                  generator=g)

        trainer.fit(model.denoiser, loss_fn, data.train)
        if trainer.ema_model is not None:
            model.denoiser.load_state_dict(trainer.ema_model.state_dict())
        model.to(trainer.device)
        train_predictor(model, data, progress=bool(trainer.progress))
        model.eval()
        return model

    def generate(self, model: GraphsModel, n: int, *, solver, grid, guidance=None, generator=None,
                 data: Splits | None = None) -> CellSamples:
        return search(model, n, solver=solver, grid=grid, guidance=guidance, generator=generator)

    def evaluate(self, samples: CellSamples, data: Splits) -> dict[str, float]:
        """validity, uniqueness (of valid), novelty (unique valid cells not in the training split),
        ``best_acc`` / ``best_acc_<ds>`` (best of the top-k lookups), ``lookups_<ds>``,
        ``top1_acc``, ``lookups_to_best`` (position of the best in the lookup order: the
        architectures that had to be trained to find it), ``regret`` (optimum - best), ``labels_<ds>`` (predictor labels) and
        ``oracle_mean_acc`` (mean benchmark accuracy of all valid samples: an analysis number
        read from the table, not counted as lookups)."""
        if not isinstance(samples, CellSamples):
            raise TypeError(f"evaluate expects CellSamples, got {type(samples).__name__}")
        table: NB201Table = data.extra["table"]
        train_archs = data.extra["train_archs"]
        ds = samples.dataset
        n = len(samples)
        archs = [a for a in samples.archs() if a is not None]
        lookup = NB201Lookup(table)
        top = rank_and_lookup(samples, lookup)
        best = max((a for _, a in top), default=float("nan"))
        idx = table.index()
        acc = table.acc[ds]
        out = {
            "validity": validity(samples.ops),
            "uniqueness": uniqueness(archs),
            "novelty": novelty(archs, train_archs),
            "best_acc": best,
            f"best_acc_{ds}": best,
            f"lookups_{ds}": float(lookup.count(ds)),
            "lookups_to_best": float(1 + max(range(len(top)), key=lambda i: top[i][1])) if top else float("nan"),
            "top1_acc": top[0][1] if top else float("nan"),
            "regret": float(acc.max()) - best if top else float("nan"),
            "oracle_mean_acc": float(acc[[idx[a] for a in archs]].mean()) if archs else float("nan"),
            "n_samples": float(n),
        }
        for name, c in samples.label_counts.items():
            out[f"labels_{name}"] = float(c)
        return out

    def save(self, model: GraphsModel, cfg: C.GraphsConfig, path) -> None:
        from shared.checkpoint import save_checkpoint

        save_checkpoint(path, {"model": model}, cfg, meta={"domain": "graphs"})

    def load(self, path) -> tuple[GraphsModel, C.GraphsConfig]:
        from shared.checkpoint import load_checkpoint, load_into

        ckpt = load_checkpoint(path)
        if ckpt.meta.get("domain") not in (None, "graphs"):
            raise ValueError(f"{path}: checkpoint of domain {ckpt.meta.get('domain')!r}, not graphs")
        cfg = from_dict(C.GraphsConfig, ckpt.config)
        model = GraphsModel(cfg)
        load_into(ckpt, {"model": model})
        model.eval()
        return model, cfg

    def plot(self, samples: CellSamples, data: Splits, path) -> None:
        """Draw the top predictor-ranked cells (operations on edges), up to 6 panels."""
        from .metrics import plot_cells

        table: NB201Table = data.extra["table"]
        top = samples.ranked()[:6]
        if not top:
            raise ValueError("no valid cells to plot")
        idx = table.index()
        titles = [f"#{i + 1}  {samples.dataset} {float(table.acc[samples.dataset][idx[a]]):.2f}%"
                  for i, a in enumerate(top)]
        plot_cells(top, path, titles=titles)
