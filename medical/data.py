"""DENTEX data: annotation loaders (plain COCO and the hierarchical ``categories_1/2/3``
schema), MONAI image/box pipelines, label-aware flip, and the synthetic panoramic phantom.

Label conventions (FDI, used everywhere in this package):

* ``quadrant``: 1..4 (1 upper right, 2 upper left, 3 lower left, 4 lower right, patient's side;
  on a panoramic X-ray the patient's right is on the image's left);
* ``tooth``: 1..8 (central incisor .. third molar);
* ``diagnosis``: index into :data:`DIAGNOSES` (0 caries, 1 deep caries, 2 periapical lesion,
  3 impacted);
* ``-1`` means "not annotated at this level" (partial labels; the loss of that level is off).

DENTEX category ids are *not* FDI numbers: they are always mapped through the name lists
(``categories`` / ``categories_1/2/3``).

Image/box layout follows MONAI: images are ``[C, W, H]`` (``PILReader`` reverse indexing, so
spatial axis 0 is x) and boxes are ``StandardMode`` ``xyxy`` with x along spatial axis 0.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DIAGNOSES",
    "LEVELS",
    "NUM_CLASSES",
    "DentexError",
    "DentexRecord",
    "DentexDataset",
    "read_dentex_json",
    "parse_dentex",
    "load_dentex",
    "load_images",
    "flip_horizontal",
    "swap_quadrants",
    "fdi_number",
    "make_phantoms",
    "vendored_json",
    "VENDORED",
]

#: Part-3 (diagnosis) classes of DENTEX, in this package's index order.
DIAGNOSES: tuple[str, ...] = ("Caries", "Deep Caries", "Periapical Lesion", "Impacted")
#: The three label levels and their number of classes.
LEVELS: tuple[str, ...] = ("quadrant", "tooth", "diagnosis")
NUM_CLASSES: dict[str, int] = {"quadrant": 4, "tooth": 8, "diagnosis": 4}
#: Vendored real annotation files (no images) under ``medical/datasets``.
VENDORED: dict[str, str] = {
    "dentex_train_quadrant": "dentex_train_quadrant.json.gz",
    "hierarchicaldet_val_quadrant_hier": "hierarchicaldet_val_quadrant_hier.json.gz",
}


class DentexError(ValueError):
    """A DENTEX/COCO file is malformed; the message names the offending entry."""


def fdi_number(quadrant: int, tooth: int) -> int:
    """FDI two-digit tooth number, e.g. ``(1, 8) -> 18``."""
    if not (1 <= quadrant <= 4 and 1 <= tooth <= 8):
        raise ValueError(f"quadrant must be 1..4 and tooth 1..8, got {quadrant}, {tooth}")
    return 10 * quadrant + tooth


@dataclass
class DentexRecord:
    """One image's annotations.

    boxes: ``[N, 4]`` float ``xyxy`` pixels of the original image (x along the width).
    quadrant / tooth / diagnosis: ``[N]`` int64 FDI labels (see module doc), ``-1`` = unknown.
    """

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    quadrant: np.ndarray
    tooth: np.ndarray
    diagnosis: np.ndarray
    ann_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def labels(self) -> np.ndarray:
        """``[N, 3]`` labels (quadrant index 0..3, tooth index 0..7, diagnosis 0..3; -1 unknown)."""
        q = np.where(self.quadrant > 0, self.quadrant - 1, -1)
        t = np.where(self.tooth > 0, self.tooth - 1, -1)
        return np.stack([q, t, self.diagnosis], 1).astype(np.int64).reshape(-1, 3)


@dataclass
class DentexDataset:
    """Annotations of a DENTEX-format file; ``image_dir`` is where the images live (or None)."""

    records: list[DentexRecord]
    image_dir: Path | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_boxes(self) -> int:
        return int(sum(len(r.boxes) for r in self.records))


# --------------------------------------------------------------------------- parsing


def read_dentex_json(path: str | os.PathLike) -> dict:
    """Read a (possibly gzipped) JSON file, with a clear error on bad JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DENTEX annotation file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise DentexError(f"{path}: not valid JSON ({e})") from e


