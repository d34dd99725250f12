"""timeseries: generative pre-trained diffusion (GPD) for zero-shot forecasting, in gluonts terms.

An unconditional residual-MLP diffusion model is pre-trained on per-window normalised windows of
many series (channel-independent); forecasting uses the observed history as the prompt through
the kernel's guidance (replacement / RePaint inpainting, or reconstruction guidance with MSE /
quantile energies), with any kernel solver and grid, for any horizon.

Public API (heavy imports such as gluonts happen on first use)::

    from timeseries import GPDEstimator, GPDPredictor, forecast, load_ltsf, load_m4_hourly
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "TimeseriesTask", "GPDEstimator", "GPDPredictor", "GPDModel", "MLPDiffusionNet", "forecast",
    "load_ltsf", "ltsf_windows", "load_m4_hourly", "read_csv_frame", "frame_to_gluonts",
    "series_from_gluonts", "WindowDataset", "DataError", "TimeseriesConfig", "tiny", "default", "gpu",
    "plot_forecasts",
]

_WHERE = {
    "TimeseriesTask": "task", "GPDEstimator": "predictor", "GPDPredictor": "predictor", "GPDModel": "model",
    "MLPDiffusionNet": "backbones", "forecast": "forecast", "load_ltsf": "data", "ltsf_windows": "data",
    "load_m4_hourly": "data", "read_csv_frame": "data", "frame_to_gluonts": "data",
    "series_from_gluonts": "data", "WindowDataset": "data", "DataError": "data",
    "TimeseriesConfig": "configs", "tiny": "configs", "default": "configs", "gpu": "configs",
    "plot_forecasts": "plot",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'timeseries' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
