"""DDIM inversion, SDEdit, CycleDiffusion's DPM-Encoder and BoundaryDiffusion on exact Gaussian-
mixture denoisers (true answers) and on the tiny trained UNet."""

import math

import pytest
import torch

from imaging import editing as E
from shared.process import DiscreteVP
from shared.spaces import Euclidean
from shared.testing import GMM

torch.set_num_threads(1)  # see test_research_classifier.py

D = 16  # images [B, 1, 4, 4]


def _den(means, v=0.05):
    proc = DiscreteVP.from_betas("linear", 1000)
    K = means.shape[0]
    fn = GMM(means.double(), torch.full((K,), v, dtype=torch.float64),
             torch.full((K,), 1.0 / K, dtype=torch.float64)).denoiser(proc)

    def d(x, t):
        return fn(x, t)

    d.process, d.space = proc, Euclidean()
    return d


def _blobs(sign, n, seed):
    g = torch.Generator().manual_seed(seed)
    return (sign * 0.6 + math.sqrt(0.05) * torch.randn(n, D, generator=g)).reshape(n, 1, 4, 4)


TWO = torch.stack([torch.full((D,), -0.6), torch.full((D,), 0.6)])


def test_ddim_inversion_error_falls_with_steps():
    den = _den(TWO)
    x = torch.cat([_blobs(-1, 4, 0), _blobs(1, 4, 1)])
    err = E.inversion_error(den, x, (2, 5, 20, 50))
    assert err[50] < err[20] < err[5] < err[2]
    assert err[50] < 0.01


def test_dpm_encoder_round_trip_is_exact_and_translates_between_models():
    src, tgt = _den(TWO[:1]), _den(TWO[1:])  # two "domains": all-dark vs all-bright
    x = _blobs(-1, 6, 2)
    lat = E.dpm_encode(src, x, steps=20, generator=torch.Generator().manual_seed(3))
    assert sum(z is not None for z in lat.noises) == 19 and lat.residuals[-1] is not None
    assert (E.dpm_decode(src, lat) - x).abs().max() < 1e-4  # same model: the input comes back
    y = E.dpm_decode(tgt, lat)
    assert torch.all(y.flatten(1).mean(1) > 0.4)  # decoded by the other model: in its domain
    # the translation keeps the per-image structure: deviations from the domain mean correlate
    dx, dy = (x + 0.6).flatten(), (y - 0.6).flatten()
    assert torch.corrcoef(torch.stack([dx, dy]))[0, 1] > 0.5
    with pytest.raises(ValueError, match="eta > 0"):
        E.dpm_encode(src, x, eta=0.0)


def test_sdedit_strength_moves_toward_the_target_model():
    tgt = _den(TWO[1:])
    x = _blobs(-1, 6, 4)
    low = E.sdedit(tgt, x, strength=0.01, steps=10, generator=torch.Generator().manual_seed(0))
    high = E.sdedit(tgt, x, strength=1.0, steps=10, generator=torch.Generator().manual_seed(0))
    assert (low - x).pow(2).mean() < 0.01
    assert torch.all(high.flatten(1).mean(1) > 0.4)
    with pytest.raises(ValueError, match="strength"):
        E.sdedit(tgt, x, strength=0.0)


def test_boundary_diffusion_flips_the_attribute():
    den = _den(TWO)
    x = torch.cat([_blobs(-1, 12, 5), _blobs(1, 12, 6)])
    attr = x.flatten(1).mean(1) > 0
    t_m, ks = E.mixing_step(den, x, steps=20)
    assert 0 < t_m <= 1 and ks[max(ks)] <= min(ks.values()) + 0.05
    z = E.ddim_invert(den, x, steps=20, t_max=t_m)
    bd = E.fit_boundary(z, attr, t_m)
    assert bd.accuracy == 1.0
    neg = x[~attr]
    out = E.boundary_edit(den, neg, bd, to=True, distance=3.0, steps=20)
    assert torch.all(out.flatten(1).mean(1) > 0.4)
    with pytest.raises(ValueError, match="both values"):
        E.fit_boundary(z, torch.ones(len(z), dtype=torch.bool), t_m)


def test_editing_runs_on_the_tiny_unet(trained, tiny_data):
    model = trained[0]
    x = tiny_data.test.images[:3]
    den = model.conditional(model.labels(None, 3))
    rec, z = E.reconstruct(den, x, steps=4)
    assert rec.shape == x.shape and torch.isfinite(z).all()
    lat = E.dpm_encode(den, x, steps=4, generator=torch.Generator().manual_seed(0))
    assert (E.dpm_decode(den, lat) - x).abs().max() < 1e-3
