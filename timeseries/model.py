"""GPD model: an unconditional diffusion model over normalised windows, built from the kernel.

``GPDModel(cfg.model)`` holds a :class:`shared.param.Denoiser` around :class:`MLPDiffusionNet`.
``model(x0, generator)`` is the per-sample training loss (``shared.loss.diffusion_loss``), so the
shared Trainer (and DDP under ``accelerate launch``) call the module itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from shared import process as processes
from shared.config import from_dict, to_dict
from shared.loss import diffusion_loss
from shared.param import Denoiser
from shared.spaces import Euclidean

from .backbones import MLPDiffusionNet
from .configs import ModelConfig

__all__ = ["GPDModel", "make_process", "save_model", "load_model"]


def make_process(cfg: ModelConfig):
    """The noise process named by ``cfg.process`` (``schedule`` for discrete VP)."""
    if cfg.process == "discrete_vp":
        return processes.DiscreteVP.from_betas(cfg.schedule, 1000)
    return processes.make(cfg.process)


class GPDModel(nn.Module):
    """Unconditional window diffusion model (channel-independent rows ``[B, L]``).

    Attributes: ``denoiser`` (the kernel boundary), ``process``, ``space`` (Euclidean),
    ``window`` (L), ``norm_len``, ``cfg``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        net = MLPDiffusionNet(length=cfg.window, hidden=cfg.hidden, depth=cfg.depth, expansion=cfg.expansion,
                              time_dim=cfg.time_dim, dropout=cfg.dropout, linear_skip=cfg.linear_skip)
        self.denoiser = Denoiser(net, make_process(cfg), cfg.prediction, space=Euclidean(),
                                 sigma_data=cfg.sigma_data)

    @property
    def process(self):
        return self.denoiser.process

    @property
    def space(self):
        return self.denoiser.space

    @property
    def window(self) -> int:
        return self.cfg.window

    @property
    def norm_len(self) -> int:
        return self.cfg.norm_len

    def forward(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-sample diffusion loss ``[B]`` of normalised windows ``x0: [B, L]``."""
        if x0.ndim != 2 or x0.shape[1] != self.window:
            raise ValueError(f"expected windows of shape [B, {self.window}], got {tuple(x0.shape)}")
        return diffusion_loss(self.denoiser, x0, time_sampler=self.cfg.time_sampler,
                              weighting=self.cfg.weighting, generator=generator)

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """``x0_hat: [B, L]`` for ``x: [B, L]``, ``t: [B]`` (the kernel's DenoiseFn)."""
        return self.denoiser(x, t)


def save_model(model: GPDModel, path, config: Any = None, meta: dict | None = None):
    """Checkpoint directory via :func:`shared.checkpoint.save_checkpoint` (safetensors + JSON);
    the model config is stored in ``meta['model_config']`` so :func:`load_model` can rebuild it."""
    from shared.checkpoint import save_checkpoint

    meta = {"domain": "timeseries", "model_config": to_dict(model.cfg), **(meta or {})}
    return save_checkpoint(path, {"model": model}, config if config is not None else model.cfg, meta=meta)


def load_model(path) -> tuple[GPDModel, Any]:
    """Rebuild a :class:`GPDModel` from a checkpoint directory; returns ``(model, checkpoint)``."""
    from shared.checkpoint import CheckpointError, load_checkpoint, load_into

    ckpt = load_checkpoint(path)
    mc = ckpt.meta.get("model_config")
    if mc is None:
        raise CheckpointError(f"{ckpt.path}: not a timeseries GPD checkpoint (no meta.model_config)")
    model = GPDModel(from_dict(ModelConfig, mc))
    load_into(ckpt, {"model": model})
    return model.eval(), ckpt
