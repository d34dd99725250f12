"""Image quality metrics in the feature space of the shipped MNIST classifier.

* :func:`frechet_distance` — Fréchet distance between Gaussians fitted to two feature sets.
  On :class:`~imaging.backbones.DigitClassifier` penultimate features (64-d) this is a
  *digits FD*: the recipe of FID (Heusel et al. 2017) with a small MNIST classifier in place of
  Inception-v3. It is **not Inception FID** and its values are not comparable with published FIDs.
* :func:`precision_recall` — k-NN manifold precision and recall (Kynkäänniemi et al. 2019).
* :func:`class_accuracy` — fraction of class-conditional samples the classifier assigns to the
  class that was asked for.

The classifier weights (``imaging/weights/mnist_classifier.safetensors`` + ``.json``) are produced
by ``python -m imaging.train_classifier`` on the train split only; the JSON records its held-out
accuracy.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from .backbones import DigitClassifier

__all__ = ["CLASSIFIER_WEIGHTS", "load_classifier", "classifier_info", "classifier_features",
           "frechet_distance", "precision_recall", "class_accuracy", "image_metrics"]

CLASSIFIER_WEIGHTS = Path(__file__).resolve().parent / "weights" / "mnist_classifier.safetensors"


def classifier_info(path: str | Path = CLASSIFIER_WEIGHTS) -> dict:
    """The JSON report written beside the classifier weights (config, accuracies, split)."""
    p = Path(path).with_suffix(".json")
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: run `python -m imaging.train_classifier`")
    return json.loads(p.read_text())


def load_classifier(path: str | Path = CLASSIFIER_WEIGHTS, device=None) -> DigitClassifier:
    """The trained metric classifier (eval mode). Cached per path."""
    m = _load_cached(str(Path(path).resolve()))
    return m.to(device) if device is not None else m


@lru_cache(maxsize=4)
def _load_cached(path: str) -> DigitClassifier:
    from safetensors.torch import load_file

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"classifier weights {p} not found: run `python -m imaging.train_classifier`")
    info = classifier_info(p)
    m = DigitClassifier(**info["config"])
    m.load_state_dict(load_file(str(p)))
    return m.eval().requires_grad_(False)


@torch.no_grad()
def classifier_features(images: Tensor, classifier: DigitClassifier | None = None,
                        batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """``(features [N, F], logits [N, K])`` of images ``[N, C, H, W]`` in [-1, 1] (float64
    features). Non-finite images raise ``ValueError``."""
    if not torch.is_tensor(images) or images.ndim != 4:
        raise ValueError(f"images must be a [N, C, H, W] tensor, got {getattr(images, 'shape', type(images))}")
    if images.shape[0] == 0:
        raise ValueError("no images to evaluate")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf")
    clf = classifier if classifier is not None else load_classifier()
    dev = next(clf.parameters()).device
    feats, logits = [], []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].to(dev, torch.float32).clamp(-1, 1)
        f = clf.features(x)
        feats.append(f.double().cpu())
        logits.append(clf.head(f).cpu())
    return torch.cat(feats), torch.cat(logits)


def _sqrtm_psd(a: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(feat_a: Tensor, feat_b: Tensor) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)`` between Gaussians fitted
    to ``feat_a [N, F]`` and ``feat_b [M, F]`` (float64; exact symmetric form, no complex sqrtm)."""
    a, b = feat_a.double(), feat_b.double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be [N, F] with the same F, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("need at least 2 samples per feature set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    r = _sqrtm_psd(s_a)
    m = r @ s_b @ r
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    d = (mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * tr_sqrt
    return float(d.clamp_min(0))


def _knn_radii(x: Tensor, k: int) -> Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # k+1: the 0 distance to itself comes first


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union
    of balls around its points with radius = distance to the k-th nearest neighbour. Precision =
    fraction of ``fake`` inside the real manifold; recall = fraction of ``real`` inside the fake
    manifold. ``real [N, F]``, ``fake [M, F]``."""
    real, fake = real.double(), fake.double()
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"need more than k={k} samples in each set")
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    d = torch.cdist(fake, real)  # [M, N]
    precision = (d <= r_real[None, :]).any(1).double().mean()
    recall = (d <= r_fake[:, None]).any(0).double().mean()
    return float(precision), float(recall)


def class_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of samples whose classifier argmax equals the requested class (``labels [N]``)."""
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} logits for {labels.shape[0]} labels")
    return float((logits.argmax(1) == labels.to(logits.device)).double().mean())


def image_metrics(images: Tensor, reference: Tensor, labels: Tensor | None = None, *, k: int = 3,
                  classifier: DigitClassifier | None = None) -> dict[str, float]:
    """All metrics of ``images [N, C, H, W]`` against held-out ``reference [M, C, H, W]``:
    ``fd`` (classifier-feature Fréchet distance, not Inception FID), ``precision``, ``recall`` and,
    when ``labels`` (the requested classes) are given, ``class_accuracy``."""
    fa, logits = classifier_features(images, classifier)
    fr, _ = classifier_features(reference, classifier)
    p, r = precision_recall(fr, fa, k=k)
    out = {"fd": frechet_distance(fa, fr), "precision": p, "recall": r}
    if labels is not None:
        lab = torch.as_tensor(labels)
        keep = lab < logits.shape[1]  # null-class (unconditional) samples have no asked class
        if keep.any():
            out["class_accuracy"] = class_accuracy(logits[keep], lab[keep])
    return out


def report_json(result: dict, path: str | Path | None = None) -> None:
    """Print a CLI's result dict as JSON and, if ``path`` is given, also write it there
    atomically (what the imaging research CLIs do with ``--json``)."""
    text = json.dumps(result, indent=1)
    print(text)
    if path:
        from shared.checkpoint import atomic_write_text

        atomic_write_text(path, text + "\n")
