"""Exact conversions between network parameterisations, and the :class:`Denoiser` boundary.

With ``x_t = alpha x0 + sigma eps`` (shapes ``x_t: [B, *S]``, ``t: [B]``):

* ``eps``   — the noise;  ``x0`` — the clean sample;
* ``v``     — ``alpha eps - sigma x0`` (Salimans & Ho 2022);
* ``score`` — ``grad log p_t(x_t) = -eps / sigma``;
* ``flow``  — the velocity ``d x_t / dt = alpha' x0 + sigma' eps`` (``eps - x0`` for :class:`Flow`);
* ``edm``   — the raw output ``F`` of EDM preconditioning (Karras et al. 2022, Table 1):
  ``x0 = c_skip x_hat + c_out F`` with ``x_hat = x_t / alpha`` and ``s = sigma / alpha``.

Every conversion goes through ``(x0, eps)`` and is exact up to float rounding.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .process import NoiseProcess, as_dtype, step_memo, time_value, uniform_value
from .spaces import Euclidean, Space, coef, scalar

PREDICTIONS = ("eps", "x0", "v", "score", "flow", "edm")

__all__ = ["PREDICTIONS", "convert", "edm_precond", "Denoiser", "DenoiseFn"]

DenoiseFn = Callable[[Tensor, Tensor], Tensor]


def edm_precond(s: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM preconditioning (Karras et al. 2022, Table 1) for noise level ``s: [B]``:
    ``(c_skip, c_out, c_in, c_noise)``."""
    sd2 = sigma_data**2
    c_skip = sd2 / (s**2 + sd2)
    c_out = s * sigma_data / (s**2 + sd2).sqrt()
    c_in = 1.0 / (s**2 + sd2).sqrt()
    c_noise = 0.25 * torch.log(s)
    return c_skip, c_out, c_in, c_noise


def _check_pred(name: str) -> None:
    if name not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {name!r}; choose one of {PREDICTIONS}")


def _is_zero_somewhere(a: Tensor) -> bool:
    u = uniform_value(a)
    return u == 0.0 if u is not None else bool((a == 0).any())


def _to_x0_eps(out, src, x, t, process, space, sigma_data):
    a, s = process.alpha(t), process.sigma(t)
    if src == "x0":
        return out, None
    if src == "eps":
        A, S = uniform_value(a), uniform_value(s)
        if A is not None and S is not None and A != 0.0:  # fused: two ops, no broadcast copies
            return torch.add(x, out, alpha=-S).div_(scalar(A, x)), out
        A, S = coef(a, x, space), coef(s, x, space)
        if _is_zero_somewhere(a):
            raise ValueError("eps prediction is undefined where alpha(t) = 0 (zero terminal SNR): "
                             "use v or flow prediction")
        return (x - S * out) / A, out
    A, S = coef(a, x, space), coef(s, x, space)
    if src == "score":
        if _is_zero_somewhere(a):
            raise ValueError("score prediction is undefined where alpha(t) = 0: use v or flow")
        return (x + S * S * out) / A, -S * out
    if src == "v":
        n = space.bcast(a * a + s * s, x)
        return (A * x - S * out) / n, (S * x + A * out) / n
    if src == "flow":
        da, ds = process.d_alpha_sigma(t)
        det = space.bcast(a * ds - s * da, x)
        DA, DS = space.bcast(da, x), space.bcast(ds, x)
        return (DS * x - S * out) / det, (A * out - DA * x) / det
    if src == "edm":
        k = s / a
        c_skip, c_out, _, _ = edm_precond(k, sigma_data)
        return space.bcast(c_skip, x) * (x / A) + space.bcast(c_out, x) * out, None
    raise AssertionError(src)


def convert(out: Tensor, src: str, dst: str, x_t: Tensor, t: Tensor, process: NoiseProcess,
            space: Space | None = None, *, sigma_data: float = 0.5) -> Tensor:
    """Convert a prediction ``out`` of type ``src`` to type ``dst`` at ``(x_t, t)``.

    ``out, x_t: [B, *S]`` (or the space's layout), ``t: [B]``. Raises ``ValueError`` when the
    conversion is undefined (eps or score where ``alpha = 0``, eps where ``sigma = 0``)."""
    _check_pred(src)
    _check_pred(dst)
    if src == dst:
        return out
    space = space or Euclidean()
    x = x_t
    x0, eps = _to_x0_eps(out, src, x, t, process, space, sigma_data)
    if dst == "x0":
        return x0
    a, s = process.alpha(t), process.sigma(t)
    A, S = coef(a, x, space), coef(s, x, space)
    if eps is None:
        if _is_zero_somewhere(s):
            raise ValueError(f"cannot convert {src} to {dst} where sigma(t) = 0")
        eps = (x - A * x0) / S
    if dst == "eps":
        return eps
    if dst == "score":
        return -eps / S
    if dst == "v":
        return A * eps - S * x0
    if dst == "flow":
        da, ds = process.d_alpha_sigma(t)
        return space.bcast(da, x) * x0 + space.bcast(ds, x) * eps
    if dst == "edm":
        k = s / a
        c_skip, c_out, _, _ = edm_precond(k, sigma_data)
        return (x0 - space.bcast(c_skip, x) * (x / A)) / space.bcast(c_out, x)
    raise AssertionError(dst)


