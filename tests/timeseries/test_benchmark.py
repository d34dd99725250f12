"""The timeseries benchmark's model settings reach the right GPD model (fast: configs only)."""

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("timeseries")


def test_default_run_settings_reach_the_right_model(bench):
    s = bench.settings(False, "cpu")
    cin = bench.gpd_config(s, ("etth1",), in_domain=True)
    czs = bench.gpd_config(s, ("m4_hourly", "ili"))
    assert cin.model.norm_len == czs.model.norm_len == bench.NORM_LEN == 336
    # the ETTh1 model's learning rate and dropout; the M4+ILI model keeps the preset's, its twin
    # that forecasts ETTh1 zero-shot takes ZERO_SHOT_LR (nothing else differs)
    assert (cin.train.lr, cin.model.dropout) == (bench.IN_DOMAIN_LR, bench.IN_DOMAIN_DROPOUT)
    assert (czs.train.lr, czs.model.dropout) == (1e-3, 0.0)
    cett = bench.gpd_config(s, ("m4_hourly", "ili"), zero_shot_etth1=True)
    assert cett.train.lr == bench.ZERO_SHOT_LR != 1e-3
    assert bench.apply_overrides(cett, {"train.lr": 1e-3}) == czs
    assert cin.data.stride == 1 and czs.data.stride == 2
    assert s["zs_scale_candidates"] == bench.ZS_SCALE_CANDIDATES
    assert s["zs_fc_steps"] == bench.gpu_settings(350.0, False, "cpu")["zs_fc_steps"] == bench.ZS_FC_STEPS == 30
    # the quick run: same normalisation, preset learning rate and no dropout
    q = bench.settings(True, "cpu")
    cq = bench.gpd_config(q, ("etth1",), in_domain=True)
    assert (cq.model.norm_len, cq.train.lr, cq.model.dropout) == (336, 1e-3, 0.0)
    assert "zs_lr" not in q and bench.gpd_config(q, ("m4_hourly", "ili"), zero_shot_etth1=True).train.lr == 1e-3
    # the GPU mode follows the CPU run
    g = bench.gpu_settings(120.0, True, "cpu")
    gin = bench.gpu_gpd_config(g, ("etth1",), True, 10.0)
    gzs = bench.gpu_gpd_config(g, ("m4_hourly", "ili"), False, 10.0)
    assert (gin.model.norm_len, gin.train.lr, gin.model.dropout) == (336, bench.IN_DOMAIN_LR, bench.IN_DOMAIN_DROPOUT)
    assert (gzs.model.norm_len, gzs.train.lr, gzs.model.dropout) == (336, g["gpd_lr"], g["dropout"])
    gett = bench.gpu_gpd_config(g, ("m4_hourly", "ili"), False, 10.0, zero_shot_etth1=True)
    assert gett.train.lr == bench.ZERO_SHOT_LR and bench.apply_overrides(gett, {"train.lr": g["gpd_lr"]}) == gzs
    assert g["zs_scale_candidates"] == bench.ZS_SCALE_CANDIDATES


def test_mc_excess_of_the_benchmark_needs_two_antithetic_pairs(bench):
    import numpy as np
    from types import SimpleNamespace

    x = np.random.default_rng(0).normal(size=(50, 8, 3))
    assert bench.mc_excess(x, SimpleNamespace(antithetic=True)) > 0
    assert bench.mc_excess(x[:, :7], SimpleNamespace(antithetic=True)) is None
    assert bench.mc_excess(x[:, :1], SimpleNamespace(antithetic=False)) is None


def test_gaps_script_quick_run_writes_consistent_figures(load_benchmark, tmp_path):
    """benchmarks/timeseries_gaps.py --quick: both parts run; the level / shape split adds up."""
    import json
    import math

    gaps = load_benchmark("timeseries_gaps")
    assert gaps.main(["--quick", "--dlinear-seeds", "2", "--json", str(tmp_path / "g.json")]) == 0
    res = json.loads((tmp_path / "g.json").read_text())
    assert [r["seed"] for r in res["etth1_val"]["dlinear"]] == [0, 1]
    for r in [res["etth1_val"]["ours"]] + res["etth1_val"]["dlinear"]:
        assert math.isclose(r["level_mse"] + r["shape_mse"], r["mse"], rel_tol=1e-9)
        assert 0 <= r["level_mse"] <= r["mse"] and len(r["mse_by_12_steps"]) == 8 and len(r["mse_by_channel"]) == 7
    m4 = res["m4_tails"]
    everything = m4["by_seasonal_naive_mase"]["sn_mase_below_inf"]
    assert everything["series"] == m4["series"] == 12
    assert math.isclose(everything["ours"], m4["ours_mase"], rel_tol=1e-6)
    assert 0 <= m4["ours_better_on"] <= m4["series"]
