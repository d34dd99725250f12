"""Benchmark: box-diffusion detection (HierarchicalDet / DiffusionDet style) vs MONAI RetinaNet on
dental panoramic phantoms, same data, same backbone, same optimiser settings and step budget.

    python benchmarks/medical.py [--quick] --json PATH [--threads N]
    python benchmarks/medical.py --preset gpu --json PATH [--budget 150]      # GPU mode
    python benchmarks/medical.py --preset gpu --device cpu --smoke --json PATH  # its code path on a CPU

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
(does the head refine the boxes it is given?), ``error_analysis`` per sampling step count (see
:func:`error_analysis`: label accuracy of the boxes found at IoU 0.5 per level, and the AP with
oracle labels on the same boxes, i.e. localisation vs classification). ``setup`` records wall and
CPU seconds.

GPU mode (``--preset gpu``, see :func:`main_gpu`): the ``gpu`` preset (512x256 phantoms drawn
in parallel, wider backbone, batch 16, bf16 autocast) in a fixed wall-clock budget (150 s by
default, imports included). Ours trains for ``train.max_seconds``; each RetinaNet then trains
the same number of steps (batch and TrainConfig as ours). The same keys as above, plus
``device``, ``preset``, ``ours_train_steps`` / ``ours_train_s``, ``retinanet_train_steps`` /
``retinanet_train_s`` (per level), ``same_steps``, ``peak_gpu_mem_gib``, ``wall_s`` and ``errors``.
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

_T_START = time.perf_counter()  # the gpu preset's budget counts from here (imports included)

# this file is named like the package: drop its own folder from the import path first
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [q for q in sys.path if os.path.abspath(q or os.getcwd()) != _here]
if os.path.dirname(_here) not in sys.path:  # the repository root (a checkout without an install)
    sys.path.insert(0, os.path.dirname(_here))
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


def _float_head_retinanet():
    """MONAI ``RetinaNet`` whose head outputs are cast to float32. ``RetinaNetDetector`` takes
    the anchors' dtype from the classification maps, so under bf16 autocast the anchors, the
    ATSS matching, the box coder and the losses would run in bf16 (pixel coordinates of a
    512-px image rounded by up to 2 px); with this cast they run in float32 while the backbone
    and heads still run under autocast. In float32 (the CPU default run) it changes nothing."""
    from monai.apps.detection.networks.retinanet_network import RetinaNet

    class FloatHeadRetinaNet(RetinaNet):
        def forward(self, images):
            out = super().forward(images)
            if isinstance(out, dict):
                return {k: ([t.float() for t in v] if isinstance(v, (list, tuple)) else v.float())
                        for k, v in out.items()}
            return [t.float() for t in out]

    return FloatHeadRetinaNet


def build_retinanet(cfg, num_classes: int):
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

    from medical.backbones import ResNetFPN

    m = cfg.model
    fe = ResNetFPN(layers=m.layers, block_inplanes=m.block_inplanes, fpn_channels=m.fpn_channels)
    # anchor shapes (x, y) for tall tooth-sized boxes at the stride-4 level of a 256-px-wide
    # image, scaled with the image width (teeth scale with it); x2 per level
    shapes = ((8, 20), (12, 28), (16, 36))
    f = cfg.data.image_size[0] / 256
    if f != 1:
        shapes = tuple((int(round(a * f)), int(round(b * f))) for a, b in shapes)
    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=(1, 2, 4, 8), base_anchor_shapes=shapes)
    net = _float_head_retinanet()(spatial_dims=2, num_classes=num_classes,
                                  num_anchors=anchors.num_anchors_per_location()[0],
                                  feature_extractor=fe, size_divisible=32)
    _without_torchvision_matchers()
    det = RetinaNetDetector(network=net, anchor_generator=anchors)
    det.set_atss_matcher(num_candidates=4, center_in_gt=False)  # MONAI ATSS (no torchvision)
    det.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)
    det.set_target_keys(box_key="boxes", label_key="labels")
    det.set_box_selector_parameters(score_thresh=0.02, topk_candidates_per_level=300, nms_thresh=0.5,
                                    detections_per_img=100)
    return det


def train_retinanet(cfg, det, items, level: int, out_dir=None, info: dict | None = None):
    """Train one RetinaNet on the images fully annotated at ``level``; ``info`` (a dict, optional)
    receives the optimizer steps done (``"steps"``)."""
    keep = [it for it in items if len(it["labels"]) and (it["labels"][:, level] >= 0).all()]

    def loss_fn(model, batch, generator):
        targets = [{"boxes": b, "labels": lab[:, level]} for b, lab in zip(batch["boxes"], batch["labels"])]
        losses = model(batch["image"], targets)
        return losses["classification"] + losses["box_regression"]

    trainer = Trainer(cfg.train, out_dir, progress=False)
    trainer.fit(det, loss_fn, keep, collate_fn=collate)
    if info is not None:
        info["steps"] = trainer.step
    return trainer.sampling_model, len(keep)


@torch.no_grad()
def retinanet_predict(dets, images):
    outs = []
    for det in dets:
        det.eval()
        p = next(det.parameters())
        outs.append(det(images.to(device=p.device, dtype=p.dtype), use_inferer=False))
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


def error_analysis(samples, test, iou_thr: float = 0.5) -> dict:
    """Why AP is lost, per level: localisation or classification. For every ground-truth box
    annotated at a level, the highest-scoring prediction (argmax labels, joint score) with
    IoU >= ``iou_thr``: ``found_<level>`` is the fraction of ground-truth boxes that have one,
    ``acc_<level>`` the fraction of those whose label at the level is right; for the tooth level
    ``tooth_off_by`` counts |predicted - true| tooth number over the found boxes.
    ``ap_<level>_argmax`` is the level's AP from the argmax labels only (one hypothesis per box)
    and ``ap_<level>_oracle_labels`` the same after relabelling every prediction that overlaps a
    ground-truth box (IoU >= ``iou_thr``) with that box's label: the AP a perfect classifier on
    the same boxes would get (localisation ceiling). Diagnostic only, not a result."""
    import numpy as np
    from monai.data.box_utils import box_iou

    from medical.metrics import dentex_scores

    found, right = np.zeros(3), np.zeros(3)
    total = np.zeros(3)
    off = np.zeros(8, np.int64)
    oracle, argmax = [], []
    for s in samples:
        it = test[s["index"]]
        gb, gl = it["boxes"].numpy().astype(np.float64), it["labels"].numpy()
        pb = s["boxes"].numpy().astype(np.float64)
        pl = s["labels"].numpy().copy()
        sc = s["scores"].numpy()
        plain = {"boxes": s["boxes"], "labels": s["labels"], "level_scores": s["level_scores"]}
        argmax.append(plain)
        if len(gb) == 0 or len(pb) == 0:
            oracle.append(plain)
            continue
        iou = np.asarray(box_iou(pb, gb))  # [K, M]
        best = iou.argmax(1)
        ok = iou.max(1) >= iou_thr
        olab = pl.copy()
        for k in range(3):
            known = gl[best, k] >= 0
            olab[ok & known, k] = gl[best[ok & known], k]
            for j in range(len(gb)):
                if gl[j, k] < 0:
                    continue
                total[k] += 1
                cand = np.nonzero(iou[:, j] >= iou_thr)[0]
                if len(cand) == 0:
                    continue
                i = cand[sc[cand].argmax()]
                found[k] += 1
                right[k] += pl[i, k] == gl[j, k]
                if k == 1:
                    off[min(7, abs(int(pl[i, k]) - int(gl[j, k])))] += 1
        oracle.append({"boxes": s["boxes"], "labels": torch.as_tensor(olab), "level_scores": s["level_scores"]})
    gts = [{"boxes": test[s["index"]]["boxes"], "labels": test[s["index"]]["labels"]} for s in samples]
    m_arg, m_or = dentex_scores(argmax, gts), dentex_scores(oracle, gts)
    out = {}
    for k, lv in enumerate(LEVELS):
        out[f"found_{lv}"] = float(found[k] / max(1, total[k]))
        out[f"acc_{lv}"] = float(right[k] / max(1, found[k]))
        for name in ("ap", "ap50", "ap75"):
            out[f"{name}_{lv}_argmax"] = m_arg[f"{name}_{lv}"]
            out[f"{name}_{lv}_oracle_labels"] = m_or[f"{name}_{lv}"]
    out["ap_aggregate_argmax"] = m_arg["ap_aggregate"]
    out["ap_aggregate_oracle_labels"] = m_or["ap_aggregate"]
    out["tooth_off_by"] = off.tolist()
    return out


# --------------------------------------------------------------------------- GPU mode

GPU_BUDGET = 150.0  # seconds for the whole --preset gpu run (imports, data, 4 trainings, evaluation)
SMOKE_BUDGET = 40.0  # --smoke (tiny sizes, CPU)
SLACK = 0.15  # the run plans to end by (1 - SLACK) * budget
# Training split. Both detectors' steps are bound by Python / kernel-launch overhead on a GPU,
# not by arithmetic: counted on a CPU at batch 16 (512x256), a RetinaNet step (MONAI ATSS matching,
# hard-negative sampling and box coding per image) dispatches ~6,400 ops with ~530 GPU syncs, a
# step of ours (batched set loss) ~5,000 ops with ~100 syncs. Three RetinaNets at ours' step count
# then need ~4-4.5x ours' time: ours gets 13 % of the budget, the RetinaNets up to 50 %.
OURS_SHARE = 0.13  # ours: train.max_seconds = OURS_SHARE * budget
RETINA_SHARE = 0.50  # the three RetinaNets together: at most this share (each trains ours' step count)
RETINA_EVAL_RESERVE = 0.08  # kept back for RetinaNet inference and scoring when capping its training


def build_gpu_config(smoke: bool, cache_dir: str, device: str, budget: float, steps: int = 0,
                     n_train: int = 0, n_test: int = 0):
    """The ``gpu`` preset (medical/configs.py) for a ``budget``-second run: ours trains for
    ``OURS_SHARE * budget`` seconds (``train.max_seconds``; ``train.steps`` is only an upper
    bound unless ``steps`` is given). ``smoke``: the same code path on tiny sizes for a CPU."""
    from medical.configs import gpu as gpu_cfg

    cfg = gpu_cfg()
    data = replace(cfg.data, cache_dir=cache_dir)
    model, sample, train = cfg.model, cfg.sample, cfg.train
    if smoke:
        data = replace(data, n_train=24, n_test=6, image_size=(256, 128), workers=2)
        model = replace(model, block_inplanes=(8, 16, 32, 32), fpn_channels=16, d_model=32, num_heads=2,
                        num_stages=2, num_proposals=24)
        sample = replace(sample, batch_size=4, num_proposals=48)
        train = replace(train, batch_size=4, log_every=5, warmup_steps=4)
    train = replace(train, device=device, max_seconds=OURS_SHARE * budget, steps=steps or 100_000)
    if n_train or n_test:
        data = replace(data, n_train=n_train or data.n_train, n_test=n_test or data.n_test)
    return replace(cfg, data=data, model=model, sample=sample, train=train)


def main_gpu(args) -> int:
    """``--preset gpu``: the whole run fits ``--budget`` seconds (planned to end by
    ``(1 - SLACK) * budget``). Order: data; ours for ``OURS_SHARE * budget`` seconds; ours
    scored with 4 and 1 DDIM steps; three RetinaNets, each for ours' step count (capped so that
    the run stays in budget: then the JSON says how many steps each did); RetinaNet scored;
    then, if time is left, 2 steps and the input-box check. The JSON is rewritten after every
    phase, and a failing part leaves its error string under ``errors``."""
    import platform
    import traceback

    budget = args.budget or (SMOKE_BUDGET if args.smoke else GPU_BUDGET)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    deadline = _T_START + budget * (1 - SLACK)

    def left() -> float:
        return deadline - time.perf_counter()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def log(msg: str) -> None:
        print(f"[medical gpu {time.perf_counter() - _T_START:6.1f}s] {msg}", flush=True)

    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ["ap_quadrant", "ap_tooth", "ap_diagnosis", "ap_aggregate", "ap50_quadrant", "ap50_tooth",
            "ap50_diagnosis", "ap50_aggregate", "ar_aggregate"]
    # the device name is asked after the data: querying it initialises CUDA, and the phantoms
    # are drawn by forked processes
    out: dict = {"preset": "gpu", "smoke": bool(args.smoke), "device": dev.type, "budget_s": budget, "errors": {}}

    def flush() -> None:
        out["wall_s"] = time.perf_counter() - _T_START
        if cuda:
            out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        atomic_write_text(path, json.dumps(out, indent=2, default=str) + "\n")

    def fail(key: str, e: BaseException) -> None:
        out["errors"][key] = f"{type(e).__name__}: {e}"
        log(f"{key} FAILED: {type(e).__name__}: {e}")
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        flush()

    # ---- data (phantoms drawn in parallel; identical to serial generation)
    cache = args.cache or os.path.join(tempfile.gettempdir(), "diffsuite_medical_bench_gpu")
    cfg = build_gpu_config(args.smoke, cache, dev.type, budget, args.steps, args.n_train, args.n_test)
    t0 = time.perf_counter()
    task = MedicalTask()
    try:
        data = task.load_data(cfg)
    except Exception as e:  # noqa: BLE001 - nothing to train on: write the error and stop
        fail("data", e)
        return 1
    test = data.test
    out["data_s"] = time.perf_counter() - t0
    out["device"] = torch.cuda.get_device_name(dev) if cuda else (platform.processor() or "cpu")
    log(f"data: {len(data.train)} train / {len(test)} test phantoms {cfg.data.image_size} in {out['data_s']:.1f}s")
    setup = {"image_size": list(cfg.data.image_size), "n_train": len(data.train), "n_test": len(test),
             "partial_labels": list(cfg.data.partial), "batch_size": cfg.train.batch_size, "lr": cfg.train.lr,
             "mixed_precision": cfg.train.mixed_precision, "num_proposals": cfg.model.num_proposals,
             "backbone": {"layers": list(cfg.model.layers), "block_inplanes": list(cfg.model.block_inplanes),
                          "fpn_channels": cfg.model.fpn_channels},
             "d_model": cfg.model.d_model, "num_stages": cfg.model.num_stages, "match_k": cfg.loss.match_k,
             "sample": {k: getattr(cfg.sample, k) for k in (
                 "renewal", "renewal_threshold", "ensemble", "nms_iou", "num_proposals", "class_topk",
                 "batch_size")},
             "solver": "ddim", "grid": "uniform",
             "budget_rule": "same training steps and batch for ours and each RetinaNet: ours trains for "
                            "train.max_seconds, each RetinaNet then trains ours' step count (capped by the "
                            "remaining budget; retinanet_train_steps says what each did)",
             "retinanet": "one MONAI RetinaNetDetector per level (ATSS matcher, hard-negative sampler), same "
                          "ResNet-FPN and TrainConfig, trained on images annotated at its level; backbone and "
                          "heads under the same bf16 autocast as ours, anchors / matching / box coder / losses "
                          "in float32 (head outputs cast); inference of both in float32 (TF32 matmuls on CUDA)",
             "ours_max_seconds": cfg.train.max_seconds, "data_workers": cfg.data.workers,
             "threads": torch.get_num_threads()}
    out["setup"] = setup
    flush()

    # ---- ours: time-bound training
    model, ours_steps = None, 0
    try:
        model = task.build(cfg)
        trainer = Trainer(cfg.train, None, progress=False)
        sync()
        t0 = time.perf_counter()
        model = task.train(cfg, model, data, trainer)
        sync()
        out["ours_train_s"] = time.perf_counter() - t0
        ours_steps = out["ours_train_steps"] = trainer.step
        log(f"ours: {ours_steps} steps x batch {cfg.train.batch_size} in {out['ours_train_s']:.1f}s "
            f"(loss {trainer.history[-1]['loss_avg'] if trainer.history else float('nan'):.3f})")
    except Exception as e:  # noqa: BLE001 - record and go on with the baseline
        model = None
        fail("ours_train", e)
    flush()

    res: dict = {}
    ddim = solvers.make("ddim")

    def score_ours(steps: int) -> None:
        g = G.make("uniform", steps, process=model.process)
        sync()
        t0 = time.perf_counter()
        s = task.generate(model, len(test), solver=ddim, grid=g, generator=torch.Generator().manual_seed(args.seed),
                          data=data)
        sync()
        sec = (time.perf_counter() - t0) / len(test)
        m = task.evaluate(s, data)
        m["sec_per_image"] = sec
        m["eval_s"] = time.perf_counter() - t0
        res[steps] = m
        out[f"steps_{steps}"] = {k: m[k] for k in keys + ["sec_per_image"]}
        out.setdefault("error_analysis", {})[f"steps_{steps}"] = error_analysis(s, test)
        if steps == 4:
            out.update({k: m[k] for k in keys})
            out["sec_per_image"] = sec
        log(f"ours DDIM {steps} step(s): AP agg {m['ap_aggregate']:.4f}, AP50 diag {m['ap50_diagnosis']:.4f}, "
            f"{sec:.4f} s/img ({m['eval_s']:.1f}s with scoring)")
        flush()

    if model is not None:
        try:  # warm-up (CUDA kernels, cuBLAS / cuDNN set-up) outside the timings
            task.generate(model, min(len(test), cfg.sample.batch_size), solver=ddim,
                          grid=G.make("uniform", 1, process=model.process), generator=torch.Generator().manual_seed(1),
                          data=data)
            sync()
        except Exception as e:  # noqa: BLE001
            fail("ours_warmup", e)
        for steps in (4, 1):
            try:
                score_ours(steps)
            except Exception as e:  # noqa: BLE001
                fail(f"ours_steps_{steps}", e)

    # ---- RetinaNet, one per level, ours' step count each (capped by the budget)
    dets, ret_steps, ret_s, n_imgs = [], [], [], []
    cap_total = max(3.0, min(RETINA_SHARE * budget, left() - RETINA_EVAL_RESERVE * budget))
    out["retinanet_train_cap_s"] = cap_total
    r_steps = ours_steps or cfg.train.steps
    t_r0 = time.perf_counter()
    for k, lv in enumerate(LEVELS):
        try:
            cap = max(1.0, (cap_total - (time.perf_counter() - t_r0)) / (3 - k))
            rcfg = replace(cfg, train=replace(cfg.train, steps=r_steps, max_seconds=cap))
            torch.manual_seed(cfg.train.seed)
            det = build_retinanet(rcfg, NUM_CLASSES[lv])
            info: dict = {}
            sync()
            t0 = time.perf_counter()
            det, n = train_retinanet(rcfg, det, data.train.items, k, info=info)
            sync()
            ret_s.append(time.perf_counter() - t0)
            ret_steps.append(info["steps"])
            dets.append(det)
            n_imgs.append(n)
            log(f"RetinaNet {lv}: {info['steps']} / {r_steps} steps in {ret_s[-1]:.1f}s (cap {cap:.1f}s), {n} images")
        except Exception as e:  # noqa: BLE001
            fail(f"retinanet_train_{lv}", e)
            break
        finally:
            out["retinanet_train_steps"], out["retinanet_train_s"] = ret_steps, ret_s
            setup["retinanet_train_images_per_level"] = n_imgs
            flush()
    out["same_steps"] = bool(ours_steps) and len(ret_steps) == 3 and all(s == ours_steps for s in ret_steps)

    if len(dets) == 3:
        try:
            images = torch.stack([it["image"] for it in test]).to(dev)
            retinanet_predict(dets, images[: min(len(test), 8)])  # warm-up
            sync()
            t0 = time.perf_counter()
            outs = retinanet_predict(dets, images)
            sync()
            ret_sec = (time.perf_counter() - t0) / len(test)
            ret_preds = [[{"boxes": o["boxes"], "labels": o["labels"], "scores": o["labels_scores"]} for o in outs[k]]
                         for k in range(3)]
            ret = level_scores(ret_preds, test)
            out.update({f"retinanet_{k}": ret[k] for k in keys})
            out["retinanet_sec_per_image"] = ret_sec
            log(f"RetinaNet: AP agg {ret['ap_aggregate']:.4f}, AP50 diag {ret['ap50_diagnosis']:.4f}, {ret_sec:.4f} s/img")
        except Exception as e:  # noqa: BLE001
            fail("retinanet_eval", e)
        flush()

    # ---- optional extras while time is left (estimated from the 1-step scoring time)
    if model is not None and 1 in res:
        est = res[1]["eval_s"]
        if left() > 2.0 * est:
            try:
                score_ours(2)
            except Exception as e:  # noqa: BLE001
                fail("ours_steps_2", e)
        else:
            out["errors"]["ours_steps_2"] = f"skipped: {left():.1f}s left of the budget"
        ts = (1.0, 0.9, 0.5, 0.25, 0.1, 0.02)
        if left() < 1.5 * len(ts) * est:
            ts = (1.0, 0.5, 0.1)
        if left() > 1.5 * len(ts) * est:
            try:
                t0 = time.perf_counter()
                out["input_box_check"] = input_box_check(model, test, ts=ts)
                log(f"input-box check ({len(ts)} noise levels) in {time.perf_counter() - t0:.1f}s")
            except Exception as e:  # noqa: BLE001
                fail("input_box_check", e)
        else:
            out["errors"]["input_box_check"] = f"skipped: {left():.1f}s left of the budget"
    setup["total_s"] = time.perf_counter() - _T_START
    flush()
    if "ap_aggregate" in out and "retinanet_ap_aggregate" in out:
        print("| metric | " + " | ".join(f"box diffusion, {n} step(s)" for n in sorted(res)) + " | RetinaNet (MONAI) |")
        print("|---|" + "---|" * (len(res) + 1))
        for k in keys + ["sec_per_image"]:
            print(f"| {k} | " + " | ".join(f"{res[n][k]:.4f}" for n in sorted(res)) + f" | {out[f'retinanet_{k}']:.4f} |")
    log(f"done: ours {ours_steps} steps, RetinaNet {ret_steps} steps; wall {out['wall_s']:.1f}s of {budget:.0f}s; "
        f"errors: {sorted(out['errors']) or 'none'}; json: {path}")
    return 0


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
    p.add_argument("--preset", choices=["default", "gpu"], default="default",
                   help="gpu: the GPU mode, a fixed wall-clock budget (see --budget)")
    p.add_argument("--device", default="", help="gpu preset: cuda (default when present) or cpu")
    p.add_argument("--budget", type=float, default=0.0,
                   help=f"gpu preset: seconds for the whole run (default {GPU_BUDGET:.0f}, --smoke {SMOKE_BUDGET:.0f})")
    p.add_argument("--smoke", action="store_true", help="gpu preset on tiny sizes (checks the code path on a CPU)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preset == "gpu":
        return main_gpu(args)
    if args.smoke or args.budget or args.device:
        p.error("--smoke, --budget and --device go with --preset gpu")
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
    res, errs = {}, {}
    for steps in SAMPLING_STEPS:
        g = G.make("uniform", steps, process=model.process)
        t0 = time.perf_counter()
        s = task.generate(model, len(test), solver=solvers.make("ddim"), grid=g,
                          generator=torch.Generator().manual_seed(args.seed), data=data)
        sec = (time.perf_counter() - t0) / len(test)
        m = task.evaluate(s, data)
        m["sec_per_image"] = sec
        res[steps] = m
        errs[steps] = error_analysis(s, test)
        print(f"ours DDIM {steps} step(s): AP agg {m['ap_aggregate']:.4f}, {sec:.4f} s/img; label accuracy of found "
              f"boxes q/t/d {errs[steps]['acc_quadrant']:.3f} / {errs[steps]['acc_tooth']:.3f} / "
              f"{errs[steps]['acc_diagnosis']:.3f}", file=sys.stderr)

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
    out["error_analysis"] = {f"steps_{n}": errs[n] for n in SAMPLING_STEPS}
    out["input_box_check"] = input_box_check(model, test)
    out["setup"] = {
        "quick": args.quick, "train_steps": cfg.train.steps, "batch_size": cfg.train.batch_size,
        "n_train": len(data.train), "n_test": len(test), "image_size": list(cfg.data.image_size),
        "partial_labels": list(cfg.data.partial), "num_proposals": cfg.model.num_proposals,
        "match_k": cfg.loss.match_k, "match_dynamic": cfg.loss.match_dynamic, "match_center": cfg.loss.match_center,
        "pad_repeat": cfg.loss.pad_repeat, "box_prior": list(cfg.model.box_prior), "geo_fourier": cfg.model.geo_fourier,
        "geo_rbf": cfg.model.geo_rbf, "geo_cls": cfg.model.geo_cls,
        "sample": {k: getattr(cfg.sample, k) for k in (
            "renewal", "renewal_threshold", "ensemble", "nms_iou", "num_proposals", "class_topk", "box_vote")},
        "retinanet": "one MONAI RetinaNetDetector per level (ATSS matcher, "
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
