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


@pytest.mark.parametrize("K, ks", [(4, ["1", "2", "4"]), (3, ["1", "2", "3"])])
def test_best_of_section_grades_nested_candidate_sets(bench, K, ks):
    """k = 1, 2, 4 (or .., K) from the same candidates: validity never falls with k (the sets are
    nested), k = 1 is the first candidates, and every grader reports on every k."""
    import torch

    from molecules import data as D
    from molecules.metrics import TanimotoKernelRidge
    from molecules.task import MoleculeSamples, MoleculesTask, predict_properties

    task = MoleculesTask()
    cfg = task.config("tiny")
    model = task.build(cfg)  # untrained: the section's bookkeeping, not its figures, is under test
    t = D.load_qm9(limit=8 * K)
    n = 8
    mols = [None if i % 3 == 0 else m for i, m in enumerate(t.mols[: n * K])]
    gap = torch.as_tensor(t.props[:n, 4])
    tgt = torch.full((n * K, len(model.property_names)), float("nan"), dtype=torch.float64)
    tgt[:, 4] = gap.repeat(K)
    cands = MoleculeSamples("graph", mols, [None] * (n * K), [], None, None, predict_properties(model, mols), tgt,
                            model.property_names)
    fp = TanimotoKernelRidge().fit(t.mols, t.props[:, 4].numpy())
    out = bench._best_of_section(model, model, cands, gap, 4, K, fp)
    b = out["graph_guided_best_of"]
    assert list(b) == ks and out["graph_guided_best_of_k"] == K
    v = [b[k]["validity"] for k in ks]
    assert v == sorted(v) and v[0] == sum(m is not None for m in mols[:n]) / n
    for k in ks:
        assert {"r2_gap", "r2_gap_independent", "r2_gap_fingerprint", "mae_gap_fingerprint", "n_scored"} <= set(b[k])
    assert out["graph_guided_best_r2_gap_fingerprint"] == b[ks[-1]]["r2_gap_fingerprint"]
