"""Networks: a MONAI ResNet-FPN feature extractor (no torchvision) and a DiffusionDet-style
detection head that denoises boxes, with three classification branches (quadrant, tooth,
diagnosis) and box regression. RoI features are bilinear samples (``grid_sample``).

Layout: images ``[B, C, W, H]`` (MONAI: spatial axis 0 is x), boxes ``xyxy`` pixels with x along
axis 0. Box signal ``x: [B, N, 4]`` is normalised ``(cx, cy, w, h)`` mapped to
``[-scale, scale]``: ``x = (2 b - 1) * scale``. No noise-level logic here: ``t`` is an input.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ResNetFPN",
    "roi_sample",
    "boxes_to_signal",
    "signal_to_boxes",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
    "DiffusionDetNet",
]


# --------------------------------------------------------------------------- box helpers

def cxcywh_to_xyxy(b: Tensor) -> Tensor:
    """``[..., 4]`` (cx, cy, w, h) -> (x0, y0, x1, y1)."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def xyxy_to_cxcywh(b: Tensor) -> Tensor:
    """``[..., 4]`` (x0, y0, x1, y1) -> (cx, cy, w, h)."""
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


#: default box prior ``(mean, std)`` of normalised (cx, cy, w, h): DiffusionDet's ``x = (2 b - 1) scale``
DEFAULT_PRIOR = (0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5)


def _prior(prior: Sequence[float] | None, ref: Tensor) -> tuple[Tensor, Tensor]:
    p = DEFAULT_PRIOR if not prior else tuple(prior)
    if len(p) != 8 or min(p[4:]) <= 0:
        raise ValueError(f"box prior must be 4 means and 4 positive stds, got {p}")
    t = ref.new_tensor(p)
    return t[:4], t[4:]


def boxes_to_signal(boxes_xyxy: Tensor, size: Sequence[int], scale: float,
                    prior: Sequence[float] | None = None) -> Tensor:
    """Pixel ``xyxy [..., 4]`` on an image of ``size = (W, H)`` -> signal ``[..., 4]``:
    ``x = (b - mean) / std * scale`` of the normalised ``b = (cx, cy, w, h)``. The default
    prior (mean = std = 0.5) is DiffusionDet's ``x = (2 b - 1) scale`` in ``[-scale, scale]``;
    a box prior of the data (e.g. tooth-sized mean and spread) makes pure noise decode to
    plausible boxes, like anchors."""
    W, H = size
    norm = boxes_xyxy / boxes_xyxy.new_tensor([W, H, W, H])
    mu, sd = _prior(prior, norm)
    return (xyxy_to_cxcywh(norm) - mu) / sd * scale


def signal_to_boxes(x: Tensor, size: Sequence[int], scale: float, prior: Sequence[float] | None = None) -> Tensor:
    """Inverse of :func:`boxes_to_signal` after clamping to ``[-scale, scale]`` (DiffusionDet)."""
    W, H = size
    mu, sd = _prior(prior, x)
    b = x.clamp(-scale, scale) / scale * sd + mu
    b = torch.cat([b[..., :2], b[..., 2:].clamp_min(1e-4)], -1)
    return cxcywh_to_xyxy(b) * b.new_tensor([W, H, W, H])


# --------------------------------------------------------------------------- backbone

