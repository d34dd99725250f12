"""Likelihoods: per-condition ELBO scores with shared noise (diffusion classifiers), the
continuous-time ELBO, the discrete DDPM VLB in bits/dim, and the probability-flow ODE
log-likelihood with exact or Hutchinson trace.

All of them work in the scaled variable ``y = x / alpha`` with noise level ``k = sigma / alpha``
(so ``lam = -2 log k``), where every process is the same VE diffusion up to a time change
(Kingma et al. 2021, Sec. 5.1): results are in nats (or bits/dim) of ``x0``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .process import DiscreteVP, NoiseProcess, sigma_range
from .spaces import Euclidean, Space, randn

__all__ = ["condition_scores", "elbo", "vlb_bits_per_dim", "ode_log_likelihood"]


def _uniform(shape, generator, device):
    g = generator if isinstance(generator, torch.Generator) else None
    return torch.rand(shape, generator=g, dtype=torch.float64, device=g.device if g else device).to(device)


def condition_scores(denoiser, x0: Tensor, conds: Sequence[Any], *, n_samples: int = 32,
                     generator=None, weighting: str = "eps", t: Tensor | None = None,
                     noise: Tensor | None = None, space: Space | None = None,
                     max_batch: int | None = 1024, **net_kw) -> Tensor:
    """Score ``[B, C]`` (higher is better) of each candidate condition for each sample, with the
    SAME times and noise for every condition (the variance reduction of Li et al. 2023,
    "Your Diffusion Model is Secretly a Zero-Shot Classifier").

    * ``weighting="eps"``: ``-mean_j ||eps_j - eps_hat(x_tj, t_j, c)||^2`` (the paper's choice);
    * ``weighting="elbo"``: the c-dependent part of the continuous ELBO of :func:`elbo`.

    ``denoiser(x, t, cond, **net_kw) -> x0_hat`` with ``.process``; ``x0: [B, *S]``;
    ``t: [n_samples]`` and ``noise: [n_samples, B, *S]`` may be given to reuse draws across calls.
    When every condition is a tensor with one row per sample (``[B, ...]``) and the space is
    Euclidean, (time, condition) pairs are stacked into denoiser calls of up to ``max_batch``
    rows (``None`` or 0: one call per pair); the scores are the same up to float rounding.
    """
    if weighting not in ("eps", "elbo"):
        raise ValueError(f"weighting must be 'eps' or 'elbo', got {weighting!r}")
    process = denoiser.process
    space = space or getattr(denoiser, "space", None) or Euclidean()
    B = x0.shape[0]
    lo, hi = sigma_range(process)
    lam_lo, lam_hi = -2 * math.log(hi), -2 * math.log(lo)
    if t is None:
        if weighting == "elbo":
            lam = lam_lo + (lam_hi - lam_lo) * _uniform((n_samples,), generator, x0.device)
            t = process.t_of_log_snr(lam).clamp(1e-6, 1.0)
        else:
            t = (torch.arange(n_samples, dtype=torch.float64, device=x0.device)
                 + _uniform((n_samples,), generator, x0.device)) / n_samples  # stratified
            t = t.clamp(1e-4, 1.0)
    if noise is None:
        noise = randn((len(t),) + tuple(x0.shape), generator=generator, dtype=x0.dtype, device=x0.device)
    scores = torch.zeros(B, len(conds), dtype=torch.float64, device=x0.device)

    def err_of(x_t, eps, x0r, D, tt):
        # per-row error [rows] for rows of x_t / eps / x0 at times tt
        if weighting == "eps":
            a, s = process.alpha(tt), process.sigma(tt)
            eps_hat = (x_t - space.bcast(a, x_t) * D) / space.bcast(s, x_t)
            return space.sum((eps - eps_hat) ** 2).to(torch.float64)
        lam = process.log_snr(tt)
        return 0.5 * (lam_hi - lam_lo) * torch.exp(lam) * space.sum((x0r - D) ** 2).to(torch.float64)

    pairs = [(j, c_i) for j in range(len(t)) for c_i in range(len(conds))]
    stack = (bool(max_batch) and type(space) is Euclidean and len(pairs) > 1
             and all(torch.is_tensor(c) and c.ndim >= 1 and c.shape[0] == B for c in conds))
    per_call = max(1, int(max_batch) // B) if stack else 1
    for k in range(0, len(pairs), per_call):
        chunk = pairs[k:k + per_call]
        tt = torch.cat([t[j].expand(B) for j, _ in chunk])
        a, s = process.alpha(tt), process.sigma(tt)
        eps = torch.cat([space.project_noise(noise[j]) for j, _ in chunk])
        x0r = x0.repeat((len(chunk),) + (1,) * (x0.ndim - 1)) if len(chunk) > 1 else x0
        x_t = space.bcast(a, x0r) * x0r + space.bcast(s, x0r) * eps
        cond = torch.cat([conds[c_i] for _, c_i in chunk]) if len(chunk) > 1 else conds[chunk[0][1]]
        D = denoiser(x_t, tt.to(x0.dtype), cond, **net_kw)
        err = err_of(x_t, eps, x0r, D, tt).reshape(len(chunk), B)
        for row, (_, c_i) in enumerate(chunk):
            scores[:, c_i] -= err[row] / len(t)
    return scores


def elbo(denoise: Callable[[Tensor, Tensor], Tensor], x0: Tensor, *, process: NoiseProcess | None = None,
         space: Space | None = None, n_samples: int = 64, generator=None,
         k_min: float | None = None, k_max: float | None = None) -> Tensor:
    """Continuous-time ELBO of ``log p(x0)`` in nats, per sample ``[B]`` (Kingma et al. 2021):

    ``E[log N(x0; y_kmin, k_min^2)] - KL(N(x0, k_max^2) || N(0, k_max^2))
    - 1/2 int_{lam(k_max)}^{lam(k_min)} e^lam E||x0 - D(y_lam)||^2 dlam``

    with a Gaussian decoder of std ``k_min`` and prior ``N(0, k_max^2)`` on ``y = x / alpha``.
    The integral is estimated with ``n_samples`` stratified log-SNR draws."""
    process = process or denoise.process  # type: ignore[attr-defined]
    space = space or getattr(denoise, "space", None) or Euclidean()
    lo, hi = sigma_range(process)
    k0, k1 = k_min or lo, k_max or hi
    lam_lo, lam_hi = -2 * math.log(k1), -2 * math.log(k0)
    d = space.dim(x0)
    B = x0.shape[0]
    recon = -0.5 * d * math.log(2 * math.pi * k0 * k0) - 0.5 * d
    prior_kl = space.sum(x0.to(torch.float64) ** 2) / (2 * k1 * k1)
    diff = torch.zeros(B, dtype=torch.float64, device=x0.device)
    for j in range(n_samples):
        u = (j + _uniform((B,), generator, x0.device)) / n_samples
        lam = lam_lo + (lam_hi - lam_lo) * u
        t = process.t_of_log_snr(lam).clamp(0.0, 1.0)
        a, s = process.alpha(t), process.sigma(t)
        eps = space.noise(x0, generator)
        x_t = space.bcast(a, x0) * x0 + space.bcast(s, x0) * eps
        with torch.no_grad():
            D = denoise(x_t, t.to(x0.dtype))
        diff += 0.5 * (lam_hi - lam_lo) * torch.exp(lam) * space.sum((x0 - D) ** 2).to(torch.float64)
    return recon - prior_kl - diff / n_samples


def _log_discretized_gaussian(x: Tensor, mean: Tensor, std: Tensor, bins: int = 256) -> Tensor:
    """log P(bin of x) under N(mean, std^2) for data on the grid of ``bins`` values in [-1, 1]
    (Ho et al. 2020, eq. 13; the edge bins extend to infinity)."""
    half = 1.0 / (bins - 1)
    normal = torch.distributions.Normal(mean, std)
    cdf_hi = torch.where(x > 1 - 1e-6, torch.ones_like(x), normal.cdf(x + half))
    cdf_lo = torch.where(x < -1 + 1e-6, torch.zeros_like(x), normal.cdf(x - half))
    return torch.log((cdf_hi - cdf_lo).clamp_min(1e-12))


def vlb_bits_per_dim(denoise: Callable[[Tensor, Tensor], Tensor], x0: Tensor, process: DiscreteVP, *,
                     generator=None, n_terms: int | None = None, bins: int = 256) -> Tensor:
    """DDPM variational bound in bits/dim (Ho et al. 2020, eq. 5) for 8-bit data in [-1, 1],
    per sample ``[B]``: ``L_T + sum_t L_{t-1} + L_0`` with the posterior variance as reverse
    variance and a discretized Gaussian decoder of std ``sqrt(beta_1)``. ``n_terms`` evaluates
    ``n_terms`` random middle terms per sample (unbiased, scaled); ``None`` sums all ``N - 1``."""
    if not isinstance(process, DiscreteVP):
        raise TypeError("vlb_bits_per_dim needs a DiscreteVP process")
    x0 = x0.to(torch.float64)
    B, N = x0.shape[0], process.num_train_timesteps
    ac = process.alphas_cumprod.to(x0.device)
    d = x0[0].numel()
    flat = lambda v: v.reshape(B, -1).sum(-1)  # noqa: E731
    # prior term L_T
    aT = ac[-1]
    L_T = 0.5 * flat(aT * x0**2 + (1 - aT) - 1 - torch.log(1 - aT))
    if n_terms is None or n_terms >= N - 1:
        rounds = [torch.full((B,), i, device=x0.device, dtype=torch.long) for i in range(1, N)]
        scale = 1.0
    else:  # every sample draws its own terms: an unbiased estimate of the sum
        g = generator if isinstance(generator, torch.Generator) else None
        draws = torch.randint(1, N, (n_terms, B), generator=g)
        rounds = [d.to(x0.device) for d in draws]
        scale = (N - 1) / n_terms
    mid = torch.zeros(B, dtype=torch.float64, device=x0.device)
    bc = lambda v: v.reshape(B, *([1] * (x0.ndim - 1)))  # noqa: E731
    for i in rounds:
        a_t, a_p = ac[i], ac[i - 1]
        beta = 1 - a_t / a_p
        var = beta * (1 - a_p) / (1 - a_t)
        c0 = a_p.sqrt() * beta / (1 - a_t)
        t = (i + 1).to(torch.float64) / N
        z = randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x_t = bc(a_t.sqrt()) * x0 + bc((1 - a_t).sqrt()) * z
        with torch.no_grad():
            x0_hat = denoise(x_t.float(), t.float()).to(torch.float64)
        mid += flat((bc(c0) * (x0 - x0_hat)) ** 2) / (2 * var)
    mid = mid * scale
    t1 = torch.full((B,), 1.0 / N, dtype=torch.float64, device=x0.device)
    z = randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x1 = ac[0].sqrt() * x0 + (1 - ac[0]).sqrt() * z
    with torch.no_grad():
        mean = denoise(x1.float(), t1.float()).to(torch.float64)
    L_0 = -flat(_log_discretized_gaussian(x0, mean, (1 - ac[0]).sqrt().expand_as(x0), bins))
    return (L_T + mid + L_0) / (d * math.log(2))


def _trace(g: Callable[[Tensor], Tensor], y: Tensor, mode: str, probes: Tensor | None):
    """(g(y), tr(dg/dy)) per sample; y: [B, *S]."""
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        out = g(y)
        if mode == "exact":
            flat = out.reshape(out.shape[0], -1)
            tr = torch.zeros(out.shape[0], dtype=torch.float64, device=y.device)
            for i in range(flat.shape[1]):
                (gi,) = torch.autograd.grad(flat[:, i].sum(), y, retain_graph=True)
                tr += gi.reshape(gi.shape[0], -1)[:, i].to(torch.float64)
        else:
            tr = torch.zeros(out.shape[0], dtype=torch.float64, device=y.device)
            for j in range(probes.shape[0]):
                v = probes[j]
                (vj,) = torch.autograd.grad((out * v).sum(), y, retain_graph=j < probes.shape[0] - 1)
                tr += (vj * v).reshape(v.shape[0], -1).sum(-1).to(torch.float64)
            tr /= probes.shape[0]
    return out.detach(), tr


def ode_log_likelihood(denoise: Callable[[Tensor, Tensor], Tensor], x0: Tensor, *,
                       process: NoiseProcess | None = None, space: Space | None = None,
                       steps: int = 64, trace: str = "exact", n_probes: int = 1, generator=None,
                       k_min: float = 1e-3, k_max: float | None = None) -> Tensor:
    """``log p(x0)`` in nats ``[B]`` by the instantaneous change of variables along the
    probability-flow ODE (Song et al. 2021, Sec. D.2; Chen et al. 2018):
    ``dy/du = y - D(alpha y, t(u))`` with ``u = log k``, integrated with classical RK4 in ``u``
    from ``k_min`` (``y = x0``) to ``k_max``, prior ``N(0, k_max^2 I)``. ``trace="exact"`` uses
    one backward pass per dimension; ``"hutchinson"`` uses ``n_probes`` Rademacher probes fixed
    along the path (unbiased). Accuracy: the decoder error is O(k_min^2), the prior error
    O(Var[x0] / k_max^2), the RK4 error O(h^4)."""
    if trace not in ("exact", "hutchinson"):
        raise ValueError("trace must be 'exact' or 'hutchinson'")
    process = process or denoise.process  # type: ignore[attr-defined]
    space = space or getattr(denoise, "space", None) or Euclidean()
    _, hi = sigma_range(process)
    k1 = k_max or hi
    u0, u1 = math.log(k_min), math.log(k1)
    h = (u1 - u0) / steps
    B = x0.shape[0]
    probes = None
    if trace == "hutchinson":
        z = randn((n_probes,) + tuple(x0.shape), generator=generator, dtype=x0.dtype, device=x0.device)
        probes = torch.sign(z)
        probes[probes == 0] = 1

    def f(y: Tensor, u: float) -> tuple[Tensor, Tensor]:
        k = torch.full((B,), math.exp(u), dtype=torch.float64, device=y.device)
        t = process.t_of_edm_sigma(k).clamp(0.0, 1.0)
        a = process.alpha(t)
        tt = t.to(y.dtype)

        def g(yy):
            return denoise(space.bcast(a, yy) * yy, tt)

        D, tr = _trace(g, y, trace, probes)
        dim = space.dim(y).to(torch.float64)
        return y - D, dim - tr  # velocity, divergence

    y = x0.detach().clone()
    delta = torch.zeros(B, dtype=torch.float64, device=x0.device)
    for i in range(steps):
        u = u0 + i * h
        v1, d1 = f(y, u)
        v2, d2 = f(y + 0.5 * h * v1, u + 0.5 * h)
        v3, d3 = f(y + 0.5 * h * v2, u + 0.5 * h)
        v4, d4 = f(y + h * v3, u + h)
        y = y + h / 6 * (v1 + 2 * v2 + 2 * v3 + v4)
        delta = delta + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    dim = space.dim(y).to(torch.float64)
    prior = -0.5 * dim * math.log(2 * math.pi * k1 * k1) - space.sum(y.to(torch.float64) ** 2) / (2 * k1 * k1)
    return prior + delta
