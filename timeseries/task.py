"""The timeseries :class:`~shared.registry.DomainTask`: GPD zero-shot forecasting on LTSF data.

``load_data`` pools pre-training windows (``cfg.data.train_on``) and cuts the rolling test
windows of ``cfg.data.eval_on`` (every ``eval_stride``-th); ``generate(model, n, ...)`` forecasts
the first ``n`` of those windows (every channel) with the history as prompt; ``evaluate`` scores
the sample mean (MSE / MAE in z-scored units, the LTSF convention) and the sample spread (CRPS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from shared.config import from_dict, preset as pick_preset
from shared.registry import Splits

from . import configs
from .configs import ForecastConfig, TimeseriesConfig
from .data import WindowDataset, load_ltsf, ltsf_windows, pretraining_series
from .forecast import METHODS, forecast
from .metrics import forecast_metrics
from .model import GPDModel, load_model, save_model

__all__ = ["TimeseriesTask"]


class TimeseriesTask:
    """GPD: an unconditional MLP window diffusion model used zero-shot for forecasting."""

    name = "timeseries"
    headline_metric: tuple[str, Literal["min", "max"]] = ("etth1_mse_h96", "min")
    extra = "timeseries"

    def config(self, preset: str) -> TimeseriesConfig:
        return pick_preset(configs, preset)

    def load_data(self, cfg: TimeseriesConfig) -> Splits:
        """train: :class:`WindowDataset` (``[N, L]`` normalised windows); test: ``(x [N, C,
        lookback], y [N, C, H])`` z-scored test windows of ``eval_on``; extra: the LTSF data."""
        dc, mc = cfg.data, cfg.model
        windows = WindowDataset(pretraining_series(dc.train_on, lookback=dc.lookback), window=mc.window,
                                norm_len=mc.norm_len, stride=dc.stride, max_per_series=dc.max_per_series,
                                where="+".join(dc.train_on))
        ltsf = load_ltsf(dc.eval_on, lookback=dc.lookback)
        x, y = ltsf_windows(ltsf, "test", horizon=dc.horizon, stride=dc.eval_stride)
        return Splits(train=windows, val=None, test=(x, y),
                      extra={"ltsf": ltsf, "horizon": dc.horizon, "lookback": dc.lookback, "name": dc.eval_on,
                             "eval_stride": dc.eval_stride})

    def build(self, cfg: TimeseriesConfig) -> GPDModel:
        model = GPDModel(cfg.model)
        model.forecast_config = cfg.forecast  # sampling defaults used by generate()
        return model

    def train(self, cfg: TimeseriesConfig, model: GPDModel, data: Splits, trainer) -> GPDModel:
        trainer.fit(model, lambda m, b, g: m(b, g), data.train.tensor())
        out = trainer.sampling_model
        out.forecast_config = cfg.forecast
        return out.eval()

    def generate(self, model: GPDModel, n: int, *, solver, grid, guidance: Any = None, generator=None,
                 data: Splits | None = None) -> dict[str, torch.Tensor]:
        """Forecast the first ``n`` test windows (all channels).

        ``guidance``: None (the config's method), a method name (``inpaint``, ``repaint``,
        ``mse``, ``quantile``) or a dict with ``method`` / ``guidance_scale`` / ``resample`` /
        ``num_samples``. Returns ``{"samples": [n, C, S, H], "target": [n, C, H],
        "history": [n, C, lookback]}`` (z-scored units)."""
        if data is None or data.test is None:
            raise ValueError("timeseries.generate needs data= (the Splits from load_data) for the histories")
        x, y = data.test
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        x, y = x[:n], y[:n]
        fc: ForecastConfig = getattr(model, "forecast_config", ForecastConfig())
        opts = {"method": fc.method, "guidance_scale": fc.guidance_scale, "resample": fc.resample,
                "num_samples": fc.num_samples}
        if isinstance(guidance, str):
            opts["method"] = guidance
        elif isinstance(guidance, dict):
            unknown = set(guidance) - set(opts)
            if unknown:
                raise ValueError(f"unknown guidance keys {sorted(unknown)}; valid: {sorted(opts)}")
            opts.update(guidance)
        elif guidance is not None:
            raise ValueError(f"guidance must be None, one of {METHODS} or a dict, got {type(guidance).__name__}")
        N, C, _ = x.shape
        H = y.shape[-1]
        s = forecast(model, x.reshape(N * C, -1), H, num_samples=opts["num_samples"], method=opts["method"],
                     solver=solver, grid=grid, guidance_scale=opts["guidance_scale"], resample=opts["resample"],
                     guidance_min_alpha=fc.guidance_min_alpha, weighting=fc.weighting,
                     obs_var=fc.obs_var, replace=fc.replace,
                     generator=generator, batch_size=fc.batch_size, noise_block=fc.noise_block,
                     antithetic=fc.antithetic)
        return {"samples": torch.from_numpy(s.reshape(N, C, -1, H)), "target": torch.from_numpy(y.copy()),
                "history": torch.from_numpy(x.copy())}

    def evaluate(self, samples: dict[str, torch.Tensor], data: Splits) -> dict[str, float]:
        """MSE / MAE of the sample mean, CRPS (mean weighted quantile loss), 50/90 % coverage;
        the headline key is ``<eval_on>_mse_h<H>``."""
        s = samples["samples"].numpy()  # [N, C, S, H]
        y = samples["target"].numpy()
        N, C, S, H = s.shape
        m = forecast_metrics(s.reshape(N * C, S, H), y.reshape(N * C, H))
        name = data.extra.get("name", "etth1")
        out = {f"{name}_mse_h{H}": m["mse"], f"{name}_mae_h{H}": m["mae"], **m, "windows": float(N)}
        return out

    def save(self, model: GPDModel, cfg: TimeseriesConfig, path) -> None:
        save_model(model, path, cfg)

    def load(self, path) -> tuple[GPDModel, TimeseriesConfig]:
        model, ckpt = load_model(path)
        cfg = from_dict(TimeseriesConfig, ckpt.config)
        model.forecast_config = cfg.forecast
        return model, cfg

    def plot(self, samples: dict[str, torch.Tensor], data: Splits, path) -> None:
        from .plot import plot_forecasts

        s, x = samples["samples"].numpy(), samples["history"].numpy()
        y = samples["target"].numpy()
        k = min(4, s.shape[0])
        ch = min(s.shape[1], 7) - 1  # the last channel (OT for ETT)
        cols = data.extra["ltsf"].columns if "ltsf" in data.extra else None
        plot_forecasts(x[:k, ch], s[:k, ch], path, target=y[:k, ch],
                       names=[f"window {i}, {cols[ch] if cols else ch}" for i in range(k)])
