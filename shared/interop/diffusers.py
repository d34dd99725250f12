"""diffusers interoperability: wrap diffusers models as networks, build a process from a
scheduler config, and a parity facade that runs diffusers' own scheduler loop.

Networks always receive float timestep tensors ``[B]`` (never Python ints, never a shared
scalar), so per-sample times and ``torch.compile`` work.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..grid import from_timesteps
from ..param import Denoiser
from ..process import DiscreteVP, betas_for

__all__ = ["UNetNet", "UNet1DNet", "VAE", "process_from_scheduler_config", "prediction_from_config",
           "scheduler_grid", "initial_state", "run_scheduler_loop", "eps_fn_denoiser"]

_PRED = {"epsilon": "eps", "sample": "x0", "v_prediction": "v", "flow_prediction": "flow"}


class UNetNet(nn.Module):
    """``UNet2DModel`` as a backbone ``net(x [B,C,H,W], t [B], cond=None) -> [B,C,H,W]``.

    ``time_scale`` multiplies the network time input (1000 for ``time_input="t"`` so the UNet's
    sinusoidal embedding sees diffusers' usual 0..1000 range; 1 with ``time_input="index"``).
    ``cond`` goes to ``class_labels`` (int64 ``[B]``)."""

    def __init__(self, unet: nn.Module, time_scale: float = 1000.0):
        super().__init__()
        self.unet = unet
        self.time_scale = time_scale

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None, **kw) -> Tensor:
        ts = (t.float() * self.time_scale).expand(x.shape[0])
        labels = None if cond is None else cond.long()
        return self.unet(x, ts, class_labels=labels, return_dict=False)[0]


class UNet1DNet(nn.Module):
    """``UNet1DModel`` as a backbone ``net(x [B,C,L], t [B], cond=None) -> [B,C,L]``."""

    def __init__(self, unet: nn.Module, time_scale: float = 1000.0):
        super().__init__()
        self.unet = unet
        self.time_scale = time_scale

    def forward(self, x: Tensor, t: Tensor, cond: Any = None, **kw) -> Tensor:
        ts = (t.float() * self.time_scale).expand(x.shape[0])
        return self.unet(x, ts, return_dict=False)[0]


class VAE(nn.Module):
    """``AutoencoderKL`` with an explicit ``scaling_factor`` (latents = mean * scale, or a sample
    from the posterior when a generator is given)."""

    def __init__(self, vae: nn.Module, scaling_factor: float = 1.0):
        super().__init__()
        self.vae = vae
        self.scaling_factor = float(scaling_factor)

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        dist = self.vae.encode(x).latent_dist
        z = dist.mean if generator is None else dist.sample(generator=generator)
        return z * self.scaling_factor

    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z / self.scaling_factor).sample


def _cfg_get(config: Any, key: str, default=None):
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def process_from_scheduler_config(config: Any) -> DiscreteVP:
    """A :class:`DiscreteVP` with exactly the ``alphas_cumprod`` a diffusers DDPM-family
    scheduler computes (float32 cumprod, optional zero-terminal-SNR rescale)."""
    n = int(_cfg_get(config, "num_train_timesteps", 1000))
    trained = _cfg_get(config, "trained_betas")
    if trained is not None:
        betas = torch.as_tensor(trained, dtype=torch.float64)
    else:
        kind = _cfg_get(config, "beta_schedule", "linear")
        b0, b1 = float(_cfg_get(config, "beta_start", 1e-4)), float(_cfg_get(config, "beta_end", 2e-2))
        if kind == "linear":  # diffusers builds these two in float32
            betas = torch.linspace(b0, b1, n, dtype=torch.float32)
        elif kind == "scaled_linear":
            betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float32) ** 2
        else:
            betas = betas_for(kind, n, b0, b1)
    ztsnr = bool(_cfg_get(config, "rescale_betas_zero_snr", False))
    return DiscreteVP.from_beta_tensor(betas, zero_terminal_snr=ztsnr)


def prediction_from_config(config: Any) -> str:
    """diffusers ``prediction_type`` -> our prediction name."""
    p = _cfg_get(config, "prediction_type", "epsilon")
    if p not in _PRED:
        raise ValueError(f"unsupported prediction_type {p!r}")
    return _PRED[p]


def scheduler_grid(scheduler: Any, process: DiscreteVP) -> Tensor:
    """Our time grid for a scheduler on which ``set_timesteps`` was called: its integer
    timesteps mapped to ``t = (k + 1) / N``, then 0 (diffusers' final ``alpha_cumprod = 1`` /
    final sigma 0)."""
    ts = scheduler.timesteps
    if hasattr(scheduler, "order") and scheduler.order == 2:  # Heun-type schedulers repeat steps
        ts = torch.unique_consecutive(ts)
    if not torch.allclose(ts.double(), ts.double().round()):
        raise ValueError("scheduler timesteps are fractional; use timestep_spacing 'leading' or "
                         "'trailing' for an exact grid")
    return from_timesteps(process, ts.double().round())


def eps_fn_denoiser(eps_fn: Callable[[Tensor, Tensor], Tensor], process: DiscreteVP,
                    prediction: str = "eps") -> Denoiser:
    """Wrap ``eps_fn(x_t, timestep [B]) -> model output`` (diffusers' calling convention) as a
    :class:`Denoiser` that feeds it ``t N - 1``. The function is called directly (no
    ``nn.Module`` around it), as diffusers' own loop calls it."""

    def net(x, t, cond=None, **kw):
        return eps_fn(x, t)

    return Denoiser(net, process, prediction, time_input="index")


def initial_state(scheduler: Any, process: DiscreteVP, z: Tensor) -> Tensor:
    """Our ``x_T`` equal to the starting sample of :func:`run_scheduler_loop` for unit noise
    ``z``. Sigma-based schedulers (Euler, Heun, LMS, KDPM) keep ``x / alpha`` as their state and
    start from ``z * init_noise_sigma``; with "linspace"/"trailing" spacing diffusers sets
    ``init_noise_sigma = sigma_max`` rather than ``sqrt(sigma_max^2 + 1)``, so the start differs
    from unit-variance VP noise by a factor ``alpha(1) sigma_max`` (about 2e-5 for the linear
    schedule, 3e-3 for scaled_linear) — this helper reproduces it exactly."""
    grid = scheduler_grid(scheduler, process)
    x = z * scheduler.init_noise_sigma
    if any(k in type(scheduler).__name__ for k in ("Euler", "Heun", "LMS", "KDPM")):
        x = x * process.alpha(grid[:1]).to(x.dtype)
    return x


@torch.no_grad()
def run_scheduler_loop(scheduler: Any, model_fn: Callable[[Tensor, Tensor], Tensor], x_T: Tensor,
                       steps: int, generator: torch.Generator | None = None) -> Tensor:
    """diffusers' standard sampling loop (``set_timesteps``, ``scale_model_input``, ``step``) on
    ``model_fn(model_input, timestep [B])``. ``x_T`` is unit normal noise; it is multiplied by
    ``init_noise_sigma`` as diffusers pipelines do (see :func:`initial_state` for our equal
    starting point). Returns the final sample."""
    scheduler.set_timesteps(steps)
    x = x_T * scheduler.init_noise_sigma
    for ts in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, ts)
        tb = ts.to(torch.float64).expand(x.shape[0]) if torch.is_tensor(ts) else torch.full((x.shape[0],), float(ts))
        out = model_fn(inp, tb)
        x = scheduler.step(out, ts, x, generator=generator, return_dict=False)[0]
    return x
