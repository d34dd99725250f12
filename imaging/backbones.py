"""Networks for images, with explicit keyword arguments and no noise-level logic.

* :func:`make_unet` — a diffusers ``UNet2DModel`` (class embedding with a null class for CFG),
  wrapped as a backbone ``net(x, t, cond)`` by ``shared.interop.diffusers.UNetNet``.
* :func:`make_autoencoder` — a small diffusers ``AutoencoderKL`` for latent diffusion.
* :class:`DigitClassifier` — the small CNN whose penultimate features define the image metrics.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["make_unet", "make_autoencoder", "DigitClassifier", "count_params"]


def count_params(m: nn.Module) -> int:
    """Number of parameters of ``m``."""
    return sum(p.numel() for p in m.parameters())


def make_unet(*, sample_size: int = 32, in_channels: int = 1, out_channels: int | None = None,
              block_out_channels: Sequence[int] = (32, 64, 64), layers_per_block: int = 1,
              attention: Sequence[bool] = (False, False, True), num_class_embeds: int | None = 11,
              norm_num_groups: int = 8, attention_head_dim: int = 32, dropout: float = 0.0) -> nn.Module:
    """A diffusers ``UNet2DModel`` for ``[B, in_channels, sample_size, sample_size]`` inputs.

    ``attention[i]`` puts self-attention in resolution level ``i`` (down and mirrored up block).
    ``num_class_embeds`` = number of classes + 1 (the last id is the "null" class used for
    classifier-free guidance); None for an unconditional UNet."""
    from diffusers import UNet2DModel

    boc = tuple(int(c) for c in block_out_channels)
    att = tuple(bool(a) for a in attention)
    if len(att) != len(boc):
        raise ValueError(f"attention has {len(att)} entries for {len(boc)} levels of block_out_channels")
    if any(c % norm_num_groups for c in boc):
        raise ValueError(f"every block_out_channels {boc} must be divisible by norm_num_groups={norm_num_groups}")
    if sample_size % (2 ** (len(boc) - 1)):
        raise ValueError(f"sample_size {sample_size} is not divisible by 2^{len(boc) - 1} "
                         f"(levels of block_out_channels {boc})")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in att)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(att))
    return UNet2DModel(sample_size=sample_size, in_channels=in_channels,
                       out_channels=out_channels or in_channels, block_out_channels=boc,
                       layers_per_block=layers_per_block, down_block_types=down, up_block_types=up,
                       norm_num_groups=norm_num_groups, attention_head_dim=attention_head_dim,
                       num_class_embeds=num_class_embeds, dropout=dropout)


def make_autoencoder(*, in_channels: int = 1, latent_channels: int = 4,
                     block_out_channels: Sequence[int] = (32, 64, 64), layers_per_block: int = 1,
                     norm_num_groups: int = 8, sample_size: int = 32) -> nn.Module:
    """A small diffusers ``AutoencoderKL``: ``len(block_out_channels) - 1`` downsamplings, so
    32x32 images with three levels give 8x8 latents with ``latent_channels`` channels."""
    from diffusers import AutoencoderKL

    boc = tuple(int(c) for c in block_out_channels)
    if any(c % norm_num_groups for c in boc):
        raise ValueError(f"every block_out_channels {boc} must be divisible by norm_num_groups={norm_num_groups}")
    n = len(boc)
    return AutoencoderKL(in_channels=in_channels, out_channels=in_channels,
                         down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=boc,
                         layers_per_block=layers_per_block, latent_channels=latent_channels,
                         norm_num_groups=norm_num_groups, sample_size=sample_size)


class DigitClassifier(nn.Module):
    """Small CNN on ``[B, in_channels, input_size, input_size]`` inputs (images in [-1, 1], or
    latents for classifiers of a latent model, e.g. ``input_size=8``).

    ``features(x) -> [B, feature_dim]`` (penultimate layer, after ReLU) is the embedding of the
    image metrics; ``forward(x) -> logits [B, num_classes]``. Other input sizes are resized to
    ``input_size`` bilinearly."""

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10, width: int = 16,
                 feature_dim: int = 64, input_size: int = 32):
        super().__init__()
        w = width
        self.in_channels, self.num_classes, self.width, self.feature_dim = in_channels, num_classes, width, feature_dim
        self.input_size = int(input_size)

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())

        self.body = nn.Sequential(block(in_channels, w), nn.MaxPool2d(2),       # [B, w, 16, 16]
                                  block(w, 2 * w), nn.MaxPool2d(2),             # [B, 2w, 8, 8]
                                  block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1))  # [B, 4w, 1, 1]
        self.fc = nn.Linear(4 * w, feature_dim)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(feature_dim, num_classes)

    def config(self) -> dict:
        """Constructor keyword arguments (stored beside the weights)."""
        cfg = {"in_channels": self.in_channels, "num_classes": self.num_classes, "width": self.width,
               "feature_dim": self.feature_dim}
        if self.input_size != 32:
            cfg["input_size"] = self.input_size
        return cfg

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``[B, feature_dim]`` of images ``x: [B, C, H, W]``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"classifier expects [B, {self.in_channels}, H, W] images, got {tuple(x.shape)}")
        n = self.input_size
        if x.shape[-2:] != (n, n):
            x = F.interpolate(x, size=(n, n), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > n)
        h = self.body(x).flatten(1)  # [B, 4w]
        return F.relu(self.fc(h))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]``."""
        return self.head(self.dropout(self.features(x)))
