"""Inversion and editing with a trained image diffusion model, on ``shared.sample`` / ``shared.solvers``.

* :func:`ddim_invert`, :func:`reconstruct`, :func:`inversion_error` — DDIM inversion (Song et al.
  2021; Dhariwal & Nichol 2021, App. F) through ``shared.sample.invert`` and its reconstruction
  error as a function of the number of steps.
* :func:`sdedit` — SDEdit (Meng et al. 2022): noise an image to ``t0 = strength`` and denoise it
  with another condition / model.
* :func:`dpm_encode`, :func:`dpm_decode`, :func:`cycle_diffusion` — CycleDiffusion's DPM-Encoder
  (Wu & De la Torre 2023): a stochastic inversion that keeps the whole noise sequence
  ``(x_T, z_T, ..., z_1)`` of DDPM / DDIM(eta > 0) posterior samples, so that decoding the same
  latent with another model translates the image (decoding with the same model returns it).
* :func:`mixing_step`, :func:`fit_boundary`, :func:`boundary_edit` — BoundaryDiffusion (Zhu et al.
  2023): find the "mixing step" ``t_m`` of the DDIM-inverted latents, fit a linear boundary of a
  binary attribute in ``x_{t_m}``, edit by one step across it and denoise.

Denoisers are ``(x [B, C, H, W], t [B]) -> x0_hat`` with ``.process`` / ``.space`` (for an
:class:`~imaging.model.ImagingModel` use ``model.conditional(labels)``).

Command line::

    python -m imaging.editing invert  --model runs/x/model --steps 10,20,50
    python -m imaging.editing sdedit  --model runs/x/model --target 3 --strength 0.5 --out sdedit.png
    python -m imaging.editing cycle   --model runs/x/model --source-class 1 --target 7 --out cycle.png
    python -m imaging.editing boundary --model runs/x/model --classes 0,1 --out boundary.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from shared import grid as grids
from shared import solvers as S
from shared.sample import invert, sample

__all__ = ["ddim_invert", "reconstruct", "inversion_error", "sdedit", "DPMLatent", "dpm_encode", "dpm_decode",
           "cycle_diffusion", "mixing_step", "Boundary", "fit_boundary", "boundary_edit", "ks_to_normal"]

DenoiseFn = Callable[[Tensor, Tensor], Tensor]


def _grid(denoise, steps: int, name: str = "uniform", t_max: float = 1.0) -> Tensor:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if t_max != 1.0:
        if name not in ("uniform", "quadratic"):
            raise ValueError(f"a grid starting below t = 1 needs grid 'uniform' or 'quadratic', got {name!r}")
        return grids.make(name, steps, process=denoise.process, t_max=t_max)
    return grids.make(name, steps, process=denoise.process)


# ---------------------------------------------------------------------------- DDIM inversion


@torch.no_grad()
def ddim_invert(denoise: DenoiseFn, x0: Tensor, *, steps: int = 50, grid: str = "uniform",
                t_max: float = 1.0) -> Tensor:
    """DDIM inversion of ``x0 [B, *S]`` to ``x_{t_max}`` (``shared.sample.invert`` with DDIM on a
    ``steps``-interval grid; ``x0`` stands at the grid's smallest positive time)."""
    g = _grid(denoise, steps, grid, t_max)
    return invert(denoise, x0, g, S.make("ddim"))


@torch.no_grad()
def reconstruct(denoise: DenoiseFn, x0: Tensor, *, steps: int = 50, grid: str = "uniform",
                t_max: float = 1.0) -> tuple[Tensor, Tensor]:
    """Invert with DDIM then sample back with DDIM on the same grid down to t = 0.
    Returns ``(x_rec [B, *S], x_T [B, *S])``."""
    g = _grid(denoise, steps, grid, t_max)
    z = invert(denoise, x0, g, S.make("ddim"))
    return sample(denoise, z, g, S.make("ddim")), z


def inversion_error(denoise: DenoiseFn, x0: Tensor, steps: Sequence[int] = (5, 10, 20, 50), *,
                    grid: str = "uniform", progress: bool = False) -> dict[int, float]:
    """Mean squared reconstruction error ``{steps: mse}`` of :func:`reconstruct` (per pixel)."""
    out = {}
    it = steps
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(steps, desc="DDIM inversion", leave=False)
    for n in it:
        rec, _ = reconstruct(denoise, x0, steps=int(n), grid=grid)
        out[int(n)] = float(((rec - x0) ** 2).mean())
    return out


# ---------------------------------------------------------------------------- SDEdit


@torch.no_grad()
def sdedit(denoise: DenoiseFn, x0: Tensor, *, strength: float = 0.5, steps: int = 20, solver: str = "ddim",
           grid: str = "uniform", generator=None) -> Tensor:
    """SDEdit (Meng et al. 2022): ``x_{t0} = alpha x0 + sigma eps`` with ``t0 = strength``, then
    ``steps`` solver steps from ``t0`` to 0 with ``denoise`` (e.g. another class's conditional
    denoiser). ``strength`` 0 returns ``x0``; 1 ignores it."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    proc, sp = denoise.process, getattr(denoise, "space", None)
    from shared.spaces import Euclidean

    sp = sp or Euclidean()
    g = _grid(denoise, steps, grid, strength)
    t0 = g[0].to(x0.dtype).expand(x0.shape[0])
    x_t = sp.bcast(proc.alpha(t0), x0) * x0 + sp.bcast(proc.sigma(t0), x0) * sp.noise(x0, generator)
    return sample(denoise, x_t, g, S.make(solver), generator=generator)


# ---------------------------------------------------------------------------- CycleDiffusion


@dataclass
class DPMLatent:
    """The DPM-Encoder latent of a batch: ``x_T [B, *S]``, one noise ``z [B, *S]`` per stochastic
    step (None for deterministic steps, e.g. the last one) and the residual of deterministic
    steps (the last step's ``x0 - x0_hat``), with the grid and eta used."""

    x_T: Tensor
    noises: list
    residuals: list
    grid: Tensor
    eta: float


def _const(v: Tensor) -> DenoiseFn:
    return lambda x, t: v


def _fill(value: float) -> Callable:
    return lambda shape, dtype, device: torch.full(shape, value, dtype=dtype, device=device)


@torch.no_grad()
def dpm_encode(denoise: DenoiseFn, x0: Tensor, *, steps: int = 50, eta: float = 1.0, grid: str = "uniform",
               generator=None, progress: bool = False) -> DPMLatent:
    """DPM-Encoder (Wu & De la Torre 2023, Sec. 3): draw ``x_T ~ q(x_T | x0)`` and, step by step,
    ``x_s ~ q(x_s | x_t, x0)`` (the DDIM(eta) posterior with the TRUE ``x0``); record the noise
    ``z`` that makes the model's own DDIM(eta) step land on that ``x_s``:
    ``x_s = mean_theta(x_t) + c z``. The step and its noise scale ``c`` come from the kernel's
    :class:`shared.solvers.DDIM` (probed with constant denoisers and constant noise), so no
    coefficient is re-derived here."""
    if eta <= 0:
        raise ValueError("the DPM-Encoder needs a stochastic step: eta > 0")
    from shared.spaces import Euclidean

    proc, sp = denoise.process, getattr(denoise, "space", None) or Euclidean()
    solver = S.make("ddim", eta=eta)
    g = _grid(denoise, steps, grid)
    ts = g.to(x0.dtype).to(x0.device)
    B = x0.shape[0]
    t0 = ts[0].expand(B)
    x = sp.bcast(proc.alpha(t0), x0) * x0 + sp.bcast(proc.sigma(t0), x0) * sp.noise(x0, generator)
    x_T = x.clone()
    noises, residuals = [], []
    it = range(len(ts) - 1)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="DPM-Encoder", leave=False)
    kw = dict(process=proc, space=sp)
    for i in it:
        t, tn = ts[i].expand(B), ts[i + 1].expand(B)
        D = denoise(x, t)
        x_true, _ = solver.step(_const(x0), x, t, tn, (), generator=generator, **kw)
        mean, _ = solver.step(_const(D), x, t, tn, (), generator=_fill(0.0), **kw)
        one, _ = solver.step(_const(D), x, t, tn, (), generator=_fill(1.0), **kw)
        c = one - mean  # c * 1 elementwise: the noise scale of this step
        if bool((c.abs() > 0).all()):
            noises.append((x_true - mean) / c)
            residuals.append(None)
        else:
            noises.append(None)
            residuals.append(x_true - mean)
        x = x_true
    return DPMLatent(x_T, noises, residuals, g, float(eta))


@torch.no_grad()
def dpm_decode(denoise: DenoiseFn, latent: DPMLatent) -> Tensor:
    """Decode a :class:`DPMLatent` with ``denoise`` through ``shared.sample.sample`` (DDIM(eta)
    with the recorded noises fed in order, residuals added by a step hook). With the encoding
    model this returns the encoded images (up to float rounding)."""
    zs = [z for z in latent.noises if z is not None]
    pos = {"i": 0}

    def noise_fn(shape, dtype, device):
        z = zs[pos["i"]]
        pos["i"] += 1
        if tuple(z.shape) != tuple(shape):
            raise ValueError(f"latent noise has shape {tuple(z.shape)}, the step asks for {tuple(shape)}")
        return z.to(dtype=dtype, device=device)

    def hook(x, ctx):
        r = latent.residuals[ctx.i]
        return x if r is None else x + r

    return sample(denoise, latent.x_T, latent.grid, S.make("ddim", eta=latent.eta), hooks=(hook,),
                  generator=noise_fn)


def cycle_diffusion(source: DenoiseFn, target: DenoiseFn, x0: Tensor, *, steps: int = 50, eta: float = 1.0,
                    generator=None, progress: bool = False) -> Tensor:
    """CycleDiffusion: DPM-Encode ``x0`` with the ``source`` denoiser, decode with ``target``
    (another model, or the same model with another condition). Returns ``[B, *S]``."""
    lat = dpm_encode(source, x0, steps=steps, eta=eta, generator=generator, progress=progress)
    return dpm_decode(target, lat)


# ---------------------------------------------------------------------------- BoundaryDiffusion


def ks_to_normal(x: Tensor, std: float = 1.0) -> float:
    """Kolmogorov-Smirnov distance between the empirical distribution of all entries of ``x``
    and ``N(0, std^2)``."""
    v = (x.detach().flatten().double() / std).sort().values
    n = v.numel()
    cdf = 0.5 * (1 + torch.erf(v / math.sqrt(2)))
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


@torch.no_grad()
def mixing_step(denoise: DenoiseFn, x0: Tensor, *, steps: int = 20, tol: float = 0.02,
                progress: bool = False) -> tuple[float, dict[float, float]]:
    """The mixing step ``t_m`` of BoundaryDiffusion: the smallest time on a ``steps``-interval
    uniform grid at which the DDIM-inverted latents of ``x0`` are as Gaussian as at t = 1: the
    Kolmogorov-Smirnov distance of their entries to ``N(0, prior_std^2)`` is within ``tol`` of
    its value at the end of the inversion (a relative threshold, so the finite-sample floor of
    the KS distance cancels). This is our operational reading of the paper's criterion (the
    latents have "mixed" into the prior). Returns ``(t_m, {t: ks})``."""
    from shared.spaces import Euclidean

    proc, sp = denoise.process, getattr(denoise, "space", None) or Euclidean()
    std = float(proc.prior_std())
    g = _grid(denoise, steps)
    ks = {}
    x = x0
    solver = S.make("ddim")
    pts = g.flip(0)  # increasing: 0, t_1, ..., 1; x0 stands at t_1 (as in shared.sample.invert)
    it = range(1, len(pts) - 1)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="mixing step", leave=False)
    B = x0.shape[0]
    for j in it:
        t, tn = pts[j].to(x.dtype).expand(B), pts[j + 1].to(x.dtype).expand(B)
        x, _ = solver.step(denoise, x, t, tn, (), process=proc, space=sp)
        ks[float(pts[j + 1])] = ks_to_normal(x, std)
    floor = ks[max(ks)]
    t_m = min(t for t, v in ks.items() if v <= floor + tol)
    return t_m, ks


