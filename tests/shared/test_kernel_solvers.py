"""Solvers, sampling, inversion, guidance, likelihoods and diagnostics against closed forms.

Oracles: Gaussian mixtures have exact denoisers (tests/shared/gmm.py); a single Gaussian has an
exact probability-flow ODE solution; two Gaussians of equal variance give a closed-form
classifier-free-guided law. Everything runs in float64 so that solver error, not rounding, is
what is measured.
"""

import math

import numpy as np
import pytest
import torch

from shared import grid as G
from shared import process as P
from shared import solvers as S
from shared.guidance import cfg, classifier, energy, experts_by_interval, inpaint, observation_mse
from shared.sample import invert, prior, sample

from shared.testing import GMM, two_d_mixture

F64 = torch.float64


def _log_grid(proc, n, k_max, k_min=0.05):
    k = torch.exp(torch.linspace(math.log(k_max), math.log(k_min), n + 1, dtype=F64))
    return proc.t_of_edm_sigma(k)


def _slope(ns, errs):
    return -np.polyfit(np.log(ns), np.log(errs), 1)[0]


_REF: dict = {}


def _order_setup(proc):
    """Mixture, start points and a 1024-step DPM-Solver++(3M) reference (computed once)."""
    if proc.kind not in _REF:
        gm = two_d_mixture()
        D = gm.denoiser(proc)
        k_max = min(80.0, 0.999 * float(proc.edm_sigma(torch.ones(1, dtype=F64))))
        x_hat = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * k_max
        x_T = proc.alpha(_log_grid(proc, 1, k_max)[:1]) * x_hat
        ref = sample(D, x_T, _log_grid(proc, 1024, k_max), S.make("dpmpp_3m"), process=proc)
        _REF[proc.kind] = (D, k_max, x_T, ref)
    return _REF[proc.kind]


@pytest.mark.parametrize("proc", [P.EDM(), P.DiscreteVP.from_betas("linear")], ids=["edm", "ddpm"])
@pytest.mark.parametrize("name,nominal,ns", [
    ("euler", 1.0, [8, 16, 32, 64]),
    ("ddim", 1.0, [8, 16, 32, 64]),
    ("heun", 2.0, [8, 16, 32, 64]),
    ("dpmpp_2m", 2.0, [8, 16, 32, 64]),
    # The 3M's asymptotic order is capped at 2 by its published first-order warm-up step (local
    # error O(h^2)); "about 3" holds in the pre-asymptotic range that sampling uses (N <= 32).
    ("dpmpp_3m", 3.0, [8, 16, 32]),
])
def test_convergence_order_on_mixture(proc, name, nominal, ns):
    D, k_max, x_T, ref = _order_setup(proc)
    grid = lambda n: _log_grid(proc, n, k_max)  # noqa: E731
    errs = [float((sample(D, x_T, grid(n), S.make(name), process=proc) - ref).pow(2).mean().sqrt())
            for n in ns]
    order = _slope(ns, errs)
    assert abs(order - nominal) <= 0.3, (name, order, errs)


