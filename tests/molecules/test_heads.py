"""Simplex x0 heads, the noise level on every SMILES position, self-conditioned sampling, config checks."""

import dataclasses

import pytest
import torch

from shared import grid as grids
from shared import solvers
from shared.config import ConfigError

from molecules import configs as C
from molecules.backbones import GraphTransformer, SmilesTransformer
from molecules.space import unpack
from molecules.task import MoleculeModel, sample_smiles


def test_graph_simplex_head_is_a_posterior_mean_of_one_hots():
    torch.manual_seed(0)
    net = GraphTransformer(n_atom_types=8, n_bond_types=4, max_nodes=9, hidden=16, edge_hidden=8, layers=1,
                           heads=2, simplex=True)
    nm = torch.arange(9)[None] < torch.tensor([[5], [9]])
    x = torch.randn(2, 9 * 8 + 81 * 4)
    X, E = unpack(net(x, torch.tensor([0.3, 0.9]), node_mask=nm), 9, 8, 4)
    # 2 p - 1 with p on the simplex: entries in [-1, 1], summing to 2 - K on present atoms / pairs
    assert X.abs().max() <= 1 and E.abs().max() <= 1
    assert torch.allclose(X.sum(-1)[nm], torch.full((int(nm.sum()),), 2.0 - 8), atol=1e-5)
    assert (X[~nm] == 0).all()
    pair = nm[:, :, None] & nm[:, None, :] & ~torch.eye(9, dtype=torch.bool)
    assert torch.allclose(E.sum(-1)[pair], torch.full((int(pair.sum()),), 2.0 - 4), atol=1e-5)
    assert (E[~pair] == 0).all() and torch.equal(E, E.transpose(1, 2))


def test_smiles_simplex_head_and_time_on_every_position():
    torch.manual_seed(0)
    net = SmilesTransformer(vocab=22, length=32, n_props=3, d_model=16, layers=1, heads=2, simplex=True,
                            self_condition=True)
    x = torch.randn(2, 32, 22)
    out = net(x, torch.tensor([0.2, 0.2]))
    assert torch.allclose(out.sum(-1), torch.full((2, 32), 2.0 - 22), atol=1e-5)
    # the self-conditioning input changes the output; None means zeros
    sc = torch.randn(2, 32, 22)
    assert not torch.allclose(net(x, torch.tensor([0.2, 0.2]), self_cond=sc), out)
    assert torch.allclose(net(x, torch.tensor([0.2, 0.2]), self_cond=torch.zeros_like(x)), out)
    # a different noise level changes every position's output
    other = net(x, torch.tensor([0.8, 0.8]))
    assert ((other - out).abs().amax(-1) > 1e-6).all()


def test_self_conditioned_smiles_sampling_is_deterministic_per_seed():
    cfg = C.tiny()
    cfg = dataclasses.replace(cfg, smiles=dataclasses.replace(cfg.smiles, simplex=True, self_condition=0.5))
    torch.manual_seed(0)
    model = MoleculeModel(cfg).eval()
    grid = grids.make("uniform", 4, process=model.process)
    kw = dict(solver=solvers.make("ddpm"), grid=grid, batch_size=3)
    a = sample_smiles(model, 4, targets={"gap": 0.25}, generator=torch.Generator().manual_seed(1), **kw)
    b = sample_smiles(model, 4, targets={"gap": 0.25}, generator=torch.Generator().manual_seed(1), **kw)
    assert a.raw == b.raw and len(a) == 4
    # the training loss runs the self-conditioning branch and stays finite per sample
    batch = {"atoms": torch.full((2, 9), -1).index_fill_(1, torch.arange(3), 0),
             "bonds": torch.zeros(2, 9, 9, dtype=torch.long),
             "tokens": torch.tensor([[1, 1, 1] + [0] * 29] * 2),
             "y": torch.zeros(2, 12), "y_known": torch.ones(2, 12, dtype=torch.bool)}
    batch["bonds"][:, 0, 1] = batch["bonds"][:, 1, 0] = 1
    batch["bonds"][:, 1, 2] = batch["bonds"][:, 2, 1] = 1
    loss = model.train()(batch, torch.Generator().manual_seed(0))
    assert loss.shape == (2,) and torch.isfinite(loss).all()