class ResNetFPN(nn.Module):
    """MONAI ``ResNet`` (2-D) + MONAI ``FeaturePyramidNetwork`` with ``LastLevelMaxPool``.

    MONAI's ``resnet_fpn_feature_extractor`` / ``BackboneWithFPN`` call torchvision
    (``_validate_trainable_layers``, ``IntermediateLayerGetter``); this module does the same
    wiring with MONAI blocks only: the intermediate-layer taps are four lines in ``forward``.

    Args:
        in_channels: image channels.
        layers: residual blocks per stage (resnet10 = (1, 1, 1, 1)).
        block_inplanes: channels per stage.
        returned_layers: stages fed to the FPN (1..4).
        fpn_channels: FPN output channels (``out_channels`` attribute, as MONAI's RetinaNet expects).
        norm: MONAI norm spec (``"batch"``, ``("group", {"num_groups": 8})``, ...).
    Forward: ``[B, C, W, H] -> OrderedDict`` of ``[B, fpn_channels, W / s, H / s]``, strides
    ``s = 4, 8, 16, ...`` then the max-pooled level (highest resolution first).
    """

    def __init__(self, *, in_channels: int = 1, layers: Sequence[int] = (1, 1, 1, 1),
                 block_inplanes: Sequence[int] = (16, 32, 64, 128), returned_layers: Sequence[int] = (1, 2, 3),
                 fpn_channels: int = 64, norm: str | tuple = ("group", {"num_groups": 8})):
        super().__init__()
        from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
        from monai.networks.nets.resnet import ResNet

        if not returned_layers or min(returned_layers) < 1 or max(returned_layers) > 4:
            raise ValueError(f"returned_layers must be within 1..4, got {returned_layers}")
        self.returned_layers = tuple(sorted(returned_layers))
        body = ResNet(block="basic", layers=list(layers), block_inplanes=list(block_inplanes), spatial_dims=2,
                      n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2, num_classes=1,
                      feed_forward=False, norm=norm)
        for k in range(max(self.returned_layers) + 1, 5):  # drop unused stages
            setattr(body, f"layer{k}", nn.Identity())
        self.body = body
        in_list = [block_inplanes[k - 1] for k in self.returned_layers]  # basic block: expansion 1
        self.fpn = FeaturePyramidNetwork(spatial_dims=2, in_channels_list=in_list, out_channels=fpn_channels,
                                         extra_blocks=LastLevelMaxPool(2))
        self.out_channels = fpn_channels
        self.strides = tuple(2 ** (k + 1) for k in self.returned_layers) + (2 ** (max(self.returned_layers) + 2),)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        b = self.body
        x = b.act(b.bn1(b.conv1(x)))
        if not b.no_max_pool:
            x = b.maxpool(x)
        taps: OrderedDict[str, Tensor] = OrderedDict()
        for k in range(1, max(self.returned_layers) + 1):
            x = getattr(b, f"layer{k}")(x)
            if k in self.returned_layers:
                taps[str(len(taps))] = x
        return self.fpn(taps)


# --------------------------------------------------------------------------- RoI features

def roi_sample(feature: Tensor, boxes: Tensor, size: Sequence[int], pool: int) -> Tensor:
    """Bilinear RoI features without torchvision: a ``pool x pool`` grid of sample points at
    the bin centres of each box, read with ``grid_sample`` (RoIAlign with one sample per bin).

    feature: ``[B, C, Wf, Hf]`` (x along axis 2); boxes: ``[B, N, 4]`` xyxy pixels of an image
    of ``size = (W, H)``. Returns ``[B, N, C, pool, pool]`` (axes x, y)."""
    B, N, _ = boxes.shape
    W, H = size
    r = (torch.arange(pool, device=boxes.device, dtype=boxes.dtype) + 0.5) / pool  # [P]
    x0, y0, x1, y1 = boxes.unbind(-1)  # [B, N]
    px = x0[..., None] + (x1 - x0)[..., None] * r  # [B, N, P]
    py = y0[..., None] + (y1 - y0)[..., None] * r
    nx = px / W * 2 - 1  # normalised, align_corners=False convention
    ny = py / H * 2 - 1
    # grid[..., 0] indexes the last axis (H, i.e. y), grid[..., 1] the axis before it (x)
    gx = nx[..., :, None].expand(B, N, pool, pool)
    gy = ny[..., None, :].expand(B, N, pool, pool)
    grid = torch.stack([gy, gx], -1).reshape(B, N * pool, pool, 2)
    if feature.dtype in (torch.float16, torch.bfloat16):
        # mixed precision: sample in float32 (CUDA autocast runs grid_sample in float32 anyway;
        # sampling points rounded to bf16 would be off by up to ~1 px on a 512-px image)
        feature, grid = feature.float(), grid.float()
    out = F.grid_sample(feature, grid.to(feature.dtype), mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # [B, C, N * P, P]
    C = feature.shape[1]
    return out.reshape(B, C, N, pool, pool).permute(0, 2, 1, 3, 4)


# --------------------------------------------------------------------------- head

def _time_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of ``t * 1000`` (t in [0, 1]): ``[B] -> [B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    a = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], -1)


class _Stage(nn.Module):
    """One refinement stage: RoI features + box geometry -> proposal features (self-attention
    across proposals, time scale-shift, FFN) -> class logits per level and box deltas."""

    def __init__(self, *, roi_dim: int, d_model: int, num_heads: int, num_classes: Sequence[int], time_dim: int,
                 geo_dim: int = 4):
        super().__init__()
        self.roi_proj = nn.Sequential(nn.Linear(roi_dim, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        self.geo = nn.Linear(geo_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * d_model))
        self.ffn = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Linear(2 * d_model, d_model))
        self.norm3 = nn.LayerNorm(d_model)
        self.cls = nn.ModuleList(
            [nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, k)) for k in num_classes])
        self.reg = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 4))
        prior = -math.log((1 - 0.01) / 0.01)  # focal-loss prior (RetinaNet)
        for head in self.cls:
            nn.init.constant_(head[-1].bias, prior)
        nn.init.zeros_(self.reg[-1].weight)
        nn.init.zeros_(self.reg[-1].bias)

    def forward(self, roi: Tensor, geo: Tensor, h_prev: Tensor | None, temb: Tensor):
        h = self.roi_proj(roi.flatten(2)) + self.geo(geo)  # [B, N, d]
        if h_prev is not None:
            h = h + h_prev
        h = self.norm1(h)
        h = self.norm2(h + self.attn(h, h, h, need_weights=False)[0])
        scale, shift = self.time(temb)[:, None].chunk(2, -1)
        h = h * (1 + scale) + shift
        h = self.norm3(h + self.ffn(h))
        return h, [c(h) for c in self.cls], self.reg(h)


