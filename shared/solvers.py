"""Solvers: one step of a sampler over an explicit time grid, with no hidden state.

Every solver has ``init_state(x) -> state`` and
``step(denoise, x, t, t_next, state, *, process, space, generator) -> (x_next, state)`` where
``denoise(x, t) -> x0_hat``, ``x: [B, *S]`` (or the space's layout) and ``t, t_next: [B]``.
Multistep history lives in the returned ``state`` (a tuple), never on the instance, so one
solver object can serve interleaved calls with different batch shapes and threads.

Notation (paper names): ``a, s = alpha(t), sigma(t)``; ``lam = log(a / s)`` in DPM-Solver;
``k = s / a`` is the EDM noise level of ``x / a``; ``D`` is the denoiser output.
All coefficients are computed in float64 and cast to ``x.dtype``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .process import NoiseProcess, step_memo, time_value, uniform_value
from .spaces import Space, coef, scalar

DenoiseFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "Solver", "DDIM", "DDPM", "Euler", "Heun", "EulerAncestral", "DPMSolverPP",
    "DPMSolverPPSDE", "EulerMaruyama", "PredictorCorrector", "SOLVERS", "make",
]


class Solver:
    """Base class. ``nfe_per_step`` counts model evaluations of a full step."""

    name: str = "solver"
    nfe_per_step: int = 1
    deterministic: bool = True
    order: int = 1

    def init_state(self, x: Tensor) -> Any:
        return ()

    def last_step_nfe(self, process: NoiseProcess | None = None) -> int:
        """Model evaluations of the final step of a grid (``t_next = 0``); ``process`` (None:
        sigma(0) = 0 assumed) for solvers whose saving depends on sigma(0)."""
        return self.nfe_per_step

    def step(self, denoise: DenoiseFn, x: Tensor, t: Tensor, t_next: Tensor, state: Any, *,
             process: NoiseProcess, space: Space, generator=None) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def _as(c: Tensor, x: Tensor, space: Space):
    return coef(c, x, space)


def _vals(*cs):
    """Per-sample coefficients as Python floats when every one is a cached uniform value (the
    usual case inside :func:`shared.sample.sample`), else the ``[B]`` tensors themselves. The
    formulas below are written once and work on either."""
    us = tuple(map(uniform_value, cs))
    return cs if None in us else us


def _combine(space: Space, terms) -> Tensor:
    """``sum_i c_i v_i`` for coefficients ``c_i`` (floats or ``[B]`` tensors) and tensors ``v_i``;
    float coefficients cost one fused op each and no broadcast copy."""
    out = None
    for c, v in terms:
        if isinstance(c, float):
            out = v * scalar(c, v) if out is None else out.add_(v, alpha=c)
        else:
            term = space.bcast(c, v) * v
            out = term if out is None else out.add_(term)
    return out


def _expm1(h):
    return math.expm1(h) if isinstance(h, float) else torch.expm1(h)


def _ddim_update(x, D, a, s, an, sn, space, c=None, z=None):
    """``x_next = an D + sqrt(sn^2 - c^2) eps_hat + c z`` with ``eps_hat = (x - a D) / s``."""
    if c is None:
        a, s, an, sn = _vals(a, s, an, sn)
        cx = sn / s
        if isinstance(cx, float):  # the usual case in a sampling loop: two fused ops
            return torch.add(x * scalar(cx, x), D, alpha=an - cx * a)
        return _combine(space, [(cx, x), (an - cx * a, D)])
    k = (sn * sn - c * c).clamp_min(0).sqrt() / s
    return _combine(space, [(k, x), (an - k * a, D), (c, z)])


def _ddim_coefs(t, t_next, process):
    """The DDIM / Euler update ``x_next = cx x + cd x0_hat`` as two floats ``(cx, cd)`` when both
    times are grid times of the running sampling loop (computed once per process and pair of grid
    values), else None."""
    u, un = time_value(t), time_value(t_next)
    if u is None or un is None:
        return None
    memo = step_memo(process)
    key = ("ddim", u, un)
    c = memo.get(key)
    if c is None:
        a, s, an, sn = _vals(process.alpha(t), process.sigma(t),
                             process.alpha(t_next), process.sigma(t_next))
        if not isinstance(a, float):
            return None
        cx = sn / s
        c = memo[key] = (cx, an - cx * a)
    return c


def _ddim_step(x, D, t, t_next, process, space):
    """The deterministic DDIM / Euler update from ``t`` to ``t_next``."""
    c = _ddim_coefs(t, t_next, process)
    if c is not None:
        return torch.add(x * scalar(c[0], x), D, alpha=c[1])
    a, s = process.alpha(t), process.sigma(t)
    an, sn = process.alpha(t_next), process.sigma(t_next)
    return _ddim_update(x, D, a, s, an, sn, space)


def _ddim_eval_step(denoise, x, t, t_next, process, space):
    """Evaluate the denoiser at ``(x, t)`` and take the deterministic DDIM / Euler step. When the
    denoiser gives its x0 as ``p x + q out`` (:meth:`shared.param.Denoiser.affine`), the update
    ``cx x + cd x0_hat`` is folded into ``(cx + cd p) x + cd q out``: two tensor ops per step
    instead of four, equal up to float rounding."""
    c = _ddim_coefs(t, t_next, process)
    affine = getattr(denoise, "affine", None) if c is not None else None
    f = affine(x, t) if affine is not None else None
    if f is None:
        return _ddim_step(x, denoise(x, t), t, t_next, process, space)
    out, p, q = f
    cx, cd = c
    return torch.add(x * scalar(cx + cd * p, x), out, alpha=cd * q)


@dataclass(frozen=True)
class DDIM(Solver):
    """DDIM(eta), Song et al. 2021, eq. 12: ``eta = 0`` deterministic, ``eta = 1`` is the DDPM
    posterior ``q(x_s | x_t, x0_hat)`` (Ho et al. 2020)."""

    eta: float = 0.0
    name: str = "ddim"

    @property
    def deterministic(self):  # type: ignore[override]
        return self.eta == 0.0

    def step(self, denoise, x, t, t_next, state, *, process, space, generator=None):
        if self.eta == 0.0:
            return _ddim_eval_step(denoise, x, t, t_next, process, space), state
        D = denoise(x, t)
        a, s = process.alpha(t), process.sigma(t)
        an, sn = process.alpha(t_next), process.sigma(t_next)
        # posterior std: eta * sn/s * sqrt(s^2 - (a/an)^2 sn^2)
        ratio = torch.where(an > 0, a / an.clamp_min(1e-300), torch.zeros_like(a))
        c = self.eta * sn / s * (s * s - ratio**2 * sn * sn).clamp_min(0).sqrt()
        if not (c > 0).any():  # last step: no noise is drawn (as in diffusers)
            return _ddim_update(x, D, a, s, an, sn, space), state
        z = space.noise(x, generator)
        return _ddim_update(x, D, a, s, an, sn, space, c, z), state


def DDPM() -> DDIM:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2, posterior variance): DDIM with eta = 1."""
    return DDIM(eta=1.0, name="ddpm")


