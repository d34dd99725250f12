"""DENTEX scoring with MONAI COCOMetric at COCO IoUs."""

import numpy as np
import torch

from medical.metrics import coco_level, dentex_scores


def _gts():
    rng = np.random.default_rng(0)
    out = []
    for _ in range(4):
        xy = rng.uniform(0, 200, (5, 2))
        wh = rng.uniform(15, 40, (5, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = np.stack([rng.integers(0, 4, 5), rng.integers(0, 8, 5), rng.integers(0, 4, 5)], 1)
        out.append({"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)})
    return out


def test_ground_truth_scores_one_and_shift_drops():
    gts = _gts()
    perfect = [{**g, "scores": torch.ones(len(g["boxes"]))} for g in gts]
    m = dentex_scores(perfect, gts)
    for k in ("ap_quadrant", "ap_tooth", "ap_diagnosis", "ap_aggregate", "ap50_diagnosis", "ar_tooth"):
        assert abs(m[k] - 1.0) < 1e-9, (k, m[k])
    shifted = [{**p, "boxes": p["boxes"] + 6.0} for p in perfect]
    s = dentex_scores(shifted, gts)
    assert s["ap_aggregate"] < 0.6 and s["ap_aggregate"] < m["ap_aggregate"]


def test_coco_iou_range_not_monai_default():
    # IoU of pred vs gt = 0.6: counts at IoU 0.5, not at 0.75 -> AP50 = 1, AP75 = 0, AP in (0, 1)
    gt = [np.array([[0.0, 0.0, 10.0, 10.0]])]
    pred = [np.array([[0.0, 0.0, 10.0, 6.0]])]
    m = coco_level(pred, [np.array([0])], [np.array([0.9])], gt, [np.array([0])], ["a"])
    assert abs(m["ap50"] - 1.0) < 1e-9 and m["ap75"] == 0.0 and 0.0 < m["ap"] < 0.5


def test_unknown_levels_are_left_out_of_ground_truth():
    gts = _gts()
    gts[0]["labels"][:, 2] = -1  # diagnosis unknown in image 0
    preds = [{"boxes": g["boxes"], "labels": g["labels"].clamp_min(0), "scores": torch.ones(5)} for g in gts]
    m = dentex_scores(preds, gts)
    # image 0's unlabelled boxes are false positives at the diagnosis level only
    assert abs(m["ap_quadrant"] - 1.0) < 1e-9 and m["ap_diagnosis"] < 1.0


def test_classes_without_ground_truth_are_not_averaged_in():
    # MONAI's COCOMetric counts a class without ground truth as precision -1 in its mean (perfect
    # predictions of 2 of 8 classes would score -0.5); like pycocotools, only classes with ground
    # truth are averaged, and detections of other classes do not count.
    gt = [np.array([[10.0, 8.0, 22.0, 40.0], [60.0, 20.0, 75.0, 55.0]])]
    gl = [np.array([1, 3])]
    names = [f"T{i}" for i in range(8)]
    m = coco_level(gt, gl, [np.ones(2)], gt, gl, names)
    assert abs(m["ap"] - 1.0) < 1e-9 and abs(m["ar"] - 1.0) < 1e-9
    extra = [np.concatenate([gt[0], [[100.0, 10.0, 110.0, 30.0]]])]
    m2 = coco_level(extra, [np.array([1, 3, 0])], [np.array([1.0, 1.0, 0.9])], gt, gl, names)
    assert abs(m2["ap"] - 1.0) < 1e-9
    # a wrong-class detection ranked first in a present class still costs precision
    m3 = coco_level(extra, [np.array([1, 3, 1])], [np.array([0.5, 1.0, 0.9])], gt, gl, names)
    assert m3["ap"] < 1.0
    # no ground truth at all: zeros
    z = coco_level(gt, gl, [np.ones(2)], [np.zeros((0, 4))], [np.zeros(0, np.int64)], names)
    assert z == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, "ar": 0.0}