class Denoiser(nn.Module):
    """Wrap a network ``net(x_in, t_in, cond=None, **kw) -> out`` as ``D(x_t, t) -> x0_hat``.

    Args:
        net: the backbone (an ``nn.Module``, or any callable with the same signature); its
            output has ``x``'s layout and is of type ``prediction``.
        process: the noise process.
        prediction: one of :data:`PREDICTIONS`. ``"edm"`` turns on EDM preconditioning: the
            network sees ``c_in * x / alpha`` and ``c_noise = log(sigma / alpha) / 4``.
        space: the data space (broadcasting of per-sample coefficients).
        time_input: what the network receives as time when not preconditioned: ``"t"``
            (float t in [0, 1], default), ``"log_snr"``, or ``"index"`` (``t N - 1`` for
            :class:`DiscreteVP`, what diffusers UNets trained on integer timesteps expect).
        sigma_data: EDM's data std.
    """

    def __init__(self, net: nn.Module, process: NoiseProcess, prediction: str = "eps", *,
                 space: Space | None = None, time_input: str = "t", sigma_data: float = 0.5):
        super().__init__()
        _check_pred(prediction)
        if time_input not in ("t", "log_snr", "index"):
            raise ValueError(f"time_input must be 't', 'log_snr' or 'index', got {time_input!r}")
        if prediction == "eps":
            t1 = torch.ones(1, dtype=torch.float64)
            if float(process.alpha(t1)) == 0.0:
                raise ValueError("eps prediction is undefined with zero terminal SNR (alpha(1) = 0):"
                                 " use prediction='v' or 'flow'")
        self.net = net
        self.process = process
        self.prediction = prediction
        self.space = space or Euclidean()
        self.time_input = time_input
        self.sigma_data = sigma_data

    def net_inputs(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """What the network sees for ``(x_t, t)``: ``(x_in, t_in)``."""
        if self.prediction == "edm":
            a, s = self.process.alpha(t), self.process.sigma(t)
            _, _, c_in, c_noise = edm_precond(s / a, self.sigma_data)
            return self.space.bcast(c_in / a, x) * x, c_noise.to(x.dtype)
        if self.time_input == "t":
            return x, t.to(x.dtype)
        if self.time_input == "log_snr":
            return x, as_dtype(self.process.log_snr(t), x.dtype)
        return x, as_dtype(self.process.index_of_t(t), x.dtype)

    def raw(self, x: Tensor, t: Tensor, cond=None, **kw) -> Tensor:
        """The network output in its own units (what losses compare with their target)."""
        x_in, t_in = self.net_inputs(x, t)
        return self.net(x_in, t_in, cond, **kw)

    def forward(self, x: Tensor, t: Tensor, cond=None, **kw) -> Tensor:
        """``x0_hat: [B, *S]`` for ``x: [B, *S]``, ``t: [B]``."""
        out = self.raw(x, t, cond, **kw)
        # convert(out, prediction, "x0", ...) without re-validating names checked in __init__
        return _to_x0_eps(out, self.prediction, x, t, self.process, self.space, self.sigma_data)[0]

    def affine(self, x: Tensor, t: Tensor, cond=None, **kw) -> tuple[Tensor, float, float] | None:
        """``(out, p, q)`` with ``x0_hat = p * x + q * out`` for the raw network output ``out``
        and Python floats ``p, q``, or None where that form is not available.

        Available for the ``eps``, ``x0`` and ``v`` predictions at a grid time of a running
        sampling loop (see :func:`shared.process.registered_times`) when ``forward`` is not
        overridden. Solvers whose update is linear in ``(x, x0_hat)`` (DDIM, Euler) use it to
        fold the conversion into their own update: two tensor ops fewer per step, the same
        result up to float rounding. None means: call the denoiser (the network is not run)."""
        u = time_value(t)
        if u is None or type(self).forward is not Denoiser.forward or \
                self.prediction not in ("eps", "x0", "v"):
            return None
        memo = step_memo(self.process)
        key = ("x0_affine", self.prediction, self.time_input, u, t.shape[0], x.dtype)
        e = memo.get(key)
        if e is None:
            A, S = uniform_value(self.process.alpha(t)), uniform_value(self.process.sigma(t))
            if A is None or S is None or (self.prediction == "eps" and A == 0.0):
                return None
            if self.prediction == "eps":  # x0 = (x - S eps) / A
                p, q = 1.0 / A, -S / A
            elif self.prediction == "x0":
                p, q = 0.0, 1.0
            else:  # v: x0 = (A x - S v) / (A^2 + S^2)
                n = A * A + S * S
                p, q = A / n, -S / n
            # the network's time input depends only on (t, dtype) for these predictions
            e = memo[key] = (p, q, Denoiser.net_inputs(self, x, t)[1])
        if type(self).raw is Denoiser.raw and type(self).net_inputs is Denoiser.net_inputs:
            out = self.net(x, e[2], cond, **kw)
        else:
            out = self.raw(x, t, cond, **kw)
        return out, e[0], e[1]

    def bind(self, cond=None, **kw) -> DenoiseFn:
        """``(x, t) -> x0_hat`` with the condition and extra keyword arguments bound."""
        def d(x: Tensor, t: Tensor) -> Tensor:
            return self(x, t, cond, **kw)
        d.process = self.process  # type: ignore[attr-defined]
        d.space = self.space  # type: ignore[attr-defined]
        d.affine = lambda x, t: self.affine(x, t, cond, **kw)  # type: ignore[attr-defined]
        return d
