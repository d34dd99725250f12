"""Tiny end-to-end: real data -> train -> generate -> evaluate -> save -> load -> same outputs."""

import json
import math

import pytest
import torch

from shared import grid as grids
from shared import solvers
from shared.checkpoint import CheckpointError

from molecules.task import (MoleculeSamples, MoleculesTask, PropertyGuidance, best_rows, sample_graphs, sample_smiles,
                            select_best)


@pytest.fixture(scope="module")
def trained(tiny_trained):
    return tiny_trained


def _grid(model, steps=4):
    return grids.make("uniform", steps, process=model.process)


def test_protocol_and_data(trained):
    from shared.registry import DomainTask

    task, cfg, data, model, out = trained
    assert isinstance(task, DomainTask)
    assert task.headline_metric == ("validity", "max") and task.extra == "molecules"
    assert len(data.train) > len(data.val) > 0
    assert abs(float(data.extra["n_atoms_prob"].sum()) - 1) < 1e-6
    assert torch.allclose(model.n_atoms_prob, data.extra["n_atoms_prob"])
    assert (out / "metrics.csv").exists()


def test_loss_is_per_sample_and_finite(trained):
    task, cfg, data, model, _ = trained
    from torch.utils.data import default_collate

    batch = default_collate([data.train[i] for i in range(6)])
    loss = model(batch, torch.Generator().manual_seed(0))
    assert loss.shape == (6,) and torch.isfinite(loss).all()


def test_generate_evaluate_save_load(trained, tmp_path):
    task, cfg, data, model, _ = trained
    g = _grid(model)
    s = task.generate(model, 6, solver=solvers.make("ddim"), grid=g, generator=torch.Generator().manual_seed(3))
    assert len(s) == 6 and s.atoms.shape == (6, 9) and s.bonds.shape == (6, 9, 9)
    assert torch.equal(s.bonds, s.bonds.transpose(1, 2))
    m = task.evaluate(s, data)
    for k in ("validity", "uniqueness", "novelty", "connectivity"):
        assert 0.0 <= m[k] <= 1.0
    task.save(model, cfg, tmp_path / "ck")
    m2, cfg2 = task.load(tmp_path / "ck")
    assert cfg2 == cfg
    s2 = task.generate(m2, 6, solver=solvers.make("ddim"), grid=g, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s.atoms, s2.atoms) and torch.equal(s.bonds, s2.bonds)
    task.plot(s, data, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_sample_does_not_depend_on_batch(trained):
    task, cfg, data, model, _ = trained
    g = _grid(model)
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(4)]  # noqa: E731
    a = sample_graphs(model, 4, solver=solvers.make("ddpm"), grid=g, generator=gens(), batch_size=4)
    b = sample_graphs(model, 4, solver=solvers.make("ddpm"), grid=g, generator=gens(), batch_size=2)
    assert torch.equal(a.atoms, b.atoms) and torch.equal(a.bonds, b.bonds)


def test_conditional_smiles_and_guided_graphs(trained):
    task, cfg, data, model, _ = trained
    g = _grid(model)
    gap = data.extra["tables"][2].props[:5, 4]
    s = sample_smiles(model, 5, solver=solvers.make("ddim"), grid=g, targets={"gap": gap},
                      generator=torch.Generator().manual_seed(0))
    assert len(s.raw) == 5 and all(len(r) <= 32 for r in s.raw)
    assert torch.allclose(s.targets[:, 4], gap.double())
    m = task.evaluate(s, data)
    assert "cond_mae_gap" in m and "cond_r2_gap" in m
    sg = task.generate(model, 4, solver=solvers.make("euler"), grid=g,
                       guidance=PropertyGuidance({"gap": 0.25}, scale=10.0),
                       generator=torch.Generator().manual_seed(0))
    assert sg.targets.shape == (4, 12) and math.isnan(float(sg.targets[0, 0]))
    # guidance changes the samples relative to unguided ones with the same noise
    su = task.generate(model, 4, solver=solvers.make("euler"), grid=g, generator=torch.Generator().manual_seed(0))
    assert not (torch.equal(su.atoms, sg.atoms) and torch.equal(su.bonds, sg.bonds)) or sg.pred is not None


