"""DENTEX scoring with MONAI's ``COCOMetric``: COCO AP (IoU 0.5:0.95), AP50, AP75 and AR per
label level (quadrant, tooth, diagnosis), and the DENTEX aggregate (mean AP over the levels).

MONAI's ``COCOMetric`` defaults to IoU 0.1:0.5; here it is configured with
``iou_range=(0.5, 0.95, 0.05)`` and ``iou_list=(0.5, 0.75)`` for COCO numbers.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .data import DIAGNOSES, LEVELS

__all__ = ["CLASS_NAMES", "coco_level", "dentex_scores"]

#: Class names per level (index = label index used by the model).
CLASS_NAMES: dict[str, list[str]] = {
    "quadrant": [f"Q{q}" for q in range(1, 5)],
    "tooth": [f"T{n}" for n in range(1, 9)],
    "diagnosis": list(DIAGNOSES),
}


def _np(a, dtype=None):
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    return a.astype(dtype) if dtype is not None else a


def coco_level(pred_boxes: Sequence, pred_labels: Sequence, pred_scores: Sequence, gt_boxes: Sequence,
               gt_labels: Sequence, classes: Sequence[str], max_det: int = 100) -> dict[str, float]:
    """COCO metrics of one level over a list of images.

    Per image: ``pred_boxes [K, 4]`` xyxy, ``pred_labels [K]`` class index, ``pred_scores [K]``,
    ``gt_boxes [M, 4]``, ``gt_labels [M]``. Returns ``{"ap", "ap50", "ap75", "ar"}`` (AP over
    IoU 0.5:0.95 step 0.05; AR over the same range at ``max_det`` detections)."""
    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch
    from monai.data.box_utils import box_iou

    if not (len(pred_boxes) == len(pred_labels) == len(pred_scores) == len(gt_boxes) == len(gt_labels)):
        raise ValueError("predictions and ground truth must cover the same images")
    # MONAI's COCOMetric averages precision over ALL classes, counting a class without ground
    # truth as -1 (its recall average skips them; pycocotools skips them in both). Score only the
    # classes that have ground truth, as pycocotools does: detections of other classes are left
    # out (in pycocotools they fall into categories that are not evaluated).
    gt_np = [_np(c, np.int64).reshape(-1) for c in gt_labels]
    present = sorted(set(np.concatenate(gt_np).tolist())) if gt_np else []
    if not present:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, "ar": 0.0}
    remap = np.full(max(max(present) + 1, len(classes)), -1, np.int64)
    remap[present] = np.arange(len(present))
    pred_np = [_np(c, np.int64).reshape(-1) for c in pred_labels]
    keep = [(c >= 0) & (c < len(remap)) for c in pred_np]
    keep = [k & (remap[np.clip(c, 0, len(remap) - 1)] >= 0) for k, c in zip(keep, pred_np)]
    pred_boxes = [_np(b, np.float64).reshape(-1, 4)[k] for b, k in zip(pred_boxes, keep)]
    pred_scores = [_np(s, np.float64).reshape(-1)[k] for s, k in zip(pred_scores, keep)]
    pred_labels = [remap[c[k]] for c, k in zip(pred_np, keep)]
    gt_labels = [remap[c] for c in gt_np]
    classes = [classes[c] for c in present]
    metric = COCOMetric(classes=list(classes), iou_list=(0.5, 0.75), iou_range=(0.5, 0.95, 0.05),
                        max_detection=(max_det,), per_class=False, verbose=False)
    res = matching_batch(
        iou_fn=box_iou, iou_thresholds=metric.iou_thresholds,
        pred_boxes=[_np(b, np.float64).reshape(-1, 4) for b in pred_boxes],
        pred_classes=[_np(c, np.int64).reshape(-1) for c in pred_labels],
        pred_scores=[_np(s, np.float64).reshape(-1) for s in pred_scores],
        gt_boxes=[_np(b, np.float64).reshape(-1, 4) for b in gt_boxes],
        gt_classes=[_np(c, np.int64).reshape(-1) for c in gt_labels],
        max_detections=max_det)
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # COCOMetric warns through the root logger for absent classes
    try:
        out = metric(res)[0]
    finally:
        root.setLevel(level)
    tag = f"MaxDet_{max_det}"
    vals = {"ap": out[f"mAP_IoU_0.50_0.95_0.05_{tag}"], "ap50": out[f"AP_IoU_0.50_{tag}"],
            "ap75": out[f"AP_IoU_0.75_{tag}"], "ar": out[f"mAR_IoU_0.50_0.95_0.05_{tag}"]}
    # -1 would mean no evaluated class (cannot happen after the filtering above); report 0
    return {k: (0.0 if (not math.isfinite(float(v)) or v < 0) else float(v)) for k, v in vals.items()}


def dentex_scores(preds: Sequence[dict], gts: Sequence[dict], max_det: int = 100) -> dict[str, float]:
    """DENTEX metrics for aligned lists of per-image predictions and ground truths.

    ``preds[i]``: ``{"boxes": [K, 4] xyxy, "labels": [K, 3] level indices, "level_scores":
    [K, 3]}`` (or ``"scores": [K]`` used for every level), or per level ``"level_dets"``: a list
    of ``{"boxes", "labels", "scores"}`` (several class hypotheses per box, as RetinaNet or
    DETR-style detectors output). ``gts[i]``: ``{"boxes": [M, 4],
    "labels": [M, 3]}`` with ``-1`` where a level is not annotated (those boxes are left out
    of that level's ground truth). Returns ``ap_<level>``, ``ap50_<level>``, ``ap75_<level>``,
    ``ar_<level>`` for each level and ``ap_aggregate``, ``ap50_aggregate``, ``ar_aggregate``
    (means over levels)."""
    if len(preds) != len(gts):
        raise ValueError(f"got predictions for {len(preds)} images but ground truth for {len(gts)}")
    out: dict[str, float] = {}
    for k, level in enumerate(LEVELS):
        pb, pl, ps, gb, gl = [], [], [], [], []
        for p, g in zip(preds, gts):
            glab = _np(g["labels"], np.int64).reshape(-1, 3)
            gk = glab[:, k] >= 0
            gb.append(_np(g["boxes"], np.float64).reshape(-1, 4)[gk])
            gl.append(glab[gk, k])
            if "level_dets" in p:  # several class hypotheses per box at this level
                d = p["level_dets"][k]
                pb.append(_np(d["boxes"], np.float64).reshape(-1, 4))
                pl.append(_np(d["labels"], np.int64).reshape(-1))
                ps.append(_np(d["scores"], np.float64).reshape(-1))
                continue
            lab = _np(p["labels"], np.int64).reshape(-1, 3)
            sc = _np(p["level_scores"], np.float64).reshape(-1, 3)[:, k] if "level_scores" in p \
                else _np(p["scores"], np.float64).reshape(-1)
            keep = lab[:, k] >= 0
            pb.append(_np(p["boxes"], np.float64).reshape(-1, 4)[keep])
            pl.append(lab[keep, k])
            ps.append(sc[keep])
        m = coco_level(pb, pl, ps, gb, gl, CLASS_NAMES[level], max_det)
        for name, v in m.items():
            out[f"{name}_{level}"] = v
    for name in ("ap", "ap50", "ap75", "ar"):
        out[f"{name}_aggregate"] = float(np.mean([out[f"{name}_{lv}"] for lv in LEVELS]))
    return out
