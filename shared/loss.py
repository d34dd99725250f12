"""Training losses: time samplers, weightings as functions of log-SNR, the per-sample diffusion
loss, flow matching, condition dropout for classifier-free guidance and self-conditioning.

The loss is the MSE of the network output against its own target (eps, x0, v, score, flow or
EDM's ``F``), averaged per sample by the space, times a weighting. Weightings are defined on the
x0-MSE scale as functions of ``lam = log_snr(t)`` (Kingma & Gao 2023) and converted exactly to the
target's units, so ``min_snr`` or ``edm`` mean the same objective whatever the prediction type;
``simple`` is weight 1 in the target's own units (Ho et al. 2020's L_simple for eps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from .param import Denoiser, edm_precond
from .process import DiscreteVP, NoiseProcess, check_t
from .spaces import Space, randn

__all__ = [
    "TIME_SAMPLERS", "WEIGHTINGS", "check_weighting", "sample_t", "LossAwareSampler", "target_units_factor",
    "weight", "q_sample", "diffusion_loss", "flow_matching_loss", "drop_condition",
]

TIME_SAMPLERS = ("uniform", "stratified", "lognormal", "logit_normal")
WEIGHTINGS = ("simple", "min_snr", "edm", "likelihood", "x0")

T_MIN = 1e-5  # continuous samplers avoid t = 0 exactly (sigma = 0 makes eps targets 0/0)


def _uniform(n, generator, device):
    if isinstance(generator, (list, tuple)):
        return torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generator]).to(device)
    dev = generator.device if isinstance(generator, torch.Generator) else device
    return torch.rand((n,), generator=generator, dtype=torch.float64, device=dev).to(device)


def sample_t(name: str, n: int, *, process: NoiseProcess, generator=None, device=None,
             **kw) -> Tensor:
    """Draw ``t: [n]`` (float64).

    * ``uniform`` — U(T_MIN, 1); on the knots ``(i + 1) / N`` for :class:`DiscreteVP` (as DDPM);
    * ``stratified`` — one draw per stratum ``[(i + u_i) / n]`` (variance reduction);
    * ``lognormal`` — EDM: ``ln(sigma / alpha) ~ N(P_mean, P_std^2)`` (defaults -1.2, 1.2);
    * ``logit_normal`` — SD3: ``t = sigmoid(m + s z)`` (defaults 0, 1).
    """
    if name == "uniform":
        u = _uniform(n, generator, device)
        if isinstance(process, DiscreteVP):
            N = process.num_train_timesteps
            return (torch.floor(u * N).clamp(max=N - 1) + 1) / N
        return T_MIN + (1 - T_MIN) * u
    if name == "stratified":
        u = _uniform(n, generator, device)
        t = (torch.arange(n, dtype=torch.float64, device=u.device) + u) / n
        return t.clamp(T_MIN, 1.0)
    if name == "lognormal":
        z = randn((n,), generator=generator, dtype=torch.float64, device=device)
        k = torch.exp(kw.get("P_mean", -1.2) + kw.get("P_std", 1.2) * z)
        return process.t_of_edm_sigma(k).clamp(T_MIN, 1.0)
    if name == "logit_normal":
        z = randn((n,), generator=generator, dtype=torch.float64, device=device)
        return torch.sigmoid(kw.get("m", 0.0) + kw.get("s", 1.0) * z).clamp(T_MIN, 1.0)
    raise ValueError(f"unknown time sampler {name!r}; choose one of {', '.join(TIME_SAMPLERS)} "
                     "or pass a LossAwareSampler")


@dataclass
class LossAwareSampler:
    """Loss-aware importance sampling of t (Nichol & Dhariwal 2021, Sec. 3.3) on ``bins`` equal
    bins: ``p_k ∝ sqrt(E[L^2])`` over the last ``history`` losses per bin (uniform until every bin
    has ``history`` entries), mixed with ``uniform_prob`` of uniform. ``sample`` returns ``t`` and
    importance weights ``1 / (bins p_k)`` so the weighted loss stays unbiased. Its only state is the
    loss history, updated explicitly with :meth:`update`."""

    bins: int = 20
    history: int = 10
    uniform_prob: float = 1e-3
    _hist: Tensor = field(default=None, repr=False)  # type: ignore[assignment]
    _count: Tensor = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self):
        self._hist = torch.zeros(self.bins, self.history, dtype=torch.float64)
        self._count = torch.zeros(self.bins, dtype=torch.long)

    def probs(self) -> Tensor:
        if (self._count < self.history).any():
            return torch.full((self.bins,), 1.0 / self.bins, dtype=torch.float64)
        w = (self._hist**2).mean(1).sqrt()
        p = w / w.sum()
        return p * (1 - self.uniform_prob) + self.uniform_prob / self.bins

    def sample(self, n: int, *, generator=None, device=None) -> tuple[Tensor, Tensor]:
        p = self.probs()
        g = generator if isinstance(generator, torch.Generator) else None
        k = torch.multinomial(p, n, replacement=True, generator=g)
        u = torch.rand(n, generator=g, dtype=torch.float64)
        t = ((k.to(torch.float64) + u) / self.bins).clamp(T_MIN, 1.0)
        w = 1.0 / (self.bins * p[k])
        return t.to(device), w.to(device)

    def update(self, t: Tensor, losses: Tensor) -> None:
        k = (t.detach().cpu().to(torch.float64) * self.bins).long().clamp(0, self.bins - 1)
        for kk, loss in zip(k.tolist(), losses.detach().cpu().to(torch.float64).tolist()):
            self._hist[kk] = torch.roll(self._hist[kk], -1)
            self._hist[kk, -1] = loss
            self._count[kk] += 1


def target_units_factor(prediction: str, t: Tensor, process: NoiseProcess,
                        sigma_data: float = 0.5) -> Tensor:
    """``MSE(target) = factor(t) * MSE(x0)`` for an error in x0_hat at fixed ``x_t``: ``1`` for
    x0, ``snr`` for eps, ``(a^2 + s^2)^2 / s^2`` for v, ``a^2 / s^4`` for score,
    ``(a' - s' a / s)^2`` for flow and ``1 / c_out^2`` for EDM's F."""
    a, s = process.alpha(t), process.sigma(t)
    if prediction == "x0":
        return torch.ones_like(a)
    if prediction == "eps":
        return (a / s) ** 2
    if prediction == "v":
        return (a * a + s * s) ** 2 / (s * s)
    if prediction == "score":
        return a * a / s**4
    if prediction == "flow":
        da, ds = process.d_alpha_sigma(t)
        return (da - ds * a / s) ** 2
    if prediction == "edm":
        _, c_out, _, _ = edm_precond(s / a, sigma_data)
        return 1.0 / c_out**2
    raise ValueError(f"unknown prediction {prediction!r}")