def vendored_json(name: str) -> dict:
    """The vendored real annotation file ``name`` (a key of :data:`VENDORED`) as a dict."""
    if name not in VENDORED:
        raise KeyError(f"unknown vendored file {name!r}; choose one of {sorted(VENDORED)}")
    ref = resources.files("medical") / "datasets" / VENDORED[name]
    with resources.as_file(ref) as p:
        return read_dentex_json(p)


def _name_map(cats: Any, key: str, level: str) -> dict[int, int]:
    """Category id -> FDI label (quadrant/tooth number, or diagnosis index) via names."""
    if not isinstance(cats, list):
        raise DentexError(f"'{key}' must be a list of {{id, name}} entries")
    out: dict[int, int] = {}
    diag = {d.lower(): i for i, d in enumerate(DIAGNOSES)}
    hi = 4 if level == "quadrant" else 8
    for c in cats:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DentexError(f"'{key}' entry {c!r} needs 'id' and 'name'")
        name = str(c["name"]).strip()
        if level == "diagnosis":
            if name.lower() not in diag:
                raise DentexError(f"'{key}' entry id={c['id']}: unknown diagnosis {name!r}; "
                                  f"expected one of {list(DIAGNOSES)}")
            out[int(c["id"])] = diag[name.lower()]
        else:
            if not name.isdigit() or not 1 <= int(name) <= hi:
                raise DentexError(f"'{key}' entry id={c['id']}: {level} name must be 1..{hi}, got {name!r}")
            out[int(c["id"])] = int(name)
    return out


def parse_dentex(d: dict, *, level: str = "quadrant", source: str = "<dict>") -> list[DentexRecord]:
    """Parse a DENTEX dict into records.

    Plain COCO (``categories`` + ``category_id``) is read as level ``level`` (DENTEX part 1 is
    ``"quadrant"``); the hierarchical schema (``categories_1/2/3`` + ``category_id_1/2/3``,
    ``null`` allowed) fills the levels it has. Checks every entry and raises
    :class:`DentexError` naming it: unknown image or category ids, boxes outside the image,
    non-positive sizes.
    """
    if not isinstance(d, dict) or "images" not in d or "annotations" not in d:
        raise DentexError(f"{source}: needs 'images' and 'annotations' lists (COCO format)")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    hier = any(f"categories_{k}" in d for k in (1, 2, 3))
    maps: dict[str, dict[int, int]] = {}
    keys: dict[str, str] = {}
    if hier:
        for k, lv in zip((1, 2, 3), LEVELS):
            if f"categories_{k}" in d:
                maps[lv] = _name_map(d[f"categories_{k}"], f"categories_{k}", lv)
                keys[lv] = f"category_id_{k}"
    else:
        if "categories" not in d:
            raise DentexError(f"{source}: needs 'categories' (plain COCO) or 'categories_1/2/3' (hierarchical)")
        maps[level] = _name_map(d["categories"], "categories", level)
        keys[level] = "category_id"
    images: dict[int, dict] = {}
    for im in d["images"]:
        try:
            iid, w, h, fn = int(im["id"]), int(im["width"]), int(im["height"]), str(im["file_name"])
        except (KeyError, TypeError, ValueError) as e:
            raise DentexError(f"{source}: image entry {im!r} needs id, width, height, file_name") from e
        if w <= 0 or h <= 0:
            raise DentexError(f"{source}: image id={iid} ({fn}) has non-positive size {w}x{h}")
        if iid in images:
            raise DentexError(f"{source}: duplicate image id={iid}")
        images[iid] = {"file_name": fn, "width": w, "height": h, "anns": []}
    for a in d["annotations"]:
        aid = a.get("id", "?")
        iid = a.get("image_id")
        if iid not in images:
            raise DentexError(f"{source}: annotation id={aid} refers to unknown image_id={iid!r}")
        im = images[iid]
        bb = a.get("bbox")
        if not isinstance(bb, (list, tuple)) or len(bb) != 4:
            raise DentexError(f"{source}: annotation id={aid} has no [x, y, w, h] bbox")
        x, y, w, h = (float(v) for v in bb)
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            raise DentexError(f"{source}: annotation id={aid} has a degenerate bbox {bb}")
        tol = 1.0
        if x < -tol or y < -tol or x + w > im["width"] + tol or y + h > im["height"] + tol:
            raise DentexError(f"{source}: annotation id={aid} box {bb} lies outside image id={iid} "
                              f"({im['file_name']}, {im['width']}x{im['height']})")
        lab = {}
        for lv in LEVELS:
            if lv not in keys:
                lab[lv] = -1
                continue
            cid = a.get(keys[lv])
            if cid is None:
                lab[lv] = -1
                continue
            if int(cid) not in maps[lv]:
                raise DentexError(f"{source}: annotation id={aid} has unknown {keys[lv]}={cid} "
                                  f"(known ids: {sorted(maps[lv])})")
            lab[lv] = maps[lv][int(cid)]
        im["anns"].append((aid, [x, y, x + w, y + h], lab))
    out = []
    for iid, im in images.items():
        anns = im["anns"]
        out.append(DentexRecord(
            image_id=iid, file_name=im["file_name"], width=im["width"], height=im["height"],
            boxes=np.array([b for _, b, _ in anns], np.float32).reshape(-1, 4),
            quadrant=np.array([lb["quadrant"] for _, _, lb in anns], np.int64),
            tooth=np.array([lb["tooth"] for _, _, lb in anns], np.int64),
            diagnosis=np.array([lb["diagnosis"] for _, _, lb in anns], np.int64),
            ann_ids=np.array([int(i) if str(i).lstrip("-").isdigit() else -1 for i, _, _ in anns], np.int64)))
    return out