@dataclass(frozen=True)
class Euler(Solver):
    """Euler on the probability-flow ODE ``dx_hat/dk = (x_hat - D)/k`` in ``x_hat = x/a``,
    ``k = s/a`` (Karras et al. 2022, Alg. 1 without the 2nd-order correction). Written in
    ``(a, s)`` form it is algebraically the DDIM(0) update, which stays finite where a = 0."""

    name: str = "euler"

    def step(self, denoise, x, t, t_next, state, *, process, space, generator=None):
        return _ddim_eval_step(denoise, x, t, t_next, process, space), state


@dataclass(frozen=True)
class Heun(Solver):
    """Heun with EDM churn, Karras et al. 2022, Alg. 2. Churn raises the noise level to
    ``k_hat = k (1 + gamma)``, ``gamma = min(S_churn / n_steps, sqrt(2) - 1)`` inside
    ``[S_tmin, S_tmax]``, and the model is evaluated after the churn. The 2nd-order correction is
    skipped on the last step (``t_next = 0``) and where ``alpha(t_hat) = 0`` (infinite k)."""

    S_churn: float = 0.0
    S_tmin: float = 0.0
    S_tmax: float = float("inf")
    S_noise: float = 1.0
    n_steps: int = 1
    name: str = "heun"
    nfe_per_step: int = 2
    order: int = 2

    def last_step_nfe(self, process=None) -> int:
        return 1  # Euler on the last step

    @property
    def deterministic(self):  # type: ignore[override]
        return self.S_churn == 0.0

    def step(self, denoise, x, t, t_next, state, *, process, space, generator=None):
        a, s = process.alpha(t), process.sigma(t)
        k = s / a
        if self.S_churn > 0:
            g = min(self.S_churn / self.n_steps, math.sqrt(2) - 1)
            gamma = torch.where((k >= self.S_tmin) & (k <= self.S_tmax), torch.full_like(k, g),
                                torch.zeros_like(k))
            k_hat = k * (1 + gamma)
            t_hat = process.t_of_edm_sigma(k_hat).clamp(max=1.0)
            t_hat = torch.where(gamma > 0, t_hat, t.to(torch.float64))
            a_hat, s_hat = process.alpha(t_hat), process.sigma(t_hat)
            k_hat = s_hat / a_hat
            extra = (k_hat * k_hat - k * k).clamp_min(0).sqrt() * self.S_noise
            if (extra > 0).any():
                z = space.noise(x, generator)
                x = _as(a_hat / a, x, space) * x + _as(a_hat * extra, x, space) * z
            t, a, s, k = t_hat.to(t.dtype), a_hat, s_hat, k_hat
        an, sn = process.alpha(t_next), process.sigma(t_next)
        D1 = denoise(x, t)
        x_e = _ddim_update(x, D1, a, s, an, sn, space)
        kn = sn / an
        # the last step of a grid (t_next = 0) is Euler, as in EDM, also for processes whose
        # sigma(0) is tiny but positive (CosineVP, VE): there k / kn is huge and the trapezoid
        # correction would amplify D1 - D2 without bound
        use2 = (t_next > 0) & (sn > 0) & torch.isfinite(k)
        if not use2.any():
            return x_e, state
        D2 = denoise(x_e, t_next)
        # x_hat_n = x_hat_euler + (kn - k)/(2 kn) (D1 - D2)   (trapezoid, rearranged)
        c = torch.where(use2, an * 0.5 * (1 - k / kn.clamp_min(1e-300)), torch.zeros_like(kn))
        return x_e + _as(c, x, space) * (D1 - D2), state


