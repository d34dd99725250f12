"""Noise processes ``x_t = alpha(t) x_0 + sigma(t) eps`` on continuous time ``t`` in [0, 1].

Every process is a frozen dataclass with ``alpha``, ``sigma``, ``log_snr`` and the inverse
``t_of_log_snr``. All coefficient math is float64; inputs ``t: [B]`` of any float dtype.
``edm_sigma(t) = sigma / alpha`` is the noise level of the scaled variable ``x / alpha``
(Karras et al. 2022), which is what k-diffusion style solvers integrate over.

Discrete DDPM schedules (:class:`DiscreteVP`) map train index ``i`` to ``t = (i + 1) / N`` and put
``alpha = 1`` at ``t = 0`` (diffusers' ``set_alpha_to_one`` / final ``alpha_cumprod = 1``), so a
grid that ends at 0 ends on clean data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "NoiseProcess",
    "DiscreteVP",
    "LinearVP",
    "CosineVP",
    "VE",
    "EDM",
    "Flow",
    "betas_for",
    "rescale_zero_terminal_snr",
    "check_t",
    "make",
    "sigma_range",
    "uniform_value",
]


def _f64(t: Tensor | float) -> Tensor:
    if not torch.is_tensor(t):
        t = torch.tensor(t)
    return t.to(torch.float64)


def check_t(t: Tensor, batch: int | None = None) -> None:
    """Raise ``ValueError`` unless ``t`` is a finite ``[B]`` tensor inside [0, 1]."""
    if not torch.is_tensor(t) or t.ndim != 1:
        raise ValueError(f"t must be a 1-D tensor of shape [B], got {getattr(t, 'shape', type(t))}")
    if batch is not None and t.shape[0] != batch:
        raise ValueError(f"t has {t.shape[0]} entries but the batch has {batch} samples")
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        bad = t[~(torch.isfinite(t) & (t >= 0) & (t <= 1))]
        raise ValueError(f"t must lie in [0, 1]; got values such as {bad[:3].tolist()}")


_FAST = ("alpha", "sigma", "log_snr")
_CACHE_MAX = 8192


_UNIFORM: dict[int, tuple[Tensor, float]] = {}


def uniform_value(c) -> float | None:
    """The Python float of a cached uniform coefficient returned by a process (see
    :func:`_fast_path`), else None. Identity-checked, so a recycled ``id`` can never match."""
    e = _UNIFORM.get(id(c))
    return e[1] if e is not None and e[0] is c else None


_CAST: dict[tuple[int, torch.dtype], tuple[Tensor, Tensor]] = {}
_TIMES: dict[int, tuple[Tensor, int, float]] = {}


class registered_times:
    """Context manager used by the sampling loop: while active, the process fast path reads the
    value of each ``[B]`` time tensor in ``times`` from ``values`` (the same floats the tensors
    hold) instead of reading the tensor. ``times`` are alike views of one tensor (e.g. the
    ``unbind`` of an expanded grid); they are registered only if they qualify for the fast path
    (CPU, one repeated value, no grad). An in-place change of one drops it (version check)."""

    def __init__(self, times, values):
        t = times[0] if len(times) else None
        ok = (t is not None and len(values) == len(times) and t.device.type == "cpu"
              and t.ndim == 1 and t.shape[0] > 0 and (t.shape[0] == 1 or t.stride(0) == 0)
              and not t.requires_grad)
        self.times, self.values = (times, values) if ok else ((), ())

    def __enter__(self):
        if self.times:
            ver = self.times[0]._version  # views share their base's version counter
            _TIMES.update({id(t): (t, ver, v) for t, v in zip(self.times, self.values)})
        return self

    def __exit__(self, *exc):
        for t in self.times:
            if _TIMES.get(id(t), (None,))[0] is t:
                del _TIMES[id(t)]
        return False


def time_value(t) -> float | None:
    """The value of a grid time registered by :class:`registered_times`, else None."""
    e = _TIMES.get(id(t))
    return e[2] if e is not None and e[0] is t and e[1] == t._version else None


def step_memo(process: "NoiseProcess") -> dict:
    """A per-process dict for values that depend only on a pair of grid times (a solver's step
    coefficients), keyed by the callers with the times' float values; bounded like the
    coefficient cache."""
    memo = process.__dict__.get("_step_memo")
    if memo is None or len(memo) > _CACHE_MAX:
        memo = process.__dict__["_step_memo"] = {}
    return memo


def as_dtype(c: Tensor, dtype: torch.dtype) -> Tensor:
    """``c.to(dtype)``, memoised for the cached uniform coefficients of :func:`_fast_path` (a
    grid time converted for the network input is then converted once per sampling grid, not once
    per step). Any other tensor is converted as usual."""
    if c.dtype == dtype:
        return c
    if uniform_value(c) is None:
        return c.to(dtype)
    key = (id(c), dtype)
    e = _CAST.get(key)
    if e is not None and e[0] is c:
        return e[1]
    if len(_CAST) > _CACHE_MAX:
        _CAST.clear()
    out = c.to(dtype)
    _CAST[key] = (c, out)
    return out


def _cached(proc, fn, name: str, u: float, t: Tensor) -> Tensor:
    """``fn(proc, t)`` for a ``t`` holding the single value ``u``, from the per-process cache."""
    cache = proc.__dict__.get("_fast_cache")
    if cache is None:
        cache = proc.__dict__.setdefault("_fast_cache", {})
    key = (name, u, t.shape[0])
    v = cache.get(key)
    if v is None:
        if len(cache) > _CACHE_MAX:
            for old in cache.values():
                _UNIFORM.pop(id(old), None)
            cache.clear()
        one = fn(proc, t[:1])
        v = one.expand(t.shape[0])
        _UNIFORM[id(v)] = (v, float(one))
        cache[key] = v
    return v


def _fast_path(fn):
    """Evaluate ``fn`` once per distinct time when ``t`` is a CPU tensor holding one value
    repeated (a ``[B]`` expand of a grid time, as in sampling): the value is computed by the same
    float64 code on one element, cached per process and returned expanded (read-only, stride 0);
    :func:`uniform_value` gives its Python float so hot loops can multiply by a float instead of
    broadcasting a tensor. CUDA tensors take the plain path (reading the value would sync), and so
    does code being traced by ``torch.compile``: the caches are keyed by tensor identity, which
    dynamo would guard on, so a compiled training step recompiled at every step (each step's
    ``t`` is a new tensor)."""
    name = fn.__name__

    def wrapper(self, t):
        if torch.compiler.is_compiling():
            return fn(self, t)
        e = _TIMES.get(id(t))
        if e is not None and e[0] is t and e[1] == t._version:
            return _cached(self, fn, name, e[2], t)  # a registered grid time: value known
        d = self.__dict__
        memo = d.get("_memo")
        if memo is not None:  # the very tensor seen a moment ago (solver and denoiser share it)
            ent = memo.get((id(t), name))
            if ent is not None and ent[0] is t and ent[1] == t._version:
                return ent[2]
        if not (torch.is_tensor(t) and t.ndim == 1 and t.is_cpu and t.shape[0] > 0
                and not t.requires_grad and (t.shape[0] == 1 or t.stride(0) == 0)):
            return fn(self, t)
        v = _cached(self, fn, name, float(t[0]), t)
        memo = d.setdefault("_memo", {})
        if len(memo) > 64:
            memo.clear()
        memo[(id(t), name)] = (t, t._version, v)
        return v

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    wrapper.__wrapped__ = fn
    return wrapper


class NoiseProcess:
    """Base class. Subclasses define ``log_snr`` and ``t_of_log_snr``; VP-type processes get
    ``alpha = sqrt(sigmoid(lam))``, ``sigma = sqrt(sigmoid(-lam))`` unless they override them.
    ``alpha``, ``sigma`` and ``log_snr`` return float64 ``[B]``; for a ``t`` that repeats one
    value they return a cached, expanded (read-only) tensor."""

    #: human-readable kind, used in configs and reports
    kind: str = "base"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        for name in _FAST:
            if name in cls.__dict__:
                setattr(cls, name, _fast_path(cls.__dict__[name]))

    def log_snr(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def t_of_log_snr(self, lam: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @_fast_path
    def alpha(self, t: Tensor) -> Tensor:
        return torch.sigmoid(self.log_snr(t)).sqrt()

    @_fast_path
    def sigma(self, t: Tensor) -> Tensor:
        return torch.sigmoid(-self.log_snr(t)).sqrt()

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return self.alpha(t), self.sigma(t)

    def edm_sigma(self, t: Tensor) -> Tensor:
        """``sigma / alpha``: noise level of ``x / alpha`` (inf where alpha = 0)."""
        return torch.exp(-0.5 * self.log_snr(t))

    def t_of_edm_sigma(self, s: Tensor) -> Tensor:
        s = _f64(s)
        return self.t_of_log_snr(-2.0 * torch.log(s))

    # --- SDE view: dx = f(t) x dt + g(t) dW --------------------------------------------------
    def _ddt(self, fn, t: Tensor) -> Tensor:
        t = _f64(t).detach().clone().requires_grad_(True)
        with torch.enable_grad():
            y = fn(t)
            if not y.requires_grad:  # constant in t (e.g. alpha = 1)
                return torch.zeros_like(t).detach()
            (g,) = torch.autograd.grad(y.sum(), t)
        return g.detach()

    def sde(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Forward SDE coefficients ``(f(t), g(t)^2)`` with ``f = d log alpha / dt`` and
        ``g^2 = d sigma^2/dt - 2 f sigma^2 = -sigma^2 d lam/dt`` (Kingma et al. 2021, eq. 4)."""
        t = _f64(t)
        f = self._ddt(lambda u: torch.log(self.alpha(u)), t)
        g2 = -self.sigma(t) ** 2 * self._ddt(self.log_snr, t)
        return f, g2

    def d_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Time derivatives ``(alpha'(t), sigma'(t))`` (used by flow-velocity conversions)."""
        return self._ddt(self.alpha, t), self._ddt(self.sigma, t)

    def prior_std(self) -> float:
        """Std of ``x_1`` for unit-variance data under this process (``sqrt(alpha^2 + sigma^2)``
        at t = 1); ``sample`` draws the starting noise with this scale."""
        t1 = torch.ones(1, dtype=torch.float64)
        a, s = self.alpha(t1), self.sigma(t1)
        return float(torch.sqrt(a * a + s * s))


# ----------------------------------------------------------------------------------------------
# Discrete VP (DDPM) schedules


def betas_for(kind: str, num_train_timesteps: int = 1000, beta_start: float = 1e-4,
              beta_end: float = 2e-2) -> Tensor:
    """DDPM beta schedules as in diffusers: ``linear``, ``scaled_linear``, ``cosine``
    (``squaredcos_cap_v2``, Nichol & Dhariwal 2021) and ``sigmoid`` (GeoDiff). float64 ``[N]``."""
    n = num_train_timesteps
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    if kind in ("cosine", "squaredcos_cap_v2"):
        def abar(u):
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)],
                            dtype=torch.float64)
    if kind == "sigmoid":
        b = torch.linspace(-6, 6, n, dtype=torch.float64)
        return torch.sigmoid(b) * (beta_end - beta_start) + beta_start
    raise ValueError(f"unknown beta schedule {kind!r}; choose linear, scaled_linear, cosine, sigmoid")


def rescale_zero_terminal_snr(alphas_cumprod: Tensor) -> Tensor:
    """Lin et al. 2024, Alg. 1: shift and scale ``sqrt(alphas_cumprod)`` so the last step has
    SNR exactly 0 while the first is unchanged. Returns new ``alphas_cumprod`` (float64)."""
    a = _f64(alphas_cumprod).sqrt()
    a0, aT = a[0].clone(), a[-1].clone()
    a = (a - aT) * a0 / (a0 - aT)
    return a**2


@dataclass(frozen=True, eq=False)
class DiscreteVP(NoiseProcess):
    """DDPM process given by ``alphas_cumprod [N]``: ``alpha = sqrt(alphas_cumprod[i])`` at the
    knots ``t = (i + 1) / N``, ``alpha = 1`` at ``t = 0``, linear in t between knots (so the
    flow velocity stays finite even with zero terminal SNR), ``sigma = sqrt(1 - alpha^2)``."""

    alphas_cumprod: Tensor = field(repr=False)
    kind: str = "discrete_vp"

    def __post_init__(self):
        ac = _f64(self.alphas_cumprod).flatten()
        if ac.numel() < 2 or not torch.isfinite(ac).all():
            raise ValueError("alphas_cumprod must be a finite 1-D tensor with at least 2 entries")
        if (ac[1:] > ac[:-1]).any() or (ac > 1).any() or (ac < 0).any():
            raise ValueError("alphas_cumprod must be non-increasing and inside [0, 1]")
        knots = torch.cat([torch.ones(1, dtype=torch.float64), ac.sqrt()])
        object.__setattr__(self, "alphas_cumprod", ac)
        object.__setattr__(self, "_knots", knots)

    @classmethod
    def from_betas(cls, kind: str = "linear", num_train_timesteps: int = 1000, *,
                   beta_start: float = 1e-4, beta_end: float = 2e-2,
                   zero_terminal_snr: bool = False) -> "DiscreteVP":
        betas = betas_for(kind, num_train_timesteps, beta_start, beta_end)
        return cls.from_beta_tensor(betas, zero_terminal_snr=zero_terminal_snr)

    @classmethod
    def from_beta_tensor(cls, betas: Tensor, *, zero_terminal_snr: bool = False,
                         dtype: torch.dtype = torch.float32) -> "DiscreteVP":
        """``alphas_cumprod = cumprod(1 - betas)`` computed in ``dtype`` (float32 like diffusers,
        so that parity with diffusers schedulers is exact)."""
        ac = torch.cumprod(1.0 - betas.to(dtype), dim=0)
        if zero_terminal_snr:
            ac = rescale_zero_terminal_snr(ac).to(dtype)
        return cls(ac)

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    def t_of_index(self, i: Tensor | int) -> Tensor:
        """Train index ``i`` (diffusers timestep) to ``t = (i + 1) / N``; index -1 maps to 0."""
        return (_f64(i) + 1.0) / self.num_train_timesteps

    @_fast_path
    def index_of_t(self, t: Tensor) -> Tensor:
        """Inverse of :meth:`t_of_index` as a float (what diffusers UNets receive as timestep)."""
        return _f64(t) * self.num_train_timesteps - 1.0

    def _segment(self, t: Tensor):
        n = self.num_train_timesteps
        u = _f64(t) * n
        r = torch.round(u)
        u = torch.where((u - r).abs() < 1e-9, r, u)  # snap onto knots exactly
        i0 = u.floor().clamp(0, n - 1)
        return u - i0, i0.long(), self._knots.to(u.device)

    def alpha(self, t):
        w, i0, k = self._segment(t)
        return torch.where(w == 0, k[i0], (1 - w) * k[i0] + w * k[i0 + 1])

    def alpha2(self, t):
        return self.alpha(t) ** 2

    def sigma(self, t):
        return (1.0 - self.alpha2(t)).clamp_min(0).sqrt()

    def log_snr(self, t):
        a2 = self.alpha2(t)
        return torch.log(a2) - torch.log1p(-a2)

    def _dalpha(self, t: Tensor) -> Tensor:
        """Slope of the piecewise-linear alpha (right segment at a knot, last one at t = 1)."""
        _, i0, k = self._segment(t)
        return (k[i0 + 1] - k[i0]) * self.num_train_timesteps

    def d_alpha_sigma(self, t):
        a, da = self.alpha(t), self._dalpha(t)
        return da, -a * da / self.sigma(t)

    def sde(self, t):
        a, da = self.alpha(t), self._dalpha(t)
        s2 = 1 - a * a
        # f = d log a / dt ; g^2 = d s^2/dt - 2 f s^2 = -2 a a' - 2 a' s^2 / a
        return da / a, -2 * da * (a * a + s2) / a

    def t_of_log_snr(self, lam):
        a = torch.sigmoid(_f64(lam)).sqrt()
        k = self._knots.to(a.device)
        # knots are non-increasing: search on the negated (non-decreasing) sequence
        j = torch.searchsorted(-k, -a.contiguous(), right=False).clamp(1, k.numel() - 1)
        hi, lo = k[j - 1], k[j]
        w = torch.where(hi > lo, (hi - a) / (hi - lo).clamp_min(1e-300), torch.zeros_like(a))
        return ((j - 1).to(torch.float64) + w.clamp(0, 1)) / self.num_train_timesteps


# ----------------------------------------------------------------------------------------------
# Continuous processes


@dataclass(frozen=True)
class LinearVP(NoiseProcess):
    """VP SDE with linear ``beta(t) = beta_min + t (beta_max - beta_min)`` (Song et al. 2021)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    kind: str = "linear_vp"

    def _neg_log_alpha2(self, t):
        t = _f64(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def alpha(self, t):
        return torch.exp(-0.5 * self._neg_log_alpha2(t))

    def sigma(self, t):
        return (-torch.expm1(-self._neg_log_alpha2(t))).sqrt()

    def log_snr(self, t):
        s = self._neg_log_alpha2(t)
        return -s - torch.log(-torch.expm1(-s))

    def t_of_log_snr(self, lam):
        s = torch.nn.functional.softplus(-_f64(lam))  # -log alpha^2
        db = self.beta_max - self.beta_min
        if db == 0:
            return s / self.beta_min
        return (-self.beta_min + torch.sqrt(self.beta_min**2 + 2 * db * s)) / db


@dataclass(frozen=True)
class CosineVP(NoiseProcess):
    """Cosine VP in log-SNR form ``lam(t) = -2 log tan(a t + b)``, truncated to
    ``[logsnr_min, logsnr_max]`` (Nichol & Dhariwal 2021; Kingma et al. 2023 form)."""

    logsnr_min: float = -15.0
    logsnr_max: float = 15.0
    kind: str = "cosine_vp"

    def _ab(self):
        b = math.atan(math.exp(-0.5 * self.logsnr_max))
        a = math.atan(math.exp(-0.5 * self.logsnr_min)) - b
        return a, b

    def log_snr(self, t):
        a, b = self._ab()
        return -2.0 * torch.log(torch.tan(a * _f64(t) + b))

    def t_of_log_snr(self, lam):
        a, b = self._ab()
        return (torch.atan(torch.exp(-0.5 * _f64(lam))) - b) / a


@dataclass(frozen=True)
class VE(NoiseProcess):
    """Variance exploding (SMLD): ``alpha = 1``, ``sigma = sigma_min (sigma_max/sigma_min)^t``."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    kind: str = "ve"

    def alpha(self, t):
        return torch.ones_like(_f64(t))

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _f64(t)

    def log_snr(self, t):
        return -2.0 * torch.log(self.sigma(t))

    def t_of_log_snr(self, lam):
        return (-0.5 * _f64(lam) - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)

    def prior_std(self) -> float:
        return math.sqrt(1 + self.sigma_max**2)


@dataclass(frozen=True)
class EDM(NoiseProcess):
    """EDM (Karras et al. 2022): ``alpha = 1``, ``sigma = t * sigma_max``. ``sigma_min`` and
    ``sigma_data`` are used by Karras grids, log-normal time sampling and preconditioning."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    kind: str = "edm"

    def alpha(self, t):
        return torch.ones_like(_f64(t))

    def sigma(self, t):
        return _f64(t) * self.sigma_max

    def log_snr(self, t):
        return -2.0 * torch.log(self.sigma(t))

    def t_of_log_snr(self, lam):
        return torch.exp(-0.5 * _f64(lam)) / self.sigma_max


@dataclass(frozen=True)
class Flow(NoiseProcess):
    """Rectified flow / flow matching: ``alpha = 1 - s``, ``sigma = s`` with the shifted time
    ``s = shift t / (1 + (shift - 1) t)`` (Esser et al. 2024, SD3)."""

    shift: float = 1.0
    kind: str = "flow"

    def _s(self, t):
        t = _f64(t)
        return self.shift * t / (1 + (self.shift - 1) * t)

    def alpha(self, t):
        return 1.0 - self._s(t)

    def sigma(self, t):
        return self._s(t)

    def log_snr(self, t):
        s = self._s(t)
        return 2.0 * (torch.log1p(-s) - torch.log(s))

    def t_of_log_snr(self, lam):
        s = torch.sigmoid(-0.5 * _f64(lam))
        return s / (self.shift - (self.shift - 1) * s)


def make(kind: str, **kw) -> NoiseProcess:
    """Build a process by name: ``discrete_vp`` (kw: schedule, num_train_timesteps, beta_start,
    beta_end, zero_terminal_snr), ``linear_vp``, ``cosine_vp``, ``ve``, ``edm``, ``flow``."""
    if kind == "discrete_vp":
        sched = kw.pop("schedule", "linear")
        return DiscreteVP.from_betas(sched, **kw)
    table = {"linear_vp": LinearVP, "cosine_vp": CosineVP, "ve": VE, "edm": EDM, "flow": Flow}
    if kind not in table:
        raise ValueError(f"unknown process {kind!r}; choose one of discrete_vp, {', '.join(table)}")
    return table[kind](**kw)


def sigma_range(process: NoiseProcess) -> tuple[float, float]:
    """Finite ``(s_min, s_max)`` bounds of the EDM noise level ``sigma / alpha`` used by
    Karras and log-SNR grids: the process's own ``sigma_min``/``sigma_max`` where it has them,
    the first/last knot for :class:`DiscreteVP`, else ``t = 1e-3`` / ``t = 1`` (or ``1 - 1e-3``
    where alpha(1) = 0), so that a grid's last positive time is above 0."""
    if isinstance(process, (EDM, VE)):
        return process.sigma_min, process.sigma_max

    def s_at(t: float) -> float:
        return float(process.edm_sigma(torch.tensor([t], dtype=torch.float64)))

    if isinstance(process, DiscreteVP):
        n = process.num_train_timesteps
        hi = s_at(1.0)
        if not math.isfinite(hi):
            hi = s_at((n - 1) / n)
        return s_at(1.0 / n), hi
    lo = s_at(1e-3)
    hi = s_at(1.0)
    if not math.isfinite(hi):
        hi = s_at(1 - 1e-3)
    return lo, hi
