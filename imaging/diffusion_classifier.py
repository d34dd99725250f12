"""Classification with a trained class-conditional image diffusion model.

* :func:`classify` — the Diffusion Classifier (Li et al. 2023, "Your Diffusion Model is Secretly a
  Zero-Shot Classifier"): pick the class whose conditional denoising error (an ELBO estimate) is
  smallest, with the SAME times and noise for every class (``shared.likelihood.condition_scores``)
  and the paper's adaptive evaluation: score all candidates with a few trials, keep the best
  ``k``, add trials, keep fewer, ... (``schedule=((n_trials, keep), ...)``).
* :func:`diffusion_features` / :func:`linear_probe` — the "diffusion features" route (DDAE, Xiang
  et al. 2023; Mukhopadhyay et al. 2023): globally pooled UNet activations of a noised image at a
  chosen noise level, then a linear (softmax-regression) probe.

Command line::

    python -m imaging.diffusion_classifier --model runs/x/model [--n 200] [--schedule 10:3,40:1]
    python -m imaging.diffusion_classifier --model runs/x/model --probe [--probe-t 0.1]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DiffusionClassification", "classify", "trial_times", "parse_schedule", "diffusion_features",
           "linear_probe", "fit_linear_probe", "unet_of"]

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass
class DiffusionClassification:
    """Result of :func:`classify`.

    pred: ``[B]`` predicted class ids; scores: ``[B, C]`` mean score (``-`` mean squared eps error)
    of every candidate over the trials it received (pruned candidates got fewer trials);
    nfe: ``[B]`` denoiser evaluations per image; trials: ``[B, C]`` trials each candidate got;
    classes: ``[C]`` the candidate class ids (column order of ``scores``)."""

    pred: Tensor
    scores: Tensor
    nfe: Tensor
    trials: Tensor
    classes: Tensor

    def accuracy(self, labels: Tensor) -> float:
        """Fraction of ``pred == labels``."""
        return float((self.pred.cpu() == torch.as_tensor(labels).cpu()).float().mean())

    @property
    def nfe_per_image(self) -> float:
        return float(self.nfe.float().mean())


def parse_schedule(text: str) -> tuple[tuple[int, int], ...]:
    """``"10:3,40:1"`` -> ``((10, 3), (40, 1))``: rounds of ``n_trials:keep``."""
    try:
        out = tuple(tuple(int(v) for v in part.split(":")) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"schedule must look like '10:3,40:1' (trials:keep per round), got {text!r}") from None
    if not out or any(len(r) != 2 for r in out):
        raise ValueError(f"schedule must look like '10:3,40:1' (trials:keep per round), got {text!r}")
    return out  # type: ignore[return-value]


def trial_times(n: int, *, generator: torch.Generator | None = None, t_min: float = 1e-3,
                t_max: float = 1.0) -> Tensor:
    """``n`` times ``[n]`` (float64) in ``[t_min, t_max]`` from a randomly shifted golden-ratio
    sequence: every prefix is spread evenly over the interval, so the first (pruning) rounds of
    the adaptive evaluation already see all noise levels (the paper uses evenly spaced steps)."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    u0 = float(torch.rand((), generator=g, dtype=torch.float64))
    u = torch.remainder(u0 + GOLDEN * torch.arange(n, dtype=torch.float64), 1.0)
    return t_min + (t_max - t_min) * u


def _check_schedule(schedule, n_classes: int):
    sched = tuple((int(n), int(k)) for n, k in schedule)
    if not sched:
        raise ValueError("schedule needs at least one round (n_trials, keep)")
    prev = n_classes
    for n, k in sched:
        if n <= 0:
            raise ValueError(f"every round needs n_trials > 0, got {sched}")
        if not 1 <= k <= prev:
            raise ValueError(f"keep must be in 1..{prev} (candidates left) in schedule {sched}")
        prev = k
    if sched[-1][1] != 1:
        sched = sched[:-1] + ((sched[-1][0], 1),)
    return sched


