"""Tiny end-to-end tests of the graphs task: train, sample, guide, evaluate, save/load, plot."""

import math

import pytest
import torch
from torch import nn

from shared import grid as grids
from shared import solvers
from shared.config import ConfigError, apply_overrides
from shared.training import Trainer

from graphs.data import OPS, N_NODES, is_valid
from graphs.task import CellSamples, GraphsTask, Guidance, search


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    task = GraphsTask()
    cfg = task.config("tiny")
    data = task.load_data(cfg)
    model = task.build(cfg)
    model = task.train(cfg, model, data, Trainer(cfg.train, None, progress=False))
    return task, cfg, data, model


def _grid(model, steps=8):
    return grids.make("uniform", steps, process=model.process)


def test_data_splits(setup):
    task, cfg, data, _ = setup
    assert data.train.shape == (cfg.train_subset, 8, 7) and data.test.shape == (625, 8, 7)
    assert set(data.train.unique().tolist()) == {-1.0, 1.0}
    assert len(data.extra["train_archs"]) == 15000


@pytest.mark.parametrize("solver", ["euler", "pc", "dpmpp_2m"])
def test_unguided_sampling_returns_valid_cells(setup, solver):
    task, cfg, data, model = setup
    s = task.generate(model, 64, solver=solvers.make(solver), grid=_grid(model), guidance=0.0,
                      generator=torch.Generator().manual_seed(1))
    assert isinstance(s, CellSamples) and s.x.shape == (64, 8, 7)
    assert torch.isfinite(s.x).all()
    # input / output rows are held exactly by the Masked space
    assert (s.ops[:, 0] == OPS.index("input")).all() and (s.ops[:, -1] == OPS.index("output")).all()
    assert float(is_valid(s.ops).float().mean()) >= 0.95
    # the model learned the data: not all cells identical
    assert len(set(a for a in s.archs() if a)) > 8