def test_exact_gaussian_ode_solution():
    # x_hat(k) = m + (x_hat_T - m) sqrt(v + k^2) / sqrt(v + k_T^2): Heun at 128 steps within 1e-3
    # (its RMS error is ~5e-4 at 64 steps and falls as h^2, see the order test)
    proc = P.EDM()
    m, v = torch.tensor([0.5, -0.3, 1.0], dtype=F64), 0.09
    g1 = GMM(m[None], torch.tensor([v], dtype=F64), torch.tensor([1.0], dtype=F64))
    x_T = torch.randn(32, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * 80
    grid = _log_grid(proc, 128, 80.0)
    exact = m + (x_T - m) * math.sqrt(v + 0.05**2) / math.sqrt(v + 80.0**2)
    x = sample(g1.denoiser(proc), x_T, grid, S.make("heun"), process=proc)
    assert float((x - exact).abs().max()) < 1e-3


def _two_sample_ok(x, ref):
    from scipy.stats import ks_2samp

    n = x.shape[0]
    for i in range(x.shape[1]):
        p = ks_2samp(x[:, i].numpy(), ref[:, i].numpy()).pvalue
        assert p > 1e-3, f"KS p-value {p:.2e} on coordinate {i}"
        se = float(ref[:, i].std()) * math.sqrt(2.0 / n)  # std error of a difference of means
        assert abs(float(x[:, i].mean() - ref[:, i].mean())) < 4 * se


@pytest.mark.parametrize("name,kw,steps,grid_name", [
    ("ddpm", {}, 100, "log_snr"),
    ("euler_ancestral", {}, 100, "log_snr"),
    ("euler_maruyama", {}, 200, "log_snr"),
    ("heun", {"S_churn": 40, "n_steps": 60, "S_tmin": 0.05, "S_tmax": 50}, 60, "karras"),
    ("dpmpp_2m_sde", {}, 60, "log_snr"),
    ("pc", {"snr": 0.16}, 100, "log_snr"),
])
def test_stochastic_solvers_reproduce_the_law(name, kw, steps, grid_name):
    proc = P.EDM()
    gm = two_d_mixture()
    n = 1500
    ref = gm.sample(n, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    grid = G.make(grid_name, steps, process=proc)
    x_T = prior((n, 2), process=proc, t=float(grid[0]), generator=g, dtype=F64)
    x = sample(gm.denoiser(proc), x_T, grid, S.make(name, **kw), process=proc, generator=g)
    _two_sample_ok(x, ref)


@pytest.mark.parametrize("proc", [P.CosineVP(), P.EDM()], ids=["cosine_vp", "edm"])
@pytest.mark.parametrize("name,kw", [("ddpm", {}), ("heun", {}), ("dpmpp_2m", {}), ("pc", {"n_corrector": 1}),
                                     ("pc", {"n_corrector": 2})])
def test_count_nfe_matches_the_denoiser_calls(name, kw, proc):
    from shared.sample import count_nfe

    D = two_d_mixture().denoiser(proc)
    calls = []

    def counting(x, t):
        calls.append(1)
        return D(x, t)

    steps = 7
    grid = G.make("uniform", steps, process=proc)
    x_T = prior((4, 2), process=proc, t=float(grid[0]), generator=torch.Generator().manual_seed(0), dtype=F64)
    solver = S.make(name, **kw)
    sample(counting, x_T, grid, solver, process=proc, generator=torch.Generator().manual_seed(1))
    # CosineVP is truncated (sigma(0) = 6e-4 > 0), so the predictor-corrector also corrects its last step
    assert len(calls) == count_nfe(solver, steps, process=proc)


def test_statelessness_interleaved_equals_sequential():
    proc = P.CosineVP()
    gm = two_d_mixture()
    D = gm.denoiser(proc)
    grid = G.make("log_snr", 12, process=proc)
    solver = S.make("dpmpp_3m")
    xa = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    xb = torch.randn(9, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    seq_a = sample(D, xa, grid, solver, process=proc)
    seq_b = sample(D, xb, grid, solver, process=proc)
    sa, sb = solver.init_state(xa), solver.init_state(xb)
    from shared.spaces import Euclidean

    for i in range(12):
        ta, tn = grid[i].expand(5), grid[i + 1].expand(5)
        xa, sa = solver.step(D, xa, ta, tn, sa, process=proc, space=Euclidean())
        tb, tnb = grid[i].expand(9), grid[i + 1].expand(9)
        xb, sb = solver.step(D, xb, tb, tnb, sb, process=proc, space=Euclidean())
    assert torch.equal(xa, seq_a) and torch.equal(xb, seq_b)


def test_per_sample_generators_make_samples_batch_independent():
    proc = P.EDM()
    D = two_d_mixture().denoiser(proc)
    grid = G.make("karras", 10, process=proc)

    def run(seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        x_T = prior((len(seeds), 2), process=proc, generator=gens, dtype=F64)
        gens = [torch.Generator().manual_seed(100 + s) for s in seeds]
        return sample(D, x_T, grid, S.make("euler_ancestral"), process=proc, generator=gens)

    big = run([3, 4, 5, 6])
    small = run([5])
    assert torch.allclose(big[2], small[0], atol=1e-12)


def test_inversion_round_trip():
    proc = P.EDM()
    gm = two_d_mixture()
    D = gm.denoiser(proc)
    x0 = gm.sample(64, torch.Generator().manual_seed(0))
    errs = []
    for n in (10, 20, 40, 80):
        grid = G.make("karras", n, process=proc)
        x_T = invert(D, x0, grid, S.make("heun"), process=proc)
        back = sample(D, x_T, grid[:-1], S.make("heun"), process=proc)
        errs.append(float((back - x0).abs().max()))
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-3, errs
    with pytest.raises(ValueError, match="deterministic"):
        invert(D, x0, grid, S.make("ddpm"), process=proc)


def test_cfg_on_two_gaussians_closed_form():
    # p_u = N(mu_u, s^2 I), p_c = N(mu_c, s^2 I). D_w = D_u + w (D_c - D_u) is exactly the
    # denoiser of N(m_w, s^2 I) with m_w = mu_u + w (mu_c - mu_u), so the PF-ODE from noise level
    # K gives x(0) = m_w + r (x_T - m_w), r = s / sqrt(s^2 + K^2). Starting from the exact
    # unconditional marginal x_T ~ N(mu_u, (s^2 + K^2) I):
    #   mean = mu_u + w (mu_c - mu_u)(1 - r),   var = r^2 (s^2 + K^2) = s^2.
    proc = P.EDM()
    s2, K, w = 0.25, 80.0, 3.0
    mu_u = torch.tensor([0.0, 1.0], dtype=F64)
    mu_c = torch.tensor([1.0, -0.5], dtype=F64)
    gu = GMM(mu_u[None], torch.tensor([s2], dtype=F64), torch.tensor([1.0], dtype=F64))
    gc = GMM(mu_c[None], torch.tensor([s2], dtype=F64), torch.tensor([1.0], dtype=F64))
    Du, Dc = gu.denoiser(proc), gc.denoiser(proc)

    def den(x, t, cond):
        return Dc(x, t) if cond == "c" else Du(x, t)

    den.process = proc
    guided = cfg(den, "c", "u", w)
    n = 4000
    g = torch.Generator().manual_seed(0)
    x_T = mu_u + math.sqrt(s2 + K**2) * torch.randn(n, 2, generator=g, dtype=F64)
    grid = G.make("karras", 80, process=proc, s_max=K)
    x = sample(guided, x_T, grid, S.make("heun"), process=proc)
    r = math.sqrt(s2) / math.sqrt(s2 + K**2)
    mean_exact = mu_u + w * (mu_c - mu_u) * (1 - r)
    var_exact = s2
    se = math.sqrt(s2 / n)
    assert float((x.mean(0) - mean_exact).abs().max()) < 4 * se + 1e-3
    var = x.var(0)
    assert float((var - var_exact).abs().max()) < 4 * s2 * math.sqrt(2.0 / n)
    # scale 0 is unconditional, 1 conditional
    xt = torch.randn(4, 2, dtype=F64)
    t = torch.full((4,), 0.3, dtype=F64)
    assert torch.allclose(cfg(den, "c", "u", 0.0)(xt, t), Du(xt, t))
    assert torch.allclose(cfg(den, "c", "u", 1.0)(xt, t), Dc(xt, t))
    # outside the interval guidance is off (conditional only)
    assert torch.allclose(cfg(den, "c", "u", 5.0, interval=(0.5, 1.0))(xt, t), Dc(xt, t))


def test_classifier_guidance_equals_bayes_rule():
    # p(x) = 0.5 N(-2, v) + 0.5 N(2, v); classifier log p(y=1 | x_t) is exact; guidance at scale 1
    # gives exactly the denoiser of the class-1 component.
    proc = P.EDM()
    v = torch.tensor([0.2, 0.2], dtype=F64)
    gm = GMM(torch.tensor([[-2.0], [2.0]], dtype=F64), v, torch.tensor([0.5, 0.5], dtype=F64))
    g1 = GMM(torch.tensor([[2.0]], dtype=F64), v[:1], torch.tensor([1.0], dtype=F64))

    def log_p_y1(x, t):
        a, s = proc.alpha(t), proc.sigma(t)
        lp_all = gm.log_prob(x, a, s)
        lp_1 = g1.log_prob(x, a, s) + math.log(0.5)
        return lp_1 - lp_all

    guided = classifier(gm.denoiser(proc), log_p_y1, 1.0, process=proc)
    x = torch.linspace(-3, 3, 13, dtype=F64)[:, None]
    t = torch.full((13,), 0.02, dtype=F64)
    assert torch.allclose(guided(x, t), g1.denoiser(proc)(x, t), atol=1e-9)
    # experts by interval dispatch per sample
    ex = experts_by_interval([(0.0, 0.01, lambda x, t: torch.zeros(len(t))),
                              (0.01, 1.0, log_p_y1)])
    t2 = torch.tensor([0.005, 0.5], dtype=F64)
    out = ex(x[:2], t2)
    assert out[0] == 0 and torch.allclose(out[1:], log_p_y1(x[1:2], t2[1:]))


def test_energy_guidance_and_inpainting_respect_observations():
    proc = P.EDM()
    gm = two_d_mixture()
    D = gm.denoiser(proc)
    g = torch.Generator().manual_seed(0)
    grid = G.make("karras", 30, process=proc)
    x_T = prior((200, 2), process=proc, generator=g, dtype=F64)
    y = torch.tensor([1.0, 0.0], dtype=F64).expand(200, 2)
    mask = torch.tensor([True, False]).expand(200, 2)
    free = sample(D, x_T, grid, S.make("heun"), process=proc)
    guided = sample(energy(D, observation_mse(y, mask), 5.0, process=proc), x_T, grid,
                    S.make("heun"), process=proc)
    assert float(((guided[:, 0] - 1) ** 2).mean()) < 0.5 * float(((free[:, 0] - 1) ** 2).mean())
    g = torch.Generator().manual_seed(1)
    inp = sample(D, x_T, grid, S.make("ddpm"), process=proc, hooks=[inpaint(y, mask)], generator=g)
    assert torch.equal(inp[:, 0], y[:, 0])  # at t = 0 the known part is exact


def test_pigdm_weighting_gives_the_exact_posterior_for_gaussian_data():
    # x0 ~ N(0, v I) in 2-D, y = x0[0] + N(0, r): p(x0 | x_t) is Gaussian with variance
    # r_t^2 = v s^2 / (s^2 + a^2 v), so PiGDM's likelihood N(y; x0_hat[0], r_t^2 + r) is exact and
    # the guided probability-flow ODE must carry the prior to the exact posterior
    # N(v y / (v + r), v r / (v + r)) in the observed coordinate and leave the other one at N(0, v).
    v, r, y0, n = 0.5, 0.1, 1.3, 4000
    proc = P.EDM()
    gm = GMM(means=torch.zeros(1, 2, dtype=F64), variances=torch.tensor([v], dtype=F64),
             weights=torch.ones(1, dtype=F64))
    D = gm.denoiser(proc)
    y = torch.tensor([y0, 0.0], dtype=F64).expand(n, 2)
    mask = torch.tensor([True, False]).expand(n, 2)
    guided = energy(D, observation_mse(y, mask), 1.0, weighting="pigdm", obs_var=r, data_var=v,
                    process=proc)
    x_T = prior((n, 2), process=proc, generator=torch.Generator().manual_seed(3), dtype=F64)
    x_T = x_T * math.sqrt((v + 80.0**2) / (1 + 80.0**2))  # start from the exact marginal
    x = sample(guided, x_T, G.make("karras", 40, process=proc), S.make("heun"), process=proc)
    m_post, v_post = v * y0 / (v + r), v * r / (v + r)
    se_m, se_v = math.sqrt(v_post / n), v_post * math.sqrt(2 / n)
    assert abs(float(x[:, 0].mean()) - m_post) < 4 * se_m
    assert abs(float(x[:, 0].var()) - v_post) < 4 * se_v
    assert abs(float(x[:, 1].var()) - v) < 4 * v * math.sqrt(2 / n)
    with pytest.raises(ValueError, match="weighting"):
        energy(D, observation_mse(y, mask), 1.0, weighting="dps", process=proc)


def test_parity_with_diffusers_schedulers():
    pytest.importorskip("diffusers")
    from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                           EulerDiscreteScheduler)

    from shared.interop.diffusers import (eps_fn_denoiser, initial_state,
                                          process_from_scheduler_config, run_scheduler_loop,
                                          scheduler_grid)

    cases = [
        (DDIMScheduler, "ddim", {"clip_sample": False}),
        (DDPMScheduler, "ddpm", {"clip_sample": False}),
        (DPMSolverMultistepScheduler, "dpmpp_2m", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        (EulerDiscreteScheduler, "euler", {"timestep_spacing": "trailing"}),
    ]
    for cls, name, kw in cases:
        for sched in ("linear", "scaled_linear"):
            extra = {"beta_schedule": sched}
            if sched == "scaled_linear":
                extra.update(beta_start=0.00085, beta_end=0.012)
            sc = cls(**kw, **extra)
            proc = process_from_scheduler_config(sc.config)
            m, v = 0.5, 0.04

            def eps_fn(x, ts, proc=proc):
                # exact eps of N(m, v) data plus a nonlinear perturbation: a realistic model
                t = proc.t_of_index(ts)
                a = proc.alpha(t).reshape(-1, 1, 1, 1)
                s = proc.sigma(t).reshape(-1, 1, 1, 1)
                x0 = m + a * v / (a * a * v + s * s) * (x - a * m)
                return (x - a * x0) / s + 0.05 * torch.sin(3 * x)

            z = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
            ref = run_scheduler_loop(sc, eps_fn, z, 20, generator=torch.Generator().manual_seed(5))
            ours = sample(eps_fn_denoiser(eps_fn, proc), initial_state(sc, proc, z),
                          scheduler_grid(sc, proc), S.make(name),
                          generator=torch.Generator().manual_seed(5))
            assert float((ours - ref).abs().max()) < 1e-5, (name, sched)


def test_ode_log_likelihood_matches_exact_density():
    from shared.likelihood import elbo, ode_log_likelihood

    gm = two_d_mixture()
    x = gm.sample(8, torch.Generator().manual_seed(0))
    exact = gm.log_prob(x)
    for proc in (P.EDM(), P.DiscreteVP.from_betas("linear")):
        D = gm.denoiser(proc)
        ll = ode_log_likelihood(D, x, process=proc, steps=32)
        assert float((ll - exact).abs().max()) < 2e-2, proc.kind
    proc = P.EDM()
    D = gm.denoiser(proc)
    # Hutchinson: unbiased; its mean over probes is close to the exact-trace value
    llh = ode_log_likelihood(D, x, process=proc, steps=8, trace="hutchinson", n_probes=64,
                             generator=torch.Generator().manual_seed(0))
    lle = ode_log_likelihood(D, x, process=proc, steps=8)
    assert float((llh - lle).abs().mean()) < 0.15
    # the ELBO bounds the log-likelihood (averaged over data to beat the Monte-Carlo noise)
    xs = gm.sample(256, torch.Generator().manual_seed(2))
    e = elbo(D, xs, process=proc, n_samples=64, generator=torch.Generator().manual_seed(3))
    gap = gm.log_prob(xs) - e
    assert float(gap.mean()) > -3 * float(gap.std()) / math.sqrt(len(gap))
    assert float(gap.mean()) < 1.0  # and a tight one for an exact denoiser


def test_vlb_bits_per_dim_is_consistent():
    from shared.likelihood import vlb_bits_per_dim

    proc = P.DiscreteVP.from_betas("linear", 100, beta_start=1e-3, beta_end=0.2)
    gm = GMM(torch.tensor([[0.0] * 4], dtype=F64), torch.tensor([0.1], dtype=F64),
             torch.tensor([1.0], dtype=F64))
    D = gm.denoiser(proc)
    x = (gm.sample(64, torch.Generator().manual_seed(0)).clamp(-1, 1) * 127.5).round() / 127.5
    full = vlb_bits_per_dim(D, x, proc, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(full).all() and (full > 0).all()
    part = vlb_bits_per_dim(D, x, proc, generator=torch.Generator().manual_seed(1), n_terms=40)
    diff = part - full  # unbiased subset estimate: mean difference within 4 standard errors
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(len(diff))
    # the bound is at least the data's discretised entropy under the true Gaussian density
    nll_bits = -(gm.log_prob(x) + 4 * math.log(2 / 255)) / (4 * math.log(2))
    assert float(full.mean()) > float(nll_bits.mean()) - 0.05


def test_condition_scores_pick_the_right_component():
    from shared.likelihood import condition_scores

    proc = P.DiscreteVP.from_betas("linear")
    comps = [GMM(torch.tensor([[c, -c]], dtype=F64), torch.tensor([0.05], dtype=F64),
                 torch.tensor([1.0], dtype=F64)) for c in (-1.0, 0.0, 1.0)]

    class Den:
        process = proc

        def __call__(self, x, t, cond):
            return comps[cond].denoiser(proc)(x, t)

    labels = torch.tensor([0, 1, 2] * 5)
    x = torch.stack([comps[int(c)].sample(1, torch.Generator().manual_seed(i))[0]
                     for i, c in enumerate(labels)])
    sc = condition_scores(Den(), x, [0, 1, 2], n_samples=16, generator=torch.Generator().manual_seed(0))
    assert (sc.argmax(1) == labels).all()


@pytest.mark.parametrize("weighting", ["eps", "elbo"])
def test_condition_scores_stacked_calls_equal_one_call_per_pair(weighting):
    from shared.likelihood import condition_scores

    proc = P.DiscreteVP.from_betas("linear")
    comps = [GMM(torch.tensor([[c, -c]], dtype=F64), torch.tensor([0.05], dtype=F64),
                 torch.tensor([1.0], dtype=F64)) for c in (-1.0, 0.0, 1.0)]
    calls = []

    class Den:  # per-row condition tensors: a row's output depends only on its own label
        process = proc

        def __call__(self, x, t, cond):
            calls.append(x.shape[0])
            outs = torch.stack([c.denoiser(proc)(x, t) for c in comps])  # [K, rows, 2]
            return outs[cond, torch.arange(x.shape[0])]

    labels = torch.tensor([0, 1, 2] * 4)
    x = torch.stack([comps[int(c)].sample(1, torch.Generator().manual_seed(i))[0]
                     for i, c in enumerate(labels)])
    conds = [torch.full((12,), k) for k in range(3)]
    kw = dict(n_samples=8, weighting=weighting)
    one = condition_scores(Den(), x, conds, generator=torch.Generator().manual_seed(0),
                           max_batch=None, **kw)
    assert calls == [12] * 24
    calls.clear()
    stacked = condition_scores(Den(), x, conds, generator=torch.Generator().manual_seed(0),
                               max_batch=120, **kw)
    assert calls == [120, 120, 48]  # 10 pairs of 12 rows per call
    torch.testing.assert_close(stacked, one, rtol=1e-12, atol=1e-12)
    assert (stacked.argmax(1) == labels).all() or weighting == "elbo"


def test_diagnostics_gradient_vs_rotational():
    from shared.diagnostics import jacobian_asymmetry, loop_integral, model_agreement, solver_error

    def grad_field(x, t):
        return -x * (1 + (x**2).sum(1, keepdim=True))

    A = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)

    def rot_field(x, t):
        return x @ A.T

    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.ones(6, dtype=F64)
    g = torch.Generator().manual_seed(1)
    assert float(jacobian_asymmetry(grad_field, x, t, exact=True).max()) < 1e-12
    assert float(jacobian_asymmetry(rot_field, x, t, exact=True).min()) > 0.99
    assert float(jacobian_asymmetry(grad_field, x, t, generator=g).max()) < 1e-12
    assert float(jacobian_asymmetry(rot_field, x, t, generator=g, n_probes=64).mean()) > 0.7
    assert float(loop_integral(grad_field, x, t, generator=g).abs().max()) < 1e-10
    assert float(loop_integral(rot_field, x, t, generator=g).abs().min()) > 0.99
    # model agreement and solver error
    proc = P.EDM()
    gm = two_d_mixture()
    D = gm.denoiser(proc)
    x_T = prior((32, 2), process=proc, generator=torch.Generator().manual_seed(0), dtype=F64)
    grid = G.make("karras", 20, process=proc)
    same = model_agreement(D, D, x_T, grid, S.make("heun"), process=proc)
    assert same["cosine"] > 0.999999 and same["normalized_sq_dist"] < 1e-12
    mirrored = GMM(-gm.means, gm.variances, gm.weights).denoiser(proc)
    other = model_agreement(D, mirrored, x_T, grid, S.make("heun"), process=proc)
    assert other["cosine"] < 0.9
    e10 = solver_error(D, x_T, G.make("karras", 10, process=proc), S.make("euler"),
                       reference_grid=G.make("karras", 200, process=proc),
                       reference_solver=S.make("heun"), process=proc)
    e40 = solver_error(D, x_T, G.make("karras", 40, process=proc), S.make("euler"),
                       reference_grid=G.make("karras", 200, process=proc),
                       reference_solver=S.make("heun"), process=proc)
    assert float(e40.mean()) < float(e10.mean())


def test_repaint_beats_plain_replacement_on_the_exact_conditional():
    # two Gaussians at (-1.5, -1) and (1.5, 1); observe x = 0.5. The exact E[y | x] is
    # sum_k w_k m_ky with w_k ∝ N(0.5; m_kx, v). Replacement inpainting is known to be biased
    # towards the prior; RePaint's resampling must close most of that gap.
    from shared.guidance import RePaint

    v = 0.3
    gm = GMM(torch.tensor([[-1.5, -1.0], [1.5, 1.0]], dtype=F64), torch.tensor([v, v], dtype=F64),
             torch.tensor([0.5, 0.5], dtype=F64))
    w = torch.tensor([math.exp(-(0.5 + 1.5) ** 2 / (2 * v)), math.exp(-(0.5 - 1.5) ** 2 / (2 * v))])
    exact = float((w / w.sum()) @ torch.tensor([-1.0, 1.0]))
    proc = P.EDM()
    D = gm.denoiser(proc)
    n = 1000
    known = torch.tensor([0.5, 0.0], dtype=F64).expand(n, 2)
    mask = torch.tensor([True, False]).expand(n, 2)
    grid = G.make("karras", 40, process=proc)

    def run(solver, hooks=()):
        g = torch.Generator().manual_seed(0)
        x_T = prior((n, 2), process=proc, generator=g, dtype=F64)
        return sample(D, x_T, grid, solver, process=proc, hooks=hooks, generator=g)

    plain = run(S.make("ddpm"), hooks=[inpaint(known, mask)])
    rp = run(RePaint(S.make("ddpm"), known, mask, resample=5))
    assert torch.equal(rp[:, 0], known[:, 0])
    err_plain, err_rp = abs(float(plain[:, 1].mean()) - exact), abs(float(rp[:, 1].mean()) - exact)
    assert err_rp < 0.5 * err_plain, (err_rp, err_plain)


def test_cfg_rescale_dynamic_threshold_and_self_conditioning():
    from shared.guidance import dynamic_threshold
    from shared.loss import diffusion_loss
    from shared.param import Denoiser

    proc = P.CosineVP()
    xt = torch.randn(6, 3, 4, dtype=F64)
    t = torch.full((6,), 0.4, dtype=F64)

    def den(x, t, cond):
        return (2.0 if cond == "c" else 0.5) * x + (1.0 if cond == "c" else 0.0)

    den.process = proc
    g = cfg(den, "c", "u", 4.0, rescale=1.0)(xt, t)
    dc = den(xt, t, "c")
    assert torch.allclose(g.reshape(6, -1).std(1, unbiased=False), dc.reshape(6, -1).std(1, unbiased=False))
    big = dynamic_threshold(lambda x, t: 3 * x, percentile=0.9, max_value=2.0)(xt, t)
    assert float(big.abs().max()) <= 1.0 + 1e-12

    seen = []

    class Net(torch.nn.Module):
        def forward(self, x, t, cond=None, self_cond=None):
            seen.append(None if self_cond is None else float(self_cond.abs().sum()))
            return torch.zeros_like(x)

    d = Denoiser(Net(), proc, "x0")
    x0 = torch.randn(64, 5, dtype=F64)
    loss = diffusion_loss(d, x0, self_condition=1.0, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (64,) and seen[0] == 0.0 and len(seen) == 2  # first pass gets zeros
    seen.clear()
    diffusion_loss(d, x0, self_condition=0.0, generator=torch.Generator().manual_seed(0))
    assert seen == [None]
    # at sampling time the previous step's estimate is fed back
    from shared.guidance import self_conditioned

    seen.clear()
    fn = self_conditioned(d, None)
    fn(x0, torch.full((64,), 0.5, dtype=F64))
    fn(x0 + 1, torch.full((64,), 0.4, dtype=F64))
    assert seen[0] == 0.0 and seen[1] == 0.0  # Net returns zeros, so the fed-back estimate is 0


def test_final_step_to_t0_is_first_order_when_sigma0_is_tiny_but_positive():
    # CosineVP has sigma(0) = exp(-7.5) > 0, so the last step of a grid has a huge noise-level
    # ratio. Like EDM and diffusers (lower_order_final) it must be the 1st-order step: a
    # multistep correction there amplifies the denoiser's inconsistency across noise levels.
    proc = P.CosineVP()
    exact = two_d_mixture().denoiser(proc)

    def D(x, t):  # a learned denoiser is never exactly consistent across noise levels
        return exact(x, t) + 0.05 * torch.sin(5 * x) * t[:, None]

    x_T = prior((256, 2), process=proc, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = sample(D, x_T, G.make("uniform", 400, process=proc), S.make("heun"), process=proc)
    for name in ("dpmpp_2m", "dpmpp_3m"):
        x = sample(D, x_T, G.make("uniform", 5, process=proc), S.make(name), process=proc)
        assert float((x - ref).pow(2).mean().sqrt()) < 0.2, name  # 0.52 / 1.97 with a 2nd-order end
    # Heun's last step is Euler: 2 n - 1 evaluations for n steps (what compare reports)
    calls = []

    def counting(x, t):
        calls.append(1)
        return D(x, t)

    sample(counting, x_T, G.make("uniform", 6, process=proc), S.make("heun"), process=proc)
    assert len(calls) == 11
