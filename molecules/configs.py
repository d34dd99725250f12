"""Frozen configs of the molecules domain with ``tiny()`` / ``default()`` / ``gpu()`` presets.

``MoleculesConfig`` holds the data settings, the three models (graph diffusion, forward
property model, SMILES diffusion) and a :class:`shared.config.TrainConfig`. All three models are
trained together by one :class:`shared.training.Trainer` run (the loss is the sum of the enabled
models' losses), so one checkpoint holds everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from shared.config import ConfigError, TrainConfig

from .data import PROPERTY_NAMES

__all__ = ["DataConfig", "GraphConfig", "PredictorConfig", "SmilesConfig", "MoleculesConfig",
           "tiny", "default", "gpu", "RDKIT_DESCRIPTORS"]

#: RDKit descriptors that may be added to the property list (computed from the molecule, so
#: conditional generation on them is scored exactly).
RDKIT_DESCRIPTORS: tuple[str, ...] = ("logp", "mol_wt", "tpsa", "qed", "n_heavy")


def _check_weighting(part: str, weighting: str) -> None:
    from shared.loss import check_weighting

    try:
        check_weighting(weighting)
    except ValueError as e:
        raise ConfigError(f"{part}.weighting: {e}") from None


def _check_objective(part: str, objective: str, simplex: bool) -> None:
    if objective not in ("mse", "ce"):
        raise ConfigError(f"{part}.objective={objective!r} is not one of ['mse', 'ce']")
    if objective == "ce" and not simplex:
        raise ConfigError(f"{part}.objective='ce' reads class probabilities off the simplex head; "
                          f"it needs {part}.simplex=True")


@dataclass(frozen=True)
class DataConfig:
    """path: QM9-format CSV (None = the vendored 20k sample); limit: first N rows only;
    split: 'random' or 'scaffold'; fractions: train/val/test; properties: the QM9 columns
    and/or :data:`RDKIT_DESCRIPTORS` the models predict and condition on."""

    path: str | None = None
    limit: int | None = None
    split: Literal["random", "scaffold"] = "random"
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    seed: int = 0
    properties: tuple[str, ...] = PROPERTY_NAMES

    def __post_init__(self):
        if self.split not in ("random", "scaffold"):
            raise ConfigError(f"data.split={self.split!r} is not one of ['random', 'scaffold']")
        bad = [p for p in self.properties if p not in PROPERTY_NAMES and p not in RDKIT_DESCRIPTORS]
        if bad:
            raise ConfigError(f"data.properties: unknown {bad}; choose from {PROPERTY_NAMES + RDKIT_DESCRIPTORS}")
        if len(self.fractions) != 3 or abs(sum(self.fractions) - 1) > 1e-6:
            raise ConfigError(f"data.fractions={self.fractions} must be three numbers summing to 1")


@dataclass(frozen=True)
class GraphConfig:
    """Graph diffusion model (unconditional; predictor guidance at sampling time).
    ``node_positions``: learned node-index embedding (RDKit atom order); False keeps the
    denoiser permutation equivariant (DiGress-style). On by default: lower loss and higher
    connectivity at equal CPU budget in our runs. ``simplex``: x0 head ``2 softmax - 1`` per atom
    and atom pair (the exact form of the posterior mean of +-1 one-hots; needs prediction x0).
    ``valence_features``: expected bond-order sum, class valence, free valence and neighbour
    count of the network's input graph as extra node inputs (``backbones.valence_features``).
    ``self_condition``: probability of self-conditioning in training (the network also sees its
    previous x0 estimate, and its valence features; sampling always feeds it).
    ``objective``: ``"mse"`` (squared error of the x0 head) or ``"ce"`` (categorical
    cross-entropy of the simplex head against the true atom / bond classes,
    ``shared.loss.diffusion_loss(objective="ce")``; needs ``simplex=True``). ``node_weight``:
    weight of each atom's loss entries relative to each atom pair's (``MolGraphSpace.node_weight``;
    1 = plain mean over entries, where the n (n - 1) / 2 pairs outnumber the n atoms).
    ``weighting``: a ``shared.loss.weight`` name (``"sigmoid:<b>"`` included)."""

    hidden: int = 128
    edge_hidden: int = 64
    layers: int = 4
    heads: int = 4
    prediction: Literal["x0", "eps", "v"] = "x0"
    weighting: str = "simple"
    time_sampler: str = "uniform"
    node_positions: bool = True
    simplex: bool = False
    valence_features: bool = False
    self_condition: float = 0.0
    objective: Literal["mse", "ce"] = "mse"
    node_weight: float = 1.0

    def __post_init__(self):
        if not self.node_weight > 0:
            raise ConfigError(f"graph.node_weight={self.node_weight} must be > 0")
        if not 0.0 <= self.self_condition <= 1.0:
            raise ConfigError(f"graph.self_condition={self.self_condition} must be a probability in [0, 1]")
        if self.simplex and self.prediction != "x0":
            raise ConfigError(f"graph.simplex=True is an x0 head; it needs graph.prediction='x0', got {self.prediction!r}")
        _check_objective("graph", self.objective, self.simplex)
        _check_weighting("graph", self.weighting)


@dataclass(frozen=True)
class PredictorConfig:
    """Forward model (graph regressor over the same representation). ``noise_aug``: std of
    Gaussian noise added to the one-hot inputs half of the time, so the model tolerates the soft
    ``x0_hat`` it sees during guidance."""

    enabled: bool = True
    hidden: int = 128
    edge_hidden: int = 64
    layers: int = 4
    heads: int = 4
    noise_aug: float = 0.3
    loss_weight: float = 1.0


@dataclass(frozen=True)
class SmilesConfig:
    """Seed-paper inverse design: SMILES one-hot diffusion with property tokens and CFG.
    ``cond_drop``: probability of dropping the whole condition (shared.loss.drop_condition);
    besides, each sample keeps a random subset of properties (keep rate ~ U(0, 1)). ``simplex``:
    x0 head ``2 softmax - 1`` per position; ``self_condition``: probability of self-conditioning
    in training (Analog Bits; sampling then always feeds the previous x0 estimate).
    ``backbone``: ``transformer`` (:class:`~molecules.backbones.SmilesTransformer`: d_model,
    layers, heads) or ``unet`` (the seed paper's family, :class:`~molecules.backbones.SmilesUNet1D`:
    unet_channels per level, heads at the bottom). ``objective``: ``"mse"`` or ``"ce"`` (categorical
    cross-entropy of the simplex head against the true characters; needs ``simplex=True``)."""

    enabled: bool = True
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    prediction: Literal["x0", "eps", "v"] = "x0"
    weighting: str = "simple"
    cond_drop: float = 0.1
    guidance_scale: float = 2.0
    simplex: bool = False
    self_condition: float = 0.0
    backbone: Literal["transformer", "unet"] = "transformer"
    unet_channels: tuple[int, ...] = (64, 128, 128)
    objective: Literal["mse", "ce"] = "mse"

    def __post_init__(self):
        if self.backbone not in ("transformer", "unet"):
            raise ConfigError(f"smiles.backbone={self.backbone!r} is not one of ['transformer', 'unet']")
        if self.simplex and self.prediction != "x0":
            raise ConfigError(f"smiles.simplex=True is an x0 head; it needs smiles.prediction='x0', got {self.prediction!r}")
        if not 0.0 <= self.self_condition <= 1.0:
            raise ConfigError(f"smiles.self_condition={self.self_condition} must be a probability in [0, 1]")
        _check_objective("smiles", self.objective, self.simplex)
        _check_weighting("smiles", self.weighting)


@dataclass(frozen=True)
class MoleculesConfig:
    """Everything the molecules task needs. ``process``: a :func:`shared.process.make` kind."""

    data: DataConfig = field(default_factory=DataConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    smiles: SmilesConfig = field(default_factory=SmilesConfig)
    process: Literal["cosine_vp", "linear_vp"] = "cosine_vp"
    train: TrainConfig = field(default_factory=TrainConfig)
    sample_steps: int = 50


def tiny() -> MoleculesConfig:
    """Seconds on a CPU: 256 molecules, 2-layer models, a few steps (tests)."""
    return MoleculesConfig(
        data=DataConfig(limit=256),
        graph=GraphConfig(hidden=32, edge_hidden=16, layers=2, heads=2),
        predictor=PredictorConfig(hidden=32, edge_hidden=16, layers=2, heads=2),
        smiles=SmilesConfig(d_model=32, layers=2, heads=2),
        train=TrainConfig(steps=4, batch_size=16, lr=1e-3, ema_decay=0.0, log_every=2, device="cpu"),
        sample_steps=5,
    )


def default() -> MoleculesConfig:
    """About two CPU-minutes of training on one core: the whole 20k sample, small models. Quality
    is limited by that budget (see benchmarks/molecules.py for a longer run)."""
    return MoleculesConfig(
        graph=GraphConfig(hidden=64, edge_hidden=32, layers=3, heads=4, simplex=True, valence_features=True,
                          self_condition=0.5),
        predictor=PredictorConfig(hidden=48, edge_hidden=24, layers=2, heads=4),
        # the seed paper's 1-D UNet, as in the benchmark: python -m molecules.train --preset default
        # (256 samples, seed 0) gave SMILES validity 0.043 vs 0.008 for the former transformer
        # (d_model 64, 2 layers), for 56 vs 53 s of training
        smiles=SmilesConfig(heads=4, simplex=True, backbone="unet", unet_channels=(48, 96, 96)),
        train=TrainConfig(steps=400, batch_size=64, lr=3e-3, warmup_steps=30, lr_schedule="cosine",
                          ema_decay=0.99, log_every=50),
        sample_steps=50,
    )


def gpu() -> MoleculesConfig:
    """One GPU (H100 / H200), batch 512 in bf16. ``benchmarks/molecules.py --preset gpu`` trains
    the three networks one after another under wall-clock budgets (``train.max_seconds``), so
    ``steps`` is only a ceiling there. Sizes: on these tiny graphs (9 atoms) a training step is
    bound by kernel launches (~5000 per graph step), not arithmetic, so depth costs time and width
    little. Measured on an H200 at batch 512, bf16 (40-step means, warm-up included): graph model
    width 192 / 6 layers 71 ms a step, width 128 / 4 layers 53 ms, width 256 / 4 layers 60 ms;
    forward model (width 128, 4 layers) 47 ms at batch 512 and 48 ms at 1024; SMILES UNet
    (128, 256, 256) 38 ms. Validity rose with training steps in every CPU run, so the graph model
    keeps 4 layers (more steps in the budget) at width 192. The SMILES model is the seed paper's
    1-D UNet family (what the CPU benchmark uses; the transformer fell far behind it there)."""
    return MoleculesConfig(
        graph=GraphConfig(hidden=192, edge_hidden=96, layers=4, heads=8, simplex=True, valence_features=True,
                          self_condition=0.5),
        predictor=PredictorConfig(hidden=128, edge_hidden=64, layers=3, heads=8),
        smiles=SmilesConfig(heads=8, simplex=True, backbone="unet", unet_channels=(128, 256, 256)),
        train=TrainConfig(steps=20000, batch_size=512, lr=1e-3, warmup_steps=50, lr_schedule="cosine",
                          ema_decay=0.999, log_every=100, mixed_precision="bf16"),
        sample_steps=100,
    )


_PRESETS = {"tiny": tiny, "default": default, "gpu": gpu}


def preset(name: str) -> MoleculesConfig:
    """Config by preset name (``tiny``, ``default``, ``gpu``)."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(_PRESETS)}")
    return _PRESETS[name]()


def with_train(cfg: MoleculesConfig, **kw) -> MoleculesConfig:
    """Copy of ``cfg`` with train fields replaced."""
    return replace(cfg, train=replace(cfg.train, **kw))