@dataclass
class Boundary:
    """A linear boundary ``w . x + b = 0`` in the noisy latent at time ``t`` (``w`` unit norm,
    flattened ``[D]``); ``accuracy``: its training accuracy; ``pos_mean`` / ``neg_mean``: mean
    signed distance of the training latents with / without the attribute."""

    w: Tensor
    b: float
    t: float
    accuracy: float
    pos_mean: float = 1.0
    neg_mean: float = -1.0

    def distance(self, x: Tensor) -> Tensor:
        """Signed distance ``[B]`` of latents ``x [B, *S]`` (positive side = attribute True)."""
        return x.flatten(1).double() @ self.w.double() + self.b


def fit_boundary(latents: Tensor, attribute: Tensor, t: float, *, weight_decay: float = 1e-3,
                 steps: int = 200) -> Boundary:
    """Linear boundary of a binary ``attribute [N]`` (bool) in ``latents [N, *S]`` by L2-regularised
    logistic regression (full-batch L-BFGS); BoundaryDiffusion uses a linear SVM, same idea."""
    a = torch.as_tensor(attribute).bool()
    if a.all() or (~a).all():
        raise ValueError("the attribute must have both values among the latents")
    X = latents.detach().flatten(1).double()
    y = a.double()
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), float(b.detach())
    n = w.norm().clamp_min(1e-30)
    dist = (X @ w + b) / n
    acc = float(((dist > 0) == a).double().mean())
    return Boundary(w / n, b / float(n), float(t), acc, float(dist[a].mean()), float(dist[~a].mean()))


