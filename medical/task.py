"""The medical DomainTask: hierarchical box-diffusion detection (HierarchicalDet / DiffusionDet)
on dental panoramic X-rays, scored with the DENTEX aggregate AP."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from shared.loss import sample_t
from shared.param import Denoiser
from shared.process import DiscreteVP
from shared.registry import Splits
from shared.sample import prior, sample
from shared.spaces import Euclidean

from . import configs as C
from .backbones import DiffusionDetNet, boxes_to_signal
from .data import (DIAGNOSES, NUM_CLASSES, LEVELS, DentexError, flip_horizontal, load_dentex, load_images,
                   make_phantoms)
from .detection import BoxRenewal, StepEnsemble, noised_boxes, pad_boxes, postprocess, set_loss, set_loss_batched
from .metrics import dentex_scores

__all__ = ["MedicalModel", "MedicalTask", "ItemDataset", "collate", "detect", "denoise_from_ground_truth",
           "to_dentex_json", "to_monai_dicts"]


class MedicalModel(nn.Module):
    """Box-diffusion detector: ``denoiser`` (:class:`shared.param.Denoiser` with x0 prediction)
    around a :class:`DiffusionDetNet`; ``process`` is the cosine DDPM schedule and ``space``
    Euclidean over box signals ``[B, N, 4]``."""

    def __init__(self, cfg: C.MedicalConfig):
        super().__init__()
        m = cfg.model
        net = DiffusionDetNet(image_size=cfg.data.image_size, num_classes=tuple(NUM_CLASSES[lv] for lv in LEVELS),
                              signal_scale=m.signal_scale, layers=m.layers, block_inplanes=m.block_inplanes,
                              fpn_channels=m.fpn_channels, d_model=m.d_model, num_heads=m.num_heads, pool=m.pool,
                              num_stages=m.num_stages, roi_levels=m.roi_levels, box_prior=m.box_prior or None,
                              geo_fourier=m.geo_fourier, geo_rbf=getattr(m, "geo_rbf", 0),
                              geo_cls=getattr(m, "geo_cls", False))
        self.process = DiscreteVP.from_betas(m.schedule, m.num_train_timesteps)
        self.space = Euclidean()
        self.denoiser = Denoiser(net, self.process, prediction="x0", space=self.space)
        self.num_proposals = m.num_proposals
        self.signal_scale = m.signal_scale
        self.box_prior = tuple(m.box_prior) or None
        self.image_size = tuple(cfg.data.image_size)
        self.sample_cfg = cfg.sample  # inference defaults (renewal, ensembling, NMS, batch size)

    @property
    def net(self) -> DiffusionDetNet:
        return self.denoiser.net


# --------------------------------------------------------------------------- data plumbing

class ItemDataset(torch.utils.data.Dataset):
    """List of loaded items (see :func:`medical.data.load_images`) as a Dataset."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate(items: Sequence[dict]) -> dict:
    """``{"image": [B, 1, W, H], "boxes": list of [M_i, 4], "labels": list of [M_i, 3]}``."""
    return {"image": torch.stack([it["image"] for it in items]), "boxes": [it["boxes"] for it in items],
            "labels": [it["labels"] for it in items]}


def _phantom_dirs(d: C.DataConfig) -> tuple[Path, Path]:
    key = json.dumps([d.seed, d.n_train, d.n_val + d.n_test, list(d.image_size), d.p_disease, list(d.partial)])
    h = hashlib.sha1(key.encode()).hexdigest()[:10]
    root = Path(d.cache_dir) if d.cache_dir else Path(tempfile.gettempdir()) / "diffsuite_medical_phantoms"
    return root / f"train_{h}", root / f"eval_{h}"


def _ensure_phantoms(path: Path, n: int, **kw) -> Path:
    js = path / "annotations.json"
    if js.is_file():
        return js
    try:
        return make_phantoms(path, n, **kw)
    except (FileExistsError, OSError):
        if js.is_file():  # written concurrently by another process
            return js
        raise


def _move(batch_images: Tensor, model: nn.Module) -> Tensor:
    p = next(model.parameters())
    return batch_images.to(device=p.device, dtype=p.dtype)