@torch.no_grad()
def classify(model, images: Tensor, *, classes: Sequence[int] | None = None,
             schedule: Sequence[tuple[int, int]] = ((10, 3), (40, 1)), generator: torch.Generator | None = None,
             weighting: str = "eps", batch_size: int = 64, t_min: float = 1e-3, t_max: float = 1.0,
             progress: bool = False) -> DiffusionClassification:
    """Diffusion Classifier (Li et al. 2023, Alg. 1 with adaptive evaluation, Sec. 3.2).

    model: an :class:`~imaging.model.ImagingModel` (class-conditional), or any denoiser
        ``denoiser(x, t, cond) -> x0_hat`` with ``.process`` whose ``cond`` is class ids ``[B]``.
    images: ``[B, C, H, W]`` in [-1, 1] (encoded first for latent models).
    classes: candidate class ids (default: all real classes).
    schedule: rounds ``(n_trials, keep)``: each round adds ``n_trials`` (time, noise) draws to
        every remaining candidate, then keeps the ``keep`` best (the last round keeps 1).
        Times and noises are the same for every candidate (shared through
        ``shared.likelihood.condition_scores(t=, noise=)``); scores are means over all trials so far.
    Returns a :class:`DiffusionClassification`; NFE per image = sum over rounds of
    ``n_trials * candidates``.
    """
    from shared.likelihood import condition_scores
    from shared.spaces import randn

    denoiser = getattr(model, "denoiser", model)
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got {tuple(images.shape)}")
    if classes is None:
        K = getattr(model, "num_classes", 0)
        if not K:
            raise ValueError("pass classes= (the model does not say how many classes it has)")
        classes = list(range(K))
    cls = torch.as_tensor(list(classes), dtype=torch.long)
    if cls.numel() < 2:
        raise ValueError("need at least two candidate classes")
    sched = _check_schedule(schedule, cls.numel())
    encode = getattr(model, "encode", None)
    dev = next(denoiser.parameters()).device if isinstance(denoiser, torch.nn.Module) else images.device
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    total = sum(n for n, _ in sched)
    t_all = trial_times(total, generator=g, t_min=t_min, t_max=t_max)
    B, C = images.shape[0], cls.numel()
    preds, scores_all, nfes, trials_all = [], [], [], []
    chunks = range(0, B, batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="diffusion classifier", leave=False)
    for s in chunks:
        x = images[s:s + batch_size].to(dev)
        x0 = encode(x) if encode is not None else x
        b = x0.shape[0]
        # one noise draw per trial and image, shared by all candidate classes: [total, b, *S]
        noise = randn((total,) + tuple(x0.shape), generator=g, dtype=x0.dtype).to(dev)
        sums = torch.zeros(b, C, dtype=torch.float64)
        counts = torch.zeros(b, C, dtype=torch.long)
        alive = torch.arange(C).expand(b, C).clone()  # [b, k] column indices still in the race
        nfe = torch.zeros(b, dtype=torch.long)
        start = 0
        for n, keep in sched:
            t = t_all[start:start + n].to(dev)
            conds = [cls[alive[:, j]].to(dev) for j in range(alive.shape[1])]
            sc = condition_scores(denoiser, x0, conds, t=t, noise=noise[start:start + n], weighting=weighting)
            sc = sc.cpu() * n  # sums over this round's trials, [b, k]
            sums.scatter_add_(1, alive, sc)
            counts.scatter_add_(1, alive, torch.full_like(alive, n))
            nfe += n * alive.shape[1]
            mean = sums.gather(1, alive) / counts.gather(1, alive)
            top = mean.topk(keep, dim=1).indices
            alive = alive.gather(1, top)
            start += n
        mean = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, -math.inf))
        preds.append(cls[alive[:, 0]])
        scores_all.append(mean)
        nfes.append(nfe)
        trials_all.append(counts)
    return DiffusionClassification(torch.cat(preds), torch.cat(scores_all), torch.cat(nfes),
                                   torch.cat(trials_all), cls)


# ---------------------------------------------------------------------------- diffusion features


def unet_of(model) -> torch.nn.Module:
    """The diffusers ``UNet2DModel`` inside an :class:`~imaging.model.ImagingModel`."""
    den = getattr(model, "denoiser", model)
    net = getattr(den, "net", None)
    unet = getattr(net, "unet", None)
    if unet is None or not hasattr(unet, "mid_block"):
        raise ValueError("diffusion features need an ImagingModel built on a diffusers UNet2DModel")
    return unet


