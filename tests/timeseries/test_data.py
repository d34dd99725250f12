"""Loaders: shapes, exact ETT borders, M4 files, gluonts entries, bad input."""

import gzip

import numpy as np
import pytest

from timeseries.data import (DataError, WindowDataset, frame_to_gluonts, load_ltsf, load_m4_hourly,
                             ltsf_windows, normalize_window, read_csv_frame, series_from_gluonts)


@pytest.fixture(scope="module")
def ett():
    return load_ltsf("etth1")


def test_ett_borders_exact(ett):
    assert ett.values.shape == (17420, 7)
    assert ett.borders == {"train": (0, 8640), "val": (8640 - 336, 11520), "test": (11520 - 336, 14400)}
    tr = ett.values[:8640].astype(np.float64)
    np.testing.assert_allclose(tr.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(tr.std(0), 1, atol=1e-4)
    assert ett.columns[-1] == "OT" and ett.freq.lower() == "h"


def test_ett_test_windows_every_window(ett):
    x, y = ltsf_windows(ett, "test", horizon=96)
    assert x.shape == (2785, 7, 336) and y.shape == (2785, 7, 96)
    # window 0 starts at the first lookback row of the test split, its target right after
    np.testing.assert_array_equal(x[0].T, ett.values[11184:11520])
    np.testing.assert_array_equal(y[-1].T, ett.values[14400 - 96:14400])
    for H in (192, 336, 720):
        assert ltsf_windows(ett, "test", horizon=H)[0].shape[0] == 2880 - H + 1
    xs, _ = ltsf_windows(ett, "test", horizon=96, stride=24)
    np.testing.assert_array_equal(xs[1], x[24])


def test_m4_hourly_official_files():
    train, test, H = load_m4_hourly()
    assert H == 48 and len(train) == len(test) == 414
    a, b = next(iter(train)), next(iter(test))
    assert a["item_id"] == b["item_id"] == "H1"
    assert len(b["target"]) == len(a["target"]) + 48
    lengths = {len(e["target"]) for e in train}
    assert lengths == {700, 960}


def test_gluonts_entries_and_multivariate(ett):
    uni = list(ett.gluonts("train"))
    assert len(uni) == 7 and uni[0]["target"].shape == (8640,) and "start" in uni[0] and uni[0]["item_id"]
    multi = list(ett.gluonts("train", multivariate=True))
    assert len(multi) == 1 and multi[0]["target"].shape == (7, 8640)
    assert len(series_from_gluonts(multi)) == 7


def _write(tmp_path, text, name="x.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_any_csv_with_date_column(tmp_path):
    rows = "\n".join(f"2020-01-{d:02d},{d},{2 * d}" for d in range(1, 31))
    p = tmp_path / "s.csv.gz"
    p.write_bytes(gzip.compress(("date,a,b\n" + rows + "\n").encode()))
    df = read_csv_frame(p)
    assert df.shape == (30, 2)
    ds = list(frame_to_gluonts(df))
    assert len(ds) == 2 and ds[1]["target"][3] == 8.0 and str(ds[0]["start"].freq).lower().startswith("<day")


def test_bad_input_errors(tmp_path):
    with pytest.raises(DataError, match="no date column 'date'"):
        read_csv_frame(_write(tmp_path, "time,a\n2020-01-01,1\n"))
    with pytest.raises(DataError, match="non-numeric value 'abc'"):
        read_csv_frame(_write(tmp_path, "date,a\n2020-01-01,1\n2020-01-02,abc\n"))
    with pytest.raises(DataError, match="missing value"):
        read_csv_frame(_write(tmp_path, "date,a\n2020-01-01,1\n2020-01-02,\n"))
    df = read_csv_frame(_write(tmp_path, "date,a\n2020-01-01,1\n2020-01-02,\n"), allow_nan=True)
    assert np.isnan(df["a"].iloc[1])
    with pytest.raises(DataError, match="not dates"):
        read_csv_frame(_write(tmp_path, "date,a\nyesterday,1\n"))
    with pytest.raises(DataError, match="duplicate"):
        read_csv_frame(_write(tmp_path, "date,a\n2020-01-01,1\n2020-01-01,2\n"))
    short = _write(tmp_path, "date,a\n" + "\n".join(f"2020-01-{d:02d},{d}" for d in range(1, 20)) + "\n")
    with pytest.raises(DataError, match="too few"):
        load_ltsf(short, lookback=336)
    with pytest.raises(DataError, match="long enough for window 32"):
        WindowDataset([np.arange(10.0)], window=32, norm_len=16)
    with pytest.raises(DataError, match="neither a vendored dataset"):
        load_ltsf("etth9")


def test_window_dataset_normalisation():
    s = np.sin(np.arange(500) / 5.0) * 3 + 10
    ds = WindowDataset([s, np.full(20, np.nan)], window=64, norm_len=32, stride=4)
    w = ds.tensor().numpy()
    assert w.shape == ((500 - 64) // 4 + 1, 64)
    np.testing.assert_allclose(w[:, :32].mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(w[:, :32].std(1), 1, atol=1e-3)
    z, m, sd = normalize_window(s[None, :64], 32)
    np.testing.assert_allclose(z[0], w[0], atol=1e-5)
    # windows with NaN are skipped, never filled
    s2 = s.copy()
    s2[100] = np.nan
    assert len(WindowDataset([s2], window=64, norm_len=32, stride=1)) == 500 - 64 + 1 - 64


def test_mc_excess_mse_estimates_the_variance_of_the_sample_mean():
    """mc_excess_mse is the variance of the S-sample mean (per point), estimated from one draw:
    it matches the exact value for independent and for antithetic (mirrored-pair) samples, is
    exactly 0 for perfectly mirrored pairs, and rejects layouts it cannot estimate."""
    from timeseries.metrics import mc_excess_mse

    rng = np.random.default_rng(0)
    N, S, H = 6000, 8, 4
    c = rng.normal(size=(N, 1, H))
    iid = c + 0.7 * rng.normal(size=(N, S, H))
    assert mc_excess_mse(iid) == pytest.approx(0.49 / S, rel=0.05)
    z = rng.normal(size=(N, S // 2, H))
    # layout [z; -z]: a pair mean is c + 0.5 z^2, variance 0.25 * 2 = 0.5 per pair mean
    anti = np.concatenate([c + z + 0.5 * z ** 2, c - z + 0.5 * (-z) ** 2], 1)
    exact = 0.5 / (S // 2)
    assert mc_excess_mse(anti, antithetic=True) == pytest.approx(exact, rel=0.05)
    # the empirical squared error of the mean about its expectation agrees
    assert np.mean((anti.mean(1) - (c[:, 0] + 0.5)) ** 2) == pytest.approx(exact, rel=0.05)
    # read as independent samples the same draw looks noisier (the pairs' correlation ignored):
    # a sample's variance Var(z + z^2 / 2) = 1.5 over S samples, plus the ddof-1 bias of the
    # pairs' covariance Var(z^2 / 2) - Var(z) = -0.5: (1.5 + 0.5 * S / (S (S - 1))) / S
    assert mc_excess_mse(anti) == pytest.approx((1.5 + 0.5 / (S - 1)) / S, rel=0.05)
    assert mc_excess_mse(anti) > 1.4 * exact
    assert mc_excess_mse(np.concatenate([c + z, c - z], 1), antithetic=True) == pytest.approx(0.0, abs=1e-20)
    for bad, kw in ((anti[:, :7], {"antithetic": True}), (anti[:, :2], {"antithetic": True}),
                    (anti[:, :1], {}), (anti[0], {})):
        with pytest.raises(ValueError):
            mc_excess_mse(bad, **kw)