def weight(name: str | Callable, t: Tensor, process: NoiseProcess, prediction: str, *,
           gamma: float = 5.0, sigma_data: float = 0.5) -> Tensor:
    """Per-sample loss weight ``[B]`` in the target's units.

    * ``simple`` — 1 (the target's own MSE);
    * ``x0`` — x0-MSE (weight 1 on the x0 scale);
    * ``min_snr`` — ``min(snr, gamma)`` on the x0 scale (Hang et al. 2023);
    * ``edm`` — ``(k^2 + sd^2) / (k sd)^2`` on the x0 scale, ``k = sigma / alpha`` (Karras 2022);
    * ``likelihood`` — ``-0.5 dlam/dt snr`` on the x0 scale: with t ~ U(0, 1) the loss is the
      continuous-time diffusion ELBO term in nats (Kingma et al. 2021, eq. 17);
    * ``sigmoid:<b>`` (e.g. ``"sigmoid:2"``) — ``sigmoid(b - lam)`` on the x0 scale: the shape of
      Kingma & Gao's (2023) sigmoid weighting, ~1 at high noise, falling off once the log-SNR
      passes ``b``;
    * a callable ``w(lam) -> [B]`` on the x0 scale.
    """
    if name == "simple":
        return torch.ones_like(process.alpha(t))
    lam = process.log_snr(t)
    if callable(name):
        w0 = name(lam)
    elif name == "x0":
        w0 = torch.ones_like(lam)
    elif name == "min_snr":
        w0 = torch.clamp(torch.exp(lam), max=gamma)
    elif name == "edm":
        k = torch.exp(-0.5 * lam)
        w0 = (k * k + sigma_data**2) / (k * sigma_data) ** 2
    elif name == "likelihood":
        dlam = process._ddt(process.log_snr, t)
        w0 = -0.5 * dlam * torch.exp(lam)
    elif isinstance(name, str) and name.startswith("sigmoid:"):
        w0 = torch.sigmoid(_sigmoid_bias(name) - lam)
    else:
        raise ValueError(f"unknown weighting {name!r}; choose one of {', '.join(WEIGHTINGS)} or 'sigmoid:<b>'")
    w = w0 / target_units_factor(prediction, t, process, sigma_data)
    return torch.where(torch.isfinite(w), w, torch.zeros_like(w))