def detect(model: MedicalModel, images: Tensor, *, solver, grid: Tensor, generator=None, renewal: bool = True,
           renewal_threshold: float = 0.1, ensemble: bool = True, nms_iou: float = 0.6, max_det: int = 100,
           init_boxes: Sequence[Tensor] | None = None, guidance: Callable | None = None,
           num_proposals: int | None = None, class_topk: int = 1, box_vote: float = 0.0) -> list[dict]:
    """Detect boxes by denoising random boxes (DiffusionDet inference).

    Args:
        images: ``[B, 1, W, H]`` normalised images.
        solver / grid: kernel solver and decreasing time grid (``grid[0]`` is the start time).
        generator: ``torch.Generator``, or a list of ``B`` per-image generators (so an image's
            detections do not depend on its batch).
        renewal: box renewal hook (drop proposals scoring below ``renewal_threshold``, re-draw them).
        ensemble: pool the x0 predictions of every step before NMS (step ensembling).
        init_boxes: hierarchical initialisation: per image ``[K_i, 4]`` xyxy boxes of an earlier
            stage; they are noised to ``grid[0]`` (``alpha x0 + sigma eps``), the remaining
            proposals start from the prior. Use a grid starting below 1 (e.g. ``grid[k:]``).
        guidance: optional ``denoise -> denoise`` transform (e.g. from :mod:`shared.guidance`).
        num_proposals: boxes to denoise (default: the training number; DiffusionDet may use more
            at inference than in training).
        class_topk: class hypotheses per box and level kept for scoring (``"level_dets"``, see
            :func:`medical.detection.postprocess`); 1: the argmax label only.
        box_vote: IoU threshold of box voting after NMS (0: off; see :func:`medical.detection.postprocess`).
    Returns per image ``{"boxes": [K, 4] xyxy, "scores": [K], "labels": [K, 3], "level_scores": [K, 3]}``
    (plus ``"level_dets"`` when ``class_topk > 1``).
    """
    B = images.shape[0]
    N, scale, size = num_proposals or model.num_proposals, model.signal_scale, model.image_size
    process, space = model.process, model.space
    dev = images.device
    cond = model.net.encode(images)
    t0 = float(grid[0])
    x = prior((B, N, 4), process=process, t=t0, space=space, generator=generator, device=dev)
    if init_boxes is not None:
        if len(init_boxes) != B:
            raise ValueError(f"init_boxes has {len(init_boxes)} entries for {B} images")
        gens = generator if isinstance(generator, (list, tuple)) else None
        x0 = torch.stack([pad_boxes(boxes_to_signal(b.to(dev).float().reshape(-1, 4), size, scale, getattr(model, "box_prior", None)),
                                    N, scale, gens[i] if gens else (generator or torch.Generator().manual_seed(i)),
                                    prior=getattr(model, "box_prior", None))
                          for i, b in enumerate(init_boxes)])
        t = torch.full((B,), t0, device=dev)
        keep = torch.zeros(B, N, 1, dtype=torch.bool, device=dev)
        for i, b in enumerate(init_boxes):
            keep[i, : min(N, b.reshape(-1, 4).shape[0])] = True
        x = torch.where(keep, noised_boxes(x0, t, process, space, generator), x)
    aux: dict = {}
    denoise = model.denoiser.bind(cond, aux=aux)
    if guidance is not None:
        denoise = guidance(denoise)
    ens = StepEnsemble(aux)
    hooks = [ens] + ([BoxRenewal(aux, renewal_threshold)] if renewal else [])
    sample(denoise, x, grid.to(torch.float64), solver, process=process, space=space, hooks=hooks,
           generator=generator)
    steps = ens.steps if ensemble else ens.steps[-1:]
    return postprocess([s for s, _ in steps], [lg for _, lg in steps], size, scale, nms_iou=nms_iou,
                       max_det=max_det, prior=getattr(model, "box_prior", None), class_topk=class_topk,
                       box_vote=box_vote)