def test_simplex_needs_x0_prediction():
    with pytest.raises(ConfigError, match="x0"):
        C.GraphConfig(simplex=True, prediction="eps")
    with pytest.raises(ConfigError, match="x0"):
        C.SmilesConfig(simplex=True, prediction="v")
    with pytest.raises(ConfigError, match="self_condition"):
        C.SmilesConfig(self_condition=1.5)


def test_cross_entropy_objective_config_and_loss():
    with pytest.raises(ConfigError, match="simplex"):
        C.GraphConfig(objective="ce")
    with pytest.raises(ConfigError, match="simplex"):
        C.SmilesConfig(objective="ce")
    with pytest.raises(ConfigError, match="objective"):
        C.GraphConfig(simplex=True, objective="l1")
    cfg = C.tiny()
    batch = {"atoms": torch.tensor([[0, 1, 2] + [-1] * 6] * 2), "bonds": torch.zeros(2, 9, 9, dtype=torch.long),
             "tokens": torch.tensor([[1, 1, 1] + [0] * 29] * 2),
             "y": torch.zeros(2, 12), "y_known": torch.ones(2, 12, dtype=torch.bool)}
    batch["bonds"][:, 0, 1] = batch["bonds"][:, 1, 0] = 1
    losses = {}
    for obj in ("mse", "ce"):
        c = dataclasses.replace(cfg, graph=dataclasses.replace(cfg.graph, simplex=True, objective=obj),
                                smiles=dataclasses.replace(cfg.smiles, simplex=True, objective=obj))
        torch.manual_seed(0)
        model = MoleculeModel(c).train()
        for part in ("graph", "smiles"):
            loss = model(batch, torch.Generator().manual_seed(0), parts=(part,))
            assert loss.shape == (2,) and torch.isfinite(loss).all() and (loss > 0).all()
            losses[obj, part] = loss
        model.zero_grad()
        model(batch, torch.Generator().manual_seed(0), parts=("graph",)).sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.graph.parameters()
                   if p.requires_grad)
    # same network, noise and times: only the objective differs
    assert not torch.allclose(losses["mse", "graph"], losses["ce", "graph"])
    assert not torch.allclose(losses["mse", "smiles"], losses["ce", "smiles"])


def test_node_weight():
    from molecules.space import MolGraphSpace, pack

    nm = torch.arange(9)[None] < torch.tensor([[3]])
    X, E = torch.zeros(1, 9, 8), torch.zeros(1, 9, 9, 4)
    X[0, :3] = 1.0  # every present node entry 1, every pair entry 0: nodes 24 entries, pairs 3 * 4 = 12
    x = pack(X, E)
    assert torch.allclose(MolGraphSpace(nm, 8, 4).mean(x).double(), torch.tensor([24 / 36], dtype=torch.float64))
    sp = MolGraphSpace(nm, 8, 4, node_weight=4.0)
    assert torch.allclose(sp.mean(x).double(), torch.tensor([4 * 24 / (4 * 24 + 12)], dtype=torch.float64))
    assert torch.equal(sp.sum(x), MolGraphSpace(nm, 8, 4).sum(x))  # only the mean is weighted
    with pytest.raises(ConfigError, match="node_weight"):
        C.GraphConfig(node_weight=0.0)
    with pytest.raises(ConfigError, match="graph.weighting"):
        C.GraphConfig(weighting="sigmoid:x")
    C.GraphConfig(weighting="sigmoid:2")  # the kernel's sigmoid weighting is accepted


def test_valence_features_of_an_exact_graph():
    from molecules.backbones import valence_features
    from molecules.data import mol_to_dense, parse_smiles
    from molecules.space import encode_dense

    mols, _, _ = parse_smiles(["C=CC#N", "OC(F)=O"])
    A, Bd = zip(*(mol_to_dense(m) for m in mols))
    X, E, nm = encode_dense(torch.stack(A), torch.stack(Bd), 8, 4)
    pair = nm[:, :, None] & nm[:, None, :] & ~torch.eye(9, dtype=torch.bool)
    f = valence_features(X, E, pair) * 4  # [B, N, (bond-order sum, class valence, free, neighbours)]
    # C=CC#N: bond-order sums 2, 3, 4, 3; class valences 4, 4, 4, 3
    assert torch.allclose(f[0, :4, 0], torch.tensor([2.0, 3, 4, 3]))
    assert torch.allclose(f[0, :4, 1], torch.tensor([4.0, 4, 4, 3]))
    assert torch.allclose(f[0, :4, 2], torch.tensor([2.0, 1, 0, 0]))
    assert torch.allclose(f[0, :4, 3], torch.tensor([1.0, 2, 2, 1]))
    # O-C(F)=O: the carbon is saturated, every atom's free valence is >= 0
    assert float(f[1, 1, 2]) == 0.0 and (f[1, :4, 2] >= 0).all()
    assert (f[~nm] [..., [0, 3]] == 0).all()


