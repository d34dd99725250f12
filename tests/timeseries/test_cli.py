"""`python -m timeseries.train` / plot command, and the GPU path."""

import json

import pytest
import torch

from timeseries import plot as plot_cli
from timeseries import train as train_cli


def test_train_cli_zero_shot_data_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    rc = train_cli.main(["--preset", "tiny", "--out", str(out), "--train-on", "ili,m4_hourly",
                         "--train.steps=3", "--no-progress"])
    assert rc == 0
    assert (out / "model" / "model.safetensors").exists() and (out / "model" / "config.json").exists()
    cfg = json.loads((out / "model" / "config.json").read_text())["config"]
    assert cfg["data"]["train_on"] == ["ili", "m4_hourly"]
    assert "trained GPD on ili+m4_hourly" in capsys.readouterr().out
    png = tmp_path / "fc.png"
    assert plot_cli.main(["--checkpoint", str(out / "model"), "--series", "0,6", "--samples", "4",
                          "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_train_cli_bad_override_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli.main(["--preset", "tiny", "--out", str(out), "--model.widht=3"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert not out.exists()
    assert train_cli.main(["--preset", "tiny", "--out", str(out), "--train-on", "weather"]) == 2
    assert "unknown training dataset 'weather'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_forecast_on_cuda():
    import numpy as np

    from timeseries import configs
    from timeseries.forecast import forecast
    from timeseries.model import GPDModel

    m = GPDModel(configs.tiny().model).cuda().eval()
    s = forecast(m, [np.sin(np.arange(200) / 4.0)], 96, num_samples=4, steps=5,
                 generator=torch.Generator(device="cuda").manual_seed(0))
    assert s.shape == (1, 4, 96) and np.isfinite(s).all()


def test_public_api_resolves():
    import timeseries

    for name in timeseries.__all__:
        assert getattr(timeseries, name) is not None, name
    from shared.registry import DomainTask

    assert isinstance(timeseries.TimeseriesTask(), DomainTask)