@torch.no_grad()
def denoise_from_ground_truth(model: MedicalModel, items: Sequence[dict], t: float, *, generator=None,
                              batch_size: int = 8) -> dict[str, float]:
    """Diagnostic: DENTEX scores of ONE denoising pass whose input is each image's ground-truth
    boxes (padded with random boxes to ``num_proposals``, as in training) noised to time ``t``
    (``t = 1``: pure noise, as sampling starts). A head that refines its input boxes scores
    clearly higher at small ``t`` than at ``t = 1``; one that ignores them scores the same."""
    if not 0 < t <= 1:
        raise ValueError(f"t must be in (0, 1], got {t}")
    g = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(0)
    model.eval()
    dev = next(model.parameters()).device
    N, scale, size = model.num_proposals, model.signal_scale, model.image_size
    preds = []
    for a in range(0, len(items), batch_size):
        chunk = items[a:a + batch_size]
        imgs = _move(torch.stack([it["image"] for it in chunk]), model)
        x0 = torch.stack([pad_boxes(boxes_to_signal(it["boxes"].float().reshape(-1, 4), size, scale, getattr(model, "box_prior", None)),
                                    N, scale, g, prior=getattr(model, "box_prior", None))
                          for it in chunk]).to(imgs)
        tt = torch.full((len(chunk),), float(t), device=dev, dtype=imgs.dtype)
        xt = noised_boxes(x0, tt, model.process, model.space, g)
        aux: dict = {}
        out = model.denoiser(xt, tt, model.net.encode(imgs), aux=aux)
        s = model.sample_cfg
        preds += postprocess([out], [aux["logits"]], size, scale, nms_iou=s.nms_iou, max_det=s.max_det,
                             prior=getattr(model, "box_prior", None))
    gts = [{"boxes": it["boxes"], "labels": it["labels"]} for it in items]
    return dentex_scores(preds, gts)


def to_monai_dicts(samples: Sequence[dict]) -> list[dict]:
    """MONAI detection style per image: ``{"boxes": [K, 4] (StandardMode xyxy), "labels": [K]
    diagnosis index, "labels_quadrant", "labels_tooth", "scores": [K]}``."""
    return [{"boxes": s["boxes"], "labels": s["labels"][:, 2], "labels_quadrant": s["labels"][:, 0] + 1,
             "labels_tooth": s["labels"][:, 1] + 1, "scores": s["scores"]} for s in samples]


def to_dentex_json(samples: Sequence[dict], sizes: Sequence[tuple[int, int]] | None = None,
                   image_size: tuple[int, int] | None = None) -> dict:
    """DENTEX challenge output: ``{"name", "type", "boxes": [{"name": "q-n-d", "corners":
    [[x, y, z] x 4], "probability": p}], "version"}`` with FDI quadrant ``q``, tooth ``n``, the
    diagnosis index ``d`` of :data:`medical.data.DIAGNOSES` and ``z`` the image index. Boxes are
    mapped back to each image's original size when ``sizes`` and ``image_size`` are given."""
    boxes = []
    for z, s in enumerate(samples):
        fx = fy = 1.0
        if sizes is not None and image_size is not None:
            fx, fy = sizes[z][0] / image_size[0], sizes[z][1] / image_size[1]
        for b, lab, p in zip(s["boxes"].tolist(), s["labels"].tolist(), s["scores"].tolist()):
            x0, y0, x1, y1 = b[0] * fx, b[1] * fy, b[2] * fx, b[3] * fy
            boxes.append({"name": f"{lab[0] + 1}-{lab[1] + 1}-{lab[2]}",
                          "corners": [[x0, y0, z], [x0, y1, z], [x1, y0, z], [x1, y1, z]],
                          "probability": float(p)})
    return {"name": "Regions of interest", "type": "Multiple 2D bounding boxes", "boxes": boxes,
            "version": {"major": 1, "minor": 0}}


# --------------------------------------------------------------------------- the task

