"""Plug-and-play guidance with noise-interval expert classifiers (PPAP, Go et al. 2023,
"Towards Practical Plug-and-Play Diffusion Models").

An unconditional diffusion model (here: the class-conditional model with its null class) is
guided by classifiers on the noisy input ``x_t``; instead of one classifier for every noise level,
PPAP trains several small experts, each responsible for an interval of ``t``, and dispatches by
time with ``shared.guidance.experts_by_interval`` inside ``shared.guidance.classifier``.

* :func:`train_experts` — experts (:class:`~imaging.backbones.DigitClassifier` on ``x_t``) trained
  with ``shared.training.Trainer``: cross-entropy on labels, or PPAP's knowledge transfer from an
  off-the-shelf clean classifier (``teacher=``: KL to its soft predictions on ``x0``; no labels).
  ``init="teacher"`` starts every expert from the clean classifier's weights (PPAP's fine-tuning).
* :func:`guided_denoiser` / :func:`guided_sample` — classifier guidance by the experts.
* :func:`compare` — class accuracy of PPAP experts vs a single classifier for all steps vs CFG.

Command line::

    python -m imaging.ppap --model runs/x/model [--experts 4] [--steps 300] [--scale 4] [--n 100]
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["uniform_intervals", "train_experts", "expert_log_prob", "guided_denoiser", "guided_sample",
           "compare"]


def uniform_intervals(n: int) -> list[tuple[float, float]]:
    """``n`` equal intervals of ``[0, 1]`` in t."""
    if n < 1:
        raise ValueError(f"need at least one interval, got {n}")
    return [(i / n, (i + 1) / n) for i in range(n)]


def train_experts(model, images: Tensor, labels: Tensor | None = None, *,
                  intervals: Sequence[tuple[float, float]] = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)),
                  steps: int = 300, batch_size: int = 64, lr: float = 2e-3, teacher: torch.nn.Module | None = None,
                  init: str = "scratch", base: torch.nn.Module | None = None, seed: int = 0, progress: bool = False,
                  **classifier_kw) -> list:
    """Train one noise-aware expert per interval of ``t``.

    model: the :class:`~imaging.model.ImagingModel` whose process noises the inputs
        (``x_t = alpha x0 + sigma eps``, ``t`` uniform in the expert's interval). For a latent
        model the experts classify noisy latents (images are encoded first; ``input_size`` =
        latent size), so guidance acts on the variable the sampler integrates.
    images / labels: ``[N, C, H, W]`` in [-1, 1] and ``[N]`` class ids (labels may be None with
        a ``teacher``).
    teacher: off-the-shelf clean classifier; when given, the loss is
        ``KL(softmax(teacher(x0)) || softmax(expert(x_t)))`` (PPAP's data-free transfer) instead
        of cross-entropy on labels.
    init: ``"scratch"`` (seeded random init), ``"teacher"`` (copy the teacher's weights) or
        ``"base"`` (copy ``base``, e.g. a noise-aware classifier trained on all t: PPAP's
        "fine-tune a shared classifier per interval").
    steps: optimizer steps per expert (batch ``batch_size``).
    Returns ``[(t_lo, t_hi, expert)]`` with experts in eval mode, ready for
    :func:`guided_denoiser`.
    """
    from shared.config import TrainConfig
    from shared.training import Trainer

    from .backbones import DigitClassifier
    from .data import ImageSet

    latent = bool(getattr(model, "is_latent", False))
    if latent and teacher is not None:
        raise ValueError("a clean pixel-space teacher cannot supervise latent experts: train latent experts "
                         "on labels (teacher=None)")
    if labels is None and teacher is None:
        raise ValueError("train_experts needs labels or a teacher classifier")
    if init not in ("scratch", "teacher", "base"):
        raise ValueError(f"init must be 'scratch', 'teacher' or 'base', got {init!r}")
    if init == "teacher" and teacher is None:
        raise ValueError("init='teacher' needs teacher=")
    if init == "base" and base is None:
        raise ValueError("init='base' needs base=")
    for lo, hi in intervals:
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"intervals must satisfy 0 <= t_lo < t_hi <= 1, got {(lo, hi)}")
    if latent:  # experts classify the diffused variable: scaled posterior means of the autoencoder
        with torch.no_grad():
            images = torch.cat([model.encode(images[i:i + 500].to(model.device)).cpu()
                                for i in range(0, images.shape[0], 500)])
        classifier_kw.setdefault("input_size", int(images.shape[-1]))
    data = ImageSet(images, labels if labels is not None else torch.zeros(len(images), dtype=torch.long))
    proc, sp = model.process, model.space
    num_classes = classifier_kw.pop("num_classes", getattr(model, "num_classes", 0) or 10)
    if teacher is not None:
        teacher = teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    out = []
    for k, (lo, hi) in enumerate(intervals):
        torch.manual_seed(seed + k)
        if init in ("teacher", "base"):
            expert = copy.deepcopy(teacher if init == "teacher" else base)
            for p in expert.parameters():
                p.requires_grad_(True)
        else:
            expert = DigitClassifier(in_channels=images.shape[1], num_classes=num_classes, **classifier_kw)
        cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(20, steps // 5),
                          lr_schedule="cosine", ema_decay=0.0, seed=seed + k, device="cpu",
                          log_every=max(1, steps // 10))

        def loss_fn(m, batch, g, lo=lo, hi=hi):
            x0, y = batch
            t = lo + (hi - lo) * torch.rand(x0.shape[0], generator=g, device=g.device).to(x0)
            eps = sp.noise(x0, g)
            x_t = sp.bcast(proc.alpha(t), x0) * x0 + sp.bcast(proc.sigma(t), x0) * eps
            logits = m(x_t)
            if teacher is not None:
                with torch.no_grad():
                    target = F.softmax(teacher(x0), -1)
                return F.kl_div(F.log_softmax(logits, -1), target, reduction="none").sum(-1)
            return F.cross_entropy(logits, y, reduction="none")

        tr = Trainer(cfg, None, progress=progress)
        tr.fit(expert, loss_fn, data)
        out.append((float(lo), float(hi), tr.sampling_model.eval()))
    return out


def expert_log_prob(experts: Sequence[tuple[float, float, torch.nn.Module]], labels: Tensor):
    """``log_prob(x_t [B, *S], t [B]) -> [B]``: ``log p(labels | x_t)`` from the expert whose
    interval holds ``t`` (``shared.guidance.experts_by_interval``)."""
    from shared.guidance import experts_by_interval

    def make(clf):
        def f(x, t):
            if x.shape[0] != labels.shape[0]:
                raise ValueError("expert guidance needs one time per batch (as in shared.sample.sample); "
                                 f"got {x.shape[0]} of {labels.shape[0]} samples in one interval")
            return F.log_softmax(clf(x), -1).gather(1, labels.to(x.device)[:, None])[:, 0]
        return f

    return experts_by_interval([(lo, hi, make(clf)) for lo, hi, clf in experts])


def guided_denoiser(model, experts, labels: Tensor, scale: float):
    """The unconditional denoiser (null class) guided toward ``labels [B]`` by the experts
    (``shared.guidance.classifier``; ``scale`` multiplies ``grad log p(y | x_t)``)."""
    from shared.guidance import classifier

    base = model.conditional(model.labels(None, labels.shape[0]) if model.conditional_model else None)
    return classifier(base, expert_log_prob(experts, labels), scale, process=model.process, space=model.space)


def guided_sample(model, labels: Tensor, experts, *, scale: float = 4.0, solver=None, grid=None, steps: int = 20,
                  seeds: Sequence[int] | None = None, batch_size: int = 100, progress: bool = False) -> Tensor:
    """Samples ``[B, C, H, W]`` of the classes ``labels [B]`` by expert classifier guidance
    (DDIM on a uniform grid unless ``solver`` / ``grid`` are given); one seed per sample."""
    from shared import grid as grids
    from shared import solvers as S
    from shared.sample import prior, sample

    from .model import per_sample_generators

    labels = torch.as_tensor(labels, dtype=torch.long)
    solver = solver or S.make("ddim")
    grid = grid if grid is not None else grids.make("uniform", steps, process=model.process)
    gens = per_sample_generators(len(labels), seeds=seeds)
    out = []
    chunks = range(0, len(labels), batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="guided sampling", leave=False)
    for s in chunks:
        y = labels[s:s + batch_size]
        g = gens[s:s + batch_size]
        den = guided_denoiser(model, experts, y, scale)
        x_T = prior((len(y), *model.data_shape), process=model.process, t=float(grid[0]), space=model.space,
                    generator=g)
        with torch.no_grad():
            out.append(model.decode(sample(den, x_T, grid, solver, generator=g)))
    return torch.cat(out)


def compare(model, train_images: Tensor, train_labels: Tensor, *, n: int = 100, n_experts: int = 4,
            steps: int = 300, scale: float = 4.0, cfg_scale: float = 2.0, sample_steps: int = 20,
            init: str = "scratch", teacher=None, seed: int = 0, progress: bool = False) -> dict:
    """Class accuracy (by the metric classifier of :mod:`imaging.metrics`) of ``n`` class-balanced
    samples: PPAP (``n_experts`` interval experts, ``steps`` each), one classifier trained on all
    ``t`` with the same total budget (``n_experts * steps``), classifier-free guidance at
    ``cfg_scale``, and unguided unconditional samples. Same seeds for every method.

    ``init="base"``: PPAP's fine-tuning recipe at the same total budget: one classifier trained on
    all ``t`` for ``n_experts * steps / 2`` steps, then each expert fine-tuned from it on its
    interval for ``steps / 2`` steps."""
    from shared import grid as grids
    from shared import solvers as S

    from .metrics import load_classifier

    K = model.num_classes
    labels = torch.arange(n) % K
    seeds = list(range(seed, seed + n))
    if init == "base":
        half = max(1, steps // 2)
        base = train_experts(model, train_images, train_labels, intervals=[(0.0, 1.0)], steps=n_experts * half,
                             seed=seed + 200, progress=progress)[0][2]
        experts = train_experts(model, train_images, train_labels, intervals=uniform_intervals(n_experts),
                                steps=half, init="base", base=base, seed=seed, progress=progress)
        single = train_experts(model, train_images, train_labels, intervals=[(0.0, 1.0)], steps=n_experts * steps,
                               seed=seed + 100, progress=progress)
    else:
        experts = train_experts(model, train_images, train_labels, intervals=uniform_intervals(n_experts),
                                steps=steps, init=init, teacher=teacher, seed=seed, progress=progress)
        single = train_experts(model, train_images, train_labels, intervals=[(0.0, 1.0)], steps=n_experts * steps,
                               init=init, teacher=teacher, seed=seed + 100, progress=progress)
    clf = load_classifier()
    solver, grid = S.make("ddim"), grids.make("uniform", sample_steps, process=model.process)

    def acc(imgs):
        with torch.no_grad():
            return float((clf(imgs.clamp(-1, 1)).argmax(1) == labels).float().mean())

    res = {"ppap_cond_acc": acc(guided_sample(model, labels, experts, scale=scale, solver=solver, grid=grid,
                                              seeds=seeds, progress=progress)),
           "single_classifier_cond_acc": acc(guided_sample(model, labels, single, scale=scale, solver=solver,
                                                           grid=grid, seeds=seeds, progress=progress)),
           "cfg_cond_acc": acc(model.sample(labels, solver=solver, grid=grid, guidance_scale=cfg_scale, seeds=seeds)),
           "unguided_acc": acc(model.sample(None, n=n, solver=solver, grid=grid, seeds=seeds))}
    res.update(n=n, n_experts=n_experts, expert_steps=steps, guidance_scale=scale, cfg_scale=cfg_scale)
    return res


def main(argv=None) -> int:
    from shared.checkpoint import CheckpointError

    ap = argparse.ArgumentParser(description="PPAP: guide the unconditional model with noise-interval expert "
                                             "classifiers; compare with one classifier and with CFG.")
    ap.add_argument("--model", required=True, help="checkpoint directory written by imaging.train (<out>/model)")
    ap.add_argument("--experts", type=int, default=4, help="number of equal t-intervals / experts")
    ap.add_argument("--steps", type=int, default=300, help="training steps per expert")
    ap.add_argument("--scale", type=float, default=4.0, help="classifier guidance scale")
    ap.add_argument("--cfg-scale", type=float, default=2.0)
    ap.add_argument("--n", type=int, default=100, help="samples per method")
    ap.add_argument("--init", default="scratch", choices=["scratch", "teacher", "base"],
                    help="experts from scratch, from the clean CNN (teacher), or fine-tuned from one classifier "
                         "trained on all t for half the budget (base)")
    ap.add_argument("--distill", action="store_true", help="train experts by knowledge transfer from the shipped "
                                                           "clean classifier (no labels)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from .metrics import load_classifier
    from .task import ImagingTask

    try:
        task = ImagingTask()
        model, cfg = task.load(a.model)
        if not model.conditional_model:
            raise ValueError("the comparison with CFG needs a class-conditional model (null class = unconditional)")
        data = task.load_data(cfg)
        teacher = load_classifier() if (a.distill or a.init == "teacher") else None
        res = compare(model, data.train.images, None if a.distill else data.train.labels, n=a.n,
                      n_experts=a.experts, steps=a.steps, scale=a.scale, cfg_scale=a.cfg_scale, init=a.init,
                      teacher=teacher, seed=a.seed, progress=True)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .metrics import report_json

    report_json(res, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