def load_dentex(json_path: str | os.PathLike, image_dir: str | os.PathLike | None = None, *,
                level: str = "quadrant") -> DentexDataset:
    """Load a DENTEX / COCO annotation file (``.json`` or ``.json.gz``).

    Args:
        json_path: the annotation file.
        image_dir: folder of the images; when given, every ``file_name`` must exist there
            (a missing file raises :class:`DentexError` naming it). None: annotations only.
        level: the level that plain-COCO ``category_id`` means (DENTEX part 1: quadrant).
    """
    d = read_dentex_json(json_path)
    recs = parse_dentex(d, level=level, source=str(json_path))
    idir = Path(image_dir) if image_dir is not None else None
    if idir is not None:
        if not idir.is_dir():
            raise FileNotFoundError(f"image folder not found: {idir}")
        for r in recs:
            if not (idir / r.file_name).is_file():
                raise DentexError(f"{json_path}: image id={r.image_id} file {r.file_name!r} "
                                  f"not found in {idir}")
    return DentexDataset(recs, idir, str(json_path))


# --------------------------------------------------------------------------- MONAI pipelines


def swap_quadrants(quadrant: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """FDI quadrant labels after a left-right flip: 1<->2, 3<->4 (-1 stays -1).
    Accepts FDI numbers 1..4 (or -1)."""
    table = {1: 2, 2: 1, 3: 4, 4: 3}
    if torch.is_tensor(quadrant):
        out = quadrant.clone()
        for a, b in table.items():
            out[quadrant == a] = b
        return out
    q = np.asarray(quadrant)
    out = q.copy()
    for a, b in table.items():
        out[q == a] = b
    return out


def flip_horizontal(item: dict) -> dict:
    """Label-aware left-right flip of an item ``{"image": [C, W, H], "boxes": [N, 4] xyxy,
    "quadrant": [N] FDI, ...}`` with MONAI's ``FlipBoxd`` on spatial axis 0 (x); the quadrant
    labels are swapped (1<->2, 3<->4) since the patient's sides swap. Returns a new dict."""
    from monai.apps.detection.transforms.dictionary import FlipBoxd

    d = FlipBoxd(image_keys="image", box_keys="boxes", box_ref_image_keys="image", spatial_axis=0)(dict(item))
    d["image"] = torch.as_tensor(d["image"]).as_subclass(torch.Tensor).contiguous()
    d["boxes"] = torch.as_tensor(d["boxes"]).as_subclass(torch.Tensor).float()
    d["quadrant"] = swap_quadrants(torch.as_tensor(item["quadrant"]))
    return d


def _load_one(path: Path, rec: DentexRecord, size: tuple[int, int]) -> dict:
    from monai.apps.detection.transforms.dictionary import ConvertBoxModed, ZoomBoxd
    from monai.transforms import LoadImaged, ScaleIntensityd

    d = LoadImaged(keys="image", reader="PILReader", ensure_channel_first=True, image_only=True)(
        {"image": str(path)})
    img = torch.as_tensor(d["image"]).as_subclass(torch.Tensor).float()  # [C, W, H]
    if img.shape[0] in (3, 4):
        img = img[:3].mean(0, keepdim=True)  # grayscale
    elif img.shape[0] != 1:
        raise DentexError(f"{path}: expected a grayscale or RGB image, got {img.shape[0]} channels")
    if tuple(img.shape[1:]) != (rec.width, rec.height):
        raise DentexError(f"{path}: image is {img.shape[1]}x{img.shape[2]} but the JSON says "
                          f"{rec.width}x{rec.height} (image id={rec.image_id})")
    boxes_xywh = rec.boxes.copy()
    boxes_xywh[:, 2:] -= boxes_xywh[:, :2]
    d = {"image": img, "boxes": torch.as_tensor(boxes_xywh)}
    d = ScaleIntensityd(keys="image", minv=0.0, maxv=1.0)(d)
    d = ConvertBoxModed(box_keys="boxes", src_mode="xywh", dst_mode="xyxy")(d)
    zoom = (size[0] / rec.width, size[1] / rec.height)
    if zoom != (1.0, 1.0):
        d = ZoomBoxd(image_keys="image", box_keys="boxes", box_ref_image_keys="image", zoom=zoom,
                     keep_size=False, mode="area")(d)
    image = torch.as_tensor(d["image"]).as_subclass(torch.Tensor).float().contiguous()
    boxes = torch.as_tensor(d["boxes"]).as_subclass(torch.Tensor).float().reshape(-1, 4)
    image = (image - 0.5) / 0.25  # fixed intensity normalisation after min-max scaling
    return {"image": image, "boxes": boxes}


def load_images(ds: DentexDataset, size: tuple[int, int], *, progress: bool = False) -> list[dict]:
    """Load every image of ``ds`` with MONAI (``LoadImaged`` + ``ScaleIntensityd`` +
    ``ConvertBoxModed`` xywh->xyxy + ``ZoomBoxd`` to ``size = (W, H)``).

    Returns items ``{"image": [1, W, H] float (intensity-normalised), "boxes": [N, 4] xyxy in
    resized pixels, "labels": [N, 3] int64 (level indices, -1 unknown), "quadrant": [N] FDI,
    "image_id", "file_name", "orig_size": (W, H)}``."""
    if ds.image_dir is None:
        raise DentexError(f"{ds.source}: no image folder given; pass image_dir to load_dentex")
    from tqdm.auto import tqdm

    out = []
    for rec in tqdm(ds.records, desc="loading images", disable=not progress, leave=False):
        d = _load_one(ds.image_dir / rec.file_name, rec, size)
        d.update(labels=torch.as_tensor(rec.labels()), quadrant=torch.as_tensor(rec.quadrant),
                 image_id=rec.image_id, file_name=rec.file_name, orig_size=(rec.width, rec.height))
        out.append(d)
    return out


# --------------------------------------------------------------------------- phantom generator

# Relative widths of teeth 1..8 (incisors narrow, molars wide) and crown/root lengths (x H).
_TOOTH_W = np.array([0.85, 0.75, 0.85, 0.8, 0.8, 1.2, 1.15, 1.05])
_ROOT_L = np.array([0.20, 0.19, 0.25, 0.21, 0.21, 0.18, 0.17, 0.15])


def _smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma)