@dataclass(frozen=True)
class EulerAncestral(Solver):
    """Euler ancestral (k-diffusion ``sample_euler_ancestral``): deterministic step down to
    ``k_down``, then fresh noise ``k_up`` with ``k_up = min(kn, eta sqrt(kn^2 (k^2 - kn^2)/k^2))``."""

    eta: float = 1.0
    s_noise: float = 1.0
    name: str = "euler_ancestral"
    deterministic: bool = False

    def step(self, denoise, x, t, t_next, state, *, process, space, generator=None):
        D = denoise(x, t)
        a, s = process.alpha(t), process.sigma(t)
        an, sn = process.alpha(t_next), process.sigma(t_next)
        k, kn = s / a, sn / an
        ratio = torch.where(torch.isfinite(k), kn / k, torch.zeros_like(k))
        up = torch.minimum(kn, self.eta * kn * (1 - ratio**2).clamp_min(0).sqrt())
        down = (kn * kn - up * up).clamp_min(0).sqrt()
        # x_hat_n = D + (down/k)(x_hat - D) + up z ;  in x:  an (D + down (x - aD)/s) + an up z
        eps = (x - _as(a, x, space) * D) / _as(s, x, space)
        x_n = _as(an, x, space) * D + _as(an * down, x, space) * eps
        if (up > 0).any():
            x_n = x_n + _as(an * up * self.s_noise, x, space) * space.noise(x, generator)
        return x_n, state


