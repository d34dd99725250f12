"""Diagnostics of learned fields and samplers.

* :func:`jacobian_asymmetry` — how far a denoiser / score field is from conservative: a field is
  a gradient iff its Jacobian is symmetric ("Are We Really Learning the Score Function?", 2025).
* :func:`loop_integral` — circulation of the score around small closed loops (0 for gradients).
* :func:`model_agreement` — similarity of samples from two models driven by the same noise
  (Kadkhodaie et al. 2023: models trained on disjoint data agree once they generalise).
* :func:`solver_error` — error of a solver/grid against a fine reference solve.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .sample import sample
from .solvers import Solver
from .spaces import Euclidean, Space, randn

__all__ = ["jacobian_asymmetry", "loop_integral", "model_agreement", "solver_error"]


def _jvp(fn: Callable[[Tensor], Tensor], x: Tensor, v: Tensor) -> Tensor:
    """``J v``: forward-mode AD, falling back to the double-backward trick (two reverse passes,
    attention on the math backend whose backward is differentiable) for modules that have no
    forward-mode rule (e.g. GroupNorm on non-contiguous input or fused CPU attention in
    diffusers UNets)."""
    try:
        return torch.func.jvp(fn, (x,), (v,))[1]
    except (RuntimeError, NotImplementedError):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            return torch.autograd.functional.jvp(fn, x, v)[1]


def jacobian_asymmetry(field: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor, *,
                       n_probes: int = 8, generator=None, exact: bool = False) -> Tensor:
    """``||J - J^T||_F / (2 ||J||_F)`` per sample ``[B]`` for ``J = d field(x, t) / dx``: 0 for a
    gradient field (symmetric Jacobian), 1 for a purely rotational one.

    ``exact=True`` forms the Jacobian (small dimensions). Otherwise unbiased Gaussian-probe
    estimates are used: ``E[(w^T J v - v^T J w)^2] = ||J - J^T||_F^2`` and
    ``E||J v||^2 = ||J||_F^2``, with ``n_probes`` pairs and two JVPs each."""
    x = x.detach()
    B = x.shape[0]
    fn = lambda y: field(y, t)  # noqa: E731
    if exact:
        with torch.enable_grad():
            y = x.reshape(B, -1).clone().requires_grad_(True)
            out = fn(y.reshape(x.shape)).reshape(B, -1)
            rows = [torch.autograd.grad(out[:, i].sum(), y, retain_graph=True)[0]
                    for i in range(out.shape[1])]
        J = torch.stack(rows, 1)  # [B, d_out, d_in]
        asym = (J - J.transpose(1, 2)).flatten(1).norm(dim=1)
        return (asym / (2 * J.flatten(1).norm(dim=1).clamp_min(1e-30))).to(torch.float64)
    num = torch.zeros(B, dtype=torch.float64, device=x.device)
    den = torch.zeros(B, dtype=torch.float64, device=x.device)
    for _ in range(n_probes):
        v = randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        w = randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        Jv, Jw = _jvp(fn, x, v), _jvp(fn, x, w)
        diff = (w * Jv).reshape(B, -1).sum(-1) - (v * Jw).reshape(B, -1).sum(-1)
        num += diff.to(torch.float64) ** 2
        den += 0.5 * ((Jv**2).reshape(B, -1).sum(-1) + (Jw**2).reshape(B, -1).sum(-1)).to(torch.float64)
    return (num.sqrt() / (2 * den.sqrt().clamp_min(1e-30)))


def loop_integral(field: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor, *,
                  radius: float = 0.1, n_points: int = 64, generator=None) -> Tensor:
    """Normalised circulation per sample ``[B]`` around a circle of ``radius`` in a random 2-plane
    through ``x``: ``oint f . dl / oint |(f - f(x)) . dl|`` (trapezoid rule on ``n_points``).
    Subtracting the field at the centre removes the part that integrates to zero anyway, so the
    ratio is 0 for a gradient field and +-1 for a rigid rotation in that plane."""
    B = x.shape[0]
    flat = x.reshape(B, -1)
    u = randn(flat.shape, generator=generator, dtype=x.dtype, device=x.device)
    w = randn(flat.shape, generator=generator, dtype=x.dtype, device=x.device)
    u = u / u.norm(dim=1, keepdim=True)
    w = w - (w * u).sum(1, keepdim=True) * u
    w = w / w.norm(dim=1, keepdim=True)
    circ = torch.zeros(B, dtype=torch.float64, device=x.device)
    absc = torch.zeros(B, dtype=torch.float64, device=x.device)
    dtheta = 2 * math.pi / n_points
    with torch.no_grad():
        f0 = field(x, t).reshape(B, -1)
        for k in range(n_points):
            th = k * dtheta
            p = flat + radius * (math.cos(th) * u + math.sin(th) * w)
            tangent = radius * (-math.sin(th) * u + math.cos(th) * w)
            f = field(p.reshape(x.shape), t).reshape(B, -1)
            circ += (f * tangent).sum(1).to(torch.float64) * dtheta
            absc += ((f - f0) * tangent).sum(1).abs().to(torch.float64) * dtheta
    return circ / absc.clamp_min(1e-30)


def model_agreement(denoise_a, denoise_b, x_T: Tensor, grid: Tensor, solver: Solver, *,
                    process=None, space: Space | None = None, generator_seed: int | None = None) -> dict:
    """Sample both models from the same ``x_T`` (and the same noise stream for stochastic
    solvers) and compare: mean cosine similarity and mean normalised squared distance
    ``||a - b||^2 / (||a||^2 + ||b||^2)`` over samples."""
    sp = space or getattr(denoise_a, "space", None) or Euclidean()

    def gen():
        return None if generator_seed is None else torch.Generator().manual_seed(generator_seed)

    a = sample(denoise_a, x_T, grid, solver, process=process, space=sp, generator=gen())
    b = sample(denoise_b, x_T, grid, solver, process=process, space=sp, generator=gen())
    dot = sp.sum(a * b).to(torch.float64)
    na, nb = sp.sum(a * a).to(torch.float64), sp.sum(b * b).to(torch.float64)
    cos = dot / (na.sqrt() * nb.sqrt()).clamp_min(1e-30)
    nsd = sp.sum((a - b) ** 2).to(torch.float64) / (na + nb).clamp_min(1e-30)
    return {"cosine": float(cos.mean()), "normalized_sq_dist": float(nsd.mean()),
            "samples_a": a, "samples_b": b}


def solver_error(denoise, x_T: Tensor, grid: Tensor, solver: Solver, *, reference_grid: Tensor,
                 reference_solver: Solver, process=None, space: Space | None = None) -> Tensor:
    """Per-sample RMS error ``[B]`` of ``solver`` on ``grid`` against ``reference_solver`` on the
    finer ``reference_grid``, from the same ``x_T`` (deterministic solvers)."""
    sp = space or getattr(denoise, "space", None) or Euclidean()
    x = sample(denoise, x_T, grid, solver, process=process, space=sp)
    ref = sample(denoise, x_T, reference_grid, reference_solver, process=process, space=sp)
    return (sp.mean((x - ref) ** 2).to(torch.float64)).sqrt()