def test_graph_self_conditioning_and_valence_features_sample_deterministically():
    from molecules.task import sample_graphs

    cfg = C.tiny()
    cfg = dataclasses.replace(cfg, graph=dataclasses.replace(cfg.graph, simplex=True, valence_features=True,
                                                             self_condition=0.5))
    torch.manual_seed(0)
    model = MoleculeModel(cfg).eval()
    net = model.graph.net
    nm = torch.arange(9)[None] < torch.tensor([[5], [9]])
    x = torch.randn(2, 9 * 8 + 81 * 4)
    t = torch.tensor([0.3, 0.6])
    # zeros and None are the same "no estimate"; an estimate changes the output
    out = net(x, t, node_mask=nm)
    assert torch.allclose(net(x, t, node_mask=nm, self_cond=torch.zeros_like(x)), out)
    assert not torch.allclose(net(x, t, node_mask=nm, self_cond=torch.randn_like(x)), out)
    grid = grids.make("uniform", 4, process=model.process)
    kw = dict(solver=solvers.make("ddpm"), grid=grid)
    gens = lambda: [torch.Generator().manual_seed(50 + i) for i in range(4)]  # noqa: E731
    a = sample_graphs(model, 4, generator=gens(), batch_size=4, **kw)
    b = sample_graphs(model, 4, generator=gens(), batch_size=2, **kw)
    assert torch.equal(a.atoms, b.atoms) and torch.equal(a.bonds, b.bonds)
    batch = {"atoms": torch.full((2, 9), -1).index_fill_(1, torch.arange(3), 0),
             "bonds": torch.zeros(2, 9, 9, dtype=torch.long),
             "tokens": torch.tensor([[1, 1, 1] + [0] * 29] * 2),
             "y": torch.zeros(2, 12), "y_known": torch.ones(2, 12, dtype=torch.bool)}
    loss = model.train()(batch, torch.Generator().manual_seed(0))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    with pytest.raises(ConfigError, match="self_condition"):
        C.GraphConfig(self_condition=-0.1)


def test_smiles_unet_backbone_contract():
    from molecules.backbones import SmilesUNet1D

    torch.manual_seed(0)
    net = SmilesUNet1D(vocab=22, length=32, n_props=3, channels=(16, 32), heads=2, simplex=True,
                       self_condition=True)
    x, t = torch.randn(2, 32, 22), torch.tensor([0.2, 0.7])
    out = net(x, t)
    assert out.shape == (2, 32, 22)
    assert torch.allclose(out.sum(-1), torch.full((2, 32), 2.0 - 22), atol=1e-5)
    # no condition = the all-masked condition (the CFG null that drop_condition trains)
    null = {"y": torch.randn(2, 3), "mask": torch.zeros(2, 3, dtype=torch.bool)}
    assert torch.allclose(net(x, t, null), out, atol=1e-6)
    given = {"y": torch.tensor([[0.1, 0.5, 0.9]] * 2), "mask": torch.ones(2, 3, dtype=torch.bool)}
    assert not torch.allclose(net(x, t, given), out)
    assert torch.allclose(net(x, t, self_cond=torch.zeros_like(x)), out)
    with pytest.raises(ValueError, match="expected x"):
        net(torch.randn(2, 31, 22), t)
    cfg = C.tiny()
    cfg = dataclasses.replace(cfg, smiles=dataclasses.replace(cfg.smiles, backbone="unet", unet_channels=(16, 32),
                                                              simplex=True))
    model = MoleculeModel(cfg).eval()
    s = sample_smiles(model, 3, targets={"gap": 0.25}, solver=solvers.make("ddpm"),
                      grid=grids.make("uniform", 3, process=model.process), generator=torch.Generator().manual_seed(0))
    assert len(s.raw) == 3
    with pytest.raises(ConfigError, match="backbone"):
        C.SmilesConfig(backbone="lstm")
