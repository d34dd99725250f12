"""The sampling loop, inversion, and the prior.

``sample(denoise, x_T, grid, solver)`` integrates from ``grid[0]`` down to ``grid[-1]`` with any
solver of :mod:`shared.solvers`; step hooks (inpainting, projection, ...) run after every step and
a callback sees every step. ``invert`` runs a deterministic solver the other way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .process import NoiseProcess, registered_times
from .solvers import Solver
from .spaces import Euclidean, Space, randn

__all__ = ["StepContext", "sample", "invert", "prior", "count_nfe"]


@dataclass
class StepContext:
    """What a step hook or callback sees: step index ``i`` (0-based), the times ``t`` and
    ``t_next`` (``[B]``), the last denoiser output ``x0_hat`` and the sampling setup."""

    i: int
    n_steps: int
    t: Tensor
    t_next: Tensor
    x0_hat: Tensor | None
    process: NoiseProcess
    space: Space
    generator: Any = None


Hook = Callable[[Tensor, StepContext], Tensor]


def _resolve(denoise, process, space):
    process = process if process is not None else getattr(denoise, "process", None)
    if process is None:
        raise ValueError("pass process= (or use a denoiser with a .process attribute)")
    space = space if space is not None else getattr(denoise, "space", None) or Euclidean()
    return process, space


def _check_grid(grid: Tensor, increasing: bool = False) -> Tensor:
    if not torch.is_tensor(grid) or grid.ndim != 1 or grid.numel() < 2:
        raise ValueError("grid must be a 1-D tensor with at least 2 times")
    g = grid.to(torch.float64)
    vals = g.tolist()  # one transfer; the checks below are plain Python on a few dozen floats
    if not all(0.0 <= v <= 1.0 for v in vals):  # also false for NaN
        raise ValueError("grid times must lie in [0, 1]")
    pairs = zip(vals, vals[1:])
    if not (all(b > a for a, b in pairs) if increasing else all(b < a for a, b in pairs)):
        raise ValueError("grid must be strictly " + ("increasing" if increasing else "decreasing"))
    return g


class _Recorder:
    """Wraps a denoiser to remember its last output (what hooks and callbacks see as x0_hat)."""

    def __init__(self, fn):
        self.fn, self.last = fn, None

    def __call__(self, x, t):
        self.last = self.fn(x, t)
        return self.last


def prior(shape: Sequence[int], *, process: NoiseProcess, t: float = 1.0, space: Space | None = None,
          generator=None, dtype=torch.float32, device=None) -> Tensor:
    """Starting noise for sampling at time ``t``: ``sqrt(alpha^2 + sigma^2) * z`` (the marginal
    std for unit-variance data; 1 for VP, ``sqrt(1 + sigma^2)`` for VE/EDM), ``z`` from the space,
    then projected onto the space (fixed entries of a Masked space take their values)."""
    space = space or Euclidean()
    tt = torch.tensor([t], dtype=torch.float64)
    std = float(torch.sqrt(process.alpha(tt) ** 2 + process.sigma(tt) ** 2))
    z = randn(shape, generator=generator, dtype=dtype, device=device)
    return space.project(std * space.project_noise(z))


def sample(denoise: Callable[[Tensor, Tensor], Tensor], x_T: Tensor, grid: Tensor, solver: Solver,
           *, process: NoiseProcess | None = None, space: Space | None = None,
           hooks: Sequence[Hook] = (), callback: Callable[[Tensor, StepContext], None] | None = None,
           generator=None, progress: bool = False) -> Tensor:
    """Integrate from ``grid[0]`` to ``grid[-1]``.

    Args:
        denoise: ``(x [B, *S], t [B]) -> x0_hat`` (a bound :class:`~shared.param.Denoiser` or a
            guided denoiser from :mod:`shared.guidance`).
        x_T: starting point at ``grid[0]``.
        grid: 1-D strictly decreasing times (see :mod:`shared.grid`).
        solver: a :class:`~shared.solvers.Solver`.
        hooks: ``hook(x_next, ctx) -> x_next`` applied in order after every step.
        callback: ``callback(x_next, ctx)`` after hooks (progress, visualisation).
        generator: ``torch.Generator``, per-sample list, or noise function (stochastic solvers).
        progress: show a tqdm bar.
    Returns:
        the sample at ``grid[-1]``, same layout as ``x_T``.
    """
    process, space = _resolve(denoise, process, space)
    g = _check_grid(grid)
    space.check(x_T)
    return _integrate(denoise, x_T, g, solver, process, space, hooks, callback, generator, progress)


def _integrate(denoise, x, g, solver, process, space, hooks, callback, generator, progress):
    B = space.batch_size(x)
    rec = _Recorder(denoise) if hooks or callback is not None else denoise
    state = solver.init_state(x)
    steps = range(g.numel() - 1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"sampling ({solver.name})", leave=False)
    tdtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    # every grid time as a [B] view (stride 0), made by one call before the loop
    tcol = g.to(device=x.device, dtype=tdtype)
    ts = tcol.unsqueeze(1).expand(-1, B).unbind(0)
    with registered_times(ts, tcol.tolist() if tcol.device.type == "cpu" else ()):
        return _loop(rec, x, g, ts, steps, solver, process, space, hooks, callback, generator, state)


def _loop(rec, x, g, ts, steps, solver, process, space, hooks, callback, generator, state):
    for i in steps:
        t, tn = ts[i], ts[i + 1]
        x, state = solver.step(rec, x, t, tn, state, process=process, space=space, generator=generator)
        if hooks or callback is not None:
            ctx = StepContext(i, g.numel() - 1, t, tn, rec.last, process, space, generator)
            for h in hooks:
                x = h(x, ctx)
            if callback is not None:
                callback(x, ctx)
    if not torch.isfinite(x).all():
        raise FloatingPointError(
            f"solver {solver.name!r} produced non-finite values; if the grid starts at t = 1 with "
            f"alpha(1) = 0 (flow / zero terminal SNR), start it below 1 (karras or log_snr grids)")
    return x


def invert(denoise: Callable[[Tensor, Tensor], Tensor], x0: Tensor, grid: Tensor, solver: Solver, *,
           process: NoiseProcess | None = None, space: Space | None = None,
           progress: bool = False) -> Tensor:
    """Deterministic inversion (e.g. DDIM inversion): integrate the probability-flow ODE from the
    low-noise end of ``grid`` to ``grid[0]``. ``grid`` is the decreasing sampling grid; if it ends
    at a time with ``sigma = 0`` that point is dropped and ``x0`` is taken as the state at the
    smallest positive time, so ``sample(D, invert(D, x, grid), grid[:-1], ...)`` round-trips."""
    if not solver.deterministic:
        raise ValueError(f"invert needs a deterministic solver; {solver.name!r} is stochastic")
    process, space = _resolve(denoise, process, space)
    g = _check_grid(grid)
    if float(process.sigma(g[-1:])) == 0.0:
        g = g[:-1]
    if g.numel() < 2:
        raise ValueError("grid too short to invert")
    space.check(x0)
    return _integrate(denoise, x0, g.flip(0), solver, process, space, (), None, None, progress)


def count_nfe(solver: Solver, steps: int, *, process: NoiseProcess | None = None) -> int:
    """Model evaluations of ``steps`` steps of a grid ending at t = 0: full steps plus the
    solver's :meth:`~shared.solvers.Solver.last_step_nfe` (Heun's last step is Euler; the
    predictor-corrector runs no corrector where sigma(t_next) = 0, so pass ``process``: a
    truncated schedule such as ``CosineVP`` has sigma(0) > 0 and corrects its last step too;
    without it sigma(0) = 0 is assumed)."""
    if steps < 1:
        return 0
    return solver.nfe_per_step * (steps - 1) + solver.last_step_nfe(process)
