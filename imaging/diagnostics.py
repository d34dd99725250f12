"""Diagnostics of a trained image diffusion model, on ``shared.diagnostics``.

* :func:`conservativity` — how far the learned field is from a gradient field across noise
  levels ("Are We Really Learning the Score Function?", 2025): Jacobian asymmetry
  ``||J - J^T|| / 2||J||`` and normalised loop integrals of the model's noise prediction
  ``eps_hat(x_t, t) = (x_t - alpha D) / sigma`` (= ``-sigma * score``) at noised test images.
* :func:`generalization_curve` — memorisation -> generalisation (Kadkhodaie et al. 2023,
  "Generalization in diffusion models arises from geometry-adaptive harmonic representations"):
  for each training-set size ``N`` train two unconditional models on disjoint sets of ``N``
  images, sample both from the same noise with a deterministic solver and measure how similar the
  samples are (``shared.diagnostics.model_agreement``); :func:`plot_curve` draws it.

Command line::

    python -m imaging.diagnostics conservativity --model runs/x/model [--n 8] [--t 0.1,0.5,0.9]
    python -m imaging.diagnostics generalization --preset tiny --sizes 8,64,512 --steps 300 --out curve.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["eps_field", "forward_ad_safe", "conservativity", "split_disjoint", "train_unconditional",
           "generalization_curve", "plot_curve"]


class _DoubleBackJVP(torch.autograd.Function):
    """``fn(x)`` whose forward-mode derivative is computed by the double-backward trick
    (``J v = d/du <J^T u, v>``), for networks whose ops lack forward-mode formulas (diffusers'
    GroupNorm on non-contiguous tangents, CPU flash attention)."""

    @staticmethod
    def forward(x, fn):
        return fn(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.x, ctx.fn = inputs

    @staticmethod
    def jvp(ctx, v, _):
        x = ctx.x.detach()
        out, vjp_fn = torch.func.vjp(ctx.fn, x)
        _, vjp2 = torch.func.vjp(lambda u: vjp_fn(u)[0], torch.zeros_like(out))
        return vjp2(v)[0]


def forward_ad_safe(field):
    """Wrap ``field(x, t)`` so ``torch.func.jvp`` (used by ``shared.diagnostics``) works on any
    network that supports double backward (see :class:`_DoubleBackJVP`)."""
    def f(x, t):
        return _DoubleBackJVP.apply(x, lambda z: field(z, t))
    return f


@contextlib.contextmanager
def _math_attention():
    """Scaled-dot-product attention through its composite (math) kernel: differentiable twice."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - old torch
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


def eps_field(denoise):
    """``(x_t, t) -> eps_hat = (x_t - alpha(t) D(x_t, t)) / sigma(t)`` for a denoiser with
    ``.process`` / ``.space`` (a conservative model has a symmetric Jacobian of this field)."""
    proc, sp = denoise.process, denoise.space

    def f(x, t):
        return (x - sp.bcast(proc.alpha(t), x) * denoise(x, t)) / sp.bcast(proc.sigma(t), x)

    f.process, f.space = proc, sp
    return f


def conservativity(field_or_model, images: Tensor, ts: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9), *,
                   n_probes: int = 4, loop_points: int = 16, loop_radius: float = 0.5,
                   generator: torch.Generator | None = None, progress: bool = False) -> dict:
    """Non-conservativeness of a field at noised images, per noise level.

    field_or_model: an :class:`~imaging.model.ImagingModel` (its eps prediction with the null
        class is measured) or any field ``f(x [B, *S], t [B]) -> [B, *S]`` with ``.process``.
    images: clean images ``[B, C, H, W]`` (noised to each ``t`` with noise from ``generator``).
    Returns ``{t: {"asymmetry": mean Jacobian asymmetry (0 = gradient field, 1 = rotation),
    "loop": mean |normalised circulation| (0 = gradient field)}}``; ``loop_points`` 0 skips loops.
    The loop statistic of ``shared.diagnostics.loop_integral`` is normalised by the in-plane
    variation of the field, not by ``||J||``: when the Jacobian is close to a multiple of the
    identity in the random plane (common for eps fields), a tiny antisymmetric part already gives
    values near 1. The Jacobian asymmetry is the better-conditioned headline number.
    """
    from shared.diagnostics import jacobian_asymmetry, loop_integral

    if hasattr(field_or_model, "denoiser"):
        m = field_or_model
        field = eps_field(m.conditional(m.labels(None, images.shape[0]) if m.conditional_model else None))
        proc, sp = m.process, m.space
        images = m.encode(images.to(m.device))
    else:
        field = field_or_model
        proc = field.process
        from shared.spaces import Euclidean

        sp = getattr(field, "space", None) or Euclidean()
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    safe = forward_ad_safe(field)
    out = {}
    it = ts
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(ts, desc="conservativity", leave=False)
    B = images.shape[0]
    for t0 in it:
        t = torch.full((B,), float(t0), dtype=images.dtype, device=images.device)
        eps = torch.randn(images.shape, generator=g).to(images)
        x = sp.bcast(proc.alpha(t), images) * images + sp.bcast(proc.sigma(t), images) * eps
        with _math_attention():
            asym = jacobian_asymmetry(safe, x, t, n_probes=n_probes, generator=g).detach()
        row = {"asymmetry": float(asym.mean())}
        if loop_points > 0:
            loop = loop_integral(field, x, t, radius=loop_radius, n_points=loop_points, generator=g)
            row["loop"] = float(loop.abs().mean())
        out[float(t0)] = row
    return out