class _PreferOp(nn.Module):
    """Fake predictor: 'accuracy' = how strongly the free nodes point at one operation."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x, t, dataset):
        return x[:, 1:N_NODES - 1, self.k].sum(1)


def test_guidance_with_fake_predictor_raises_that_operation(setup):
    task, cfg, data, model = setup
    k = OPS.index("avg_pool_3x3")
    real = model.predictor
    model.predictor = _PreferOp(k)
    try:
        freq = {}
        for scale in (0.0, 2.0):
            s = search(model, 128, solver=solvers.make("euler"), grid=_grid(model, 10),
                       guidance=Guidance("cifar10", scale, (0.0, 1.0)), generator=torch.Generator().manual_seed(3))
            freq[scale] = float((s.ops[s.valid][:, 1:7] == k).float().mean())
    finally:
        model.predictor = real
    assert freq[2.0] > freq[0.0] + 0.15, freq


def test_guidance_interval_outside_sampling_is_unguided(setup):
    task, cfg, data, model = setup
    kw = dict(solver=solvers.make("euler"), grid=_grid(model), generator=None)
    a = search(model, 16, guidance=0.0, **{**kw, "generator": torch.Generator().manual_seed(5)})
    # an interval no grid time falls into: identical to unguided
    b = search(model, 16, guidance=Guidance("cifar10", 50.0, (0.2001, 0.2002)),
               **{**kw, "generator": torch.Generator().manual_seed(5)})
    assert torch.allclose(a.x, b.x)


def test_evaluate_and_lookup_budget(setup):
    task, cfg, data, model = setup
    s = task.generate(model, 64, solver=solvers.make("euler"), grid=_grid(model),
                      generator=torch.Generator().manual_seed(2))
    m = task.evaluate(s, data)
    name, mode = task.headline_metric
    assert mode == "max" and math.isfinite(m[name])
    assert m["lookups_cifar10"] == min(cfg.search.top_k, len(s.ranked()))
    assert m["labels_cifar10"] == cfg.predictor.labels_target
    assert 0 <= m["validity"] <= 1 and 0 <= m["uniqueness"] <= 1 and 0 <= m["novelty"] <= 1
    assert 10.0 <= m["best_acc"] <= 94.38 and m["regret"] >= 0
    ranked = s.ranked()
    assert len(ranked) == len(set(ranked))
    with pytest.raises(TypeError):
        task.evaluate(torch.zeros(3), data)


def test_predictor_learned_something(setup):
    """The noise-aware predictor ranks held-out clean test cells better than chance."""
    task, cfg, data, model = setup
    table = data.extra["table"]
    idx = data.extra["test_idx"]
    pred = model.predict_accuracy(table.ops[idx], "cifar10")
    true = table.acc["cifar10"][idx]
    r = lambda v: v.argsort().argsort().float()  # noqa: E731
    rho = torch.corrcoef(torch.stack([r(pred), r(true)]))[0, 1]
    assert rho > 0.3, float(rho)


def test_save_load_identical(setup, tmp_path):
    task, cfg, data, model = setup
    task.save(model, cfg, tmp_path / "ck")
    m2, cfg2 = task.load(tmp_path / "ck")
    assert cfg2 == cfg
    assert torch.equal(m2.label_mean, model.label_mean) and torch.equal(m2.label_counts, model.label_counts)
    kw = dict(solver=solvers.make("pc"), grid=_grid(model))
    a = task.generate(model, 16, generator=torch.Generator().manual_seed(4), **kw)
    b = task.generate(m2, 16, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a.x, b.x) and torch.equal(a.scores, b.scores)


def test_plot_writes_png(setup, tmp_path):
    task, cfg, data, model = setup
    s = task.generate(model, 16, solver=solvers.make("euler"), grid=_grid(model),
                      generator=torch.Generator().manual_seed(6))
    p = tmp_path / "cells.png"
    task.plot(s, data, p)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=".png"):
        task.plot(s, data, tmp_path / "cells.jpg")
    assert not (tmp_path / "cells.jpg").exists()


def test_bad_inputs(setup, tmp_path):
    task, cfg, data, model = setup
    kw = dict(solver=solvers.make("euler"), grid=_grid(model))
    with pytest.raises(ValueError, match="unknown dataset"):
        task.generate(model, 4, guidance={"dataset": "mnist"}, **kw)
    with pytest.raises(ValueError, match="scale"):
        Guidance("cifar10", -1.0)
    with pytest.raises(ValueError, match="interval"):
        Guidance("cifar10", 1.0, (0.8, 0.2))
    with pytest.raises(ValueError, match="unknown guidance keys"):
        task.generate(model, 4, guidance={"sclae": 1.0}, **kw)
    with pytest.raises(ValueError, match="positive integer"):
        task.generate(model, 0, **kw)
    with pytest.raises(ConfigError, match="interval"):
        apply_overrides(cfg, ["search.interval=[0.9,0.1]"])
    with pytest.raises(ConfigError, match="labels"):
        apply_overrides(cfg, ["predictor.labels_target=0", "predictor.labels_other=0"])
    with pytest.raises(ConfigError, match="unknown preset"):
        task.config("huge")
    with pytest.raises(Exception):
        task.load(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"\[B, 8, 7\]"):
        model.denoiser.net(torch.zeros(2, 8, 6), torch.zeros(2))


def test_transfer_prediction_uses_the_labelled_datasets(setup):
    """With no label of the target dataset the predictor answers with the datasets it knows."""
    task, cfg, data, model = setup
    x = data.test[:8]
    t = torch.full((8,), 0.3)
    with torch.no_grad():
        assert torch.allclose(model.predict(x, t, "cifar100"), model.predict(x, t, "cifar10"))


def test_rank_gauss_labels():
    from graphs.task import _rank_gauss

    y = torch.tensor([10.0, 93.0, 93.0, 50.0, 94.0, 10.0])
    z = _rank_gauss(y)
    assert z[1] == z[2] and z[0] == z[5]  # ties share a value
    assert z[4] > z[1] > z[3] > z[0]  # order kept
    assert abs(float(_rank_gauss(torch.tensor([5.0, 1.0, 3.0, 2.0])).mean())) < 1e-6  # symmetric
    assert torch.allclose(_rank_gauss(torch.tensor([1.0, 2.0, 3.0])), -_rank_gauss(torch.tensor([3.0, 2.0, 1.0])))


def test_predictor_ensemble_trains_every_member_and_round_trips(setup, tmp_path):
    """predictor.ensemble=K: K differently initialised members, the prediction is their mean,
    every member is fitted (ranks test cells better than chance), save/load keeps it."""
    from graphs.backbones import PredictorEnsemble
    from graphs.task import GraphsModel, train_predictor

    task, cfg, data, model = setup
    cfg_e = apply_overrides(cfg, ["predictor.ensemble=2", "predictor.steps=40"])
    m = GraphsModel(cfg_e)
    m.denoiser.load_state_dict(model.denoiser.state_dict())
    m.reset_predictor(1)
    assert isinstance(m.predictor, PredictorEnsemble) and len(m.predictor.members) == 2
    w0 = [p.detach().clone() for p in m.predictor.members[0].parameters()]
    assert not torch.equal(w0[0], next(m.predictor.members[1].parameters()))
    train_predictor(m, data, dataset="cifar10")
    table, idx = data.extra["table"], data.extra["test_idx"]
    x = to_signed_onehot(table.ops[idx])
    t0 = torch.zeros(len(idx))
    d = torch.zeros(len(idx), dtype=torch.long)
    with torch.no_grad():
        each = m.predictor.forward_all(x, t0, d)
        assert each.shape == (2, len(idx))
        assert torch.allclose(m.predictor(x, t0, d), each.mean(0))
    r = lambda v: v.argsort().argsort().float()  # noqa: E731
    true = table.acc["cifar10"][idx]
    assert not torch.equal(w0[0], next(m.predictor.members[0].parameters()))  # trained
    for k in range(2):  # each member learned a ranking on its own
        assert torch.corrcoef(torch.stack([r(each[k]), r(true)]))[0, 1] > 0.2
    task.save(m, cfg_e, tmp_path / "ens")
    m2, cfg2 = task.load(tmp_path / "ens")
    assert cfg2.predictor.ensemble == 2
    assert torch.equal(m2.predict_accuracy(table.ops[idx], "cifar10"), m.predict_accuracy(table.ops[idx], "cifar10"))
    with pytest.raises(ConfigError, match="ensemble"):
        apply_overrides(cfg, ["predictor.ensemble=0"])


def to_signed_onehot(ops):
    from graphs.data import ops_to_onehot, to_signed

    return to_signed(ops_to_onehot(ops))
