"""PPAP expert guidance and the diagnostics (conservativity, memorisation -> generalisation)."""

import math

import pytest
import torch

from imaging import diagnostics as Dg
from imaging import ppap
from imaging.backbones import DigitClassifier
from shared.process import DiscreteVP
from shared.spaces import Euclidean
from shared.testing import GMM

torch.set_num_threads(1)  # see test_research_classifier.py

SHAPE = (1, 4, 4)
D = 16


class Stub:
    """An unconditional 'imaging model' over a 2-class Gaussian mixture with exact denoiser."""

    conditional_model, num_classes, is_latent, data_shape = False, 0, False, SHAPE

    def __init__(self):
        self.process, self.space = DiscreteVP.from_betas("linear", 1000), Euclidean()
        self.means = torch.stack([torch.full((D,), -0.5), torch.full((D,), 0.5)]).double()
        self.gmm = GMM(self.means, torch.full((2,), 0.1, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64))
        self.fn = self.gmm.denoiser(self.process)

    def labels(self, y, n=None):
        return None

    def conditional(self, labels):
        def d(x, t):
            return self.fn(x, t)
        d.process, d.space = self.process, self.space
        return d

    def decode(self, x):
        return x


class ExactExpert(torch.nn.Module):
    """log p(class | x_t) of the stub's mixture at a fixed time (an interval expert)."""

    def __init__(self, stub, t):
        super().__init__()
        self.stub, self.t = stub, t

    def forward(self, x):
        B = x.shape[0]
        t = torch.full((B,), self.t, dtype=torch.float64)
        a, s = self.stub.process.alpha(t), self.stub.process.sigma(t)
        _, _, logp = self.stub.gmm._comp(x.reshape(B, -1).double(), a, s)
        return logp.float()


def test_expert_guidance_steers_samples_to_the_class():
    stub = Stub()
    experts = [(lo, hi, ExactExpert(stub, 0.5 * (lo + hi))) for lo, hi in ppap.uniform_intervals(4)]
    y = torch.tensor([0, 1] * 8)
    x = ppap.guided_sample(stub, y, experts, scale=3.0, steps=10, seeds=range(16))
    got = (x.flatten(1).mean(1) > 0).long()
    assert (got == y).float().mean() >= 0.95
    free = ppap.guided_sample(stub, y, experts, scale=0.0, steps=10, seeds=range(16))
    assert (((free.flatten(1).mean(1) > 0).long()) == y).float().mean() < 0.9  # unguided: about half right


def test_experts_are_dispatched_by_interval():
    class Const(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            out = torch.full((x.shape[0], 3), -10.0)
            out[:, self.k] = 10.0
            return out

    lp = ppap.expert_log_prob([(0.0, 0.5, Const(0)), (0.5, 1.0, Const(2))], torch.tensor([2, 2]))
    x = torch.zeros(2, *SHAPE)
    assert float(lp(x, torch.full((2,), 0.2)).max()) < -10
    assert float(lp(x, torch.full((2,), 0.9)).min()) > -1e-6
    with pytest.raises(ValueError, match="t_lo < t_hi"):
        ppap.train_experts(Stub(), x, torch.zeros(2, dtype=torch.long), intervals=[(0.5, 0.5)])


def test_train_experts_on_tiny_model(trained, tiny_data):
    model = trained[0]
    tr = tiny_data.train
    experts = ppap.train_experts(model, tr.images[:64], tr.labels[:64], intervals=ppap.uniform_intervals(2), steps=2,
                                 batch_size=16)
    assert [(lo, hi) for lo, hi, _ in experts] == [(0.0, 0.5), (0.5, 1.0)]
    x = ppap.guided_sample(model, torch.tensor([3, 4]), experts, scale=2.0, steps=3, seeds=[0, 1])
    assert x.shape == (2, *model.image_shape) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="labels or a teacher"):
        ppap.train_experts(model, tr.images[:8], None)


def test_train_experts_on_tiny_latent_model_classify_latents(trained_latent, tiny_data):
    model = trained_latent[0]
    tr = tiny_data.train
    experts = ppap.train_experts(model, tr.images[:32], tr.labels[:32], intervals=ppap.uniform_intervals(2), steps=2,
                                 batch_size=16)
    C, H, W = model.data_shape
    clf = experts[0][2]
    assert clf.in_channels == C and clf.input_size == H  # experts see latents x_t, not pixels
    x = ppap.guided_sample(model, torch.tensor([3, 4]), experts, scale=2.0, steps=3, seeds=[0, 1])
    assert x.shape == (2, *model.image_shape) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="teacher"):  # a pixel-space teacher cannot read latents
        ppap.train_experts(model, tr.images[:8], tr.labels[:8], teacher=DigitClassifier(in_channels=1))
    with pytest.raises(ValueError, match="base="):
        ppap.train_experts(model, tr.images[:8], tr.labels[:8], init="base")
    tuned = ppap.train_experts(model, tr.images[:32], tr.labels[:32], intervals=[(0.0, 0.5)], steps=1,
                               batch_size=16, init="base", base=clf)
    assert tuned[0][2] is not clf and tuned[0][2].input_size == H  # a fine-tuned copy, base left as it was


def test_conservativity_zero_for_gradient_field_high_for_rotation():
    stub = Stub()
    field = Dg.eps_field(stub.conditional(None))
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # loops cancel
    res = Dg.conservativity(field, x, (0.1, 0.5, 0.9), n_probes=4, loop_points=32, loop_radius=0.2)
    for row in res.values():
        assert row["asymmetry"] < 1e-4 and row["loop"] < 1e-3
    A = torch.randn(D, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    A = A - A.T  # antisymmetric: a pure rotation field

    def rot(x, t):
        return (x.reshape(x.shape[0], -1) @ A.T).reshape(x.shape)

    rot.process = stub.process
    res = Dg.conservativity(rot, x, (0.5,), n_probes=8)
    assert res[0.5]["asymmetry"] > 0.9 and res[0.5]["loop"] > 0.5


def test_forward_ad_wrapper_matches_autograd_on_the_unet(trained, tiny_data):
    model = trained[0]
    x = tiny_data.test.images[:2]
    t = torch.full((2,), 0.5)
    f = Dg.eps_field(model.conditional(model.labels(None, 2)))
    v = torch.randn_like(x)
    with Dg._math_attention():
        jv = torch.func.jvp(lambda z: Dg.forward_ad_safe(f)(z, t), (x,), (v,))[1]
        ref = torch.autograd.functional.jvp(lambda z: f(z, t), x, v)[1]
    assert torch.allclose(jv, ref, atol=1e-4, rtol=1e-3)
    res = Dg.conservativity(model, x, (0.5,), n_probes=2, loop_points=4)
    assert 0.0 <= res[0.5]["asymmetry"] < 2.0


def test_generalization_curve_smoke(tiny_cfg, tiny_data, tmp_path):
    a, b = Dg.split_disjoint(tiny_data.train.images, 4)
    assert not any(torch.equal(u, w) for u in a for w in b)
    with pytest.raises(ValueError, match="disjoint"):
        Dg.split_disjoint(tiny_data.train.images[:5], 4)
    rows = Dg.generalization_curve(tiny_cfg, tiny_data.train.images, [4], steps=2, n_samples=2, sample_steps=2)
    assert rows[0]["n"] == 4 and -1 <= rows[0]["cosine"] <= 1
    Dg.plot_curve(rows, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