def _sigmoid_bias(name: str) -> float:
    try:
        return float(name.split(":", 1)[1])
    except ValueError:
        raise ValueError(f"weighting {name!r}: expected 'sigmoid:<number>', e.g. 'sigmoid:2'") from None


def check_weighting(name: str | Callable) -> None:
    """Raise ``ValueError`` naming the problem if ``name`` is not a weighting :func:`weight` takes."""
    if callable(name) or name in WEIGHTINGS:
        return
    if isinstance(name, str) and name.startswith("sigmoid:"):
        _sigmoid_bias(name)
        return
    raise ValueError(f"unknown weighting {name!r}; choose one of {', '.join(WEIGHTINGS)} or 'sigmoid:<b>'")


def _target(prediction, x0, eps, x_t, t, process, space, sigma_data):
    a, s = process.alpha(t), process.sigma(t)
    A, S = space.bcast(a, x0), space.bcast(s, x0)
    if prediction == "x0":
        return x0
    if prediction == "eps":
        return eps
    if prediction == "v":
        return A * eps - S * x0
    if prediction == "score":
        return -eps / S
    if prediction == "flow":
        da, ds = process.d_alpha_sigma(t)
        return space.bcast(da, x0) * x0 + space.bcast(ds, x0) * eps
    if prediction == "edm":
        c_skip, c_out, _, _ = edm_precond(s / a, sigma_data)
        return (x0 - space.bcast(c_skip, x0) * x_t / A) / space.bcast(c_out, x0)
    raise AssertionError(prediction)