def test_select_best_picks_the_nearest_valid_candidate(trained):
    """k = 3 candidates for n = 2 targets (candidate j of target i at row i + j n), hand-made
    predictions: the valid candidate nearest its target wins, exact ties go to the first, an exact
    but invalid one loses, and a target with no valid candidate keeps its first."""
    task, cfg, data, model, _ = trained
    P, j = len(model.property_names), model.property_names.index("gap")
    tgt = torch.full((6, P), float("nan"), dtype=torch.float64)
    tgt[:, j] = torch.tensor([0.2, 0.3] * 3)
    pred = torch.zeros(6, P, dtype=torch.float64)  # untargeted properties do not count
    pred[:, j] = torch.tensor([0.25, 0.3, 0.21, 0.5, 0.21, 0.3])
    mols = ["m0", None, "m2", "m3", "m4", None]
    s = MoleculeSamples("graph", mols, list(mols), [], None, None, pred, tgt, model.property_names)
    b = select_best(model, s, 3)
    assert b.mols == ["m2", "m3"] and b.smiles == ["m2", "m3"]  # target 0: rows 2 and 4 tie
    assert best_rows(model, s, 3) == [2, 3] and best_rows(model, s, 1) == list(range(6))
    assert torch.equal(b.pred, pred[[2, 3]]) and torch.equal(b.targets[:, j], tgt[[2, 3], j])
    none = MoleculeSamples("graph", [None, None], [None, None], [], None, None, torch.full((2, P), float("nan"),
                           dtype=torch.float64), tgt[[0, 2]], model.property_names)
    assert select_best(model, none, 2).mols == [None]
    assert select_best(model, s, 1) is s
    with pytest.raises(ValueError, match="dividing the 6 samples"):
        select_best(model, s, 4)
    with pytest.raises(ValueError, match="targeted samples"):
        select_best(model, MoleculeSamples("graph", mols, list(mols), [], None, None, pred, None, ()), 3)


def test_best_of_keeps_one_of_its_candidates(trained):
    task, cfg, data, model, _ = trained
    g = _grid(model)
    gap = data.extra["tables"][2].props[:3, 4]
    guid = PropertyGuidance({"gap": gap}, scale=10.0)
    best = sample_graphs(model, 3, solver=solvers.make("ddpm"), grid=g, guidance=guid, best_of=2,
                         generator=torch.Generator().manual_seed(5))
    cands = sample_graphs(model, 6, solver=solvers.make("ddpm"), grid=g,
                          guidance=PropertyGuidance({"gap": gap.repeat(2)}, scale=10.0),
                          generator=torch.Generator().manual_seed(5))
    first = sample_graphs(model, 3, solver=solvers.make("ddpm"), grid=g, guidance=guid,
                          generator=torch.Generator().manual_seed(5))
    assert torch.equal(cands.atoms[:3], first.atoms) and torch.equal(cands.bonds[:3], first.bonds)
    want = select_best(model, cands, 2)
    assert len(best) == 3 and torch.equal(best.atoms, want.atoms) and torch.equal(best.bonds, want.bonds)
    assert torch.allclose(best.targets[:, 4], gap.double())
    for i in range(3):  # each kept sample is candidate 0 or 1 of its own target
        assert any(torch.equal(best.atoms[i], cands.atoms[i + 3 * c]) for c in range(2))
    ss = sample_smiles(model, 2, solver=solvers.make("ddim"), grid=g, targets={"gap": 0.25}, best_of=3,
                       generator=torch.Generator().manual_seed(0))
    assert len(ss) == 2 and len(ss.raw) == 2
    with pytest.raises(ValueError, match="needs guidance"):
        sample_graphs(model, 2, solver=solvers.make("ddpm"), grid=g, best_of=2)
    with pytest.raises(ValueError, match="needs targets"):
        sample_smiles(model, 2, solver=solvers.make("ddpm"), grid=g, best_of=2)
    with pytest.raises(ValueError, match="n=3 values"):
        sample_smiles(model, 3, solver=solvers.make("ddim"), grid=g, targets={"gap": [0.1, 0.2]}, best_of=2)
    with pytest.raises(ValueError, match="best_of must be an int >= 1"):
        sample_graphs(model, 2, solver=solvers.make("ddpm"), grid=g, guidance=guid, best_of=0)
    with pytest.raises(ValueError, match="not a list"):
        sample_graphs(model, 2, solver=solvers.make("ddpm"), grid=g, guidance=guid, best_of=2,
                      generator=[torch.Generator() for _ in range(4)])


