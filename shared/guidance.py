"""Guidance: denoiser -> denoiser transformers, and step hooks. Everything is opt-in.

Guided denoisers keep the signature ``(x [B, *S], t [B]) -> x0_hat``. A change of the score by
``g`` is a change of the denoiser by ``sigma^2 / alpha * g`` (Tweedie: ``alpha D = x + sigma^2
score``), which is how classifier and energy guidance enter. Intervals are in time ``t``: guidance
acts on samples with ``t_lo <= t <= t_hi`` (use ``process.t_of_edm_sigma`` to express an interval
in noise level, as in Kynkäänniemi et al. 2024).

Hooks have the signature ``hook(x_next, ctx: StepContext) -> x_next`` (see :mod:`shared.sample`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .sample import StepContext
from .solvers import Solver
from .spaces import Euclidean, Space

DenoiseFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "cfg", "self_conditioned", "classifier", "energy", "observation_mse", "observation_quantile",
    "experts_by_interval", "inpaint", "Resample", "RePaint", "clamp_x0", "dynamic_threshold",
    "project",
]


def _in_interval(t: Tensor, interval) -> Tensor:
    if interval is None:
        return torch.ones_like(t, dtype=torch.bool)
    lo, hi = interval
    return (t >= lo) & (t <= hi)


def _attrs(fn, src):
    for k in ("process", "space"):
        if hasattr(src, k):
            setattr(fn, k, getattr(src, k))
    return fn


def _proc_space(denoise, process, space):
    process = process or getattr(denoise, "process", None)
    if process is None:
        raise ValueError("pass process= (or a denoiser with a .process attribute)")
    return process, space or getattr(denoise, "space", None) or Euclidean()


def cfg(denoiser, cond: Any, uncond: Any, scale: float, *, interval=None, rescale: float = 0.0,
        space: Space | None = None, **kw) -> DenoiseFn:
    """Classifier-free guidance (Ho & Salimans 2022): ``D = D_u + scale (D_c - D_u)``; scale 0 is
    unconditional, 1 conditional (diffusers' ``guidance_scale``). Outside ``interval`` the
    conditional denoiser is used alone. ``rescale`` (phi, Lin et al. 2024, eq. 15-16) matches the
    per-sample std of the guided x0 to the conditional one and mixes by phi.
    Tensor conditions with the same shape are evaluated in one batched call."""
    sp = space or getattr(denoiser, "space", None) or Euclidean()

    def d(x: Tensor, t: Tensor) -> Tensor:
        active = _in_interval(t, interval)
        if not active.any() or scale == 1.0:
            return denoiser(x, t, cond, **kw)
        if torch.is_tensor(cond) and torch.is_tensor(uncond) and cond.shape == uncond.shape \
                and isinstance(sp, Euclidean):
            both = denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond]), **kw)
            dc, du = both.chunk(2)
        else:
            dc, du = denoiser(x, t, cond, **kw), denoiser(x, t, uncond, **kw)
        w = torch.where(active, torch.full_like(t, float(scale), dtype=torch.float64),
                        torch.ones_like(t, dtype=torch.float64))
        g = du + sp.bcast(w, x) * (dc - du)
        if rescale > 0:
            n = sp.dim(x).to(x.dtype)
            std_c = (sp.sum((dc - sp.bcast(sp.sum(dc) / n, x)) ** 2) / n).sqrt()
            std_g = (sp.sum((g - sp.bcast(sp.sum(g) / n, x)) ** 2) / n).sqrt()
            r = g * sp.bcast(std_c / std_g.clamp_min(1e-12), x)
            g = rescale * r + (1 - rescale) * g
        return g

    return _attrs(d, denoiser)


def self_conditioned(denoiser, cond: Any = None, **kw) -> DenoiseFn:
    """Sampling with a self-conditioned network (Chen et al. 2022, Analog Bits): each call feeds
    the previous call's x0_hat as ``self_cond=`` (zeros on the first). The memory lives in the
    returned closure, so make one per sampling call; solvers stay stateless."""
    prev: list[Tensor | None] = [None]

    def d(x: Tensor, t: Tensor) -> Tensor:
        sc = prev[0] if prev[0] is not None and prev[0].shape == x.shape else torch.zeros_like(x)
        out = denoiser(x, t, cond, self_cond=sc, **kw)
        prev[0] = out.detach()
        return out

    return _attrs(d, denoiser)


def classifier(denoise: DenoiseFn, log_prob: Callable[[Tensor, Tensor], Tensor], scale: float, *,
               interval=None, process=None, space: Space | None = None) -> DenoiseFn:
    """Classifier guidance (Dhariwal & Nichol 2021): score + ``scale * grad_x log p(y | x_t, t)``,
    i.e. ``D + scale sigma^2 / alpha * grad``. ``log_prob(x_t, t) -> [B]`` is a noise-aware
    classifier or predictor (any differentiable function of ``x_t``)."""
    process, sp = _proc_space(denoise, process, space)

    def d(x: Tensor, t: Tensor) -> Tensor:
        D = denoise(x, t)
        active = _in_interval(t, interval)
        if scale == 0 or not active.any():
            return D
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(log_prob(xg, t).sum(), xg)
        a, s = process.alpha(t), process.sigma(t)
        c = torch.where(active & (a > 0), scale * s * s / a.clamp_min(1e-300), torch.zeros_like(a))
        return D + sp.bcast(c, x) * g

    return _attrs(d, denoise)


def energy(denoise: DenoiseFn, energy_fn: Callable[[Tensor, Tensor, Tensor], Tensor], scale: float,
           *, interval=None, normalize: bool = False, weighting: str = "constant",
           obs_var: float = 0.0, data_var: float = 1.0, process=None,
           space: Space | None = None) -> DenoiseFn:
    """Energy / reconstruction guidance on x0_hat: the score is moved by
    ``-scale * w(t) * grad_{x_t} E(D(x_t), x_t, t)``, differentiating through the denoiser (DPS,
    Chung et al. 2023; universal guidance's forward term, Bansal et al. 2023; TSDiff observation
    self-guidance, Kollovieh et al. 2023). ``energy_fn -> [B]``.

    Args:
        normalize: divide the gradient by ``sqrt(E)`` per sample (DPS's step
            ``zeta / ||y - A(x0_hat)||``).
        weighting: ``"constant"`` (``w = 1``) or ``"pigdm"``: ``w = 1 / (2 (r_t^2 + obs_var))``
            with ``r_t^2 = data_var s^2 / (s^2 + a^2 data_var)`` the variance of ``x0`` given
            ``x_t`` for Gaussian data (PiGDM, Song et al. 2023). For a squared-error energy
            ``E = ||y - A x0_hat||^2`` and ``scale = 1`` this is the score of the Gaussian
            likelihood ``N(y; A x0_hat, r_t^2 + obs_var)``: exact for Gaussian data and a linear
            observation, and one scale then serves every noise level.
        obs_var, data_var: observation noise variance and data variance for ``"pigdm"``.
    """
    if weighting not in ("constant", "pigdm"):
        raise ValueError(f"weighting must be 'constant' or 'pigdm', got {weighting!r}")
    if weighting == "pigdm" and (obs_var < 0 or data_var <= 0):
        raise ValueError(f"pigdm needs obs_var >= 0 and data_var > 0, got {obs_var}, {data_var}")
    process, sp = _proc_space(denoise, process, space)

    def d(x: Tensor, t: Tensor) -> Tensor:
        active = _in_interval(t, interval)
        if scale == 0 or not active.any():
            return denoise(x, t)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            D = denoise(xg, t)
            E = energy_fn(D, xg, t)
            (g,) = torch.autograd.grad(E.sum(), xg)
        a, s = process.alpha(t), process.sigma(t)
        c = torch.where(active & (a > 0), scale * s * s / a.clamp_min(1e-300), torch.zeros_like(a))
        if weighting == "pigdm":
            r2 = data_var * s * s / (s * s + a * a * data_var)
            c = c / (2.0 * (r2 + obs_var)).clamp_min(1e-300)
        if normalize:
            c = c / E.detach().to(torch.float64).clamp_min(1e-12).sqrt()
        return D.detach() - sp.bcast(c, x) * g

    return _attrs(d, denoise)


def observation_mse(y: Tensor, mask: Tensor) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """Energy ``sum_observed (x0_hat - y)^2`` per sample (``mask`` True where observed)."""
    def e(x0: Tensor, x: Tensor, t: Tensor) -> Tensor:
        m = mask.to(x0.dtype).expand_as(x0)
        return ((x0 - y) ** 2 * m).reshape(x0.shape[0], -1).sum(-1)
    return e


def observation_quantile(y: Tensor, mask: Tensor, q: float | Sequence[float] = 0.5):
    """Energy: pinball (quantile) loss of x0_hat against observed ``y``, averaged over the levels
    ``q`` (TSDiff's quantile self-guidance)."""
    qs = [q] if isinstance(q, (int, float)) else list(q)

    def e(x0: Tensor, x: Tensor, t: Tensor) -> Tensor:
        m = mask.to(x0.dtype).expand_as(x0)
        r = y - x0
        tot = sum(torch.maximum(qq * r, (qq - 1) * r) for qq in qs) / len(qs)
        return (tot * m).reshape(x0.shape[0], -1).sum(-1)
    return e


def experts_by_interval(experts: Sequence[tuple[float, float, Callable]]) -> Callable:
    """Dispatch per sample by time to the first expert whose ``[t_lo, t_hi]`` contains ``t``
    (plug-and-play priors, PPAP, Go et al. 2023). Each expert is ``fn(x, t)`` returning ``[B]``
    (a log-probability, for :func:`classifier`) or an ``x``-shaped tensor (a denoiser)."""
    experts = list(experts)

    def f(x: Tensor, t: Tensor) -> Tensor:
        parts = []
        done = torch.zeros_like(t, dtype=torch.bool)
        for lo, hi, fn in experts:
            sel = (t >= lo) & (t <= hi) & ~done
            if not sel.any():
                continue
            if sel.all():
                return fn(x, t)
            parts.append((sel, fn(x[sel], t[sel])))
            done |= sel
        if not done.all():
            raise ValueError(f"no expert covers t = {t[~done][:3].tolist()}")
        dtype = parts[0][1].dtype
        for _, y in parts[1:]:
            dtype = torch.promote_types(dtype, y.dtype)
        out = torch.zeros((x.shape[0],) + parts[0][1].shape[1:], dtype=dtype, device=x.device)
        for sel, y in parts:
            out[sel] = y.to(dtype)
        return out

    return f


def _noised_known(known: Tensor, ctx: StepContext, t: Tensor) -> Tensor:
    sp, pr = ctx.space, ctx.process
    z = sp.noise(known, ctx.generator)
    return sp.bcast(pr.alpha(t), known) * known + sp.bcast(pr.sigma(t), known) * z


def inpaint(known: Tensor, mask: Tensor) -> Callable[[Tensor, StepContext], Tensor]:
    """Replacement hook: after every step, entries where ``mask`` is True are replaced by the
    known data noised to ``t_next`` with fresh noise (Song et al. 2021; SDEdit/RePaint's
    replacement). ``known, mask`` broadcast against ``x``."""
    def hook(x: Tensor, ctx: StepContext) -> Tensor:
        return torch.where(mask.to(x.device).expand_as(x), _noised_known(known, ctx, ctx.t_next), x)
    return hook


@dataclass(frozen=True)
class Resample(Solver):
    """Wrap a solver to repeat each step ``resample`` times, re-noising from ``t_next`` back to
    ``t`` in between with the forward transition ``q(x_t | x_t_next)``; with ``known``/``mask`` it
    replaces the known part after each inner step (RePaint, Lugmayr et al. 2022, jump length 1);
    without, it is universal guidance's self-recurrence (Bansal et al. 2023)."""

    inner: Solver = None  # type: ignore[assignment]
    resample: int = 10
    known: Tensor | None = None
    mask: Tensor | None = None
    name: str = "repaint"

    @property
    def nfe_per_step(self):  # type: ignore[override]
        return self.resample * self.inner.nfe_per_step

    @property
    def deterministic(self):  # type: ignore[override]
        return False

    def init_state(self, x):
        return self.inner.init_state(x)

    def step(self, denoise, x, t, t_next, state, *, process, space, generator=None):
        for r in range(self.resample):
            x_n, st = self.inner.step(denoise, x, t, t_next, state, process=process, space=space,
                                      generator=generator)
            if self.known is not None:
                ctx = StepContext(0, 1, t, t_next, None, process, space, generator)
                x_n = torch.where(self.mask.to(x.device).expand_as(x_n),
                                  _noised_known(self.known, ctx, t_next), x_n)
            if r == self.resample - 1:
                return x_n, st
            a, an = process.alpha(t), process.alpha(t_next)
            s, sn = process.sigma(t), process.sigma(t_next)
            ratio = a / an
            std = (s * s - ratio**2 * sn * sn).clamp_min(0).sqrt()
            x = space.bcast(ratio, x_n) * x_n + space.bcast(std, x_n) * space.noise(x_n, generator)
        raise AssertionError("unreachable")


def RePaint(solver: Solver, known: Tensor, mask: Tensor, resample: int = 10) -> Resample:
    """RePaint inpainting (Lugmayr et al. 2022) around any single-step solver."""
    return Resample(inner=solver, resample=resample, known=known, mask=mask, name="repaint")


def clamp_x0(denoise: DenoiseFn, lo: float = -1.0, hi: float = 1.0) -> DenoiseFn:
    """Clamp x0_hat to ``[lo, hi]`` (diffusers' ``clip_sample``), opt-in."""
    return _attrs(lambda x, t: denoise(x, t).clamp(lo, hi), denoise)


def dynamic_threshold(denoise: DenoiseFn, percentile: float = 0.995, max_value: float = 1.0,
                      space: Space | None = None) -> DenoiseFn:
    """Dynamic thresholding (Saharia et al. 2022): per sample
    ``s = clamp(quantile(|x0_hat|, p), 1, max_value)``; x0_hat is clamped to ``[-s, s]`` and
    divided by ``s``."""
    def d(x: Tensor, t: Tensor) -> Tensor:
        x0 = denoise(x, t)
        flat = x0.reshape(x0.shape[0], -1).abs().float()
        s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0, max=max(max_value, 1.0))
        s = s.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
        return torch.maximum(torch.minimum(x0, s), -s) / s
    return _attrs(d, denoise)


def project(space: Space) -> Callable[[Tensor, StepContext], Tensor]:
    """Hook projecting every step's result onto ``space`` (e.g. zero centre of mass)."""
    return lambda x, ctx: space.project(x)