@dataclass(frozen=True)
class DPMSolverPP(Solver):
    """DPM-Solver++(kM) multistep, Lu et al. 2022, Alg. 2 (k = 2) and the 3rd-order update of
    the same paper (diffusers ``multistep_dpm_solver_third_order_update``). The first steps use
    lower order until enough history exists; the final step (``t_next = 0``) is 1st order, as
    with diffusers' ``lower_order_final`` / zero final sigma.
    ``state`` is the tuple of previous ``(D, lam)`` pairs, newest last."""

    solver_order: int = 2
    name: str = "dpmpp_2m"

    @property
    def order(self):  # type: ignore[override]
        return self.solver_order

    def step(self, denoise, x, t, t_next, state, *, process, space, generator=None):
        D0 = denoise(x, t)
        s, an, sn, ls, ls_n = _vals(process.sigma(t), process.alpha(t_next), process.sigma(t_next),
                                    process.log_snr(t), process.log_snr(t_next))
        lam, lam_n = 0.5 * ls, 0.5 * ls_n  # DPM-Solver's lambda = log(alpha / sigma)
        h = lam_n - lam
        order = min(self.solver_order, len(state) + 1)
        if not _finite(h) or _last(t_next):  # final step: 1st order (diffusers' lower_order_final)
            order = 1
        em1 = _expm1(-h)  # exp(-h) - 1
        terms = [(sn / s, x)]
        if order == 1:
            terms.append((-an * em1, D0))
        elif order == 2:
            D1m, lam1 = state[-1]
            r0 = (lam - lam1) / h
            terms += [(-an * em1 * (1 + 0.5 / r0), D0), (0.5 * an * em1 / r0, D1m)]
        else:
            (D2m, lam2), (D1m, lam1) = state[-2], state[-1]
            r0, r1 = (lam - lam1) / h, (lam1 - lam2) / h
            P = an * (em1 / h + 1)
            Q = -an * ((em1 + h) / (h * h) - 0.5)
            k = r0 / (r0 + r1)
            A0 = P * (1 + k) + Q / (r0 + r1)  # coefficient of D1_0 = (D0 - D1) / r0
            A1 = -P * k - Q / (r0 + r1)  # coefficient of D1_1 = (D1 - D2) / r1
            terms += [(-an * em1 + A0 / r0, D0), (A1 / r1 - A0 / r0, D1m), (-A1 / r1, D2m)]
        x_n = _combine(space, terms)
        keep = max(self.solver_order - 1, 0)
        new_state = (tuple(state) + ((D0, lam),))[-keep:] if keep else ()
        return x_n, new_state


def _last(t_next: Tensor) -> bool:
    """True on the final step of a grid (every sample goes to t = 0)."""
    if t_next.device.type == "cpu" and (t_next.shape[0] == 1 or t_next.stride(0) == 0):
        return float(t_next[0]) == 0.0  # one grid time repeated: read it, no tensor ops
    return bool((t_next == 0).all())


def _finite(h) -> bool:
    return math.isfinite(h) if isinstance(h, float) else bool(torch.isfinite(h).all())


@dataclass(frozen=True)
class DPMSolverPPSDE(Solver):
    """SDE-DPM-Solver++(2M), Lu et al. 2022 (diffusers ``sde-dpmsolver++``, midpoint):
    ``x_n = (sn/s) e^-h x + an (1 - e^-2h)(D0 + D1/2) + sn sqrt(1 - e^-2h) z``."""

    solver_order: int = 2
    name: str = "dpmpp_2m_sde"
    deterministic: bool = False

    def step(self, denoise, x, t, t_next, state, *, process, space, generator=None):
        D0 = denoise(x, t)
        s, an, sn, ls, ls_n = _vals(process.sigma(t), process.alpha(t_next), process.sigma(t_next),
                                    process.log_snr(t), process.log_snr(t_next))
        lam, lam_n = 0.5 * ls, 0.5 * ls_n
        h = lam_n - lam
        order = min(self.solver_order, len(state) + 1)
        if not _finite(h) or _last(t_next):
            order = 1
        one_m = -_expm1(-2 * h)  # 1 - e^-2h
        cx = sn / s * (1 - one_m) ** 0.5  # (sn / s) e^-h, 0 at sn = 0
        if order == 1:
            terms = [(cx, x), (an * one_m, D0)]
        else:
            D1m, lam1 = state[-1]
            r0 = (lam - lam1) / h
            terms = [(cx, x), (an * one_m * (1 + 0.5 / r0), D0), (-an * one_m * 0.5 / r0, D1m)]
        if _any_positive(sn):
            terms.append((sn * one_m ** 0.5, space.noise(x, generator)))
        x_n = _combine(space, terms)
        new_state = (tuple(state) + ((D0, lam),))[-(self.solver_order - 1):]
        return x_n, new_state


def _any_positive(v) -> bool:
    return v > 0 if isinstance(v, float) else bool((v > 0).any())


def _score(D, x, a, s, space):
    return (_as(a, x, space) * D - x) / _as(s * s, x, space)


