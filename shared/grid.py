"""Time grids for sampling: 1-D float64 tensors ``[steps + 1]``, strictly decreasing, from the
start time down to exactly ``0``.

Grids are built in the coordinate where they are defined (``t``, log-SNR, or the EDM noise level
``sigma / alpha``) and mapped to ``t`` through the process, so every grid works with every process.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .process import DiscreteVP, NoiseProcess, sigma_range

GRIDS = ("uniform", "log_snr", "karras", "quadratic", "trailing", "leading", "linspace")

__all__ = ["GRIDS", "make", "uniform", "log_snr", "karras", "quadratic", "discrete",
           "from_timesteps"]


def _finish(ts: Tensor) -> Tensor:
    ts = torch.cat([ts.to(torch.float64), torch.zeros(1, dtype=torch.float64)])
    if not (ts[1:] < ts[:-1]).all():
        raise ValueError("grid is not strictly decreasing; use fewer steps or another grid")
    return ts


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")


def uniform(steps: int, *, t_max: float = 1.0) -> Tensor:
    """Uniform in ``t`` from ``t_max`` to 0 (for :class:`DiscreteVP` this is diffusers'
    "trailing" spacing when ``N`` is divisible by ``steps``)."""
    _check_steps(steps)
    return _finish(torch.linspace(t_max, 0.0, steps + 1, dtype=torch.float64)[:-1])


def quadratic(steps: int, *, t_max: float = 1.0) -> Tensor:
    """Quadratic in ``t`` (dense near the data; DDIM's "quad" spacing)."""
    _check_steps(steps)
    u = torch.linspace(t_max**0.5, 0.0, steps + 1, dtype=torch.float64)[:-1]
    return _finish(u * u)


def _sigma_grid(steps, process, lo, hi, spacing) -> Tensor:
    """Map noise levels in ``[lo, hi]`` (EDM sigma) to t. When ``lo`` already sits at t = 0
    (VE, whose ``sigma(0) = sigma_min``) the grid takes ``steps + 1`` levels ending there;
    otherwise ``steps`` levels followed by t = 0 (k-diffusion's appended zero)."""
    at_zero = float(process.t_of_edm_sigma(torch.tensor([lo], dtype=torch.float64))) <= 0.0
    n = steps + 1 if at_zero else steps
    if n == 1:
        s = torch.tensor([hi], dtype=torch.float64)
    else:
        s = spacing(torch.linspace(0, 1, n, dtype=torch.float64))
    t = process.t_of_edm_sigma(s).clamp(0, 1)
    return _finish(t[:-1]) if at_zero else _finish(t)


def log_snr(steps: int, *, process: NoiseProcess, s_min: float | None = None,
            s_max: float | None = None) -> Tensor:
    """Uniform in log-SNR (equivalently log ``sigma / alpha``) between ``s_max`` and ``s_min``,
    then 0 (k-diffusion's exponential schedule; DPM-Solver's logSNR spacing)."""
    _check_steps(steps)
    lo, hi = sigma_range(process)
    lo, hi = s_min or lo, s_max or hi
    return _sigma_grid(steps, process, lo, hi,
                       lambda r: torch.exp(math.log(hi) + r * (math.log(lo) - math.log(hi))))


def karras(steps: int, *, process: NoiseProcess, rho: float = 7.0, s_min: float | None = None,
           s_max: float | None = None) -> Tensor:
    """Karras et al. 2022, eq. 5: ``sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) -
    s_max^(1/rho)))^rho`` on ``sigma / alpha``, then 0."""
    _check_steps(steps)
    lo, hi = sigma_range(process)
    lo, hi = s_min or lo, s_max or hi
    return _sigma_grid(steps, process, lo, hi,
                       lambda r: (hi ** (1 / rho) + r * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho)


def from_timesteps(process: DiscreteVP, timesteps) -> Tensor:
    """Map diffusers integer timesteps (decreasing) to ``t = (k + 1) / N``, then append 0."""
    k = torch.as_tensor(timesteps, dtype=torch.float64)
    return _finish(process.t_of_index(k))


def discrete(steps: int, *, process: NoiseProcess, spacing: str = "trailing",
             steps_offset: int = 0) -> Tensor:
    """diffusers timestep spacings (``leading``, ``trailing``, ``linspace``) on the train index of
    a :class:`DiscreteVP`; for a continuous process ``N = 1000`` virtual indices are used."""
    _check_steps(steps)
    n = process.num_train_timesteps if isinstance(process, DiscreteVP) else 1000
    if spacing == "leading":
        ratio = n // steps
        k = (torch.arange(steps, dtype=torch.float64) * ratio).round().flip(0) + steps_offset
    elif spacing == "trailing":
        k = torch.round(torch.arange(n, 0, -n / steps, dtype=torch.float64)) - 1
    elif spacing == "linspace":
        k = torch.linspace(0, n - 1, steps, dtype=torch.float64).round().flip(0)
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose leading, trailing, linspace")
    return _finish((k + 1.0) / n)


def make(name: str, steps: int, *, process: NoiseProcess, **kw) -> Tensor:
    """Build a grid by name (see :data:`GRIDS`) with ``steps`` intervals."""
    if name == "uniform":
        return uniform(steps, **kw)
    if name == "quadratic":
        return quadratic(steps, **kw)
    if name == "log_snr":
        return log_snr(steps, process=process, **kw)
    if name == "karras":
        return karras(steps, process=process, **kw)
    if name in ("trailing", "leading", "linspace"):
        return discrete(steps, process=process, spacing=name, **kw)
    raise ValueError(f"unknown grid {name!r}; choose one of {', '.join(GRIDS)}")
