"""DES inverse design on the vendored eutectic points: loader, split by mixture, tiny training."""

import numpy as np
import pytest
import torch

from molecules.des import (DesModel, group_split, load_des, pair_features, sample_fractions, train_des)


@pytest.fixture(scope="module")
def des():
    return load_des()


def test_load_vendored_points(des):
    assert len(des) == 1648 and des.invalid.count == 0
    assert len(np.unique(des.pair)) == 237
    assert ((des.x1 >= 0) & (des.x1 <= 1)).all() and (des.t_melt > 150).all()
    # a mixture melts no higher than its higher-melting pure component (within data noise)
    assert np.mean(des.t_melt <= des.t_pure.max(1) + 5) > 0.97


def test_split_by_mixture(des):
    parts = group_split(des.pair, seed=0)
    assert sum(len(p) for p in parts) == len(des)
    pairs = [set(des.pair[p]) for p in parts]
    assert not (pairs[0] & pairs[1]) and not (pairs[0] & pairs[2]) and not (pairs[1] & pairs[2])
    assert all(np.array_equal(a, b) for a, b in zip(parts, group_split(des.pair, seed=0)))


def test_tiny_train_and_sample(des):
    torch.manual_seed(0)
    sub = des.subset(np.arange(200))
    f, h_mean = pair_features(sub)
    assert f.shape[0] == 200 and torch.isfinite(f).all() and np.isfinite(h_mean).all()
    model = train_des(DesModel(f.shape[1], hidden=32), f, sub.x1, sub.t_melt, steps=20, batch_size=64)
    t = torch.tensor(sub.t_melt[:6], dtype=torch.float32)
    x, clipped = sample_fractions(model, f[:6], t, scale=2.0, steps=5)
    y, _ = sample_fractions(model, f[:6], t, scale=2.0, steps=5)
    assert x.shape == (6,) and (x >= 0).all() and (x <= 1).all() and 0 <= clipped <= 1
    assert torch.equal(x, y)
    # a sample does not depend on the batch it was drawn in
    z, _ = sample_fractions(model, f[:3], t[:3], scale=2.0, steps=5)
    assert torch.allclose(z, x[:3], atol=1e-6)
    loss = model.loss(f[:4], torch.tensor(sub.x1[:4]), torch.tensor(sub.t_melt[:4]))
    assert loss.shape == (4,) and torch.isfinite(loss).all()


def test_bad_file(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="Smiles#1"):
        load_des(p)
    with pytest.raises(FileNotFoundError):
        load_des(tmp_path / "missing.csv")
    q = tmp_path / "y.csv"
    q.write_text("Smiles#1,Smiles#2,T#1,T#2,X#1,T_EP,H#1,H#2\nCCO,O,159,273,0.5,200,5,6\nC1CC,O,1,2,0.5,3,,\n"
                 "CCO,O,159,273,1.5,200,5,6\n")
    with pytest.warns(UserWarning, match="skipped 2"):
        t = load_des(q)
    assert len(t) == 1
