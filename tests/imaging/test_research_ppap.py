"""PPAP recipe: clean (off-the-shelf) classifier, fine-tuned / distilled experts, scale selection."""

import math

import pytest
import torch

from imaging import ppap
from tests.imaging.test_research_ppap_diagnostics import D, SHAPE, ExactExpert, Stub

torch.set_num_threads(1)  # see test_research_classifier.py


def _stub_clf(x):
    """'Metric classifier' of the stub's two classes: the sign of the mean."""
    m = x.flatten(1).mean(1, keepdim=True)
    return torch.cat([-m, m], 1)


def test_select_scale_prefers_the_scale_that_steers_samples():
    stub = Stub()
    experts = [(lo, hi, ExactExpert(stub, 0.5 * (lo + hi))) for lo, hi in ppap.uniform_intervals(4)]
    best, accs = ppap.select_scale(stub, experts, [0.0, 3.0], n=16, seed=100, num_classes=2, clf=_stub_clf,
                                   sample_steps=10)
    assert best == 3.0 and accs[3.0] >= 0.95 > accs[0.0]
    # ties go to the smaller scale
    best, _ = ppap.select_scale(stub, experts, [3.0, 3.0 + 1e-9], n=16, seed=100, num_classes=2, clf=_stub_clf,
                                sample_steps=10)
    assert best == 3.0


def test_distilled_experts_start_from_the_clean_classifier_and_match_it_on_clean_latents(trained_latent, tiny_data):
    model = trained_latent[0]
    tr = tiny_data.train
    z = ppap.encode_images(model, tr.images[:64])
    assert z.shape[1:] == model.data_shape
    clean = ppap.clean_classifier(model, z, tr.labels[:64], steps=3, batch_size=16, encoded=True)
    # one distillation step at a tiny rate near t = 0: the expert is a fine-tuned copy that agrees with its teacher
    ex = ppap.train_experts(model, z, None, intervals=[(0.0, 0.01)], steps=1, batch_size=16, lr=1e-6, teacher=clean,
                            init="teacher", encoded=True)
    e = ex[0][2]
    assert e is not clean
    with torch.no_grad():
        pe, pc = torch.softmax(e(z), -1), torch.softmax(clean(z), -1)
    assert (pe - pc).abs().max() < 1e-2 and (pe.argmax(1) == pc.argmax(1)).float().mean() > 0.95


def test_compare_clean_init_selects_a_scale_per_arm(trained_latent, tiny_data):
    model = trained_latent[0]
    tr = tiny_data.train
    res = ppap.compare(model, tr.images[:32], tr.labels[:32], n=4, n_experts=2, steps=1, scales=(1.0, 2.0),
                       select_n=2, sample_steps=2, clean_steps=1)
    assert res["init"] == "clean" and res["distill"] is True and res["intervals"] == [[0.0, 0.5], [0.5, 1.0]]
    assert res["ppap_guidance_scale"] in (1.0, 2.0) and res["single_guidance_scale"] in (1.0, 2.0)
    assert set(res["scale_selection"]["ppap"]) == {1.0, 2.0}
    for k in ("ppap_cond_acc", "single_classifier_cond_acc", "cfg_cond_acc", "unguided_acc"):
        assert 0.0 <= res[k] <= 1.0
    # paired difference: same seeds and classes for both arms
    assert abs(res["ppap_minus_single"] - (res["ppap_cond_acc"] - res["single_classifier_cond_acc"])) < 1e-6
    assert res["ppap_only_correct"] - res["single_only_correct"] == round(4 * res["ppap_minus_single"])


def test_widen_trains_the_top_expert_on_a_wider_interval_but_dispatches_on_its_own(trained_latent, tiny_data, monkeypatch):
    import shared.training as T

    model = trained_latent[0]
    tr = tiny_data.train
    with pytest.raises(ValueError, match="widen"):
        ppap.train_experts(model, tr.images[:8], tr.labels[:8], widen=-1.0)
    seen, fit = [], T.Trainer.fit

    def spy(self, m, loss_fn, *a, **k):  # the loss binds the training interval as its (lo, hi) defaults
        seen.append(loss_fn.__defaults__)
        return fit(self, m, loss_fn, *a, **k)

    monkeypatch.setattr(T.Trainer, "fit", spy)
    iv = [(0.0, 0.25), (0.25, 0.5), (0.5, 1.0)]
    ex = ppap.train_experts(model, tr.images[:16], tr.labels[:16], intervals=iv, steps=1, batch_size=8, widen=0.5)
    assert [(lo, hi) for lo, hi, _ in ex] == iv  # dispatch intervals unchanged
    assert [tuple(d) for d in seen] == [(0.0, 0.25), (0.25, 0.5), (0.25, 1.0)]  # only the top one widened down


def test_noise_profile_sees_no_guidance_from_a_uniform_expert_and_some_from_an_exact_one():
    stub = Stub()
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1] * 16)
    x0 = (stub.means[y].float() + 0.1 * torch.randn(32, D, generator=g)).reshape(32, *SHAPE)

    class Uniform(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 2) + 0 * x.flatten(1).sum(1, keepdim=True)

    exact = [(lo, hi, ExactExpert(stub, 0.5 * (lo + hi))) for lo, hi in ppap.uniform_intervals(2)]
    ts = (0.25, 0.75)  # the exact experts' own times (interval midpoints)
    flat = ppap.noise_profile(stub, [(0.0, 1.0, Uniform())], x0, y, ts, encoded=True)
    prof = ppap.noise_profile(stub, exact, x0, y, ts, encoded=True)
    assert flat[0.75]["shift"] == 0 and abs(flat[0.75]["nll"] - math.log(2)) < 1e-3  # rounded to 4 decimals
    assert prof[0.25]["acc"] >= 0.9 and prof[0.25]["nll"] < flat[0.25]["nll"]
    # at high noise the exact posterior moves x0_hat by about half the distance between the class means
    assert 0.7 * 2.0 < prof[0.75]["shift"] < 1.3 * 2.0  # 0.5 * || mean_1 - mean_0 || = 0.5 * sqrt(16)