@dataclass(frozen=True)
class EulerMaruyama(Solver):
    """Euler–Maruyama on the reverse SDE ``dx = [f x - g^2 score] dt + g dW`` (Song et al. 2021,
    eq. 6), with ``(f, g^2)`` from :meth:`NoiseProcess.sde`. No noise on the step to t = 0."""

    name: str = "euler_maruyama"
    deterministic: bool = False

    def step(self, denoise, x, t, t_next, state, *, process, space, generator=None):
        D = denoise(x, t)
        a, s = process.alpha(t), process.sigma(t)
        f, g2 = process.sde(t)
        dt = t_next.to(torch.float64) - t.to(torch.float64)
        drift = _as(f * dt, x, space) * x - _as(g2 * dt, x, space) * _score(D, x, a, s, space)
        x_n = x + drift
        if (t_next > 0).any():
            std = torch.where(t_next > 0, (g2 * dt.abs()).sqrt(), torch.zeros_like(g2))
            x_n = x_n + _as(std, x, space) * space.noise(x, generator)
        return x_n, state


@dataclass(frozen=True)
class PredictorCorrector(Solver):
    """Predictor–corrector (Song et al. 2021, Alg. 1 & 5): an Euler–Maruyama predictor followed
    by ``n_corrector`` Langevin corrector steps at ``t_next``:
    ``x <- x + e score(x) + sqrt(2 e) z`` with ``e = 2 (snr * sigma_next)^2``. This is the
    expected value of Song et al.'s ratio rule ``2 (snr ||z|| / ||score||)^2`` for a calibrated
    score (``||z||^2 ~ d``, ``||score||^2 ~ d / sigma^2``); unlike the ratio it keeps every sample
    independent of its batch and is stable in low dimension. No corrector at ``t_next = 0``."""

    snr: float = 0.16
    n_corrector: int = 1
    name: str = "pc"
    deterministic: bool = False

    @property
    def nfe_per_step(self):  # type: ignore[override]
        return 1 + self.n_corrector

    def last_step_nfe(self, process=None) -> int:
        # no corrector where sigma(t_next) = 0; a truncated schedule (CosineVP: sigma(0) > 0)
        # corrects its last step too
        if process is None or float(process.sigma(torch.zeros(1, dtype=torch.float64))[0]) == 0.0:
            return 1
        return self.nfe_per_step

    def step(self, denoise, x, t, t_next, state, *, process, space, generator=None):
        x, _ = EulerMaruyama().step(denoise, x, t, t_next, (), process=process, space=space,
                                    generator=generator)
        an, sn = process.alpha(t_next), process.sigma(t_next)
        if not (sn > 0).all():
            return x, state
        e = 2 * (self.snr * sn) ** 2
        for _ in range(self.n_corrector):
            g = _score(denoise(x, t_next), x, an, sn, space)
            z = space.noise(x, generator)
            x = x + _as(e, x, space) * g + _as((2 * e).sqrt(), x, space) * z
        return x, state


SOLVERS = ("ddpm", "ddim", "euler", "heun", "euler_ancestral", "dpmpp_1m", "dpmpp_2m", "dpmpp_3m",
           "dpmpp_2m_sde", "euler_maruyama", "pc")


def make(name: str, **kw) -> Solver:
    """Build a solver by name (see :data:`SOLVERS`); keyword arguments go to its dataclass."""
    if name == "ddpm":
        return DDIM(eta=kw.pop("eta", 1.0), name="ddpm", **kw)
    table: dict[str, Callable[..., Solver]] = {
        "ddim": DDIM,
        "euler": Euler,
        "heun": Heun,
        "euler_ancestral": EulerAncestral,
        "dpmpp_1m": lambda **k: DPMSolverPP(solver_order=1, name="dpmpp_1m", **k),
        "dpmpp_2m": lambda **k: DPMSolverPP(solver_order=2, name="dpmpp_2m", **k),
        "dpmpp_3m": lambda **k: DPMSolverPP(solver_order=3, name="dpmpp_3m", **k),
        "dpmpp_2m_sde": DPMSolverPPSDE,
        "euler_maruyama": EulerMaruyama,
        "pc": PredictorCorrector,
    }
    if name not in table:
        raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")
    return table[name](**kw)
