"""Detection-specific pieces of box diffusion: the forward noising of padded box sets (through
the kernel's process and space), set-based matching and losses with partial-label masks,
box renewal and step ensembling as :mod:`shared.sample` step hooks, and post-processing.

Shapes: ``B`` images, ``N`` proposals, ``M`` ground-truth boxes of one image; boxes are xyxy
pixels (x along the image width) unless named ``signal`` (``[-scale, scale]`` cxcywh).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .backbones import boxes_to_signal, signal_to_boxes

__all__ = [
    "pad_boxes",
    "noised_boxes",
    "sigmoid_focal_loss",
    "hungarian_match",
    "set_loss",
    "batched_match",
    "set_loss_batched",
    "BoxRenewal",
    "StepEnsemble",
    "level_predictions",
    "postprocess",
]


def pad_boxes(gt_signal: Tensor, num: int, scale: float, generator: torch.Generator, repeat: float = 0.0,
              prior: Sequence[float] | None = None) -> Tensor:
    """DiffusionDet padding: ``gt_signal [M, 4]`` -> ``[num, 4]``. Extra ground truth beyond
    ``num`` is subsampled; the rest is filled with random boxes (normalised ``mean + std z / 3``
    with sizes made positive; DiffusionDet's centre ~ N(0.5, 1/6), size ~ |N(0.5, 1/6)| for the
    default prior), mapped to the same signal range ``[-scale, scale]``.
    ``repeat``: fraction of the filler slots that take copies of the ground truth instead
    (DiffusionDet's "repeat" padding; each copy is noised independently afterwards)."""
    from .backbones import _prior

    M = gt_signal.shape[0]
    if M >= num:
        idx = torch.randperm(M, generator=generator, device=generator.device)[:num].to(gt_signal.device)
        return gt_signal[idx]
    n_rep = int(round(repeat * (num - M))) if M else 0
    mu, sd = _prior(prior, gt_signal)
    z = torch.randn(num - M - n_rep, 4, generator=generator, device=generator.device, dtype=gt_signal.dtype)
    r = mu + sd * z.to(gt_signal.device) / 3
    r = torch.cat([r[:, :2], r[:, 2:].abs().clamp_min(1e-4)], -1)
    parts = [gt_signal]
    if n_rep:
        parts.append(gt_signal[torch.arange(n_rep, device=gt_signal.device) % M])
    return torch.cat(parts + [(r - mu) / sd * scale], 0)


def noised_boxes(x0: Tensor, t: Tensor, process, space, generator) -> Tensor:
    """``x_t = alpha(t) x0 + sigma(t) eps`` with ``eps = space.noise(x0)``; ``x0: [B, N, 4]``."""
    eps = space.noise(x0, generator)
    return space.bcast(process.alpha(t), x0) * x0 + space.bcast(process.sigma(t), x0) * eps


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal loss (Lin et al. 2017) elementwise, ``[..., K]``."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def _norm(boxes: Tensor, size: Sequence[int]) -> Tensor:
    W, H = size
    return boxes / boxes.new_tensor([W, H, W, H])


@torch.no_grad()
def hungarian_match(boxes: Tensor, logits: Sequence[Tensor], gt_boxes: Tensor, gt_labels: Tensor,
                    size: Sequence[int], loss_cfg) -> tuple[np.ndarray, np.ndarray]:
    """Matching (scipy ``linear_sum_assignment``) of ``N`` predictions to ``M`` ground-truth
    boxes, one-to-one, or one-to-many with ``loss_cfg.match_k`` proposals per box (the cost
    columns tiled ``k`` times), with the DETR cost: focal class cost summed over the levels whose label
    is known, ``w_l1 * L1`` on normalised xyxy, ``-w_giou * GIoU``.

    boxes ``[N, 4]``; logits: per level ``[N, K]``; gt_boxes ``[M, 4]``; gt_labels ``[M, 3]``
    (-1 = unknown). Returns (prediction indices, gt indices)."""
    from monai.data.box_utils import box_giou
    from scipy.optimize import linear_sum_assignment

    M = gt_boxes.shape[0]
    if M == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, g = loss_cfg.focal_alpha, loss_cfg.focal_gamma
    cost = torch.zeros(boxes.shape[0], M, dtype=torch.float32, device=boxes.device)
    for k, lg in enumerate(logits):
        lab = gt_labels[:, k]
        known = lab >= 0
        if not known.any():
            continue
        p = lg.float().sigmoid()
        neg = (1 - a) * p ** g * -(1 - p + 1e-8).log()
        pos = a * (1 - p) ** g * -(p + 1e-8).log()
        c = (pos - neg)[:, lab.clamp_min(0)]  # [N, M]
        cost += loss_cfg.w_cls * c * known.float()[None]
    pb, gb = _norm(boxes.float(), size), _norm(gt_boxes.float(), size)
    cost += loss_cfg.w_l1 * torch.cdist(pb, gb, p=1)
    cost -= loss_cfg.w_giou * torch.as_tensor(box_giou(pb, gb), dtype=torch.float32)
    radius = float(getattr(loss_cfg, "match_center", 0.0))
    if radius > 0:  # centre prior (DiffusionDet / YOLOX SimOTA): proposals whose centre lies
        # outside the ground-truth box and outside a centre region of radius * (w, h) cost more
        pc = (pb[:, None, :2] + pb[:, None, 2:]) / 2  # [N, 1, 2]
        inside = ((pc > gb[None, :, :2]) & (pc < gb[None, :, 2:])).all(-1)
        gc, gwh = (gb[:, :2] + gb[:, 2:]) / 2, (gb[:, 2:] - gb[:, :2])
        near = ((pc - gc[None]).abs() < radius * gwh[None]).all(-1)
        cost = cost + 100.0 * (~(inside | near)).float()
    cost = torch.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6)
    kmax = max(1, min(int(getattr(loss_cfg, "match_k", 1)), boxes.shape[0] // M))
    if getattr(loss_cfg, "match_dynamic", False) and kmax > 1:
        # dynamic k (OTA): ground-truth box g takes k_g = clamp(floor(sum of its top-kmax IoUs), 1, kmax)
        # proposals, so only well-overlapping proposals become extra positives
        from monai.data.box_utils import box_iou

        iou = torch.as_tensor(box_iou(pb, gb), dtype=torch.float32)  # [N, M]
        kg = iou.topk(min(kmax, iou.shape[0]), 0).values.sum(0).floor().clamp(1, kmax).long()
        cols = torch.cat([torch.full((int(kk),), g, dtype=torch.long) for g, kk in enumerate(kg.tolist())])
        r, c = linear_sum_assignment(cost[:, cols.to(cost.device)].cpu().numpy())
        return r.astype(np.int64), cols.numpy()[c].astype(np.int64)
    if kmax > 1:  # one-to-many: each ground-truth box may take up to k proposals (tiled columns)
        cost = cost.repeat(1, kmax)
    r, c = linear_sum_assignment(cost.cpu().numpy())
    return r.astype(np.int64), (c % M).astype(np.int64)


def set_loss(stages: Sequence[tuple[Tensor, Sequence[Tensor]]], gt_boxes: Sequence[Tensor],
             gt_labels: Sequence[Tensor], size: Sequence[int], loss_cfg) -> Tensor:
    """Per-image set loss ``[B]``, averaged over the head's stages (deep supervision).

    For each stage: Hungarian matching, then focal loss per level on all ``N`` proposals
    (unmatched = background), L1 and GIoU on matched boxes, each normalised by the number of
    ground-truth boxes. Partial labels: a matched proposal whose ground truth has no label at
    level k (``-1``) contributes no level-k classification loss."""
    from monai.data.box_utils import box_pair_giou

    B = len(gt_boxes)
    total = []
    for b in range(B):
        gtb, gtl = gt_boxes[b], gt_labels[b]
        n_gt = max(1, gtb.shape[0])
        per_stage = []
        for boxes, logits in stages:
            pb = boxes[b]
            lg = [lv[b] for lv in logits]
            ri, ci = hungarian_match(pb, lg, gtb, gtl, size, loss_cfg)
            ri_t, ci_t = torch.as_tensor(ri, device=pb.device), torch.as_tensor(ci, device=pb.device)
            loss = pb.new_zeros(())
            for k, lvl in enumerate(lg):
                target = torch.zeros_like(lvl)
                weight = torch.ones(lvl.shape[0], device=lvl.device, dtype=lvl.dtype)
                if len(ri):
                    lab = gtl[ci_t, k]
                    known = lab >= 0
                    target[ri_t[known], lab[known]] = 1.0
                    weight[ri_t[~known]] = 0.0
                fl = sigmoid_focal_loss(lvl, target, loss_cfg.focal_alpha, loss_cfg.focal_gamma)
                loss = loss + loss_cfg.w_cls * (fl.sum(-1) * weight).sum() / n_gt
            if len(ri):
                p_m = _norm(pb[ri_t], size)
                g_m = _norm(gtb[ci_t].to(pb), size)
                loss = loss + loss_cfg.w_l1 * (p_m - g_m).abs().sum() / n_gt
                giou = box_pair_giou(p_m, g_m)
                loss = loss + loss_cfg.w_giou * (1 - giou).sum() / n_gt
            per_stage.append(loss)
        total.append(torch.stack(per_stage).mean())
    return torch.stack(total)


# --------------------------------------------------------------------------- batched set loss

_EPS = float(torch.finfo(torch.float32).eps)


def _pairwise_iou_giou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and GIoU ``[B, N, M]`` of xyxy boxes ``a [B, N, 4]`` and ``b [B, M, 4]`` in float32,
    with MONAI ``box_iou`` / ``box_giou``'s formulas (areas, eps) batched over images."""
    a, b = a.float(), b.float()
    area_a = (a[..., 2:] - a[..., :2]).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).prod(-1)
    lt = torch.max(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.min(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, :, None] + area_b[:, None, :] - inter
    iou = inter / (union + _EPS)
    lt_c = torch.min(a[:, :, None, :2], b[:, None, :, :2])
    rb_c = torch.max(a[:, :, None, 2:], b[:, None, :, 2:])
    enc = (rb_c - lt_c).clamp(min=0).prod(-1)
    return iou, iou - (enc - union) / (enc + _EPS)


@torch.no_grad()
def batched_match(boxes: Tensor, logits: Sequence[Tensor], gtb: Tensor, gtl: Tensor, counts: Sequence[int],
                  size: Sequence[int], loss_cfg) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`hungarian_match` for a batch at once: the cost matrices of all images are built
    by batched tensor ops (ground truth padded to ``Mmax``) and copied to the CPU once; only
    ``linear_sum_assignment`` runs per image. Same cost (focal class cost of the known
    levels, ``w_l1 * L1``, ``-w_giou * GIoU``, centre prior) and the same one-to-many /
    dynamic-k rules. boxes ``[B, N, 4]``; logits per level ``[B, N, K]``; gtb ``[B, Mmax, 4]``;
    gtl ``[B, Mmax, 3]`` (-1 unknown or padding); counts: ``M_i`` per image."""
    from scipy.optimize import linear_sum_assignment

    B, N = boxes.shape[:2]
    Mx = gtb.shape[1]
    if Mx == 0:
        return [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in range(B)]
    a, g = loss_cfg.focal_alpha, loss_cfg.focal_gamma
    cost = torch.zeros(B, N, Mx, dtype=torch.float32, device=boxes.device)
    for k, lg in enumerate(logits):
        lab = gtl[..., k]  # [B, Mx]
        known = (lab >= 0).float()
        p = lg.float().sigmoid()
        neg = (1 - a) * p ** g * -(1 - p + 1e-8).log()
        pos = a * (1 - p) ** g * -(p + 1e-8).log()
        c = torch.gather(pos - neg, 2, lab.clamp_min(0)[:, None, :].expand(B, N, Mx))  # [B, N, Mx]
        cost += loss_cfg.w_cls * c * known[:, None, :]
    pb, gb = _norm(boxes.float(), size), _norm(gtb.float(), size)
    cost += loss_cfg.w_l1 * torch.cdist(pb, gb, p=1)
    iou, giou = _pairwise_iou_giou(pb, gb)
    cost -= loss_cfg.w_giou * giou
    radius = float(getattr(loss_cfg, "match_center", 0.0))
    if radius > 0:
        pc = (pb[:, :, None, :2] + pb[:, :, None, 2:]) / 2  # [B, N, 1, 2]
        inside = ((pc > gb[:, None, :, :2]) & (pc < gb[:, None, :, 2:])).all(-1)
        gc, gwh = (gb[..., :2] + gb[..., 2:]) / 2, (gb[..., 2:] - gb[..., :2])
        near = ((pc - gc[:, None]).abs() < radius * gwh[:, None]).all(-1)
        cost = cost + 100.0 * (~(inside | near)).float()
    cost = torch.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6)
    kcap = max(1, int(getattr(loss_cfg, "match_k", 1)))
    dynamic = bool(getattr(loss_cfg, "match_dynamic", False)) and kcap > 1
    top = iou.topk(min(kcap, N), 1).values if dynamic else None  # [B, k, Mx], sorted
    cost_np = cost.cpu().numpy()
    top_np = top.cpu().numpy() if top is not None else None
    out = []
    for i, M in enumerate(counts):
        if M == 0:
            out.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
            continue
        c = cost_np[i, :, :M]
        kmax = max(1, min(kcap, N // M))
        if dynamic and kmax > 1:
            kg = np.clip(np.floor(top_np[i, :kmax, :M].sum(0, dtype=np.float32)), 1, kmax).astype(np.int64)
            cols = np.repeat(np.arange(M), kg)
            r, cc = linear_sum_assignment(c[:, cols])
            out.append((r.astype(np.int64), cols[cc].astype(np.int64)))
            continue
        if kmax > 1:
            c = np.tile(c, (1, kmax))
        r, cc = linear_sum_assignment(c)
        out.append((r.astype(np.int64), (cc % M).astype(np.int64)))
    return out


def set_loss_batched(stages: Sequence[tuple[Tensor, Sequence[Tensor]]], gt_boxes: Sequence[Tensor],
                     gt_labels: Sequence[Tensor], size: Sequence[int], loss_cfg) -> Tensor:
    """:func:`set_loss` with batched tensor ops (``loss.batched``): the same per-image loss
    ``[B]`` (focal per level on all proposals with partial-label masks, L1 and GIoU on matched
    boxes, each over the image's ground-truth count, averaged over stages), but one matching
    call (:func:`batched_match`) and a fixed number of tensor ops per stage instead of per
    image and stage: on a GPU the per-image Python loop of :func:`set_loss` costs far more
    than the arithmetic."""
    from monai.data.box_utils import box_pair_giou

    B = len(gt_boxes)
    dev = stages[0][0].device
    counts = [int(b.shape[0]) for b in gt_boxes]
    Mx = max(counts) if counts else 0
    gtb = torch.zeros(B, Mx, 4, device=dev)
    gtl = torch.full((B, Mx, 3), -1, dtype=torch.long, device=dev)
    for i, (b, lab) in enumerate(zip(gt_boxes, gt_labels)):
        if counts[i]:
            gtb[i, : counts[i]] = b.to(device=dev, dtype=torch.float32)
            gtl[i, : counts[i]] = lab.to(dev)
    n_gt = torch.tensor([max(1, m) for m in counts], dtype=torch.float32, device=dev)
    per_stage = []
    for boxes, logits in stages:
        matches = batched_match(boxes, logits, gtb, gtl, counts, size, loss_cfg)
        bi = torch.as_tensor(np.concatenate([np.full(len(r), i, np.int64) for i, (r, _) in enumerate(matches)]),
                             device=dev)
        ri = torch.as_tensor(np.concatenate([r for r, _ in matches]), device=dev)
        ci = torch.as_tensor(np.concatenate([c for _, c in matches]), device=dev)
        loss = torch.zeros(B, device=dev)
        for k, lvl in enumerate(logits):
            target = torch.zeros_like(lvl)
            weight = torch.ones(lvl.shape[:2], device=lvl.device, dtype=lvl.dtype)
            if ri.numel():
                lab = gtl[bi, ci, k]
                known = lab >= 0
                target[bi[known], ri[known], lab[known]] = 1.0
                weight[bi[~known], ri[~known]] = 0.0
            fl = sigmoid_focal_loss(lvl, target, loss_cfg.focal_alpha, loss_cfg.focal_gamma)
            loss = loss + loss_cfg.w_cls * (fl.sum(-1) * weight).sum(-1) / n_gt
        if ri.numel():
            p_m = _norm(boxes[bi, ri], size)
            g_m = _norm(gtb[bi, ci].to(boxes), size)
            l1 = (p_m - g_m).abs().sum(-1)
            giou = box_pair_giou(p_m, g_m)
            per_pair = loss_cfg.w_l1 * l1 + loss_cfg.w_giou * (1 - giou)
            loss = loss + torch.zeros(B, device=dev, dtype=per_pair.dtype).index_add(0, bi, per_pair) / n_gt
        per_stage.append(loss)
    return torch.stack(per_stage).mean(0)


# --------------------------------------------------------------------------- sampling hooks

def _objectness(logits: Sequence[Tensor]) -> Tensor:
    """Box score ``[B, N]`` used for renewal: the quadrant level (always annotated)."""
    return logits[0].float().sigmoid().amax(-1)


@dataclass
class BoxRenewal:
    """DiffusionDet box renewal as a step hook: after every step but the last, proposals whose
    score (from the latest head output in ``aux``) is below ``threshold`` are replaced by fresh
    prior draws at ``t_next``: ``sqrt(alpha^2 + sigma^2) * space.noise`` (the process's marginal
    std for unit-variance data; pure noise for VP processes)."""

    aux: dict
    threshold: float = 0.1
    renewed: list = field(default_factory=list)

    def __call__(self, x_next: Tensor, ctx) -> Tensor:
        if ctx.i >= ctx.n_steps - 1 or "logits" not in self.aux:
            return x_next
        score = _objectness(self.aux["logits"])  # [B, N]
        drop = score < self.threshold
        self.renewed.append(int(drop.sum()))
        if not drop.any():
            return x_next
        a, s = ctx.process.alpha(ctx.t_next), ctx.process.sigma(ctx.t_next)
        std = ctx.space.bcast((a * a + s * s).sqrt(), x_next)
        fresh = std * ctx.space.noise(x_next, ctx.generator)
        return torch.where(drop[..., None], fresh, x_next)


@dataclass
class StepEnsemble:
    """Step ensembling as a hook: records the head's x0 boxes and logits of every step
    (``ctx.x0_hat`` and ``aux["logits"]``); :func:`postprocess` merges them with NMS."""

    aux: dict
    steps: list = field(default_factory=list)

    def __call__(self, x_next: Tensor, ctx) -> Tensor:
        if ctx.x0_hat is not None and "logits" in self.aux:
            self.steps.append((ctx.x0_hat.detach(), [lg.detach() for lg in self.aux["logits"]]))
        return x_next


def level_predictions(logits: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-level labels and scores from logits: ``([..., 3] argmax, [..., 3] max prob)``."""
    probs = [lg.float().sigmoid() for lg in logits]
    scores = torch.stack([p.amax(-1) for p in probs], -1)
    labels = torch.stack([p.argmax(-1) for p in probs], -1)
    return labels, scores


def postprocess(signals: Sequence[Tensor], logits_list: Sequence[Sequence[Tensor]], size: Sequence[int],
                scale: float, *, nms_iou: float = 0.6, max_det: int = 100,
                prior: Sequence[float] | None = None, class_topk: int = 1, box_vote: float = 0.0) -> list[dict]:
    """Merge the (step) predictions of a batch into detections per image.

    signals: list over steps of ``[B, N, 4]`` x0 box signals; logits_list: matching list of
    per-level logits. Boxes of all steps are pooled, scored by the geometric mean of the three
    level scores, de-duplicated with MONAI's class-agnostic NMS and capped at ``max_det``.
    Returns per image ``{"boxes": [K, 4] xyxy, "scores": [K], "labels": [K, 3],
    "level_scores": [K, 3]}`` (CPU tensors).

    ``class_topk > 1``: also ``"level_dets"``, per level ``{"boxes", "labels", "scores"}`` with up to
    ``class_topk`` class hypotheses per kept box (DiffusionDet / DETR inference: the top
    ``max_det`` (box, class) pairs by class probability), which the per-level AP uses.

    ``box_vote > 0``: box voting (Gidaris & Komodakis 2015): each box kept by NMS is replaced by
    the score-weighted mean of all pooled boxes (every step, every proposal) that overlap it with
    IoU >= ``box_vote``; scores and labels stay those of the kept box."""
    from monai.data.box_utils import non_max_suppression

    W, H = size
    out = []
    B = signals[0].shape[0]
    for b in range(B):
        bx, lb, ls, pr = [], [], [], []
        for sig, lg in zip(signals, logits_list):
            pr.append([l_[b].float().sigmoid() for l_ in lg])
            boxes = signal_to_boxes(sig[b].float(), size, scale, prior)
            boxes = torch.stack([boxes[:, 0].clamp(0, W), boxes[:, 1].clamp(0, H),
                                 boxes[:, 2].clamp(0, W), boxes[:, 3].clamp(0, H)], -1)
            labels, scores = level_predictions([l_[b] for l_ in lg])
            bx.append(boxes)
            lb.append(labels)
            ls.append(scores)
        boxes, labels, lscores = torch.cat(bx), torch.cat(lb), torch.cat(ls)
        score = lscores.clamp_min(1e-12).log().mean(-1).exp()
        ok = ((boxes[:, 2] - boxes[:, 0]) > 0.5) & ((boxes[:, 3] - boxes[:, 1]) > 0.5)
        boxes, labels, lscores, score = boxes[ok], labels[ok], lscores[ok], score[ok]
        if boxes.shape[0]:
            keep = torch.as_tensor(non_max_suppression(boxes.cpu(), score.cpu(), nms_iou, max_det), dtype=torch.long)
        else:
            keep = torch.zeros(0, dtype=torch.long)
        kept = boxes.cpu()[keep]
        if box_vote > 0 and len(keep):
            from monai.data.box_utils import box_iou

            bc, sc = boxes.cpu().float(), score.cpu().float()
            w = torch.as_tensor(box_iou(kept.float(), bc)) >= box_vote  # [K, all]
            w = w.float() * sc[None]
            kept = (w @ bc) / w.sum(-1, keepdim=True).clamp_min(1e-12)
        det = {"boxes": kept, "scores": score.cpu()[keep], "labels": labels.cpu()[keep],
               "level_scores": lscores.cpu()[keep]}
        if class_topk > 1:
            det["level_dets"] = []
            for k in range(len(pr[0])):
                probs = torch.cat([p_[k] for p_ in pr])[ok].cpu()[keep]  # [K, C_k]
                top = probs.topk(min(class_topk, probs.shape[1]), -1)
                sc, lab = top.values.reshape(-1), top.indices.reshape(-1)
                order = sc.argsort(descending=True)[:max_det]
                box_i = torch.arange(probs.shape[0]).repeat_interleave(top.values.shape[1])[order]
                det["level_dets"].append({"boxes": det["boxes"][box_i], "labels": lab[order], "scores": sc[order]})
        out.append(det)
    return out


def gt_signal(boxes: Tensor, size: Sequence[int], scale: float, prior: Sequence[float] | None = None) -> Tensor:
    """Ground-truth boxes ``[M, 4]`` xyxy -> signal ``[M, 4]``."""
    return boxes_to_signal(boxes, size, scale, prior)