class DiffusionDetNet(nn.Module):
    """Box denoiser ``net(x, t, cond, aux=None) -> x0_hat`` (DiffusionDet, Chen et al. 2023).

    ``cond`` is what :meth:`encode` returns for a batch of images (features computed once and
    reused at every sampling step). ``x: [B, N, 4]`` noisy box signal, ``t: [B]``. The output is
    the clean box signal ``[B, N, 4]`` of the last stage (x0 prediction). When ``aux`` (a dict)
    is given, it receives ``"logits"``: list over levels of ``[B, N, K_level]`` (last stage) and
    ``"stages"``: list of ``(boxes_xyxy [B, N, 4], logits)`` for deep supervision.

    Args:
        image_size: ``(W, H)`` of the input images.
        num_classes: classes per level (quadrant 4, tooth 8, diagnosis 4).
        signal_scale: box signal range ``[-scale, scale]``.
        geo_fourier: number of octaves of sin / cos features of the normalised box geometry fed
            to each stage beside the raw (cx, cy, w, h) (0: raw geometry only).
        geo_rbf: number of Gaussian bumps encoding cx and cy (soft position bins) added to the
            geometry features (0: none).
        geo_cls: add to each stage's class logits a small MLP of the geometry features of that
            stage's output box (tooth number is a function of position along the arch).
        box_prior: ``(mean, std)`` of normalised cxcywh (8 numbers) of the box signal, or None
            for DiffusionDet's mapping (see :func:`boxes_to_signal`).
        roi_levels: ``"assign"``: each box reads the FPN level of its size (boxes up to
            ``roi_canonical`` px use the finest level, then one level per doubling);
            ``"mean"``: average of all levels.
        other args: backbone / head sizes.
    """

    def __init__(self, *, image_size: Sequence[int], num_classes: Sequence[int] = (4, 8, 4), signal_scale: float = 2.0,
                 in_channels: int = 1, layers: Sequence[int] = (1, 1, 1, 1), block_inplanes: Sequence[int] = (16, 32, 64, 128),
                 returned_layers: Sequence[int] = (1, 2, 3), fpn_channels: int = 64, d_model: int = 128,
                 num_heads: int = 4, pool: int = 7, num_stages: int = 2, time_dim: int = 128,
                 feature_levels: int = 3, roi_levels: str = "assign", roi_canonical: float = 32.0,
                 box_prior: Sequence[float] | None = None, geo_fourier: int = 0, geo_rbf: int = 0,
                 geo_cls: bool = False):
        super().__init__()
        self.geo_fourier = int(geo_fourier)
        self.geo_rbf = int(geo_rbf)
        self.geo_cls = bool(geo_cls)
        self.box_prior = tuple(box_prior) if box_prior else None
        if roi_levels not in ("assign", "mean"):
            raise ValueError(f"roi_levels must be 'assign' or 'mean', got {roi_levels!r}")
        self.roi_levels = roi_levels
        self.roi_canonical = float(roi_canonical)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.signal_scale = float(signal_scale)
        self.pool = pool
        self.time_dim = time_dim
        self.feature_levels = feature_levels
        self.backbone = ResNetFPN(in_channels=in_channels, layers=layers, block_inplanes=block_inplanes,
                                  returned_layers=returned_layers, fpn_channels=fpn_channels)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        geo_dim = 4 + 8 * self.geo_fourier + 2 * self.geo_rbf
        self.stages = nn.ModuleList([
            _Stage(roi_dim=fpn_channels * pool * pool, d_model=d_model, num_heads=num_heads,
                   num_classes=num_classes, time_dim=time_dim, geo_dim=geo_dim)
            for _ in range(num_stages)])
        if self.geo_cls:
            # class logits from the geometry of each stage's OUTPUT box (the box that is scored):
            # per stage and level a small MLP, last layer zero-initialised (starts as a no-op)
            self.geo_heads = nn.ModuleList()
            for _ in range(num_stages):
                heads = nn.ModuleList()
                for k in num_classes:
                    mlp = nn.Sequential(nn.Linear(geo_dim, d_model), nn.ReLU(), nn.Linear(d_model, k))
                    nn.init.zeros_(mlp[-1].weight)
                    nn.init.zeros_(mlp[-1].bias)
                    heads.append(mlp)
                self.geo_heads.append(heads)

    def _geo(self, boxes_px: Tensor) -> Tensor:
        """Geometry features of ``[B, N, 4]`` xyxy pixel boxes: normalised (cx, cy, w, h), plus
        ``geo_fourier`` octaves of sin / cos, plus ``geo_rbf`` Gaussian bumps (centres evenly
        over [0, 1], width one spacing) of cx and of cy: a soft one-hot code of the position
        along the image, which a linear layer maps to position bins (tooth numbers)."""
        W, H = self.image_size
        geo = xyxy_to_cxcywh(boxes_px / boxes_px.new_tensor([W, H, W, H]))
        parts = [geo]
        if self.geo_fourier:  # Fourier features of the box geometry (position -> tooth number)
            f = geo[..., None] * (math.pi * 2.0 ** torch.arange(self.geo_fourier, device=geo.device,
                                                                dtype=geo.dtype))
            parts += [f.sin().flatten(-2), f.cos().flatten(-2)]
        if self.geo_rbf:
            c = (torch.arange(self.geo_rbf, device=geo.device, dtype=geo.dtype) + 0.5) / self.geo_rbf
            z = (geo[..., :2, None] - c) * self.geo_rbf  # [B, N, 2, R] in units of the spacing
            parts.append(torch.exp(-0.5 * z * z).flatten(-2))
        return torch.cat(parts, -1)

    def encode(self, images: Tensor) -> dict:
        """``images [B, C, W, H]`` -> condition ``{"features": [level maps]}``."""
        if tuple(images.shape[2:]) != self.image_size:
            raise ValueError(f"images must be [B, C, {self.image_size[0]}, {self.image_size[1]}] "
                             f"(W, H), got {tuple(images.shape)}")
        feats = list(self.backbone(images).values())[: self.feature_levels]
        return {"features": feats}

    def _roi(self, feats: list[Tensor], boxes: Tensor) -> Tensor:
        rois = [roi_sample(f, boxes, self.image_size, self.pool) for f in feats]  # each [B, N, C, P, P]
        if self.roi_levels == "mean" or len(rois) == 1:
            return sum(rois) / len(rois)
        # FPN level assignment (Lin et al. 2017, eq. 1): level = floor(log2(sqrt(w h) / canonical))
        wh = (boxes[..., 2:] - boxes[..., :2]).clamp_min(1e-3)
        lvl = torch.floor(torch.log2(wh.prod(-1).sqrt() / self.roi_canonical)).clamp(0, len(rois) - 1)
        onehot = F.one_hot(lvl.long(), len(rois)).to(rois[0].dtype)  # [B, N, L]
        return torch.einsum("bnl,lbncxy->bncxy", onehot, torch.stack(rois))

    def forward(self, x: Tensor, t: Tensor, cond: dict, aux: dict | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != 4:
            raise ValueError(f"x must be [B, N, 4] box signals, got {tuple(x.shape)}")
        feats = cond["features"]
        if feats[0].shape[0] != x.shape[0]:
            # features of one image set reused for a larger batch of box sets (repeat images)
            rep = x.shape[0] // feats[0].shape[0]
            feats = [f.repeat_interleave(rep, 0) for f in feats]
        W, H = self.image_size
        wh = x.new_tensor([W, H, W, H])
        boxes = signal_to_boxes(x, self.image_size, self.signal_scale, self.box_prior)  # [B, N, 4] pixels
        temb = self.time_mlp(_time_embedding(t, self.time_dim))
        h, stages = None, []
        for si, stage in enumerate(self.stages):
            b = boxes.detach()
            geo = self._geo(b)
            roi = self._roi(feats, b)
            h, logits, d = stage(roi, geo, h, temb)
            cx, cy, w, hh = xyxy_to_cxcywh(b).unbind(-1)
            dx, dy, dw, dh = d.unbind(-1)
            dw, dh = dw.clamp(max=math.log(1000 / 16)), dh.clamp(max=math.log(1000 / 16))
            new = torch.stack([cx + dx * w, cy + dy * hh, w * dw.exp(), hh * dh.exp()], -1)
            boxes = cxcywh_to_xyxy(new)
            if self.geo_cls:
                g_out = self._geo(boxes.detach())
                logits = [lg + head(g_out).to(lg.dtype) for lg, head in zip(logits, self.geo_heads[si])]
            stages.append((boxes, logits))
        if aux is not None:
            aux["logits"] = stages[-1][1]
            aux["stages"] = stages
        return boxes_to_signal(boxes, self.image_size, self.signal_scale, self.box_prior)