class MedicalTask:
    """DomainTask for dental panoramic X-ray detection (see the package docstring)."""

    name = "medical"
    headline_metric = ("ap_aggregate", "max")
    extra = "medical"

    def config(self, preset: str) -> C.MedicalConfig:
        if preset not in C.PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(C.PRESETS)}")
        return C.PRESETS[preset]()

    def load_data(self, cfg: C.MedicalConfig) -> Splits:
        """Phantoms (default) or a user DENTEX/COCO file; items are loaded with MONAI.
        ``train`` is an :class:`ItemDataset`; ``val``/``test`` are item lists."""
        d = cfg.data
        size = tuple(d.image_size)
        if d.json_path:
            ds = load_dentex(d.json_path, d.image_dir or Path(d.json_path).parent, level=d.level)
            items = load_images(ds, size)
            n = len(items)
            if d.n_train + d.n_val + d.n_test > n:
                raise DentexError(f"{d.json_path}: has {n} images, fewer than n_train + n_val + n_test = "
                                  f"{d.n_train + d.n_val + d.n_test}")
            perm = np.random.default_rng(d.seed).permutation(n)
            take = lambda a, b: [items[i] for i in perm[a:b]]  # noqa: E731
            tr = take(0, d.n_train)
            va = take(d.n_train, d.n_train + d.n_val)
            te = take(d.n_train + d.n_val, d.n_train + d.n_val + d.n_test)
            source = d.json_path
        else:
            tr_dir, ev_dir = _phantom_dirs(d)
            js_tr = _ensure_phantoms(tr_dir, d.n_train, seed=d.seed, size=size, p_disease=d.p_disease,
                                     partial=tuple(d.partial), workers=d.workers)
            js_ev = _ensure_phantoms(ev_dir, d.n_val + d.n_test, seed=d.seed + 1_000_003, size=size,
                                     p_disease=d.p_disease, workers=d.workers)
            tr = load_images(load_dentex(js_tr, tr_dir), size)
            ev = load_images(load_dentex(js_ev, ev_dir), size)
            va, te = ev[: d.n_val], ev[d.n_val:]
            source = "phantom"
        return Splits(train=ItemDataset(tr), val=va, test=te,
                      extra={"image_size": size, "source": source, "levels": LEVELS, "diagnoses": DIAGNOSES})

    def build(self, cfg: C.MedicalConfig) -> MedicalModel:
        torch.manual_seed(cfg.train.seed)
        return MedicalModel(cfg)

    def loss_fn(self, cfg: C.MedicalConfig, step_fn: Callable[[], int] | None = None) -> Callable:
        """``loss_fn(model, batch, generator) -> [B]``: flip augmentation (label-aware), boxes
        padded to ``num_proposals``, noised at ``t ~ U{1..N}/N`` by the process, set loss on
        the x0 prediction of every head stage.

        Hierarchical curriculum (HierarchicalDet's stage-wise initialisation, in one run): with
        ``loss.curriculum = (f_tooth, f_diag)`` the tooth / diagnosis labels are switched on after
        those fractions of ``train.steps`` (``step_fn()`` gives the current step); before that
        they count as unannotated, so earlier levels initialise the later ones."""
        flip_p = cfg.data.flip_prob
        on = [0] + [int(f * cfg.train.steps) for f in cfg.loss.curriculum]

        def loss_fn(model: MedicalModel, batch: dict, generator: torch.Generator) -> Tensor:
            m = getattr(model, "module", model)
            images, boxes, labels = batch["image"], list(batch["boxes"]), list(batch["labels"])
            B = images.shape[0]
            if flip_p > 0:
                flips = (torch.rand(B, generator=generator, device=generator.device) < flip_p).tolist()
                imgs = []
                for i in range(B):
                    if flips[i]:
                        q = labels[i][:, 0]
                        it = flip_horizontal({"image": images[i].cpu(), "boxes": boxes[i].cpu(),
                                              "quadrant": torch.where(q >= 0, q + 1, q).cpu()})
                        imgs.append(it["image"].to(images))
                        boxes[i] = it["boxes"].to(images)
                        lab = labels[i].clone()
                        lab[:, 0] = torch.where(it["quadrant"] > 0, it["quadrant"] - 1, -1).to(lab)
                        labels[i] = lab
                    else:
                        imgs.append(images[i])
                images = torch.stack(imgs)
            if step_fn is not None and any(on):
                step = step_fn()
                off = [k for k in range(3) if step < on[k]]
                if off:
                    labels = [lab.clone() for lab in labels]
                    for lab in labels:
                        lab[:, off] = -1
            size, scale, N = m.image_size, m.signal_scale, m.num_proposals
            x0 = torch.stack([pad_boxes(boxes_to_signal(b.float(), size, scale, m.box_prior), N, scale, generator,
                                        cfg.loss.pad_repeat, m.box_prior) for b in boxes]).to(images)
            if cfg.loss.time_sampler == "uniform":
                k = torch.randint(0, m.process.num_train_timesteps, (B,), generator=generator, device=generator.device)
                t = m.process.t_of_index(k).to(images)
            else:  # e.g. logit-normal with a negative mean: more weight on low noise
                t = sample_t(cfg.loss.time_sampler, B, process=m.process, generator=generator,
                             m=cfg.loss.time_m, s=cfg.loss.time_s).to(images)
            xt = noised_boxes(x0, t, m.process, m.space, generator)
            cond = m.net.encode(images)
            aux: dict = {}
            m.denoiser(xt, t, cond, aux=aux)
            if getattr(cfg.loss, "batched", False):
                return set_loss_batched(aux["stages"], boxes, labels, size, cfg.loss)
            return set_loss(aux["stages"], boxes, labels, size, cfg.loss)

        return loss_fn

    def train(self, cfg: C.MedicalConfig, model: MedicalModel, data: Splits, trainer) -> MedicalModel:
        trainer.fit(model, self.loss_fn(cfg, step_fn=lambda: trainer.step), data.train, collate_fn=collate)
        out = trainer.sampling_model
        return out if out is not None else model

    def generate(self, model: MedicalModel, n: int, *, solver, grid, guidance=None, generator=None,
                 data: Splits | None = None, renewal: bool | None = None, ensemble: bool | None = None) -> list[dict]:
        """Detections on the first ``n`` test images (cycled if ``n`` exceeds the test set).
        Each image gets its own generator seeded from ``generator``, so results do not depend
        on the batch. Returns per image the dict of :func:`detect` plus ``"index"`` (test index)."""
        if data is None or not data.test:
            raise ValueError("medical.generate needs data (the test images to detect on)")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        s = getattr(model, "sample_cfg", None) or C.SampleConfig()
        renewal = s.renewal if renewal is None else renewal
        ensemble = s.ensemble if ensemble is None else ensemble
        dev = next(model.parameters()).device
        g = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(0)
        seeds = torch.randint(0, 2**62, (n,), generator=g, device=g.device).tolist()
        idx = [i % len(data.test) for i in range(n)]
        model.eval()
        out = []
        with torch.no_grad():
            for a in range(0, n, s.batch_size):
                sel = idx[a:a + s.batch_size]
                imgs = _move(torch.stack([data.test[i]["image"] for i in sel]), model)
                gens = [torch.Generator(device=dev).manual_seed(int(sd)) for sd in seeds[a:a + s.batch_size]]
                res = detect(model, imgs, solver=solver, grid=grid, generator=gens, renewal=renewal,
                             renewal_threshold=s.renewal_threshold, ensemble=ensemble, nms_iou=s.nms_iou,
                             max_det=s.max_det, guidance=guidance, num_proposals=s.num_proposals or None,
                             class_topk=getattr(s, "class_topk", 1), box_vote=getattr(s, "box_vote", 0.0))
                for i, r in zip(sel, res):
                    r["index"] = i
                    out.append(r)
        return out

    def evaluate(self, samples: Sequence[dict], data: Splits) -> dict[str, float]:
        gts = [{"boxes": data.test[s["index"]]["boxes"], "labels": data.test[s["index"]]["labels"]} for s in samples]
        return dentex_scores(samples, gts)

    def save(self, model: MedicalModel, cfg: C.MedicalConfig, path) -> None:
        from shared.checkpoint import save_checkpoint

        save_checkpoint(path, {"model": model}, cfg, meta={"domain": self.name})

    def load(self, path) -> tuple[MedicalModel, C.MedicalConfig]:
        from shared.checkpoint import load_checkpoint, load_into
        from shared.config import from_dict

        ck = load_checkpoint(path)
        cfg = from_dict(C.MedicalConfig, ck.config)
        model = MedicalModel(cfg)
        load_into(ck, {"model": model})
        return model.eval(), cfg

    def plot(self, samples: Sequence[dict], data: Splits, path, *, min_score: float = 0.2) -> None:
        """One PNG: the first sample's X-ray with ground truth (green) and predicted boxes
        (red, labelled ``FDI-diagnosis score``): those scoring at least ``min_score`` and at
        least the top ``max(#ground truth, 5)``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        if not samples:
            raise ValueError("no samples to plot")
        s = samples[0]
        item = data.test[s["index"]]
        img = item["image"][0].T.cpu().numpy()  # [W, H] -> [H, W]
        H, W = img.shape
        fig, ax = plt.subplots(figsize=(10, 10 * H / W + 0.3))
        ax.imshow(img, cmap="gray")
        for b in item["boxes"].tolist():
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="lime", lw=1))
        short = {0: "C", 1: "DC", 2: "PL", 3: "Imp"}
        top = max(len(item["boxes"]), 5)  # at least the top-k boxes, however weak the model
        for r, (b, lab, p) in enumerate(zip(s["boxes"].tolist(), s["labels"].tolist(), s["scores"].tolist())):
            if p < min_score and r >= top:
                continue
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="red", lw=1))
            ax.text(b[0], b[1] - 1, f"{lab[0] + 1}{lab[1] + 1}-{short[lab[2]]} {p:.2f}", color="red", fontsize=6)
        ax.set_axis_off()
        ax.set_title("green: ground truth; red: predictions (FDI-diagnosis score)")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.png")
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, path)
