"""Plug-and-play guidance with noise-interval expert classifiers (PPAP, Go et al. 2023,
"Towards Practical Plug-and-Play Diffusion Models").

An unconditional diffusion model (here: the class-conditional model with its null class) is
guided by classifiers on the noisy input ``x_t``; instead of one classifier for every noise level,
PPAP trains several small experts, each responsible for an interval of ``t``, and dispatches by
time with ``shared.guidance.experts_by_interval`` inside ``shared.guidance.classifier``.

* :func:`clean_classifier` — the stand-in for PPAP's off-the-shelf classifier: trained on the
  clean diffused variable (clean latents for a latent model).
* :func:`train_experts` — experts (:class:`~imaging.backbones.DigitClassifier` on ``x_t``) trained
  with ``shared.training.Trainer``: cross-entropy on labels, or PPAP's knowledge transfer from the
  clean classifier (``teacher=``: KL to its soft predictions on ``x0``; no labels).
  ``init="teacher"`` starts every expert from the clean classifier's weights (PPAP's fine-tuning).
* :func:`guided_denoiser` / :func:`guided_sample` — classifier guidance by the experts.
* :func:`select_scale` — one rule for every arm: the most accurate scale on validation seeds.
* :func:`noise_profile` — per noise level: accuracy, NLL and the size of the guidance step.
* :func:`compare` — class accuracy of PPAP experts vs a single classifier for all steps (same
  initialisation, loss and total budget; each at its selected scale) vs CFG.

What decides the comparison on the MNIST latent model (``benchmarks/results/imaging_ppap_*.json``,
n = 500 samples per arm, each arm at its selected scale): experts trained from a random init lose
(0.688 vs 0.814), mostly because the mid-noise expert is under-trained on a quarter of the budget;
started from the clean classifier (PPAP's recipe) they win (0.872 vs 0.812 distilled; 0.858 vs
0.780 on labels), while the single classifier gains nothing from that init. The experts are *not*
more accurate than the single classifier at any noise level (``noise_profile``), and the
highest-noise expert (t > 0.75) learns the uniform prediction and gives ~no guidance; their
advantage comes from the guidance they give below t = 0.75 (the single classifier silenced above
0.75 reaches 0.764 at its best scale, on validation seeds). Training the top expert on [0.5, 1]
(``widen=1``) restores guidance there: 0.890.

Command line::

    python -m imaging.ppap --model runs/x/model [--experts 4] [--steps 300] [--scales 2,4,8,16,32] [--n 100]
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from shared.loss import q_sample

__all__ = ["uniform_intervals", "train_experts", "encode_images", "noise_profile", "clean_classifier", "expert_log_prob",
           "guided_denoiser", "guided_sample", "guided_correct", "guided_accuracy", "select_scale", "compare"]


def uniform_intervals(n: int) -> list[tuple[float, float]]:
    """``n`` equal intervals of ``[0, 1]`` in t."""
    if n < 1:
        raise ValueError(f"need at least one interval, got {n}")
    return [(i / n, (i + 1) / n) for i in range(n)]


def train_experts(model, images: Tensor, labels: Tensor | None = None, *,
                  intervals: Sequence[tuple[float, float]] = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)),
                  steps: int = 300, batch_size: int = 64, lr: float = 2e-3, teacher: torch.nn.Module | None = None,
                  init: str = "scratch", base: torch.nn.Module | None = None, seed: int = 0, progress: bool = False,
                  encoded: bool = False, widen: float = 0.0, **classifier_kw) -> list:
    """Train one noise-aware expert per interval of ``t``.

    model: the :class:`~imaging.model.ImagingModel` whose process noises the inputs
        (``x_t = alpha x0 + sigma eps``, ``t`` uniform in the expert's interval). For a latent
        model the experts classify noisy latents (images are encoded first; ``input_size`` =
        latent size), so guidance acts on the variable the sampler integrates.
    images / labels: ``[N, C, H, W]`` in [-1, 1] and ``[N]`` class ids (labels may be None with
        a ``teacher``).
    teacher: off-the-shelf clean classifier of the diffused variable (images for a pixel model,
        clean latents for a latent model, e.g. from :func:`clean_classifier`); when given, the loss
        is ``KL(softmax(teacher(x0)) || softmax(expert(x_t)))`` (PPAP's knowledge transfer: soft
        labels of the clean classifier on the clean input) instead of cross-entropy on labels.
    init: ``"scratch"`` (seeded random init), ``"teacher"`` (copy the teacher's weights) or
        ``"base"`` (copy ``base``, e.g. a noise-aware classifier trained on all t: PPAP's
        "fine-tune a shared classifier per interval").
    steps: optimizer steps per expert (batch ``batch_size``).
    widen: the highest-noise expert (largest ``t_hi``) is *trained* on
        ``[max(0, t_lo - widen (t_hi - t_lo)), t_hi]`` (toward lower noise) but still dispatched on
        ``[t_lo, t_hi]``; 0 = PPAP's disjoint intervals. On the highest-noise interval there is
        almost no class signal, and a disjoint expert learns the uniform prediction, whose
        gradient (the guidance) is ~0.
    encoded: ``images`` are already in the diffused space (latents from :func:`encode_images`), so
        callers training several expert sets encode once.
    Returns ``[(t_lo, t_hi, expert)]`` with experts in eval mode, ready for
    :func:`guided_denoiser`.
    """
    from shared.config import TrainConfig
    from shared.training import Trainer

    from .backbones import DigitClassifier
    from .data import ImageSet

    latent = bool(getattr(model, "is_latent", False))
    if teacher is not None and getattr(teacher, "in_channels", None) not in (None, model.data_shape[0]):
        raise ValueError(f"the teacher reads {teacher.in_channels}-channel inputs but the diffused variable has "
                         f"{model.data_shape[0]} channels: a latent model needs a teacher on clean latents "
                         "(clean_classifier), not the pixel CNN")
    if labels is None and teacher is None:
        raise ValueError("train_experts needs labels or a teacher classifier")
    if init not in ("scratch", "teacher", "base"):
        raise ValueError(f"init must be 'scratch', 'teacher' or 'base', got {init!r}")
    if init == "teacher" and teacher is None:
        raise ValueError("init='teacher' needs teacher=")
    if init == "base" and base is None:
        raise ValueError("init='base' needs base=")
    if widen < 0:
        raise ValueError(f"widen must be >= 0, got {widen}")
    for lo, hi in intervals:
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"intervals must satisfy 0 <= t_lo < t_hi <= 1, got {(lo, hi)}")
    if latent:  # experts classify the diffused variable: scaled posterior means of the autoencoder
        if not encoded:
            images = encode_images(model, images)
        classifier_kw.setdefault("input_size", int(images.shape[-1]))
    data = ImageSet(images, labels if labels is not None else torch.zeros(len(images), dtype=torch.long))
    proc, sp = model.process, model.space
    num_classes = classifier_kw.pop("num_classes", getattr(model, "num_classes", 0) or 10)
    if teacher is not None:
        teacher = teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    out = []
    top = max(range(len(intervals)), key=lambda k: intervals[k][1])
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

        tlo = max(0.0, lo - widen * (hi - lo)) if k == top else lo

        def loss_fn(m, batch, g, lo=tlo, hi=hi):
            x0, y = batch
            t = lo + (hi - lo) * torch.rand(x0.shape[0], generator=g, device=g.device).to(x0)
            x_t, _ = q_sample(proc, x0, t, space=sp, generator=g)
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


def encode_images(model, images: Tensor, batch_size: int = 500) -> Tensor:
    """The diffused variable of ``images``: autoencoder latents (posterior means, scaled) for a
    latent model, the images themselves for a pixel model."""
    if not getattr(model, "is_latent", False):
        return images
    with torch.no_grad():
        return torch.cat([model.encode(images[i:i + batch_size].to(model.device)).cpu()
                          for i in range(0, images.shape[0], batch_size)])


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


def noise_profile(model, experts, images: Tensor, labels: Tensor, ts: Sequence[float] = (0.05, 0.15, 0.25, 0.35, 0.45,
                  0.55, 0.65, 0.75, 0.85, 0.95), *, seed: int = 0, encoded: bool = False) -> dict:
    """Per noise level ``t``: accuracy and NLL of the dispatched expert on held-out ``x_t`` (true
    labels), and ``shift`` = mean ``|| sigma^2 / alpha * grad_x log p(y | x_t) ||``: how far scale-1
    guidance moves the denoiser's ``x0`` estimate (for a calibrated classifier at high noise about
    the distance between the class mean and the data mean; ~0 for an expert that predicts the
    uniform distribution)."""
    proc, sp = model.process, model.space
    z = images if encoded else encode_images(model, images)
    lp_fn = expert_log_prob(experts, labels)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in ts:
        tt = torch.full((len(z),), float(t), dtype=z.dtype)
        a, s = proc.alpha(tt), proc.sigma(tt)
        x = q_sample(proc, z, tt, space=sp, generator=g)[0].requires_grad_(True)
        lp = lp_fn(x, tt)
        (gr,) = torch.autograd.grad(lp.sum(), x)
        with torch.no_grad():
            clf = next(c for lo, hi, c in experts if lo <= t <= hi)
            acc = float((clf(x).argmax(1) == labels).float().mean())
            shift = float((s * s / a * gr.flatten(1).norm(dim=1)).mean())
        out[float(t)] = {"acc": round(acc, 4), "nll": round(float(-lp.detach().mean()), 4), "shift": round(shift, 4)}
    return out


def clean_classifier(model, images: Tensor, labels: Tensor, *, steps: int = 1000, batch_size: int = 64,
                     lr: float = 2e-3, seed: int = 0, encoded: bool = False, progress: bool = False, **classifier_kw):
    """The stand-in for PPAP's off-the-shelf classifier: a classifier of the *clean* diffused
    variable (images, or latents of a latent model), trained on ``x_t`` with ``t`` in
    ``[0, 0.001]`` (``alpha ~ 1``). Experts and the single all-``t`` classifier are then
    fine-tuned from it (``init="clean"`` of :func:`compare`) and may distil its soft labels."""
    return train_experts(model, images, labels, intervals=[(0.0, 1e-3)], steps=steps, batch_size=batch_size, lr=lr,
                         seed=seed, encoded=encoded, progress=progress, **classifier_kw)[0][2]


def guided_correct(model, experts, labels: Tensor, scale: float, seeds: Sequence[int], *, solver=None, grid=None,
                   sample_steps: int = 20, clf=None) -> Tensor:
    """``[B]`` bool: whether the metric classifier (``clf``, default :func:`imaging.metrics.load_classifier`)
    reads each expert-guided sample of ``labels`` as its class (one seed per sample)."""
    from .metrics import load_classifier

    clf = clf or load_classifier()
    x = guided_sample(model, labels, experts, scale=scale, solver=solver, grid=grid, steps=sample_steps, seeds=seeds)
    with torch.no_grad():
        return clf(x.clamp(-1, 1)).argmax(1) == labels


def guided_accuracy(model, experts, labels: Tensor, scale: float, seeds: Sequence[int], **kw) -> float:
    """Fraction of :func:`guided_correct` samples."""
    return float(guided_correct(model, experts, labels, scale, seeds, **kw).float().mean())


def select_scale(model, experts, scales: Sequence[float], *, n: int = 200, seed: int = 10_000,
                 num_classes: int | None = None, **kw) -> tuple:
    """The guidance scale of ``scales`` with the highest class accuracy on ``n`` class-balanced
    *validation* samples (seeds ``seed .. seed + n - 1``, disjoint from the evaluation seeds of
    :func:`compare`); returns ``(best, {scale: accuracy})``. Ties go to the smaller scale.
    ``kw`` goes to :func:`guided_accuracy` (``clf``: any ``images -> logits``)."""
    K = num_classes or getattr(model, "num_classes", 0) or 10
    labels = torch.arange(n) % K
    accs = {float(sc): guided_accuracy(model, experts, labels, sc, list(range(seed, seed + n)), **kw) for sc in scales}
    best = max(accs, key=lambda sc: (accs[sc], -sc))
    return best, accs


def compare(model, train_images: Tensor, train_labels: Tensor | None, *, n: int = 100, n_experts: int = 4,
            steps: int = 300, scale: float = 4.0, scales: Sequence[float] | None = (2.0, 4.0, 8.0, 16.0, 32.0),
            select_n: int = 200, cfg_scale: float = 2.0, sample_steps: int = 20, init: str = "clean",
            distill: bool = True, clean_steps: int = 1000, intervals: Sequence[tuple[float, float]] | None = None,
            widen: float = 0.0, teacher=None, val_images: Tensor | None = None, val_labels: Tensor | None = None,
            seed: int = 0, progress: bool = False) -> dict:
    """Class accuracy (by the metric classifier of :mod:`imaging.metrics`) of ``n`` class-balanced
    samples: PPAP (``n_experts`` interval experts, ``steps`` each), one classifier trained on all
    ``t`` with the same total budget (``n_experts * steps``), classifier-free guidance at
    ``cfg_scale``, and unguided unconditional samples. Same seeds ``seed .. seed + n - 1`` for every
    method.

    Guidance scale: with ``scales`` (default), the same rule for both arms: each arm's scale is
    the most accurate of ``scales`` on ``select_n`` validation samples with other seeds
    (:func:`select_scale`); ``scales=None`` uses ``scale`` for both.

    ``init``:

    * ``"clean"`` (default, PPAP's recipe): an off-the-shelf classifier of the clean input is
      trained first (:func:`clean_classifier`, ``clean_steps``; or pass it as ``teacher``) and
      both arms start from its weights; with ``distill`` (default) they learn its soft labels on
      the clean input (PPAP's knowledge transfer, no labels), else the labels.
    * ``"scratch"``: seeded random init, labels (``distill`` ignored).
    * ``"base"``: one classifier trained on all ``t`` for ``n_experts * steps / 2`` steps, then
      each expert fine-tuned from it on its interval for ``steps / 2`` steps (same total budget).
    * ``"teacher"``: start from ``teacher`` (a clean classifier of the diffused variable) and
      distil it.

    ``intervals``: the experts' intervals of ``t`` (default ``uniform_intervals(n_experts)``);
    ``widen``: see :func:`train_experts` (highest-noise expert only; 0 = PPAP's disjoint intervals).

    Besides the accuracies: ``ppap_minus_single`` with its paired standard error (same seed and
    class per sample) and the counts of samples only one arm gets right; with ``val_images`` /
    ``val_labels`` (held out), ``noise_profile`` of both arms (:func:`noise_profile`).
    """
    from shared import grid as grids
    from shared import solvers as S

    from .metrics import load_classifier

    if init not in ("clean", "scratch", "base", "teacher"):
        raise ValueError(f"init must be 'clean', 'scratch', 'base' or 'teacher', got {init!r}")
    K = model.num_classes
    labels = torch.arange(n) % K
    seeds = list(range(seed, seed + n))
    intervals = list(intervals) if intervals is not None else uniform_intervals(n_experts)
    n_experts = len(intervals)
    z = encode_images(model, train_images)  # encode once for every classifier below
    kw = dict(encoded=True, progress=progress)
    extra = {"widen": widen} if widen else {}
    if init == "base":
        half = max(1, steps // 2)
        base = train_experts(model, z, train_labels, intervals=[(0.0, 1.0)], steps=n_experts * half,
                             seed=seed + 200, **kw)[0][2]
        experts = train_experts(model, z, train_labels, intervals=intervals, steps=half, init="base", base=base,
                                seed=seed, widen=widen, **kw)
        single = train_experts(model, z, train_labels, intervals=[(0.0, 1.0)], steps=n_experts * steps,
                               seed=seed + 100, **kw)
    elif init == "clean":
        if teacher is None:
            teacher = clean_classifier(model, z, train_labels, steps=clean_steps, seed=seed + 300, **kw)
            extra["clean_steps"] = clean_steps
        common = (dict(labels=None, teacher=teacher, init="teacher") if distill
                  else dict(labels=train_labels, init="base", base=teacher))
        experts = train_experts(model, z, intervals=intervals, steps=steps, seed=seed, widen=widen, **common, **kw)
        single = train_experts(model, z, intervals=[(0.0, 1.0)], steps=n_experts * steps, seed=seed + 100,
                               **common, **kw)
        extra["distill"] = distill
    else:
        experts = train_experts(model, z, train_labels, intervals=intervals, steps=steps, init=init,
                                teacher=teacher, seed=seed, widen=widen, **kw)
        single = train_experts(model, z, train_labels, intervals=[(0.0, 1.0)], steps=n_experts * steps,
                               init=init, teacher=teacher, seed=seed + 100, **kw)
    clf = load_classifier()
    solver, grid = S.make("ddim"), grids.make("uniform", sample_steps, process=model.process)
    skw = dict(solver=solver, grid=grid, clf=clf)
    if scales:
        s_ppap, acc_ppap = select_scale(model, experts, scales, n=select_n, seed=seed + 10_000, **skw)
        s_single, acc_single = select_scale(model, single, scales, n=select_n, seed=seed + 10_000, **skw)
        extra.update(scale_selection={"rule": f"most accurate of {list(map(float, scales))} on {select_n} "
                                              f"validation samples (seeds {seed + 10_000}..)",
                                      "ppap": acc_ppap, "single": acc_single})
    else:
        s_ppap = s_single = float(scale)

    def acc(imgs):
        with torch.no_grad():
            return float((clf(imgs.clamp(-1, 1)).argmax(1) == labels).float().mean())

    ok_ppap = guided_correct(model, experts, labels, s_ppap, seeds, **skw).float()
    ok_single = guided_correct(model, single, labels, s_single, seeds, **skw).float()
    d = ok_ppap - ok_single  # paired by seed and class
    extra.update(ppap_minus_single=float(d.mean()),
                 ppap_minus_single_se=float(d.std(unbiased=True) / n ** 0.5) if n > 1 else float("nan"),
                 ppap_only_correct=int((d > 0).sum()), single_only_correct=int((d < 0).sum()))
    if val_images is not None:
        zv = encode_images(model, val_images)
        extra["noise_profile"] = {"ppap": noise_profile(model, experts, zv, val_labels, encoded=True),
                                  "single": noise_profile(model, single, zv, val_labels, encoded=True)}
    res = {"ppap_cond_acc": float(ok_ppap.mean()),
           "single_classifier_cond_acc": float(ok_single.mean()),
           "cfg_cond_acc": acc(model.sample(labels, solver=solver, grid=grid, guidance_scale=cfg_scale, seeds=seeds)),
           "unguided_acc": acc(model.sample(None, n=n, solver=solver, grid=grid, seeds=seeds))}
    res.update(n=n, n_experts=n_experts, expert_steps=steps, single_steps=n_experts * steps,
               intervals=[[float(lo), float(hi)] for lo, hi in intervals], init=init,
               ppap_guidance_scale=s_ppap, single_guidance_scale=s_single, cfg_scale=cfg_scale,
               sample_steps=sample_steps, **extra)
    return res


def main(argv=None) -> int:
    from shared.checkpoint import CheckpointError

    ap = argparse.ArgumentParser(description="PPAP: guide the unconditional model with noise-interval expert "
                                             "classifiers; compare with one classifier and with CFG.")
    ap.add_argument("--model", required=True, help="checkpoint directory written by imaging.train (<out>/model)")
    ap.add_argument("--experts", type=int, default=4, help="number of equal t-intervals / experts")
    ap.add_argument("--steps", type=int, default=300, help="training steps per expert (the single classifier gets "
                                                              "experts x steps)")
    ap.add_argument("--scales", default="2,4,8,16,32",
                    help="comma-separated guidance scales; each arm uses the most accurate on --select-n validation "
                         "samples (other seeds); 'none' = use --scale for both")
    ap.add_argument("--scale", type=float, default=4.0, help="classifier guidance scale when --scales none")
    ap.add_argument("--select-n", type=int, default=200, help="validation samples per scale for the selection")
    ap.add_argument("--cfg-scale", type=float, default=2.0)
    ap.add_argument("--n", type=int, default=100, help="samples per method")
    ap.add_argument("--init", default="clean", choices=["clean", "scratch", "base", "teacher"],
                    help="clean (default, PPAP): both arms fine-tuned from a classifier of the clean input trained "
                         "first for --clean-steps; scratch: random init; base: experts fine-tuned from one all-t "
                         "classifier trained for half the budget; teacher: start from the shipped clean CNN and distil "
                         "it (pixel models only; that CNN is also the evaluator: optimistic)")
    ap.add_argument("--no-distill", action="store_true", help="with --init clean: train on labels instead of the "
                                                              "clean classifier's soft labels")
    ap.add_argument("--clean-steps", type=int, default=1000, help="training steps of the clean classifier (init clean)")
    ap.add_argument("--widen", type=float, default=0.0, help="train the highest-noise expert on its interval widened "
                                                             "toward lower noise by this many widths (0 = PPAP)")
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
        teacher = load_classifier() if a.init == "teacher" else None
        scales = None if a.scales.lower() == "none" else [float(v) for v in a.scales.split(",")]
        res = compare(model, data.train.images, data.train.labels, n=a.n, n_experts=a.experts, steps=a.steps,
                      scale=a.scale, scales=scales, select_n=a.select_n, cfg_scale=a.cfg_scale, init=a.init,
                      distill=not a.no_distill, clean_steps=a.clean_steps, widen=a.widen, teacher=teacher, seed=a.seed,
                      progress=True)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .metrics import report_json

    report_json(res, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
