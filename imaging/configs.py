"""Frozen dataclass configs of the imaging domain with ``tiny()``, ``default()``, ``gpu()`` presets.

``ImagingConfig`` holds the data, the UNet, the optional autoencoder (latent diffusion), the
diffusion objective, the sampling defaults and two :class:`shared.config.TrainConfig` sections:
``train`` (the diffusion model) and ``vae_train`` (the autoencoder, used when ``latent=True``).
Override any leaf with dotted keys, e.g. ``train.steps=2000 diffusion.prediction=v``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Optional

from shared.config import TrainConfig

__all__ = ["DataConfig", "UNetConfig", "VAEConfig", "DiffusionConfig", "SampleConfig", "ImagingConfig",
           "tiny", "default", "gpu", "latent", "PRESETS"]

PRESETS = ("tiny", "default", "gpu", "latent")


@dataclass(frozen=True)
class DataConfig:
    """source: ``mnist`` (vendored t10k, fixed split), ``sklearn_digits``, ``folder`` (``path``,
    class = sub-folder) or ``npz`` (``path`` with arrays ``images`` [N,H,W(,C)] uint8 and optional
    ``labels``). ``image_size``: images are padded (mnist, when >= 28) or resized to it.
    ``num_classes``: classes of the labels (the null class for CFG is ``num_classes``).
    ``train_size`` 0 = all training images; val/test sizes are held out by a seeded split."""

    source: Literal["mnist", "sklearn_digits", "folder", "npz"] = "mnist"
    path: str = ""
    image_size: int = 32
    channels: int = 1
    num_classes: int = 10
    train_size: int = 0
    val_size: int = 1000
    test_size: int = 1000
    split_seed: int = 0


@dataclass(frozen=True)
class UNetConfig:
    """diffusers ``UNet2DModel`` settings (see :func:`imaging.backbones.make_unet`)."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention: tuple[bool, ...] = (False, False, True)
    norm_num_groups: int = 8
    attention_head_dim: int = 32
    dropout: float = 0.0


@dataclass(frozen=True)
class VAEConfig:
    """diffusers ``AutoencoderKL`` settings and its loss: ``recon`` ("l1"/"mse") + ``kl_weight``
    * KL (no perceptual term). ``scaling_factor`` 0 = computed as 1/std of training latents."""

    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    kl_weight: float = 1e-4
    recon: Literal["l1", "mse"] = "l1"
    scaling_factor: float = 0.0


@dataclass(frozen=True)
class DiffusionConfig:
    """The objective: process (``discrete_vp`` with a diffusers beta ``schedule``, or any
    ``shared.process.make`` kind), prediction type, time sampler, weighting and the probability
    ``cond_drop`` of replacing the class by the null class (CFG training)."""

    process: str = "discrete_vp"
    schedule: Literal["linear", "scaled_linear", "cosine", "sigmoid"] = "linear"
    num_train_timesteps: int = 1000
    prediction: Literal["eps", "x0", "v", "flow", "edm"] = "eps"
    time_sampler: Literal["uniform", "stratified", "lognormal", "logit_normal"] = "uniform"
    weighting: Literal["simple", "min_snr", "edm", "likelihood", "x0"] = "simple"
    cond_drop: float = 0.1


@dataclass(frozen=True)
class SampleConfig:
    """Sampling defaults used by ``generate`` / ``train.py``: solver, grid, steps, CFG scale
    (0 unconditional, 1 conditional) and interval in t, number of samples for evaluation."""

    solver: str = "dpmpp_2m"
    grid: str = "uniform"
    steps: int = 20
    guidance_scale: float = 2.0
    guidance_interval: Optional[tuple[float, float]] = None
    eval_samples: int = 500
    batch_size: int = 250


