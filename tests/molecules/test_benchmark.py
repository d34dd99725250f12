"""The molecules benchmark's per-network training plan and its argument checks (fast: configs only)."""

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("molecules")


def test_default_plan_trains_the_graph_model_compiled_at_its_own_batch(bench):
    cfg = bench.bench_config(False)
    plan = bench.train_plan(cfg, False)
    g = plan["graph"]
    assert (g.steps, g.batch_size, g.compile) == (bench.GRAPH_STEPS["default"], 128, True)
    # the forward and SMILES models keep the recipe's own settings
    assert plan["predictor"] == plan["smiles"] == cfg.train
    assert cfg.train.batch_size == 64 and not cfg.train.compile
    eager = bench.train_plan(cfg, False, compile_graph=False)["graph"]
    assert (eager.batch_size, eager.compile, eager.steps) == (128, False, g.steps)
    assert bench.train_plan(cfg, False, 77)["graph"].steps == 77


def test_quick_plan_is_eager_at_the_recipe_batch(bench):
    cfg = bench.bench_config(True)
    g = bench.train_plan(cfg, True)["graph"]
    assert (g.steps, g.batch_size, g.compile) == (bench.GRAPH_STEPS["quick"], cfg.train.batch_size, False)


def test_gpu_preset_rejects_cpu_only_flags(bench, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--preset", "gpu", "--no-compile", "--json", str(tmp_path / "r.json")])
    assert "--no-compile" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--no-compile", "--smoke", "--json", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()


def test_rejected_arguments_leave_torch_threads_alone(bench, tmp_path):
    import torch

    before = torch.get_num_threads()
    with pytest.raises(SystemExit):
        bench.main(["--preset", "gpu", "--quick", "--threads", "1", "--json", str(tmp_path / "r.json")])
    assert torch.get_num_threads() == before


def _candidates(K: int, n: int = 8):
    """An untrained tiny model (the sections' bookkeeping, not their figures, is under test), K
    candidates for each of n gap targets (every third one invalid) and a fitted fingerprint model."""
    import torch

    from molecules import data as D
    from molecules.metrics import TanimotoKernelRidge
    from molecules.task import MoleculeSamples, MoleculesTask, predict_properties

    task = MoleculesTask()
    model = task.build(task.config("tiny"))
    t = D.load_qm9(limit=n * K)
    mols = [None if i % 3 == 0 else m for i, m in enumerate(t.mols[: n * K])]
    gap = torch.as_tensor(t.props[:n, 4])
    tgt = torch.full((n * K, len(model.property_names)), float("nan"), dtype=torch.float64)
    tgt[:, 4] = gap.repeat(K)
    cands = MoleculeSamples("graph", mols, [None] * (n * K), [], None, None, predict_properties(model, mols), tgt,
                            model.property_names)
    return model, cands, gap, TanimotoKernelRidge().fit(t.mols, t.props[:, 4].numpy()), mols


@pytest.mark.parametrize("K, ks", [(4, ["1", "2", "4"]), (3, ["1", "2", "3"])])
def test_best_of_section_grades_nested_candidate_sets(bench, K, ks):
    """k = 1, 2, 4 (or .., K) from the same candidates: validity never falls with k (the sets are
    nested), k = 1 is the first candidates, and every grader reports on every k."""
    model, cands, gap, fp, mols = _candidates(K)
    n = len(gap)
    out = bench._best_of_section(model, model, cands, gap, 4, K, fp)
    b = out["graph_guided_best_of"]
    assert list(b) == ks and out["graph_guided_best_of_k"] == K
    v = [b[k]["validity"] for k in ks]
    assert v == sorted(v) and v[0] == sum(m is not None for m in mols[:n]) / n
    for k in ks:
        assert {"r2_gap", "r2_gap_independent", "r2_gap_fingerprint", "mae_gap_fingerprint", "n_scored"} <= set(b[k])
    assert out["graph_guided_best_r2_gap_fingerprint"] == b[ks[-1]]["r2_gap_fingerprint"]
    assert out["graph_guided_r2_gap_independent"] == b["1"]["r2_gap_independent"]  # k = 1: the plain guided samples


def test_smiles_design_keys_report_the_best_of_k_and_the_one_draw(bench):
    """cond_* is the route's output (best of K, the forward model's grade first), cond_one_draw_*
    the first candidates; a grader not given (None) leaves no key behind."""
    model, cands, gap, fp, _ = _candidates(4)
    out = bench._smiles_design_keys(model, None, cands, gap, 4, 4, fp)
    b = out["cond_best_of"]
    assert out["cond_best_of_k"] == 4 and list(b) == ["1", "2", "4"]
    for key in ("r2_gap", "mae_gap", "validity", "n_scored", "r2_gap_fingerprint"):
        assert out[f"cond_{key}"] == b["4"][key] and out[f"cond_one_draw_{key}"] == b["1"][key]
    assert not any(k.endswith("_independent") for k in out) and "r2_gap_independent" not in b["4"]
    one = bench._smiles_design_keys(model, model, cands.take(range(len(gap))), gap, 4, 1)
    assert list(one["cond_best_of"]) == ["1"] and one["cond_r2_gap"] == one["cond_one_draw_r2_gap"]
    assert "cond_r2_gap_independent" in one and "cond_r2_gap_fingerprint" not in one
