"""Forecast pictures: history, truth, median and 50 / 90 % bands for chosen series.

``python -m timeseries.plot --checkpoint runs/x/model --series 0,3,6 --out fc.png
[--window 0] [--horizon 96] [--method inpaint] [--seed 0]`` forecasts ETTh1 test windows with a
saved model and draws them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_forecasts", "main"]


def plot_forecasts(history: np.ndarray, samples: np.ndarray, path, *, target: np.ndarray | None = None,
                   names: Sequence[str] | None = None, max_history: int = 192, title: str | None = None) -> Path:
    """One PNG with a panel per series.

    history: ``[N, T]``; samples: ``[N, S, H]``; target: optional ``[N, H]``.
    Draws the last ``max_history`` history points, the truth, the median and 50 % / 90 % bands.
    Written atomically (nothing is left on error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared.checkpoint import atomic_write_bytes

    history, samples = np.asarray(history), np.asarray(samples)
    if history.ndim != 2 or samples.ndim != 3 or history.shape[0] != samples.shape[0]:
        raise ValueError(f"expected history [N, T] and samples [N, S, H], got {history.shape}, {samples.shape}")
    N, _, H = samples.shape
    hist = history[:, -max_history:]
    Th = hist.shape[1]
    fig, axes = plt.subplots(N, 1, figsize=(9, 2.2 * N), squeeze=False)
    tf = np.arange(Th, Th + H)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(np.arange(Th), hist[i], color="k", lw=0.8, label="history")
        q = np.quantile(samples[i], [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        ax.fill_between(tf, q[0], q[4], color="tab:blue", alpha=0.2, label="90 %")
        ax.fill_between(tf, q[1], q[3], color="tab:blue", alpha=0.4, label="50 %")
        ax.plot(tf, q[2], color="tab:blue", lw=1.0, label="median")
        if target is not None:
            ax.plot(tf, np.asarray(target)[i], color="tab:red", lw=0.8, label="truth")
        if names is not None:
            ax.set_title(str(names[i]), fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, ncol=5, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m timeseries.plot", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="model directory written by timeseries.train")
    p.add_argument("--series", default="0,3,6", help="ETTh1 channels to draw (0..6)")
    p.add_argument("--window", type=int, default=0, help="index of the test window")
    p.add_argument("--horizon", type=int, default=96)
    p.add_argument("--method", default=None, help="inpaint, repaint, mse, quantile (default: the model's)")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PNG path")
    a = p.parse_args(argv)
    from .data import load_ltsf, ltsf_windows
    from .forecast import forecast
    from .task import TimeseriesTask

    task = TimeseriesTask()
    model, cfg = task.load(a.checkpoint)
    d = load_ltsf(cfg.data.eval_on, lookback=cfg.data.lookback)
    x, y = ltsf_windows(d, "test", horizon=a.horizon, stride=1)
    if not 0 <= a.window < x.shape[0]:
        raise SystemExit(f"--window must be in [0, {x.shape[0]})")
    ch = [int(c) for c in a.series.split(",")]
    if any(not 0 <= c < x.shape[1] for c in ch):
        raise SystemExit(f"--series entries must be in [0, {x.shape[1]})")
    fc = cfg.forecast
    s = forecast(model, x[a.window, ch], a.horizon, num_samples=a.samples, method=a.method or fc.method,
                 solver=fc.solver, grid=fc.grid, steps=fc.steps, guidance_scale=fc.guidance_scale,
                     guidance_min_alpha=fc.guidance_min_alpha, weighting=fc.weighting,
                     obs_var=fc.obs_var, replace=fc.replace,
                 resample=fc.resample, generator=a.seed)
    out = plot_forecasts(x[a.window, ch], s, a.out, target=y[a.window, ch], names=[d.columns[c] for c in ch],
                         title=f"{d.name} test window {a.window}, H={a.horizon} ({a.method or fc.method})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