def test_bad_inputs(trained, tmp_path):
    task, cfg, data, model, _ = trained
    g = _grid(model)
    with pytest.raises(ValueError, match="n must be"):
        task.generate(model, 0, solver=solvers.make("ddim"), grid=g)
    with pytest.raises(ValueError, match="unknown target property 'foo'"):
        sample_smiles(model, 2, solver=solvers.make("ddim"), grid=g, targets={"foo": 1.0})
    with pytest.raises(ValueError, match="n=3 values"):
        sample_smiles(model, 3, solver=solvers.make("ddim"), grid=g, targets={"gap": [0.1, 0.2]})
    with pytest.raises(CheckpointError):
        task.load(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match="preset"):
        task.config("huge")
    with pytest.raises(ConfigError, match="properties"):
        from shared.config import apply_overrides

        apply_overrides(cfg, ["data.properties=gap,foo"])


def test_train_cli(tmp_path):
    from molecules.train import main

    out = tmp_path / "cli"
    res = main(["--preset", "tiny", "--out", str(out), "--samples", "4", "--train.steps=2"])
    assert (out / "final" / "model.safetensors").exists() and (out / "samples.png").exists()
    assert json.loads((out / "eval.json").read_text())["graph"]["n_samples"] == 4.0
    assert "smiles" in res


# ---- separate training per network (the GPU benchmark's fixed-time path)


def _tiny_train(**kw):
    from shared.config import TrainConfig

    base = dict(steps=2, batch_size=16, lr=1e-3, ema_decay=0.5, log_every=1, device="cpu")
    return TrainConfig(**{**base, **kw})


def test_gathered_batches_equal_collated_items():
    from torch.utils.data import default_collate

    from molecules.task import _GatheredBatches

    task = MoleculesTask()
    data = task.load_data(task.config("tiny"))
    idx = [5, 3, 100, 3]
    a = default_collate([data.train[i] for i in idx])
    b = _GatheredBatches(data.train).__getitems__(idx)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k])


def test_forward_parts():
    task = MoleculesTask()
    cfg = task.config("tiny")
    data = task.load_data(cfg)
    model = task.build(cfg)
    model.set_data_stats(data.extra["scaler"], data.extra["n_atoms_prob"])
    batch = data.train.batch(list(range(6)))
    for parts in (("graph",), ("predictor",), ("smiles",), ("graph", "smiles")):
        loss = model(batch, torch.Generator().manual_seed(0), parts=parts)
        assert loss.shape == (6,) and torch.isfinite(loss).all()
    # the default (every network) is what training without parts has always computed
    full = model(batch, torch.Generator().manual_seed(0))
    assert torch.equal(full, model(batch, torch.Generator().manual_seed(0), parts=("graph", "predictor", "smiles")))
    with pytest.raises(ValueError, match="unknown model parts"):
        model(batch, None, parts=("decoder",))


def test_train_separately_trains_one_network_at_a_time():
    import copy

    torch.set_num_threads(1)
    task = MoleculesTask()
    cfg = task.config("tiny")
    data = task.load_data(cfg)
    model = task.build(cfg)
    before = copy.deepcopy(model.state_dict())
    model, info = task.train_separately(cfg, model, data, {"graph": _tiny_train()})
    assert info["graph"]["steps"] == 2 and info["graph"]["seconds"] > 0
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert "graph" in changed and not changed & {"predictor", "smiles"}
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    # a wall-clock budget stops a long run early
    model, info = task.train_separately(cfg, model, data, {"predictor": _tiny_train(steps=100000, max_seconds=0.5)})
    assert 1 <= info["predictor"]["steps"] < 100000
    with pytest.raises(ValueError, match="unknown model parts"):
        task.train_separately(cfg, model, data, {"decoder": _tiny_train()})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_separately_records_errors():
    task = MoleculesTask()
    cfg = task.config("tiny")
    data = task.load_data(cfg)
    model = task.build(cfg)
    _, info = task.train_separately(cfg, model, data, {"smiles": _tiny_train(device="cuda"), "graph": _tiny_train()},
                                    on_error="record")
    assert "CUDA" in info["smiles"]["error"] and info["graph"]["steps"] == 2
    with pytest.raises(Exception, match="CUDA"):
        task.train_separately(cfg, model, data, {"smiles": _tiny_train(device="cuda")})
