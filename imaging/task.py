"""The imaging :class:`~shared.registry.DomainTask`: class-conditional pixel or latent diffusion on
MNIST digits (or any image folder / array), classifier-free guidance, classifier-feature metrics.

Model pieces: a diffusers ``UNet2DModel`` wrapped by ``shared.interop.diffusers.UNetNet`` inside a
``shared.param.Denoiser`` (any prediction type), trained with ``shared.loss.diffusion_loss`` and
``shared.training.Trainer`` (EMA); for latent diffusion a diffusers ``AutoencoderKL`` trained
first (reconstruction + KL, no perceptual term), latents scaled by 1/std of the training latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from shared.config import from_dict, preset
from shared.registry import Splits

from . import configs as C
from .data import (ImageSet, fit_size, from_numpy, load_image_folder, load_sklearn_digits, mnist_splits,
                   save_grid, split_indices)
from .model import ImagingModel

__all__ = ["ImagingTask", "ImageSamples", "make_process", "autoencoder_loss", "LatentSet"]


@dataclass
class ImageSamples:
    """Generated images ``[N, C, H, W]`` (sampler output, for pixel models not clipped), the class
    asked for each (``labels [N]``, the null class for unconditional samples) and the CFG scale."""

    images: Tensor
    labels: Tensor | None
    guidance_scale: float = 1.0

    def __len__(self) -> int:
        return self.images.shape[0]


def make_process(d: C.DiffusionConfig):
    """The noise process of a :class:`~imaging.configs.DiffusionConfig`: ``discrete_vp`` gets
    exactly the ``alphas_cumprod`` of a diffusers scheduler with that beta schedule."""
    if d.process == "discrete_vp":
        from shared.interop.diffusers import process_from_scheduler_config

        return process_from_scheduler_config({"beta_schedule": {"cosine": "squaredcos_cap_v2"}.get(d.schedule, d.schedule),
                                              "num_train_timesteps": d.num_train_timesteps})
    from shared.process import make

    return make(d.process)


class LatentSet(torch.utils.data.Dataset):
    """Posterior mean / std of encoded training images and their labels; items
    ``(mean [C', H', W'], std [C', H', W'], label)``. The loss draws ``z = mean + std * eps``."""

    def __init__(self, mean: Tensor, std: Tensor, labels: Tensor):
        self.mean, self.std, self.labels = mean, std, labels

    def __len__(self) -> int:
        return self.mean.shape[0]

    def __getitem__(self, i):
        return self.mean[i], self.std[i], self.labels[i]


def autoencoder_loss(vae, x: Tensor, generator: torch.Generator, *, kl_weight: float, recon: str) -> Tensor:
    """Per-sample VAE loss ``[B]``: mean reconstruction error (L1 or MSE) of a posterior sample
    plus ``kl_weight`` * KL(q(z|x) || N(0, I)) summed over latent entries (Kingma & Welling 2014;
    Rombach et al. 2022 use it with a tiny weight)."""
    post = vae.encode(x).latent_dist
    eps = torch.randn(post.mean.shape, generator=generator, device=generator.device).to(post.mean)
    z = post.mean + post.std * eps
    xr = vae.decode(z).sample
    err = (xr - x).abs() if recon == "l1" else (xr - x) ** 2
    kl = 0.5 * (post.mean**2 + post.var - 1.0 - post.logvar).flatten(1).sum(1)
    return err.flatten(1).mean(1) + kl_weight * kl


class ImagingTask:
    """Images: class-conditional pixel / latent diffusion with classifier-free guidance."""

    name = "imaging"
    headline_metric = ("fd", "min")  # classifier-feature Fréchet distance (not Inception FID)
    extra = "imaging"

    # ------------------------------------------------------------------ config & data

    def compare_samples(self, preset_name: str) -> int:
        """Images per cell of ``diffsuite compare`` (FD needs a few hundred to be stable)."""
        return {"tiny": 32, "default": 200, "gpu": 2000}.get(preset_name, 200)

    def config(self, preset_name: str) -> C.ImagingConfig:
        """A preset of :mod:`imaging.configs`: tiny, default, gpu, latent."""
        return preset(C, preset_name)

    def load_data(self, cfg: C.ImagingConfig) -> Splits:
        """Train / val / test :class:`~imaging.data.ImageSet` (test = held-out reference of the
        metrics). ``extra``: ``class_names``, ``num_classes``."""
        d = cfg.data
        size = d.image_size
        if d.source == "mnist":
            tr, va, te = mnist_splits(val=d.val_size, test=d.test_size, seed=d.split_seed, size=None)
            mode = "pad" if size >= 28 else "resize"
            tr, va, te = (ImageSet(fit_size(s.images, size, mode), s.labels, s.class_names, s.source) for s in (tr, va, te))
        else:
            if d.source == "sklearn_digits":
                full = load_sklearn_digits(size=size)
            elif d.source == "folder":
                if not d.path:
                    raise ValueError("data.source='folder' needs data.path=<folder of class sub-folders>")
                full = load_image_folder(d.path, size=size, color="L" if d.channels == 1 else "RGB")
            elif d.source == "npz":
                if not d.path:
                    raise ValueError("data.source='npz' needs data.path=<file.npz with 'images' [and 'labels']>")
                with np.load(d.path) as z:
                    if "images" not in z:
                        raise ValueError(f"{d.path}: no array named 'images' (has {list(z.keys())})")
                    full = from_numpy(z["images"], z["labels"] if "labels" in z else None, size=size)
            else:  # pragma: no cover - Literal checked by the config
                raise ValueError(f"unknown data.source {d.source!r}")
            if d.val_size + d.test_size >= len(full):
                raise ValueError(f"val_size + test_size = {d.val_size + d.test_size} leaves no training images "
                                 f"out of {len(full)}")
            idx = split_indices(len(full), [0, d.val_size, d.test_size], d.split_seed)
            tr, va, te = (full.subset(i) for i in idx)
        if d.train_size > 0:
            if d.train_size > len(tr):
                raise ValueError(f"data.train_size={d.train_size} but only {len(tr)} training images")
            tr = tr.subset(torch.arange(d.train_size))
        if tr.shape[0] != d.channels:
            raise ValueError(f"images have {tr.shape[0]} channels but data.channels={d.channels}")
        if cfg.class_conditional:
            if tr.labels is None:
                raise ValueError("class_conditional=True needs labelled images (class = sub-folder); "
                                 "set class_conditional=false for unlabelled data")
            top = int(max(int(s.labels.max()) for s in (tr, va, te) if s.labels is not None and len(s)))
            if top >= d.num_classes:
                raise ValueError(f"labels go up to {top} but data.num_classes={d.num_classes}; "
                                 f"set data.num_classes={top + 1}")
        return Splits(train=tr, val=va, test=te,
                      extra={"class_names": tr.class_names, "num_classes": d.num_classes})

    # ------------------------------------------------------------------ model

    def build(self, cfg: C.ImagingConfig) -> ImagingModel:
        """UNet (+ autoencoder) from the config; parameters initialised from ``cfg.train.seed``."""
        from shared.interop.diffusers import VAE, UNetNet
        from shared.param import Denoiser

        from .backbones import make_autoencoder, make_unet

        d, u = cfg.data, cfg.unet
        torch.manual_seed(cfg.train.seed)
        image_shape = (d.channels, d.image_size, d.image_size)
        ae, latent_shape = None, None
        in_ch, size = d.channels, d.image_size
        if cfg.latent:
            v = cfg.vae
            down = 2 ** (len(v.block_out_channels) - 1)
            if d.image_size % down:
                raise ValueError(f"image_size {d.image_size} is not divisible by the autoencoder's {down}x downsampling")
            ae = VAE(make_autoencoder(in_channels=d.channels, latent_channels=v.latent_channels,
                                      block_out_channels=v.block_out_channels, layers_per_block=v.layers_per_block,
                                      norm_num_groups=v.norm_num_groups, sample_size=d.image_size))
            latent_shape = (v.latent_channels, d.image_size // down, d.image_size // down)
            in_ch, size = latent_shape[0], latent_shape[1]
        K = d.num_classes if cfg.class_conditional else 0
        unet = make_unet(sample_size=size, in_channels=in_ch, block_out_channels=u.block_out_channels,
                         layers_per_block=u.layers_per_block, attention=u.attention,
                         num_class_embeds=K + 1 if K else None, norm_num_groups=u.norm_num_groups,
                         attention_head_dim=u.attention_head_dim, dropout=u.dropout)
        den = Denoiser(UNetNet(unet), make_process(cfg.diffusion), cfg.diffusion.prediction)
        model = ImagingModel(den, image_shape=image_shape, num_classes=K, autoencoder=ae, latent_shape=latent_shape,
                             class_names=tuple(str(i) for i in range(K)))
        if cfg.latent and cfg.vae.scaling_factor > 0:
            model.latent_scale.fill_(cfg.vae.scaling_factor)
        model.default_guidance_scale = cfg.sample.guidance_scale
        return model

    # ------------------------------------------------------------------ training

    def diffusion_loss_fn(self, cfg: C.ImagingConfig, model: ImagingModel):
        """``loss_fn(denoiser, batch, generator) -> [B]`` for the Trainer: class dropout to the null
        class with probability ``diffusion.cond_drop``, then ``shared.loss.diffusion_loss``.
        Batches are ``(images, labels)`` or, for latent models, ``(mean, std, labels)``."""
        from shared.loss import diffusion_loss, drop_condition

        dc = cfg.diffusion
        null = model.null_class
        latent = model.is_latent

        def loss_fn(den, batch, g):
            if latent:
                mean, std, y = batch
                eps = torch.randn(mean.shape, generator=g, device=g.device).to(mean)
                x0 = (mean + std * eps) * model.latent_scale.to(mean)
            else:
                x0, y = batch
            cond = drop_condition(y, dc.cond_drop, generator=g, null=null) if null is not None else None
            return diffusion_loss(den, x0, cond=cond, time_sampler=dc.time_sampler, weighting=dc.weighting,
                                  generator=g)

        return loss_fn

    def train_autoencoder(self, cfg: C.ImagingConfig, model: ImagingModel, data: Splits,
                          out_dir: str | Path | None = None, progress: bool | None = None) -> float:
        """Stage 1 of latent diffusion: train the AutoencoderKL with ``cfg.vae_train`` and set
        ``model.latent_scale`` (1/std of training latents unless ``vae.scaling_factor`` > 0).
        Returns the held-out reconstruction MSE (images in [-1, 1])."""
        from shared.training import Trainer

        v = cfg.vae
        tr = Trainer(cfg.vae_train, out_dir, config_to_save=cfg, meta={"domain": "imaging", "stage": "autoencoder"},
                     progress=progress)
        vae = model.autoencoder.vae

        def loss_fn(m, batch, g):
            x, _ = batch
            return autoencoder_loss(m, x, g, kl_weight=v.kl_weight, recon=v.recon)

        tr.fit(vae, loss_fn, data.train)
        model.autoencoder_train_steps = tr.step  # < vae_train.steps when max_seconds stopped it
        if tr.ema_model is not None:
            vae.load_state_dict(tr.ema_model.state_dict())
        vae.eval()
        dev = tr.device
        with torch.no_grad():
            mean, _ = self._posterior(vae, data.train.images, dev)
            scale = v.scaling_factor if v.scaling_factor > 0 else 1.0 / float(mean.float().std())
            model.latent_scale.fill_(scale)
            ref = data.test.images[:256].to(dev)
            rec = vae.decode(vae.encode(ref).latent_dist.mean).sample.clamp(-1, 1)
        return float(F.mse_loss(rec, ref))

    @staticmethod
    @torch.no_grad()
    def _posterior(vae, images: Tensor, device, batch: int = 500) -> tuple[Tensor, Tensor]:
        means, stds = [], []
        for i in range(0, images.shape[0], batch):
            post = vae.encode(images[i:i + batch].to(device)).latent_dist
            means.append(post.mean.cpu())
            stds.append(post.std.cpu())
        return torch.cat(means), torch.cat(stds)

    def train(self, cfg: C.ImagingConfig, model: ImagingModel, data: Splits, trainer) -> ImagingModel:
        """Train (autoencoder first for latent models, then) the denoiser with ``trainer``; the
        EMA weights (when enabled) become the model's weights."""
        model.to(trainer.device)
        dataset: Any = data.train
        if model.is_latent:
            vae_dir = None if trainer.out_dir is None else Path(trainer.out_dir) / "autoencoder"
            model.autoencoder_val_mse = self.train_autoencoder(cfg, model, data, vae_dir, progress=trainer.progress)
            model.to(trainer.device)
            mean, std = self._posterior(model.autoencoder.vae, data.train.images, trainer.device)
            labels = data.train.labels if data.train.labels is not None else torch.zeros(len(mean), dtype=torch.long)
            dataset = LatentSet(mean, std, labels)
        trainer.fit(model.denoiser, self.diffusion_loss_fn(cfg, model), dataset)
        if trainer.ema_model is not None:
            model.denoiser.load_state_dict(trainer.ema_model.state_dict())
        model.train_history = list(trainer.history)
        return model.eval()

    # ------------------------------------------------------------------ sampling & metrics

    def generate(self, model: ImagingModel, n: int, *, solver, grid, guidance=None, generator=None,
                 data: Splits | None = None, seeds=None, batch_size: int = 250, progress: bool = False) -> ImageSamples:
        """``n`` class-balanced samples (labels ``i % num_classes``).

        guidance: None (the model's default CFG scale from ``sample.guidance_scale``), a float
        scale (0 unconditional, 1 conditional), or a dict with ``scale``, optional ``interval``
        ``(t_lo, t_hi)`` and optional ``labels [n]``."""
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive int, got {n!r}")
        scale = getattr(model, "default_guidance_scale", 1.0)
        interval, labels = None, None
        if isinstance(guidance, dict):
            unknown = set(guidance) - {"scale", "interval", "labels"}
            if unknown:
                raise ValueError(f"unknown guidance keys {sorted(unknown)}; use scale, interval, labels")
            scale = float(guidance.get("scale", scale))
            interval = guidance.get("interval")
            labels = guidance.get("labels")
        elif guidance is not None:
            scale = float(guidance)
        if model.conditional_model:
            labels = torch.arange(n) % model.num_classes if labels is None else torch.as_tensor(labels)
        imgs = model.sample(labels, n=n, solver=solver, grid=grid, guidance_scale=scale, guidance_interval=interval,
                            generator=generator, seeds=seeds, batch_size=batch_size, progress=progress)
        return ImageSamples(imgs.cpu(), None if labels is None else torch.as_tensor(labels).cpu(), scale)

    def evaluate(self, samples: ImageSamples | Tensor, data: Splits) -> dict[str, float]:
        """``fd`` (Fréchet distance on the metric classifier's penultimate features against the
        held-out test split; NOT Inception FID), ``precision``, ``recall`` (k=3) and, for
        class-conditional samples, ``class_accuracy``. Images are clipped to [-1, 1] first."""
        from .metrics import image_metrics

        if isinstance(samples, ImageSamples):
            imgs, labels = samples.images, samples.labels
        else:
            imgs, labels = samples, None
        ref = data.test.images
        if imgs.shape[1:] != ref.shape[1:]:
            raise ValueError(f"samples have shape {tuple(imgs.shape[1:])}, reference images {tuple(ref.shape[1:])}")
        return image_metrics(imgs.clamp(-1, 1), ref, labels)

    # ------------------------------------------------------------------ persistence & plots

    def save(self, model: ImagingModel, cfg: C.ImagingConfig, path) -> None:
        """Checkpoint directory (safetensors + JSON via ``shared.checkpoint``); the config is saved
        with the computed latent scale and sampling defaults."""
        from shared.checkpoint import save_checkpoint

        if model.is_latent:
            cfg = replace(cfg, vae=replace(cfg.vae, scaling_factor=float(model.latent_scale)))
        meta = {"domain": "imaging", "latent": model.is_latent, "num_classes": model.num_classes,
                "latent_scale": float(model.latent_scale)}
        save_checkpoint(path, {"model": model}, cfg, meta=meta)

    def load(self, path) -> tuple[ImagingModel, C.ImagingConfig]:
        """Rebuild the model from a checkpoint's config and load its weights (strict)."""
        from shared.checkpoint import load_checkpoint, load_into

        ckpt = load_checkpoint(path)
        if ckpt.meta.get("domain") not in ("imaging", None):
            raise ValueError(f"{path}: checkpoint of domain {ckpt.meta.get('domain')!r}, not imaging")
        cfg = from_dict(C.ImagingConfig, ckpt.config)
        model = self.build(cfg)
        load_into(ckpt, {"model": model})
        return model.eval(), cfg

    def plot(self, samples: ImageSamples | Tensor, data: Splits | None, path) -> None:
        """PNG grid of up to 100 samples (10 per row, so class-balanced samples show one class
        per column)."""
        imgs = samples.images if isinstance(samples, ImageSamples) else samples
        save_grid(imgs[:100].clamp(-1, 1), path, nrow=min(10, imgs.shape[0]))
