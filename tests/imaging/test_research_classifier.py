"""Diffusion Classifier (adaptive, shared noise) and diffusion-feature linear probe."""

import math

import pytest
import torch

from imaging.diffusion_classifier import classify, diffusion_features, linear_probe, parse_schedule, trial_times
from shared.process import DiscreteVP
from shared.spaces import Euclidean
from shared.testing import GMM

# tests/conftest.py's pytest_configure sets torch threads to cores // workers (2 here), which runs
# after tests/imaging/conftest.py; two threads on this shared box are ~20x slower than one.
torch.set_num_threads(1)

SHAPE = (1, 4, 4)


class GMMImageDenoiser:
    """Exact class-conditional denoiser of images [B, 1, 4, 4]: class k ~ N(m_k, v I);
    the null class K is the whole mixture. ``calls`` counts evaluated samples."""

    def __init__(self, K=4, v=0.3, seed=0):
        g = torch.Generator().manual_seed(seed)
        d = math.prod(SHAPE)
        self.means = 0.8 * torch.randn(K, d, generator=g, dtype=torch.float64)
        self.process = DiscreteVP.from_betas("linear", 1000)
        self.space = Euclidean()
        self.K, self.v = K, v
        self.parts = [GMM(self.means[k:k + 1], torch.tensor([v], dtype=torch.float64),
                          torch.ones(1, dtype=torch.float64)).denoiser(self.process) for k in range(K)]
        self.full = GMM(self.means, torch.full((K,), v, dtype=torch.float64),
                        torch.full((K,), 1.0 / K, dtype=torch.float64)).denoiser(self.process)
        self.calls = 0

    def __call__(self, x, t, cond):
        self.calls += x.shape[0]
        out = torch.empty_like(x)
        for k in range(self.K + 1):
            sel = cond == k
            if sel.any():
                fn = self.parts[k] if k < self.K else self.full
                out[sel] = fn(x[sel], t[sel])
        return out

    def sample(self, labels, g):
        z = torch.randn(len(labels), self.means.shape[1], generator=g, dtype=torch.float64)
        return (self.means[labels] + math.sqrt(self.v) * z).float().reshape(len(labels), *SHAPE)


def test_diffusion_classifier_recovers_gmm_classes_with_adaptive_nfe():
    den = GMMImageDenoiser()
    g = torch.Generator().manual_seed(1)
    y = torch.arange(40) % den.K
    x = den.sample(y, g)
    res = classify(den, x, classes=range(den.K), schedule=((6, 2), (12, 1)), generator=g)
    # exact denoisers and well separated classes: the ELBO classifier is almost always right (chance 25 %)
    assert res.accuracy(y) >= 0.9
    # adaptive evaluation: 6 trials x 4 classes, then 12 trials x 2 survivors
    assert torch.all(res.nfe == 6 * 4 + 12 * 2)
    assert den.calls == 40 * (6 * 4 + 12 * 2)
    assert res.scores.shape == (40, 4) and torch.all(res.trials.sum(1) == 6 * 4 + 12 * 2)
    # winners got all 18 trials, pruned classes 6
    assert torch.all(res.trials.gather(1, res.pred[:, None])[:, 0] == 18)


def test_shared_noise_makes_identical_conditions_tie():
    den = GMMImageDenoiser(K=2)
    den.means[1] = den.means[0]  # two identical classes: with shared t and noise the scores are equal
    den.parts[1] = den.parts[0]
    x = den.sample(torch.zeros(5, dtype=torch.long), torch.Generator().manual_seed(0))
    res = classify(den, x, classes=[0, 1], schedule=((8, 1),))
    assert torch.allclose(res.scores[:, 0], res.scores[:, 1])


def test_schedule_and_times_validation():
    assert parse_schedule("10:3,40:1") == ((10, 3), (40, 1))
    with pytest.raises(ValueError, match="trials:keep"):
        parse_schedule("10-3")
    den = GMMImageDenoiser()
    x = den.sample(torch.zeros(2, dtype=torch.long), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="keep must be"):
        classify(den, x, classes=range(4), schedule=((4, 5),))
    t = trial_times(64)
    assert t.min() >= 1e-3 and t.max() <= 1.0
    # every prefix is spread: the first 8 times hit all 4 quarters of [0, 1]
    assert len(set((trial_times(8) * 4).long().clamp(max=3).tolist())) == 4


def test_classifier_and_features_on_tiny_trained_model(trained, tiny_data):
    model = trained[0]
    x, y = tiny_data.test.images[:6], tiny_data.test.labels[:6]
    res = classify(model, x, schedule=((2, 3), (2, 1)), generator=torch.Generator().manual_seed(0))
    assert res.pred.shape == (6,) and bool(((res.pred >= 0) & (res.pred < 10)).all())
    assert res.nfe_per_image == 2 * 10 + 2 * 3
    f = diffusion_features(model, x, t=0.1)
    assert f.shape[0] == 6 and torch.isfinite(f).all()
    with pytest.raises(ValueError, match="unknown block"):
        diffusion_features(model, x, blocks=("up9",))


def test_linear_probe_beats_chance_on_tiny_model(trained, tiny_data):
    model = trained[0]
    tr, va = tiny_data.train, tiny_data.val
    r = linear_probe(model, tr.images, tr.labels, va.images, va.labels, t=0.1)
    assert r["accuracy"] > 0.2  # 10 classes: chance is 0.1