def _draw_tooth(img: np.ndarray, cx: float, y0: float, w: float, crown: float, root: float,
                up: bool, angle: float, diag: int, rng: np.random.Generator) -> list[float]:
    """Draw one tooth (image ``[H, W]`` numpy, row = y) and its lesion; return its box xyxy.
    ``y0`` is the occlusal surface; the tooth grows away from it (upwards for the upper jaw)."""
    H, W = img.shape
    L = crown + root
    R = np.hypot(w, L) + 4
    x_lo, x_hi = int(max(0, cx - R)), int(min(W, cx + R + 1))
    ys = y0 - L / 2 if up else y0 + L / 2
    y_lo, y_hi = int(max(0, ys - R)), int(min(H, ys + R + 1))
    yy, xx = np.mgrid[y_lo:y_hi, x_lo:x_hi].astype(np.float64)
    ca, sa = math.cos(angle), math.sin(angle)
    dx, dy = xx - cx, yy - y0
    sgn = -1.0 if up else 1.0
    u = ca * dx + sa * dy  # across the tooth
    v = sgn * (-sa * dx + ca * dy)  # along the tooth, 0 at the occlusal surface
    half = w / 2
    crown_m = (v >= 0) & (v <= crown) & (np.abs(u) <= half * (0.8 + 0.2 * np.clip(v / (0.3 * crown), 0, 1)))
    taper = 1 - 0.65 * np.clip((v - crown) / max(root, 1e-6), 0, 1)
    root_m = (v > crown) & (v <= L) & (np.abs(u) <= half * 0.85 * taper)
    tooth = crown_m | root_m
    enamel = crown_m & ((v < 0.3 * crown) | (np.abs(u) > half - max(1.0, 0.15 * w)))
    pulp = ((v > 0.35 * crown) & (v < L - 0.1 * root) & (np.abs(u) < np.maximum(0.6, 0.18 * w * taper)))
    val = np.zeros_like(u)
    val[tooth] = 0.72
    val[enamel] = 1.0
    val[pulp & tooth] = 0.38
    # lesions
    lesion = np.zeros_like(u, dtype=bool)
    extra = []
    if diag == 0:  # caries: small radiolucency at the crown surface, away from the pulp
        side = rng.choice([-1.0, 1.0])
        cu, cv, r = side * half * 0.75, crown * rng.uniform(0.15, 0.4), max(1.2, 0.22 * w)
        lesion = ((u - cu) ** 2 + (v - cv) ** 2 <= r * r) & tooth
    elif diag == 1:  # deep caries: from the surface down into the pulp chamber
        side = rng.choice([-1.0, 1.0])
        r = max(1.8, 0.33 * w)
        lesion = ((((u - side * half * 0.45) ** 2 + (v - 0.3 * crown) ** 2) <= r * r)
                  | ((np.abs(u - side * half * 0.2) < r * 0.7) & (v > 0.2 * crown) & (v < 0.8 * crown))) & tooth
    elif diag == 2:  # periapical radiolucency at the root tip (in the bone)
        r = max(2.0, 0.5 * w)
        lesion = ((u ** 2 + (v - L - 0.2 * r) ** 2) <= r * r) & ~tooth
        extra = [(-r, L - r), (r, L + 1.2 * r)]
    region = (slice(y_lo, y_hi), slice(x_lo, x_hi))
    sub = img[region]
    sub[tooth] = val[tooth]
    if lesion.any():
        sub[lesion] = 0.12 if diag == 2 else 0.2
    # box: extent of tooth pixels (plus the lesion)
    m = tooth | lesion
    if not m.any():
        return [cx - 1, y0 - 1, cx + 1, y0 + 1]
    ys_i, xs_i = np.nonzero(m)
    return [float(xs_i.min() + x_lo), float(ys_i.min() + y_lo), float(xs_i.max() + x_lo + 1),
            float(ys_i.max() + y_lo + 1)]


