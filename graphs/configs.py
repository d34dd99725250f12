"""Frozen configs of the graphs domain with ``tiny()`` / ``default()`` / ``gpu()`` presets.

``GraphsConfig`` = ``model`` (score network + process) + ``predictor`` (noise-aware accuracy
predictor and its label budget) + ``search`` (guided generation and top-k lookup) + ``train``
(:class:`shared.config.TrainConfig` of the diffusion model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shared.config import ConfigError, TrainConfig

__all__ = ["ModelConfig", "PredictorConfig", "SearchConfig", "GraphsConfig", "tiny", "default", "gpu",
           "PRESETS"]

PRESETS = ("tiny", "default", "gpu")


@dataclass(frozen=True)
class ModelConfig:
    """Score network (graph transformer over the fixed 8-node DAG) and noise process.

    process:    ``shared.process.make`` kind: ``cosine_vp`` (default), ``ve`` (the seed's VE SDE),
                ``linear_vp``, ``edm``, ``flow``.
    sigma_max:  VE only: the largest noise level.
    prediction: ``x0`` (softmax head: the exact form of the posterior mean of one-hot data) or
                any other ``shared.param`` prediction type (linear head).
    """

    hidden: int = 64
    layers: int = 3
    heads: int = 4
    dropout: float = 0.0
    process: Literal["cosine_vp", "ve", "linear_vp", "edm", "flow"] = "cosine_vp"
    sigma_max: float = 5.0
    prediction: Literal["x0", "eps", "v", "edm", "flow"] = "x0"
    weighting: Literal["simple", "min_snr", "edm", "likelihood", "x0"] = "simple"
    time_sampler: Literal["uniform", "stratified", "lognormal", "logit_normal"] = "uniform"


@dataclass(frozen=True)
class PredictorConfig:
    """Noise-aware accuracy predictor (GNN), trained on noisy cells at all noise levels.

    labels_target: labelled architectures of the target dataset (benchmark lookups; counted).
    labels_other:  labelled architectures from EACH of the two other datasets (transfer; counted
                   separately, on those datasets).
    rank_weight:   weight of the pairwise logistic ranking loss (added to the MSE).
    clean_fraction: share of each batch presented at ``t ~ 0`` (the rest at ``t ~ U(0, 1)``):
                   the final ranking of generated cells is done on clean cells.
    label_transform: ``rank_gauss`` (labels -> normal quantiles of their ranks per dataset: the
                   many broken cells at 10 % do not dominate the MSE and the top is resolved) or
                   ``zscore``.
    ensemble:      number of independently initialised predictors whose mean is the prediction
                   (a deep ensemble: steadier ranking among the top candidates; costs K x).
    Labels are drawn from the training split with ``seed``.
    """

    hidden: int = 64
    layers: int = 3
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    labels_target: int = 100
    labels_other: int = 0
    rank_weight: float = 1.0
    clean_fraction: float = 0.5
    label_transform: Literal["rank_gauss", "zscore"] = "rank_gauss"
    ensemble: int = 1
    seed: int = 0


@dataclass(frozen=True)
class SearchConfig:
    """Guided generation and search.

    dataset:   target dataset (``cifar10``, ``cifar100``, ``imagenet16``).
    n_samples: cells generated per search.
    scale:     classifier-guidance scale on the predictor's standardised accuracy (0 = unguided).
    interval:  guidance acts for ``t_lo <= t <= t_hi``.
    top_k:     architectures "trained" (looked up) after ranking by the predictor.
    solver, grid, steps: default sampler of ``generate`` when the caller gives none.
    """

    dataset: Literal["cifar10", "cifar100", "imagenet16"] = "cifar10"
    n_samples: int = 256
    scale: float = 5.0
    interval: tuple[float, ...] = (0.0, 1.0)
    top_k: int = 5
    solver: str = "pc"
    grid: str = "uniform"
    steps: int = 50
    batch_size: int = 512


@dataclass(frozen=True)
class GraphsConfig:
    """Everything a graphs run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: use only the first N training cells (0 = the whole 15,000-cell training split)
    train_subset: int = 0

    def __post_init__(self):
        if len(self.search.interval) != 2:
            raise ConfigError(f"search.interval={self.search.interval!r} must be (t_lo, t_hi)")
        lo, hi = self.search.interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"search.interval={self.search.interval!r} must satisfy 0 <= lo <= hi <= 1")
        if self.search.top_k < 1 or self.search.n_samples < 1:
            raise ConfigError("search.top_k and search.n_samples must be >= 1")
        if self.predictor.ensemble < 1:
            raise ConfigError(f"predictor.ensemble={self.predictor.ensemble} must be >= 1")
        if self.predictor.labels_target < 0 or self.predictor.labels_other < 0:
            raise ConfigError("predictor.labels_target / labels_other must be >= 0")
        if self.predictor.labels_target + self.predictor.labels_other == 0:
            raise ConfigError("the predictor needs labels: set predictor.labels_target or labels_other > 0")


def tiny() -> GraphsConfig:
    """Seconds on a CPU: for tests."""
    return GraphsConfig(
        model=ModelConfig(hidden=32, layers=2, heads=2),
        predictor=PredictorConfig(hidden=32, layers=2, steps=60, batch_size=64, labels_target=64),
        search=SearchConfig(n_samples=32, steps=8, solver="euler", batch_size=64),
        train=TrainConfig(steps=60, batch_size=64, lr=2e-3, ema_decay=0.0, log_every=20,
                          device="cpu", seed=0),
        train_subset=2000,
    )


def default() -> GraphsConfig:
    """About two minutes on a 2-core CPU (the demo / `diffsuite compare`). The predictor needs
    >= 1200 steps on 30k labels to resolve the top of the ranking (600 under-fits; see the graphs
    benchmark's regime report)."""
    return GraphsConfig(
        model=ModelConfig(hidden=64, layers=2, heads=4),
        predictor=PredictorConfig(hidden=64, layers=3, steps=1500, batch_size=128),
        search=SearchConfig(n_samples=512, steps=20),
        train=TrainConfig(steps=800, batch_size=128, lr=1e-3, warmup_steps=50, lr_schedule="cosine",
                          ema_decay=0.995, log_every=50, device="cpu", seed=0),
    )


def gpu() -> GraphsConfig:
    """Real numbers on one GPU."""
    return GraphsConfig(
        model=ModelConfig(hidden=128, layers=4, heads=8),
        predictor=PredictorConfig(hidden=128, layers=4, steps=5000, batch_size=256),
        search=SearchConfig(n_samples=2048, steps=100, batch_size=2048),
        train=TrainConfig(steps=20000, batch_size=512, lr=5e-4, warmup_steps=500, lr_schedule="cosine",
                          ema_decay=0.999, log_every=200, device="auto", seed=0),
    )