@torch.no_grad()
def diffusion_features(model, images: Tensor, *, t: float = 0.1, blocks: Sequence[str] = ("mid", "up0"),
                       generator: torch.Generator | None = None, batch_size: int = 128,
                       progress: bool = False) -> Tensor:
    """Pooled UNet activations ``[B, F]`` of noised images (DDAE, Xiang et al. 2023).

    Each image is noised to time ``t`` (``x_t = alpha x0 + sigma eps`` with noise from
    ``generator``), the denoiser is run with the null class (no label information), and the
    outputs of the named blocks (``"mid"`` = bottleneck, ``"upK"`` = K-th up block, ``"downK"``)
    are globally average-pooled and concatenated."""
    den = model.denoiser
    unet = unet_of(model)
    mods = []
    for name in blocks:
        if name == "mid":
            mods.append(unet.mid_block)
        elif name.startswith("up") and name[2:].isdigit() and int(name[2:]) < len(unet.up_blocks):
            mods.append(unet.up_blocks[int(name[2:])])
        elif name.startswith("down") and name[4:].isdigit() and int(name[4:]) < len(unet.down_blocks):
            mods.append(unet.down_blocks[int(name[4:])])
        else:
            raise ValueError(f"unknown block {name!r}: use mid, up0..up{len(unet.up_blocks) - 1}, "
                             f"down0..down{len(unet.down_blocks) - 1}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must be in [0, 1], got {t}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    store: list[Tensor] = []

    def hook(_m, _inp, out):
        h = out[0] if isinstance(out, tuple) else out
        store.append(h.float().mean(dim=(2, 3)))  # [B, C_block]

    handles = [m.register_forward_hook(hook) for m in mods]
    feats = []
    chunks = range(0, images.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"diffusion features t={t}", leave=False)
    try:
        for s in chunks:
            x0 = model.encode(images[s:s + batch_size].to(model.device))
            tt = torch.full((x0.shape[0],), float(t), device=x0.device)
            eps = torch.randn(x0.shape, generator=g).to(x0)
            sp = model.space
            x_t = sp.bcast(model.process.alpha(tt), x0) * x0 + sp.bcast(model.process.sigma(tt), x0) * eps
            store.clear()
            den(x_t, tt, model.labels(None, x0.shape[0]))
            feats.append(torch.cat(store, 1).cpu())
    finally:
        for h in handles:
            h.remove()
    return torch.cat(feats)


def fit_linear_probe(feats: Tensor, labels: Tensor, num_classes: int, *, weight_decay: float = 1e-3,
                     steps: int = 200) -> torch.nn.Module:
    """Softmax regression on standardised features ``[N, F]`` (full-batch L-BFGS). Returns a
    module ``feats -> logits`` that includes the standardisation."""
    mu, sd = feats.mean(0), feats.std(0).clamp_min(1e-6)
    lin = torch.nn.Linear(feats.shape[1], num_classes)
    z = (feats - mu) / sd
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(z), labels) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin
            self.register_buffer("mu", mu)
            self.register_buffer("sd", sd)

        def forward(self, f):
            return self.lin((f - self.mu) / self.sd)

    return Probe().eval()


def linear_probe(model, train_images: Tensor, train_labels: Tensor, test_images: Tensor, test_labels: Tensor,
                 *, t: float = 0.1, blocks: Sequence[str] = ("mid", "up0"), generator=None,
                 progress: bool = False) -> dict:
    """Linear-probe accuracy of :func:`diffusion_features` (train on ``train_*``, report on
    ``test_*``). Returns ``{"accuracy", "train_accuracy", "feature_dim", "t"}``."""
    ftr = diffusion_features(model, train_images, t=t, blocks=blocks, generator=generator, progress=progress)
    fte = diffusion_features(model, test_images, t=t, blocks=blocks, generator=generator, progress=progress)
    K = int(max(int(train_labels.max()), int(test_labels.max()))) + 1
    probe = fit_linear_probe(ftr, train_labels.long(), K)
    with torch.no_grad():
        acc = float((probe(fte).argmax(1) == test_labels).float().mean())
        tr_acc = float((probe(ftr).argmax(1) == train_labels).float().mean())
    return {"accuracy": acc, "train_accuracy": tr_acc, "feature_dim": int(ftr.shape[1]), "t": float(t)}


# ---------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    from shared.checkpoint import CheckpointError

    ap = argparse.ArgumentParser(description="Diffusion Classifier (Li et al. 2023) and diffusion-feature "
                                             "linear probe on the held-out test split of a trained imaging model.")
    ap.add_argument("--model", required=True, help="checkpoint directory written by imaging.train (<out>/model)")
    ap.add_argument("--n", type=int, default=200, help="test images to classify")
    ap.add_argument("--schedule", default="10:3,40:1", help="adaptive rounds trials:keep,... (last keep is 1)")
    ap.add_argument("--weighting", default="eps", choices=["eps", "elbo"])
    ap.add_argument("--probe", action="store_true", help="also run the diffusion-feature linear probe")
    ap.add_argument("--probe-t", type=float, default=0.1)
    ap.add_argument("--probe-train", type=int, default=2000, help="training images of the probe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the results here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from .task import ImagingTask

    try:
        sched = parse_schedule(a.schedule)
        task = ImagingTask()
        model, cfg = task.load(a.model)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not model.conditional_model:
        print("error: the diffusion classifier needs a class-conditional model", file=sys.stderr)
        return 2
    data = task.load_data(cfg)
    te = data.test
    n = min(a.n, len(te))
    res = classify(model, te.images[:n], schedule=sched, weighting=a.weighting,
                   generator=torch.Generator().manual_seed(a.seed), progress=True)
    out = {"diffusion_classifier_acc": res.accuracy(te.labels[:n]), "diffusion_classifier_nfe_per_image":
           res.nfe_per_image, "n_images": n, "schedule": a.schedule}
    if a.probe:
        tr = data.train
        m = min(a.probe_train, len(tr))
        pr = linear_probe(model, tr.images[:m], tr.labels[:m], te.images, te.labels, t=a.probe_t,
                          generator=torch.Generator().manual_seed(a.seed), progress=True)
        out["linear_probe_acc"] = pr["accuracy"]
    from .metrics import report_json

    report_json(out, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