def _phantom(size: tuple[int, int], rng: np.random.Generator, p_disease: float,
             p_missing: float) -> tuple[np.ndarray, list]:
    """One panoramic phantom ``[H, W]`` in [0, 1] and its diseased-tooth annotations
    ``[(box xyxy, quadrant, tooth, diagnosis)]``."""
    W, H = size
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    u = (xx - W / 2) / (W / 2)
    # jaw bone: bright band around the arch, darker air / soft tissue outside, spine shadows
    occ = H * (0.5 - 0.07 * (1 - u ** 2)) + rng.normal(0, 0.01 * H)
    bone = np.exp(-((yy - occ) / (0.32 * H)) ** 2) * (1 - 0.5 * np.abs(u) ** 4)
    img = 0.08 + 0.32 * bone + 0.05 * np.exp(-((np.abs(u) - 0.95) / 0.05) ** 2)
    img += 0.03 * _smooth(rng.normal(0, 1, (H, W)), 2.0)
    anns = []
    span = 0.74 * W
    base_w = span / 16 / _TOOTH_W.mean() * rng.uniform(0.92, 1.0)
    gap = 0.015 * H
    for jaw_up in (True, False):
        for side in (-1, 1):  # image left (-1) / right (+1)
            # FDI quadrant: upper image-left = 1, upper image-right = 2, lower right = 3, lower left = 4
            q = (1 if side < 0 else 2) if jaw_up else (4 if side < 0 else 3)
            x = W / 2 + side * 0.004 * W
            for n in range(1, 9):
                w = base_w * _TOOTH_W[n - 1] * rng.uniform(0.93, 1.07)
                cx = x + side * w / 2
                x += side * w
                pm = p_missing * (3.0 if n == 8 else 1.0)
                if rng.random() < pm:
                    continue
                uu = (cx - W / 2) / (W / 2)
                y_occ = H * (0.5 - 0.07 * (1 - uu ** 2))
                y0 = y_occ - gap if jaw_up else y_occ + gap
                crown = H * 0.11 * (1.1 if n >= 6 else 1.0) * rng.uniform(0.9, 1.1)
                root = H * _ROOT_L[n - 1] * rng.uniform(0.9, 1.1)
                angle = side * 0.12 * uu * (1 if jaw_up else -1) + rng.normal(0, 0.03)
                diag = -1
                if n == 8 and rng.random() < 0.35:
                    diag = 3  # impacted third molar: rotated and pushed into the bone
                    angle = side * rng.uniform(0.6, 1.2) * (1 if jaw_up else -1)
                    y0 = y0 - 0.06 * H if jaw_up else y0 + 0.06 * H
                elif rng.random() < p_disease:
                    diag = int(rng.choice([0, 1, 2], p=[0.45, 0.3, 0.25]))
                box = _draw_tooth(img, cx, y0, w, crown, root, jaw_up, angle, diag, rng)
                if diag >= 0:
                    anns.append((box, q, n, diag))
    img = _smooth(img, 0.6) + rng.normal(0, 0.02, (H, W))
    return np.clip(img, 0, 1), anns


