"""Frozen configs of the timeseries domain with ``tiny()`` / ``default()`` / ``gpu()`` presets.

``python -m timeseries.train --preset default --model.hidden=256 --train.steps=500`` overrides
any leaf (see :func:`shared.config.apply_overrides`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Optional

from shared.config import ConfigError, TrainConfig

__all__ = ["ModelConfig", "DataConfig", "ForecastConfig", "TimeseriesConfig", "tiny", "default", "gpu",
           "PRESETS"]

PRESETS = ("tiny", "default", "gpu")


@dataclass(frozen=True)
class ModelConfig:
    """The MLP diffusion network and its noise process.

    window:   window length L the network sees (history part + generated part).
    norm_len: leading points of a window whose mean / std normalise it (always observed when
              forecasting, so at most ``window - max chunk``; each forecast chunk is
              ``<= window - norm_len`` long and longer horizons continue autoregressively).
    process:  ``shared.process.make`` kind; ``schedule`` is the DDPM beta schedule when
              ``process == 'discrete_vp'``.
    prediction: network output type. ``edm`` (EDM preconditioning, Karras et al. 2022) is the
              default: a narrow MLP cannot carry the ``L``-dimensional noise through its
              ``hidden``-wide stream, which eps / v prediction need at high noise; the
              preconditioned skip ``c_skip x`` carries it instead.
    sigma_data: data std for EDM preconditioning (windows are normalised, std about 1).
    linear_skip: a time-gated full-rank linear path from the input window to the output beside
              the MLP (see :class:`~timeseries.backbones.MLPDiffusionNet`).
    """

    window: int = 432
    norm_len: int = 216
    hidden: int = 512
    depth: int = 4
    expansion: int = 2
    time_dim: int = 128
    dropout: float = 0.0
    process: Literal["discrete_vp", "linear_vp", "cosine_vp"] = "discrete_vp"
    schedule: Literal["linear", "scaled_linear", "cosine", "sigmoid"] = "linear"
    prediction: Literal["eps", "x0", "v", "edm"] = "edm"
    sigma_data: float = 1.0
    time_sampler: Literal["uniform", "stratified", "lognormal", "logit_normal"] = "uniform"
    weighting: Literal["simple", "min_snr", "likelihood"] = "simple"
    linear_skip: bool = False

    def __post_init__(self):
        if not 0 < self.norm_len < self.window:
            raise ConfigError(f"model.norm_len={self.norm_len} must be in (0, model.window={self.window})")


@dataclass(frozen=True)
class DataConfig:
    """Which data to pre-train on and which split to forecast.

    train_on:        pre-training datasets (training splits only): etth1, ili, m4_hourly.
    eval_on:         the LTSF dataset forecast by the task (etth1).
    lookback:        LTSF input length (336).
    horizon:         forecast horizon of the task's headline metric.
    stride:          step between pre-training window starts.
    max_per_series:  cap on windows per series (None: all).
    eval_stride:     step between evaluated test windows (1 = every window of the protocol).
    """

    train_on: tuple[str, ...] = ("etth1",)
    eval_on: str = "etth1"
    lookback: int = 336
    horizon: int = 96
    stride: int = 1
    max_per_series: Optional[int] = None
    eval_stride: int = 24


@dataclass(frozen=True)
class ForecastConfig:
    """How forecasts are drawn (the history is the prompt).

    method:          'inpaint' (replacement hook), 'repaint' (RePaint resampling), 'mse' or
                     'quantile' (reconstruction guidance on x0_hat, TSDiff self-guidance).
    solver / grid / steps: any shared solver and grid name.
    num_samples:     sample paths per series (the point forecast is their mean).
    guidance_scale:  scale of the energy guidance ('mse' / 'quantile').
    guidance_min_alpha: energy guidance only where alpha(t) >= this (0: everywhere).
    weighting:       'noise' (:func:`~timeseries.forecast.noise_weighted`, the default) or 'pigdm'
                     (``shared.guidance.energy(weighting='pigdm')``: the likelihood
                     N(y; x0_hat, r_t^2 + obs_var) with data variance 1; 'mse' only).
    obs_var:         observation noise variance of the 'pigdm' weighting.
    replace:         also replace the context by the noised observation after every step
                     ('mse' / 'quantile' guidance combined with replacement).
    resample:        RePaint inner repetitions.
    batch_size:      rows (series x samples) per sampling batch.
    noise_block:     noise calls each series' generator draws at once (1: one per sampling step,
                     the reference stream; 0: the whole run's worth, one draw per series; much
                     faster on a GPU; equally distributed, on CUDA different samples).
    antithetic:      each series' samples in mirrored pairs (noise z and -z at every step):
                     every sample is still a sample, the sample mean has lower variance.
    """

    method: Literal["inpaint", "repaint", "mse", "quantile"] = "mse"
    solver: str = "ddpm"
    grid: str = "uniform"
    steps: int = 50
    num_samples: int = 16
    guidance_scale: float = 1.0
    guidance_min_alpha: float = 0.0
    weighting: Literal["noise", "pigdm"] = "noise"
    obs_var: float = 0.01
    replace: bool = False
    resample: int = 2
    batch_size: int = 4096
    noise_block: int = 1
    antithetic: bool = False


@dataclass(frozen=True)
class TimeseriesConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def tiny() -> TimeseriesConfig:
    """Seconds on a CPU (tests): a small window and net, a few steps."""
    return TimeseriesConfig(
        model=ModelConfig(window=128, norm_len=64, hidden=64, depth=2, time_dim=32, linear_skip=True),
        data=DataConfig(train_on=("etth1",), lookback=96, horizon=96, stride=16, max_per_series=200,
                        eval_stride=480),
        forecast=ForecastConfig(steps=10, num_samples=4),
        train=TrainConfig(steps=30, batch_size=64, lr=1e-3, ema_decay=0.0, log_every=10, device="cpu"),
    )


def default() -> TimeseriesConfig:
    """About a minute of CPU training; the demo / `diffsuite compare` preset."""
    return TimeseriesConfig(
        model=ModelConfig(window=432, norm_len=216, hidden=256, depth=3, linear_skip=True),
        data=DataConfig(train_on=("etth1",), stride=2, eval_stride=48),
        # scale 2: the in-domain setting of benchmarks/timeseries.py (ETTh1 MSE 0.4236 vs 0.4258 at 1)
        forecast=ForecastConfig(steps=25, num_samples=8, guidance_scale=2.0),
        train=TrainConfig(steps=800, batch_size=128, lr=1e-3, warmup_steps=50, lr_schedule="cosine",
                          ema_decay=0.995, log_every=50),
    )


def gpu() -> TimeseriesConfig:
    """One GPU for a couple of minutes (``benchmarks/timeseries.py --preset gpu``): every test
    window, more samples, the training recipe of the CPU benchmark.

    The network and training recipe are the CPU benchmark's (hidden 256, depth 3, 3,000 steps of
    128 windows): on the shared CPU, ETTh1 validation MSE (scale 2, 16 samples) was 0.763 for
    that recipe, 0.777 with 9,000 steps and 0.768 with hidden 512, depth 4, dropout 0.1, so the
    GPU spends its speed on sampling, not on a bigger net or longer training (about 15 s per
    model on a GPU; ``train.max_seconds`` caps it in the benchmark). Sampling: 64
    samples, 30 DDPM steps, 65,536 rows per sampling call (under 10 GiB with the guidance
    backward, plus 3.5 GiB of pre-drawn noise: ``noise_block=0``, one draw per series instead of
    one per step)."""
    return TimeseriesConfig(
        model=ModelConfig(window=432, norm_len=216, hidden=256, depth=3, linear_skip=True),
        data=DataConfig(train_on=("etth1",), stride=1, eval_stride=1),
        forecast=ForecastConfig(steps=30, num_samples=64, guidance_scale=2.0, batch_size=65536,
                                noise_block=0),
        train=TrainConfig(steps=3000, batch_size=128, lr=1e-3, warmup_steps=50, lr_schedule="cosine",
                          ema_decay=0.995, log_every=50),
    )