@torch.no_grad()
def boundary_edit(denoise: DenoiseFn, x0: Tensor, boundary: Boundary, *, to: bool = True,
                  distance: float | None = None, steps: int = 20) -> Tensor:
    """BoundaryDiffusion edit: DDIM-invert ``x0`` to ``boundary.t``, move every latent in one step
    along the boundary normal to signed distance ``+distance`` (``to=True``) or ``-distance``
    (default: the mean distance of the training latents on that side), then DDIM-denoise to
    t = 0. Returns edited images ``[B, *S]``."""
    g = _grid(denoise, steps, "uniform", boundary.t)
    z = invert(denoise, x0, g, S.make("ddim"))
    d = boundary.distance(z)
    if distance is None:
        target = boundary.pos_mean if to else boundary.neg_mean
    else:
        target = abs(distance) if to else -abs(distance)
    shift = (target - d).to(z.dtype)
    z = (z.flatten(1) + shift[:, None] * boundary.w.to(z)[None]).reshape(x0.shape)  # [B, D] -> [B, *S]
    return sample(denoise, z, g, S.make("ddim"))


# ---------------------------------------------------------------------------- command line


def _load(path):
    from .task import ImagingTask

    task = ImagingTask()
    model, cfg = task.load(path)
    return task, model, cfg