def _phantom_job(job: tuple) -> tuple[str, list, int]:
    """Draw and write phantom ``i`` (seeded by ``(seed, i)`` only); returns its file name,
    annotations and label depth (1: quadrant only, 2: + tooth, 3: all levels)."""
    from PIL import Image

    i, seed, W, H, p_disease, p_missing, partial, folder = job
    rng = np.random.default_rng([seed, i])
    img, boxes = _phantom((W, H), rng, p_disease, p_missing)
    fn = f"phantom_{i:05d}.png"
    Image.fromarray((img * 255).round().astype(np.uint8), mode="L").save(Path(folder) / fn)
    r = rng.random()
    lv = 1 if r < partial[0] else 2 if r < partial[0] + partial[1] else 3
    return fn, boxes, lv


def make_phantoms(out_dir: str | os.PathLike, n: int, *, seed: int = 0, size: tuple[int, int] = (256, 128),
                  p_disease: float = 0.12, p_missing: float = 0.06, partial: tuple[float, float] = (0.0, 0.0),
                  json_name: str = "annotations.json", overwrite: bool = False, workers: int = 0) -> Path:
    """Write ``n`` synthetic panoramic X-rays (PNG) and a DENTEX hierarchical JSON.

    Each phantom has a dental arch of up to 32 teeth (FDI quadrants 1..4, teeth 1..8) with
    enamel / dentin / pulp / root intensities in jaw bone, missing teeth, and diseased teeth
    drawn with their lesion: caries (crown radiolucency), deep caries (reaching the pulp),
    periapical lesion (radiolucency at the root tip), impacted third molar (rotated, displaced).
    Like DENTEX part 3, only diseased teeth are annotated, with ``category_id_1/2/3``
    (quadrant, enumeration, diagnosis); ids are mapped through deliberately shuffled
    ``categories_1/2/3`` name lists as in the real files.

    Args:
        out_dir: folder to create (must be empty or absent unless ``overwrite``).
        n: number of images.
        seed: image ``i`` depends only on ``(seed, i)``.
        size: ``(W, H)`` in pixels.
        p_disease: chance a present tooth is diseased (caries / deep caries / periapical).
        p_missing: chance a tooth is missing (x3 for third molars).
        partial: fractions of images whose labels are only quadrant, and only quadrant + tooth
            (the rest fully labelled): DENTEX's partial labels (nulls in the JSON).
        json_name: annotation file name inside ``out_dir``.
        workers: processes drawing the images (0 or 1: this process; -1: one per CPU core).
            Image ``i`` is seeded by ``(seed, i)`` alone, so the files are identical to the
            serial ones whatever the number of workers.
    Returns:
        path of the JSON file. Files are written to a temporary folder and moved into place,
        so a failure leaves nothing behind.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    W, H = int(size[0]), int(size[1])
    if W < 64 or H < 32:
        raise ValueError(f"size must be at least 64x32, got {size}")
    if not (0 <= partial[0] and 0 <= partial[1] and partial[0] + partial[1] <= 1):
        raise ValueError(f"partial fractions must be >= 0 and sum to <= 1, got {partial}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty (pass overwrite=True)")

    # id orders as in HierarchicalDet's files (ids are not FDI numbers)
    q_names = ["2", "1", "3", "4"]
    t_names = ["6", "7", "8", "5", "4", "1", "3", "2"]
    d_names = ["Caries", "Deep Caries", "Impacted", "Periapical Lesion"]
    q_id = {int(nm): i for i, nm in enumerate(q_names)}
    t_id = {int(nm): i for i, nm in enumerate(t_names)}
    d_id = {DIAGNOSES.index(nm): i for i, nm in enumerate(d_names)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        images, anns = [], []
        jobs = [(i, seed, W, H, p_disease, p_missing, tuple(partial), str(tmp)) for i in range(n)]
        nw = (os.cpu_count() or 1) if workers < 0 else int(workers)
        nw = min(nw, n)
        if nw > 1:
            import multiprocessing as mp

            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(nw) as pool:
                results = pool.map(_phantom_job, jobs, chunksize=max(1, n // (4 * nw)))
        else:
            results = [_phantom_job(j) for j in jobs]
        for i, (fn, boxes, lv) in enumerate(results):
            images.append({"id": i + 1, "file_name": fn, "width": W, "height": H})
            for (x0, y0, x1, y1), q, t, dg in boxes:
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "iscrowd": 0,
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                             "category_id_1": q_id[q], "category_id_2": t_id[t] if lv >= 2 else None,
                             "category_id_3": d_id[dg] if lv >= 3 else None})
        d = {"images": images, "annotations": anns,
             "categories_1": [{"id": i, "name": nm, "supercategory": nm} for i, nm in enumerate(q_names)],
             "categories_2": [{"id": i, "name": nm, "supercategory": nm} for i, nm in enumerate(t_names)],
             "categories_3": [{"id": i, "name": nm, "supercategory": nm} for i, nm in enumerate(d_names)]}
        (tmp / json_name).write_text(json.dumps(d))
        if out.exists():
            for p in tmp.iterdir():
                os.replace(p, out / p.name)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / json_name