@dataclass(frozen=True)
class ImagingConfig:
    """Everything needed to build, train and sample an imaging model."""

    data: DataConfig = field(default_factory=DataConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    vae_train: TrainConfig = field(default_factory=TrainConfig)
    latent: bool = False
    class_conditional: bool = True


def tiny() -> ImagingConfig:
    """Seconds on a CPU: 16x16 images, a two-level UNet, a few steps (tests)."""
    return ImagingConfig(
        data=DataConfig(image_size=16, train_size=256, val_size=64, test_size=64),
        unet=UNetConfig(block_out_channels=(8, 16), attention=(False, True), norm_num_groups=4,
                        attention_head_dim=8),
        vae=VAEConfig(latent_channels=2, block_out_channels=(8, 16), norm_num_groups=4),
        sample=SampleConfig(steps=4, eval_samples=32, batch_size=32),
        train=TrainConfig(steps=3, batch_size=16, lr=1e-3, ema_decay=0.9, log_every=1, device="cpu"),
        vae_train=TrainConfig(steps=3, batch_size=16, lr=1e-3, ema_decay=0.0, log_every=1, device="cpu"),
    )


def default() -> ImagingConfig:
    """CPU demo (~3 minutes of one core): 32x32 MNIST, a ~0.7M-parameter UNet, 250 steps of 64.
    Digits are rough at this budget; ``python -m imaging.train --preset default train.steps=3000``
    (or the benchmark) trains longer."""
    return ImagingConfig(
        unet=UNetConfig(block_out_channels=(16, 32, 64), attention=(False, False, True)),
        train=TrainConfig(steps=250, batch_size=64, lr=2e-3, warmup_steps=25, lr_schedule="cosine",
                          ema_decay=0.99, log_every=25),
        vae_train=TrainConfig(steps=300, batch_size=64, lr=1e-3, warmup_steps=20, ema_decay=0.0, log_every=25),
        sample=SampleConfig(eval_samples=500),
    )


def gpu() -> ImagingConfig:
    """GPU-sized: the full 8,000-image train split, a 16M-parameter UNet, bf16, batch 1024.

    One H200 run (``benchmarks/results/gpu/imaging_gpu_h200_partial.json``, batch 256, 300
    warm-up steps, 22 s of latent UNet training) showed the step rate is launch-bound
    (~12 steps/s for the latent UNet, ~15 for the autoencoder at batch 256, far below the card's
    arithmetic), and the run ended inside its LR warm-up after 266 steps: a poor model (guided
    accuracy 0.27). Hence a 4x larger batch at the same step rate, a short warm-up, and a higher
    LR; meant to be run with a time budget (``benchmarks/imaging.py --preset gpu --budget``,
    ``train.max_seconds``). Not yet re-run on a GPU with these settings."""
    return ImagingConfig(
        unet=UNetConfig(block_out_channels=(64, 128, 256), layers_per_block=2, attention=(False, True, True),
                        norm_num_groups=32, attention_head_dim=64, dropout=0.1),
        vae=VAEConfig(block_out_channels=(64, 128, 128), layers_per_block=2, norm_num_groups=32),
        train=TrainConfig(steps=6000, batch_size=1024, lr=8e-4, warmup_steps=50, lr_schedule="cosine",
                          ema_decay=0.999, log_every=100, mixed_precision="bf16", num_workers=0),
        vae_train=TrainConfig(steps=5000, batch_size=512, lr=5e-4, warmup_steps=20, ema_decay=0.0,
                              mixed_precision="bf16", log_every=100),
        sample=SampleConfig(eval_samples=2000, batch_size=1000),
    )


def latent() -> ImagingConfig:
    """Latent diffusion on the CPU: AutoencoderKL 32x32x1 -> 8x8x4 (300 steps), then a ~0.7M
    two-level UNet on the latents (2,500 steps of 64; each step costs ~1/6 of a pixel step), CFG
    scale 3. This is the recipe of ``benchmarks/imaging.py``: guided class accuracy 0.979 at scale 3
    on 1,000 samples, digits FD 1.03 (0.83 at 800 steps: class conditioning is learned late)."""
    d = default()
    return replace(d, latent=True,
                   vae=VAEConfig(block_out_channels=(16, 32, 32)),
                   unet=UNetConfig(block_out_channels=(32, 64), attention=(False, True)),
                   train=replace(d.train, steps=2500, warmup_steps=50),
                   sample=replace(d.sample, guidance_scale=3.0))