def _pick(data, classes: Sequence[int], n: int) -> tuple[Tensor, Tensor]:
    te = data.test
    sel = torch.isin(te.labels, torch.as_tensor(list(classes)))
    idx = sel.nonzero().flatten()[:n]
    if idx.numel() == 0:
        raise ValueError(f"no test images of classes {list(classes)}")
    return te.images[idx], te.labels[idx]


def main(argv=None) -> int:
    from shared.checkpoint import CheckpointError

    ap = argparse.ArgumentParser(description="Inversion and editing with a trained imaging model: DDIM inversion "
                                             "error, SDEdit, CycleDiffusion, BoundaryDiffusion.")
    ap.add_argument("tool", choices=["invert", "sdedit", "cycle", "boundary"])
    ap.add_argument("--model", required=True, help="checkpoint directory written by imaging.train (<out>/model)")
    ap.add_argument("--n", type=int, default=16, help="test images to edit")
    ap.add_argument("--steps", default="50", help="solver steps (invert: comma list, e.g. 10,20,50)")
    ap.add_argument("--source-class", type=int, default=1, help="sdedit/cycle: class of the input images")
    ap.add_argument("--target", type=int, default=7, help="sdedit/cycle: class to translate to")
    ap.add_argument("--strength", type=float, default=0.5, help="sdedit: t0")
    ap.add_argument("--eta", type=float, default=1.0, help="cycle: DDIM eta of the DPM-Encoder")
    ap.add_argument("--classes", default="0,1", help="boundary: negative,positive classes of the attribute")
    ap.add_argument("--distance", type=float, default=None,
                    help="boundary: distance after the edit (default: mean distance of the target side)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="PNG of inputs (top row) and edits (bottom row)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        task, model, cfg = _load(a.model)
        data = task.load_data(cfg)
        steps = [int(s) for s in a.steps.split(",")]
        if model.is_latent:
            raise ValueError("the editing tools work on pixel models (latent models: encode first via the API)")
        gen = torch.Generator().manual_seed(a.seed)
        null = model.labels(None, a.n) if model.conditional_model else None
        report: dict = {}
        if a.tool == "invert":
            x, _ = _pick(data, range(max(model.num_classes, 1)), a.n)
            report["ddim_inversion_mse"] = inversion_error(model.conditional(model.labels(None, len(x))), x, steps,
                                                           progress=True)
            edited = reconstruct(model.conditional(model.labels(None, len(x))), x, steps=steps[-1])[0]
        elif a.tool in ("sdedit", "cycle"):
            x, _ = _pick(data, [a.source_class], a.n)
            tgt = model.conditional(model.labels(a.target, len(x)))
            if a.tool == "sdedit":
                edited = sdedit(tgt, x, strength=a.strength, steps=steps[-1], generator=gen)
            else:
                src = model.conditional(model.labels(a.source_class, len(x)))
                edited = cycle_diffusion(src, tgt, x, steps=steps[-1], eta=a.eta, generator=gen, progress=True)
        else:
            neg, pos = (int(c) for c in a.classes.split(","))
            x, y = _pick(data, [neg, pos], 4 * a.n)
            den = model.conditional(model.labels(None, len(x)))
            t_m, ks = mixing_step(den, x, steps=steps[-1], progress=True)
            z = ddim_invert(den, x, steps=steps[-1], t_max=t_m)
            bd = fit_boundary(z, y == pos, t_m)
            src = x[y == neg][:a.n]
            edited = boundary_edit(model.conditional(model.labels(None, len(src))), src, bd, to=True,
                                   distance=a.distance, steps=steps[-1])
            x = src
            report.update(mixing_t=t_m, boundary_train_acc=bd.accuracy)
        del null
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .metrics import load_classifier

    clf = load_classifier()
    with torch.no_grad():
        report["edited_pred"] = clf(edited.clamp(-1, 1)).argmax(1).tolist()
    print(json.dumps(report, indent=1))
    if a.out:
        from .data import save_grid

        save_grid(torch.cat([x, edited.clamp(-1, 1)]), a.out, nrow=len(x))
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
