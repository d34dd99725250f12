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
