"""gluonts API: estimator trains, predictor predicts, serializes (JSON + safetensors only),
deserializes and predicts identically; works with make_evaluation_predictions / Evaluator."""

from pathlib import Path

import numpy as np
import pytest
import torch

from timeseries import configs
from timeseries.data import load_ltsf

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained():
    from timeseries.predictor import GPDEstimator

    d = load_ltsf("etth1", lookback=96)
    cfg = configs.tiny()
    est = GPDEstimator(prediction_length=24, config=cfg, overrides=["train.steps=5", "forecast.steps=4",
                                                                    "forecast.num_samples=5"])
    return est.train(d.gluonts("train")), d


def test_predict_serialize_roundtrip(tmp_path, trained):
    from gluonts.model.forecast import SampleForecast
    from gluonts.model.predictor import Predictor

    pred, d = trained
    test = d.gluonts("test")
    f1 = list(pred.predict(test))
    assert len(f1) == 7 and isinstance(f1[0], SampleForecast)
    assert f1[0].samples.shape == (5, 24)
    entry = next(iter(test))
    assert f1[0].start_date == entry["start"] + len(entry["target"])
    pred.serialize(tmp_path)
    names = sorted(p.name for p in Path(tmp_path).rglob("*") if p.is_file())
    assert all(n.endswith((".json", ".safetensors")) for n in names), names
    assert "gluonts-config.json" in names and "predictor.json" in names
    back = Predictor.deserialize(tmp_path)
    assert type(back).__name__ == "GPDPredictor"
    f2 = list(back.predict(test))
    for a, b in zip(f1, f2):
        np.testing.assert_array_equal(a.samples, b.samples)
    # multivariate entries: samples [S, H, C]
    fm = next(iter(pred.predict(d.gluonts("test", multivariate=True))))
    assert fm.samples.shape == (5, 24, 7)


def test_evaluation_helpers(trained):
    from gluonts.evaluation import Evaluator, make_evaluation_predictions

    pred, d = trained
    fit, tsit = make_evaluation_predictions(d.gluonts("test"), predictor=pred, num_samples=4)
    agg, _ = Evaluator(quantiles=(0.1, 0.5, 0.9), num_workers=0)(tsit, fit)
    assert np.isfinite(agg["MSE"]) and np.isfinite(agg["mean_wQuantileLoss"])


def test_estimator_bad_input():
    from gluonts.dataset.common import ListDataset

    from timeseries.data import DataError
    from timeseries.predictor import GPDEstimator

    est = GPDEstimator(prediction_length=4, preset="tiny")
    short = ListDataset([{"start": "2020-01-01", "target": np.arange(10.0)}], freq="D")
    with pytest.raises(DataError, match="long enough"):
        est.train(short)
    with pytest.raises(ValueError, match="prediction_length"):
        GPDEstimator(prediction_length=0)


def test_window_forecast_does_not_depend_on_the_dataset(trained):
    """The same window (item id + start) gets the same samples alone and inside a dataset."""
    from gluonts.dataset.common import ListDataset

    pred, d = trained
    entries = list(d.gluonts("test"))
    full = list(pred.predict(ListDataset(entries, freq="h")))
    alone = list(pred.predict(ListDataset([entries[4]], freq="h")))
    np.testing.assert_allclose(alone[0].samples, full[4].samples, rtol=0, atol=1e-5)
    rev = list(pred.predict(ListDataset(entries[::-1], freq="h")))
    for a, b in zip(full, rev[::-1]):
        np.testing.assert_allclose(a.samples, b.samples, rtol=0, atol=1e-5)


def test_two_trainings_with_one_seed_give_one_model():
    """The estimator's weights do not depend on what used the global torch generator before
    ``train`` (a notebook training twice gets the same model from the same config)."""
    from timeseries.predictor import GPDEstimator

    d = load_ltsf("etth1", lookback=96)
    est = GPDEstimator(prediction_length=24, config=configs.tiny(), overrides=["train.steps=3"])
    a = est.train(d.gluonts("train")).model.state_dict()
    torch.randn(1000)  # anything else drawing from the global generator in between
    b = est.train(d.gluonts("train")).model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
