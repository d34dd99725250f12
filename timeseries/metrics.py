"""Forecast metrics (numpy): point errors, weighted quantile loss (CRPS proxy), MASE, coverage.

Shapes: ``samples: [N, S, H]`` (``S`` sample paths), ``target: [N, H]``. The gluonts
``Evaluator`` gives the same ``mean_wQuantileLoss`` / ``MASE`` definitions; these functions exist
so the task can score forecasts without building gluonts ``Forecast`` objects.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["mse", "mae", "weighted_quantile_loss", "mean_weighted_quantile_loss", "mase", "coverage",
           "QUANTILES", "forecast_metrics", "mc_excess_mse"]

QUANTILES = tuple(round(0.1 * i, 1) for i in range(1, 10))


def _check(samples: np.ndarray, target: np.ndarray):
    samples, target = np.asarray(samples, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if samples.ndim != 3 or target.ndim != 2 or samples.shape[0] != target.shape[0] \
            or samples.shape[2] != target.shape[1]:
        raise ValueError(f"expected samples [N, S, H] and target [N, H], got {samples.shape} and {target.shape}")
    return samples, target


def mse(point: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error over all entries."""
    return float(np.mean((np.asarray(point, np.float64) - np.asarray(target, np.float64)) ** 2))


def mae(point: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error over all entries."""
    return float(np.mean(np.abs(np.asarray(point, np.float64) - np.asarray(target, np.float64))))


def weighted_quantile_loss(samples: np.ndarray, target: np.ndarray, q: float) -> float:
    """``2 sum |(y - Q_q) (1{y < Q_q} - q)| / sum |y|`` over all series and steps (gluonts
    ``wQuantileLoss[q]``, empirical sample quantile)."""
    samples, target = _check(samples, target)
    Q = np.quantile(samples, q, axis=1)  # [N, H]
    loss = 2 * np.sum(np.abs((target - Q) * ((target <= Q) - q)))
    return float(loss / np.sum(np.abs(target)))


def mean_weighted_quantile_loss(samples: np.ndarray, target: np.ndarray,
                                quantiles: Sequence[float] = QUANTILES) -> float:
    """Mean of :func:`weighted_quantile_loss` over ``quantiles`` (gluonts ``mean_wQuantileLoss``,
    the usual CRPS estimate)."""
    return float(np.mean([weighted_quantile_loss(samples, target, q) for q in quantiles]))


def mase(point: np.ndarray, target: np.ndarray, insample: Sequence[np.ndarray], season: int = 1) -> float:
    """Mean over series of ``mean |y - yhat| / mean |x_t - x_{t-m}|`` (in-sample seasonal naive
    error, ``m = season``; ``m = 1`` when a series is too short), as in M4 and gluonts."""
    point, target = np.asarray(point, np.float64), np.asarray(target, np.float64)
    out = []
    for p, y, x in zip(point, target, insample):
        x = np.asarray(x, np.float64)
        x = x[np.isfinite(x)]
        m = season if x.size > season else 1
        scale = np.mean(np.abs(x[m:] - x[:-m])) if x.size > m else np.nan
        out.append(np.mean(np.abs(y - p)) / scale if scale and np.isfinite(scale) else np.nan)
    return float(np.nanmean(out))


def coverage(samples: np.ndarray, target: np.ndarray, level: float = 0.9) -> float:
    """Fraction of targets inside the central ``level`` interval of the samples."""
    samples, target = _check(samples, target)
    lo = np.quantile(samples, (1 - level) / 2, axis=1)
    hi = np.quantile(samples, (1 + level) / 2, axis=1)
    return float(np.mean((target >= lo) & (target <= hi)))


def mc_excess_mse(samples: np.ndarray, antithetic: bool = False) -> float:
    """Estimated Monte-Carlo part of the sample mean's MSE: ``E||mean_S - y||^2 =
    E||E[x | history] - y||^2 + tr(Cov(mean_S)) / H``, and this returns the second term per point,
    the variance of the ``S``-sample mean estimated from the samples themselves (no targets).

    Independent samples: ``mean(var_ddof1) / S``. ``antithetic`` (the layout of
    :func:`timeseries.forecast.forecast`, rows ``[z; -z]``: sample ``j`` is paired with
    ``j + S // 2``, ``S`` even, at least 2 pairs): the pair means are independent, so the variance
    of the mean is ``mean(var_ddof1(pair means)) / (S / 2)``. ``samples: [N, S, H]``."""
    x = np.asarray(samples, np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected samples [N, S, H], got shape {x.shape}")
    S = x.shape[1]
    if antithetic:
        if S % 2 or S < 4:
            raise ValueError(f"antithetic samples need an even count >= 4 (>= 2 pairs), got {S}")
        x = 0.5 * (x[:, : S // 2] + x[:, S // 2:])  # [N, S/2, H] independent pair means
    elif S < 2:
        raise ValueError("at least 2 samples are needed to estimate their variance")
    return float(x.var(1, ddof=1).mean() / x.shape[1])


def forecast_metrics(samples: np.ndarray, target: np.ndarray, prefix: str = "") -> dict[str, float]:
    """``{mse, mae}`` of the sample mean, ``median_mse``, ``crps`` (mean wQL) and 50/90 % coverage."""
    samples, target = _check(samples, target)
    mean = samples.mean(1)
    return {
        f"{prefix}mse": mse(mean, target),
        f"{prefix}mae": mae(mean, target),
        f"{prefix}median_mse": mse(np.median(samples, 1), target),
        f"{prefix}crps": mean_weighted_quantile_loss(samples, target),
        f"{prefix}coverage50": coverage(samples, target, 0.5),
        f"{prefix}coverage90": coverage(samples, target, 0.9),
    }
