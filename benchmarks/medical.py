"""Benchmark: box-diffusion detection (HierarchicalDet / DiffusionDet style) vs MONAI RetinaNet on
dental panoramic phantoms, same data, same backbone, same optimiser settings and step budget.

    python benchmarks/medical.py [--quick] --json PATH [--threads N]

Both methods train on the same phantom training set (with DENTEX-like partial labels) with the
shared Trainer and the same ``TrainConfig``. The baseline is **one MONAI RetinaNet per label
level** (quadrant, tooth, diagnosis): RetinaNet's head is single-label, so joint hierarchical
labels need three detectors; each gets the full step budget (3x the compute of ours) and trains
only on the images annotated at its level. Both use the same MONAI ResNet-FPN feature extractor.

Scores: DENTEX COCO AP (IoU 0.5:0.95) per level and the aggregate, with MONAI ``COCOMetric``.
Ours outputs up to ``SAMPLE_CLASS_TOPK`` class hypotheses per box and level (DiffusionDet /
DETR inference: top (box, class) pairs), as RetinaNet outputs one detection per anchor and class.
Writes ``ap_quadrant``, ``ap_tooth``, ``ap_diagnosis``, ``ap_aggregate``, ``ap50_diagnosis``
(ours, DDIM 4 steps), the same with a ``retinanet_`` prefix, ``sec_per_image`` /
``retinanet_sec_per_image`` (inference, batch of test images, same thread count),
``steps_1`` / ``steps_2`` / ``steps_4`` blocks for 1, 2 and 4 sampling steps, and
``input_box_check``: AP / AR of one denoising pass from ground-truth boxes noised to ``t``
(does the head refine the boxes it is given?). ``setup`` records wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# this file is named like the package: drop its own folder from the import path first
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [q for q in sys.path if os.path.abspath(q or os.getcwd()) != _here]
sys.modules.pop("medical", None) if getattr(sys.modules.get("medical"), "__file__", "") == __file__ else None

import torch  # noqa: E402

from medical.configs import default as default_cfg  # noqa: E402
from medical.data import LEVELS, NUM_CLASSES  # noqa: E402
from medical.metrics import CLASS_NAMES, coco_level  # noqa: E402
from medical.task import MedicalTask, collate  # noqa: E402
from shared import grid as G  # noqa: E402
from shared import solvers  # noqa: E402
from shared.checkpoint import atomic_write_text  # noqa: E402
from shared.training import Trainer  # noqa: E402


def build_config(quick: bool, cache_dir: str, steps: int = 0, n_train: int = 0, n_test: int = 0):
    """The default preset's detector (phantom box prior, local one-to-many matching, repeat
    padding) with 128 proposals and up to 5 positives per box in training; ``SAMPLE_PROPOSALS``
    proposals and ``SAMPLE_CLASS_TOPK`` class hypotheses per box at inference; trained ``DEFAULT_STEPS`` steps (sized so that the whole
    benchmark, with the three RetinaNets trained the same number of steps, fits 30 minutes on
    the 2-core machine)."""
    cfg = default_cfg()
    model = replace(cfg.model, num_proposals=128)
    loss = replace(cfg.loss, match_k=5)
    sample = replace(cfg.sample, class_topk=SAMPLE_CLASS_TOPK, num_proposals=SAMPLE_PROPOSALS)
    if quick:
        data = replace(cfg.data, n_train=64, n_val=0, n_test=12, cache_dir=cache_dir)
        train = replace(cfg.train, steps=60, warmup_steps=6, log_every=20)
        sample = replace(sample, num_proposals=0)  # the training number: keeps --quick under 2 minutes
    else:
        data = replace(cfg.data, n_train=300, n_val=0, n_test=40, cache_dir=cache_dir)
        train = replace(cfg.train, steps=DEFAULT_STEPS, warmup_steps=20, log_every=50)
    if steps:
        train = replace(train, steps=steps, warmup_steps=min(train.warmup_steps, steps // 10))
    if n_train or n_test:
        data = replace(data, n_train=n_train or data.n_train, n_test=n_test or data.n_test)
    return replace(cfg, data=data, model=model, loss=loss, sample=sample, train=train)


DEFAULT_STEPS = 600
SAMPLE_CLASS_TOPK = 3
SAMPLE_PROPOSALS = 300  # boxes denoised at inference (DiffusionDet may use more than in training)


# --------------------------------------------------------------------------- RetinaNet baseline

def _without_torchvision_matchers() -> None:
    """MONAI's ``RetinaNetDetector`` tests ``isinstance(matcher, Matcher)`` (torchvision's
    Matcher / BalancedPositiveNegativeSampler, optional imports) before trying its own ATSS
    matcher and hard-negative sampler; without torchvision the placeholder raises on that check.
    Point the two names at a class nothing is an instance of, so the MONAI-only path runs."""
    import monai.apps.detection.networks.retinanet_detector as rd
    from monai.utils import optional_import

    if optional_import("torchvision")[1]:
        return

    class _Absent:  # isinstance(x, _Absent) is False for every matcher / sampler
        pass

    rd.Matcher = _Absent
    rd.BalancedPositiveNegativeSampler = _Absent


def build_retinanet(cfg, num_classes: int):
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.networks.retinanet_network import RetinaNet
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

    from medical.backbones import ResNetFPN

    m = cfg.model
    fe = ResNetFPN(layers=m.layers, block_inplanes=m.block_inplanes, fpn_channels=m.fpn_channels)
    # anchor shapes (x, y) for tall tooth-sized boxes at the stride-4 level; x2 per level
    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=(1, 2, 4, 8),
                                             base_anchor_shapes=((8, 20), (12, 28), (16, 36)))
    net = RetinaNet(spatial_dims=2, num_classes=num_classes, num_anchors=anchors.num_anchors_per_location()[0],
                    feature_extractor=fe, size_divisible=32)
    _without_torchvision_matchers()
    det = RetinaNetDetector(network=net, anchor_generator=anchors)
    det.set_atss_matcher(num_candidates=4, center_in_gt=False)  # MONAI ATSS (no torchvision)
    det.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)
    det.set_target_keys(box_key="boxes", label_key="labels")
    det.set_box_selector_parameters(score_thresh=0.02, topk_candidates_per_level=300, nms_thresh=0.5,
                                    detections_per_img=100)
    return det


def train_retinanet(cfg, det, items, level: int, out_dir=None):
    keep = [it for it in items if len(it["labels"]) and (it["labels"][:, level] >= 0).all()]

    def loss_fn(model, batch, generator):
        targets = [{"boxes": b, "labels": lab[:, level]} for b, lab in zip(batch["boxes"], batch["labels"])]
        losses = model(batch["image"], targets)
        return losses["classification"] + losses["box_regression"]

    trainer = Trainer(cfg.train, out_dir, progress=False)
    trainer.fit(det, loss_fn, keep, collate_fn=collate)
    return trainer.sampling_model, len(keep)


@torch.no_grad()
def retinanet_predict(dets, images):
    outs = []
    for det in dets:
        det.eval()
        outs.append(det(images, use_inferer=False))
    return outs  # per level: list over images of {"boxes", "labels", "labels_scores"}


# --------------------------------------------------------------------------- main

SAMPLING_STEPS = (1, 2, 4)


def input_box_check(model, test, ts=(1.0, 0.9, 0.5, 0.25, 0.1, 0.02), seed: int = 0):
    """How much the head uses its input boxes: AP / AR of one denoising pass from the test
    images' ground-truth boxes (padded with random boxes) noised to ``t`` (``t = 1`` is pure
    noise, as in sampling). A head that refines its input should score higher at small ``t``."""
    from medical.task import denoise_from_ground_truth

    rows = []
    for t in ts:
        m = denoise_from_ground_truth(model, test, t, generator=torch.Generator().manual_seed(seed))
        rows.append({"t": t, "ap_aggregate": m["ap_aggregate"], "ar_aggregate": m["ar_aggregate"],
                     "ap_quadrant": m["ap_quadrant"]})
    return rows


def level_scores(pred_per_level, test):
    out = {}
    for k, lv in enumerate(LEVELS):
        preds = pred_per_level[k]
        gb = [it["boxes"][it["labels"][:, k] >= 0] for it in test]
        gl = [it["labels"][:, k][it["labels"][:, k] >= 0] for it in test]
        m = coco_level([p["boxes"] for p in preds], [p["labels"] for p in preds], [p["scores"] for p in preds],
                       gb, gl, CLASS_NAMES[lv])
        for name, v in m.items():
            out[f"{name}_{lv}"] = v
    for name in ("ap", "ap50", "ap75", "ar"):
        out[f"{name}_aggregate"] = sum(out[f"{name}_{lv}"] for lv in LEVELS) / len(LEVELS)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small run (< 2 minutes on 2 cores)")
    p.add_argument("--json", required=True, help="where to write the results")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--cache", default="", help="phantom cache folder (default: a temp folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="override the training steps (both methods)")
    p.add_argument("--n-train", type=int, default=0, help="override the number of training phantoms")
    p.add_argument("--n-test", type=int, default=0, help="override the number of test phantoms")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    cache = args.cache or os.path.join(tempfile.gettempdir(), "diffsuite_medical_bench")
    cfg = build_config(args.quick, cache, args.steps, args.n_train, args.n_test)
    task = MedicalTask()
    data = task.load_data(cfg)
    test = data.test
    print(f"data: {len(data.train)} train / {len(test)} test phantoms {cfg.data.image_size}", file=sys.stderr)

    # ours
    t0, c0 = time.perf_counter(), time.process_time()
    model = task.build(cfg)
    trainer = Trainer(cfg.train, None, progress=False)
    model = task.train(cfg, model, data, trainer)
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    res = {}
    for steps in SAMPLING_STEPS:
        g = G.make("uniform", steps, process=model.process)
        t0 = time.perf_counter()
        s = task.generate(model, len(test), solver=solvers.make("ddim"), grid=g,
                          generator=torch.Generator().manual_seed(args.seed), data=data)
        sec = (time.perf_counter() - t0) / len(test)
        m = task.evaluate(s, data)
        m["sec_per_image"] = sec
        res[steps] = m
        print(f"ours DDIM {steps} step(s): AP agg {m['ap_aggregate']:.4f}, {sec:.4f} s/img", file=sys.stderr)

    # RetinaNet, one per level
    dets, t_ret, c_ret, n_imgs = [], 0.0, 0.0, []
    for k, lv in enumerate(LEVELS):
        torch.manual_seed(cfg.train.seed)
        det = build_retinanet(cfg, NUM_CLASSES[lv])
        t0, c0 = time.perf_counter(), time.process_time()
        det, n = train_retinanet(cfg, det, data.train.items, k)
        t_ret += time.perf_counter() - t0
        c_ret += time.process_time() - c0
        dets.append(det)
        n_imgs.append(n)
    images = torch.stack([it["image"] for it in test])
    t0 = time.perf_counter()
    outs = retinanet_predict(dets, images)
    ret_sec = (time.perf_counter() - t0) / len(test)
    ret_preds = [[{"boxes": o["boxes"], "labels": o["labels"], "scores": o["labels_scores"]} for o in outs[k]]
                 for k in range(3)]
    ret = level_scores(ret_preds, test)

    keys = ["ap_quadrant", "ap_tooth", "ap_diagnosis", "ap_aggregate", "ap50_quadrant", "ap50_tooth",
            "ap50_diagnosis", "ap50_aggregate", "ar_aggregate"]
    out = {k: res[4][k] for k in keys}
    out["sec_per_image"] = res[4]["sec_per_image"]
    out.update({f"retinanet_{k}": ret[k] for k in keys})
    out["retinanet_sec_per_image"] = ret_sec
    for steps in SAMPLING_STEPS:
        out[f"steps_{steps}"] = {k: res[steps][k] for k in keys + ["sec_per_image"]}
    out["input_box_check"] = input_box_check(model, test)
    out["setup"] = {
        "quick": args.quick, "train_steps": cfg.train.steps, "batch_size": cfg.train.batch_size,
        "n_train": len(data.train), "n_test": len(test), "image_size": list(cfg.data.image_size),
        "partial_labels": list(cfg.data.partial), "num_proposals": cfg.model.num_proposals,
        "match_k": cfg.loss.match_k, "match_dynamic": cfg.loss.match_dynamic, "match_center": cfg.loss.match_center,
        "pad_repeat": cfg.loss.pad_repeat, "box_prior": list(cfg.model.box_prior), "geo_fourier": cfg.model.geo_fourier,
        "sample": {k: getattr(cfg.sample, k) for k in (
            "renewal", "renewal_threshold", "ensemble", "nms_iou", "num_proposals", "class_topk")}, "retinanet": "one MONAI RetinaNetDetector per level (ATSS matcher, "
        "hard-negative sampler), same ResNet-FPN and TrainConfig, trained on images annotated at its level",
        "retinanet_train_images_per_level": n_imgs, "ours_train_s": t_ours, "retinanet_train_s": t_ret,
        "solver": "ddim", "grid": "uniform", "threads": torch.get_num_threads(),
        "ours_train_cpu_s": c_ours, "retinanet_train_cpu_s": c_ret,
        "total_s": time.perf_counter() - t_all, "total_cpu_s": time.process_time()}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")

    rows = [("AP quadrant", "ap_quadrant"), ("AP tooth", "ap_tooth"), ("AP diagnosis", "ap_diagnosis"),
            ("AP aggregate (DENTEX)", "ap_aggregate"), ("AP50 quadrant", "ap50_quadrant"),
            ("AP50 tooth", "ap50_tooth"), ("AP50 diagnosis", "ap50_diagnosis"),
            ("AP50 aggregate", "ap50_aggregate"), ("AR aggregate", "ar_aggregate"), ("s / image", "sec_per_image")]
    cols = " | ".join(f"box diffusion, {n} step{'s' if n > 1 else ''}" for n in SAMPLING_STEPS)
    print(f"| metric | {cols} | RetinaNet (MONAI) |")
    print("|---|" + "---|" * (len(SAMPLING_STEPS) + 1))
    for name, k in rows:
        rv = ret_sec if k == "sec_per_image" else ret[k]
        print(f"| {name} | " + " | ".join(f"{res[n][k]:.4f}" for n in SAMPLING_STEPS) + f" | {rv:.4f} |")
    print("\none denoising pass from ground-truth boxes noised to t (AP / AR aggregate): " + ", ".join(
        f"t={c['t']}: {c['ap_aggregate']:.3f} / {c['ar_aggregate']:.3f}" for c in out["input_box_check"]))
    print(f"\ntrain: ours {t_ours:.0f}s ({c_ours:.0f}s CPU), RetinaNet x3 {t_ret:.0f}s ({c_ret:.0f}s CPU); "
          f"total {out['setup']['total_s']:.0f}s wall, {out['setup']['total_cpu_s']:.0f}s CPU; "
          f"{cfg.train.steps} steps x batch {cfg.train.batch_size}; json: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