def q_sample(process: NoiseProcess, x0: Tensor, t: Tensor, *, space: Space | None = None,
             generator=None, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Noise clean data to time ``t``: ``x_t = project(alpha x0 + sigma eps)`` with ``eps`` from
    the space (or given). Returns ``(x_t, eps)``. The projection keeps e.g. the fixed entries of
    a :class:`~shared.spaces.Masked` space at their values, as sampling with a projection hook
    does, so training and sampling see the same inputs."""
    from .spaces import Euclidean

    space = space or Euclidean()
    eps = noise if noise is not None else space.noise(x0, generator)
    x_t = space.bcast(process.alpha(t), x0) * x0 + space.bcast(process.sigma(t), x0) * eps
    return space.project(x_t), eps


def diffusion_loss(denoiser: Denoiser, x0: Tensor, *, cond: Any = None, t: Tensor | None = None,
                   time_sampler: str | LossAwareSampler = "uniform", weighting: str | Callable = "simple",
                   generator=None, noise: Tensor | None = None, space: Space | None = None,
                   self_condition: float = 0.0, min_snr_gamma: float = 5.0,
                   sampler_kw: dict | None = None, objective: str = "mse", **net_kw) -> Tensor:
    """Per-sample diffusion loss ``[B]``.

    Args:
        denoiser: a :class:`~shared.param.Denoiser` (its ``process``, ``prediction`` and
            ``space`` define the objective).
        x0: clean data ``[B, *S]`` (or the space's layout).
        cond: condition passed to the network (see :func:`drop_condition` for CFG training).
        t: optional fixed times ``[B]``; else drawn with ``time_sampler``.
        weighting: see :func:`weight`.
        generator: randomness for t and the noise.
        noise: optional fixed noise (else drawn from the space).
        self_condition: probability of self-conditioning (Chen et al. 2022, Analog Bits): the
            network gets ``self_cond=`` a detached first estimate of x0 (zeros otherwise).
        objective: ``"mse"`` (the prediction's squared error) or ``"ce"``: categorical cross-entropy
            of an x0 head against one-hot data coded as +-1 (Analog-Bits style ``2 onehot - 1``),
            with the class probabilities read off the head as ``p = (x0_hat + 1) / 2`` (exact
            for a ``2 softmax - 1`` head; other heads are clipped into ``(0, 1]``). Elementwise it
            is ``-(x0 + 1)/2 * log p``, so no class grouping is needed: the space's mean over
            entries is the mean over positions of ``-log p(true class)``, divided by the number
            of classes of the position's block. Needs ``prediction="x0"``; the time weighting
            is applied as for the MSE.
        net_kw: extra keyword arguments for the network (e.g. ``batch=`` for PyG graphs).
    """
    if objective not in ("mse", "ce"):
        raise ValueError(f"objective must be 'mse' or 'ce', got {objective!r}")
    if objective == "ce" and denoiser.prediction != "x0":
        raise ValueError(f"objective='ce' needs an x0 head (prediction='x0'), got {denoiser.prediction!r}")
    process = denoiser.process
    space = space or denoiser.space
    B = space.batch_size(x0)
    iw = None
    if t is None:
        if isinstance(time_sampler, LossAwareSampler):
            t, iw = time_sampler.sample(B, generator=generator, device=x0.device)
        else:
            t = sample_t(time_sampler, B, process=process, generator=generator, device=x0.device,
                         **(sampler_kw or {}))
    check_t(t, B)
    t = t.to(x0.device)
    x_t, eps = q_sample(process, x0, t, space=space, generator=generator, noise=noise)
    tt = t.to(x0.dtype) if x0.dtype in (torch.float32, torch.float64) else t.float()
    if self_condition > 0:
        est = torch.zeros_like(x0)
        use = _uniform(B, generator, x0.device) < self_condition
        if use.any():
            with torch.no_grad():
                first = denoiser(x_t, tt, cond, self_cond=est, **net_kw)
            est = torch.where(space.bcast(use.to(torch.float64), x0) > 0, first.detach(), est)
        net_kw = {**net_kw, "self_cond": est}
    out = denoiser.raw(x_t, tt, cond, **net_kw)
    target = _target(denoiser.prediction, x0, eps, x_t, t, process, space, denoiser.sigma_data)
    dt = torch.promote_types(out.dtype, torch.float32)  # bf16/fp16 outputs are compared in fp32
    if objective == "ce":
        p = ((out.to(dt) + 1) / 2).clamp(torch.finfo(dt).tiny, 1.0)
        mse = space.mean(-(target.to(dt) + 1) / 2 * torch.log(p))
    else:
        mse = space.mean((out.to(dt) - target.to(dt)) ** 2)
    w = weight(weighting, t, process, denoiser.prediction, gamma=min_snr_gamma,
               sigma_data=denoiser.sigma_data).to(mse)
    if iw is not None:
        w = w * iw.to(mse)
    return w * mse


def flow_matching_loss(denoiser: Denoiser, x0: Tensor, **kw) -> Tensor:
    """Conditional flow matching (Lipman et al. 2023; rectified flow, Liu et al. 2023): the MSE
    of the predicted velocity against ``eps - x0`` on ``x_t = (1 - t) x0 + t eps``. Requires a
    denoiser with a :class:`~shared.process.Flow` process and ``prediction='flow'``."""
    if denoiser.prediction != "flow" or getattr(denoiser.process, "kind", "") != "flow":
        raise ValueError("flow_matching_loss needs Denoiser(net, Flow(...), prediction='flow')")
    kw.setdefault("weighting", "simple")
    return diffusion_loss(denoiser, x0, **kw)


def drop_condition(cond: Any, p: float, *, generator=None, null: Any = None,
                   return_mask: bool = False):
    """Classifier-free guidance training (Ho & Salimans 2022): replace each sample's condition
    by ``null`` with probability ``p``. ``cond`` is a tensor ``[B, ...]`` or a dict of them;
    ``null`` is a scalar (e.g. the null class id), a tensor broadcastable to one row, or None for
    zeros. Returns the new condition (and the keep mask ``[B]`` if ``return_mask``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    if isinstance(cond, dict):
        first = next(iter(cond.values()))
        B, dev = first.shape[0], first.device
    else:
        B, dev = cond.shape[0], cond.device
    keep = _uniform(B, generator, dev) >= p

    def one(c, nl):
        k = keep.reshape(-1, *([1] * (c.ndim - 1)))
        nv = torch.zeros_like(c) if nl is None else torch.as_tensor(nl, dtype=c.dtype, device=c.device)
        return torch.where(k, c, nv)

    if isinstance(cond, dict):
        out = {k: one(v, null.get(k) if isinstance(null, dict) else null) for k, v in cond.items()}
    else:
        out = one(cond, null)
    return (out, keep) if return_mask else out