# ---------------------------------------------------------------------------- memorisation -> generalisation


def split_disjoint(images: Tensor, n: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two disjoint random subsets of ``n`` images each from ``images [N, ...]``."""
    if 2 * n > images.shape[0]:
        raise ValueError(f"need 2 x {n} images for two disjoint sets, have {images.shape[0]}")
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    return images[perm[:n]], images[perm[n:2 * n]]


def train_unconditional(cfg, images: Tensor, *, steps: int, seed: int = 0, progress: bool = False):
    """An unconditional :class:`~imaging.model.ImagingModel` from the config ``cfg`` (its UNet,
    process, objective; ``class_conditional=False``) trained for ``steps`` on ``images``."""
    from shared.registry import Splits
    from shared.training import Trainer

    from .data import ImageSet
    from .task import ImagingTask

    task = ImagingTask()
    c = replace(cfg, class_conditional=False, train=replace(cfg.train, steps=steps, seed=seed, device="cpu",
                                                            batch_size=min(cfg.train.batch_size, 64)))
    model = task.build(c)
    ds = ImageSet(images)
    model = task.train(c, model, Splits(train=ds, val=ds, test=ds), Trainer(c.train, None, progress=progress))
    return model.eval()


def generalization_curve(cfg, images: Tensor, sizes: Sequence[int], *, steps: int = 300, n_samples: int = 16,
                         sample_steps: int = 20, seed: int = 0, progress: bool = False) -> list[dict]:
    """For each ``N`` in ``sizes``: two unconditional models trained (``steps`` each, seeds
    differ) on disjoint sets of ``N`` images, sampled with DDIM from the same ``n_samples``
    starting noises. Rows ``{"n", "cosine", "normalized_sq_dist", "cosine_unpaired"}``
    (``cosine_unpaired``: same models, different noises, the chance level of the cosine)."""
    from shared import grid as grids
    from shared import solvers as S
    from shared.diagnostics import model_agreement
    from shared.sample import prior

    rows = []
    for n in sizes:
        a_img, b_img = split_disjoint(images, int(n), seed=seed)
        ma = train_unconditional(cfg, a_img, steps=steps, seed=seed, progress=progress)
        mb = train_unconditional(cfg, b_img, steps=steps, seed=seed + 1, progress=progress)
        grid = grids.make("uniform", sample_steps, process=ma.process)
        x_T = prior((n_samples, *ma.data_shape), process=ma.process, t=float(grid[0]), space=ma.space,
                    generator=torch.Generator().manual_seed(seed + 7))
        with torch.no_grad():
            r = model_agreement(ma.conditional(None), mb.conditional(None), x_T, grid, S.make("ddim"),
                                process=ma.process, space=ma.space)
        a, b = r["samples_a"].flatten(1), r["samples_b"].flatten(1).roll(1, 0)
        un = torch.nn.functional.cosine_similarity(a, b, dim=1).mean()
        rows.append({"n": int(n), "cosine": r["cosine"], "normalized_sq_dist": r["normalized_sq_dist"],
                     "cosine_unpaired": float(un)})
        if progress:
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def plot_curve(rows: Sequence[dict], path) -> None:
    """Plot cosine similarity of paired samples (and the unpaired chance level) against the
    training-set size on a log axis; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(n, [r["cosine"] for r in rows], "o-", label="same noise, disjoint training sets")
    ax.plot(n, [r["cosine_unpaired"] for r in rows], "s--", color="gray", label="different noise (chance)")
    ax.set_xscale("log")
    ax.set_xlabel("training images per model (N)")
    ax.set_ylabel("cosine similarity of samples")
    ax.set_title("memorisation -> generalisation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from shared.checkpoint import CheckpointError

    ap = argparse.ArgumentParser(description="Diagnostics of trained imaging models: conservativity of the learned "
                                             "field across noise levels; memorisation -> generalisation curve.")
    ap.add_argument("tool", choices=["conservativity", "generalization"])
    ap.add_argument("--model", help="conservativity: checkpoint directory written by imaging.train")
    ap.add_argument("--n", type=int, default=8, help="conservativity: test images")
    ap.add_argument("--t", default="0.05,0.1,0.25,0.5,0.75,0.9", help="conservativity: noise levels (times)")
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--preset", default="tiny", help="generalization: imaging config preset of the models")
    ap.add_argument("--sizes", default="8,64,512", help="generalization: training images per model")
    ap.add_argument("--steps", type=int, default=300, help="generalization: training steps per model")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="generalization: PNG of the curve")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from .task import ImagingTask

    task = ImagingTask()
    try:
        if a.tool == "conservativity":
            if not a.model:
                raise ValueError("conservativity needs --model")
            model, cfg = task.load(a.model)
            data = task.load_data(cfg)
            ts = [float(v) for v in a.t.split(",")]
            res: object = conservativity(model, data.test.images[:a.n], ts, n_probes=a.probes,
                                         generator=torch.Generator().manual_seed(a.seed), progress=True)
        else:
            cfg = task.config(a.preset)
            data = task.load_data(replace(cfg, data=replace(cfg.data, train_size=0)))
            sizes = [int(v) for v in a.sizes.split(",")]
            res = generalization_curve(cfg, data.train.images, sizes, steps=a.steps, n_samples=a.samples,
                                       seed=a.seed, progress=True)
            if a.out:
                plot_curve(res, a.out)
                print(f"wrote {a.out}")
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .metrics import report_json

    report_json(res, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
