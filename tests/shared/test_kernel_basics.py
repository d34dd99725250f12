"""Processes, conversions, grids, weightings, spaces and bad input: exact identities."""

import math

import pytest
import torch

from shared import grid as G
from shared import loss as L
from shared import process as P
from shared.param import PREDICTIONS, Denoiser, convert
from shared.sample import sample
from shared.solvers import make
from shared.spaces import CenterOfMass, Euclidean, Masked, Ragged, SymmetricAdjacency

PROCESSES = [
    P.DiscreteVP.from_betas("linear"),
    P.DiscreteVP.from_betas("scaled_linear", beta_start=0.00085, beta_end=0.012),
    P.DiscreteVP.from_betas("cosine"),
    P.DiscreteVP.from_betas("sigmoid"),
    P.LinearVP(),
    P.CosineVP(),
    P.VE(),
    P.EDM(),
    P.Flow(),
    P.Flow(shift=3.0),
]
IDS = [f"{p.kind}{i}" for i, p in enumerate(PROCESSES)]


@pytest.mark.parametrize("proc", PROCESSES, ids=IDS)
def test_log_snr_inverse_and_alpha_sigma(proc):
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    lam = proc.log_snr(t)
    assert torch.allclose(proc.t_of_log_snr(lam), t, atol=1e-9, rtol=0)
    a, s = proc.alpha(t), proc.sigma(t)
    assert torch.allclose(2 * torch.log(a / s), lam, atol=1e-9)
    assert (lam[1:] < lam[:-1]).all(), "log-SNR must decrease in t"


def test_discrete_vp_exact_at_knots():
    proc = P.DiscreteVP.from_betas("linear")
    i = torch.arange(1000)
    t = proc.t_of_index(i)
    assert torch.equal(proc.alpha(t), proc.alphas_cumprod.sqrt())  # exact at the knots
    assert torch.allclose(proc.alpha2(t), proc.alphas_cumprod, rtol=1e-15, atol=0)
    assert float(proc.sigma(torch.zeros(1))) == 0.0 and float(proc.alpha(torch.zeros(1))) == 1.0


def test_linear_vp_sde_coefficients_closed_form():
    proc = P.LinearVP(beta_min=0.1, beta_max=20.0)
    t = torch.linspace(0.05, 0.95, 10, dtype=torch.float64)
    f, g2 = proc.sde(t)
    beta = 0.1 + t * 19.9
    assert torch.allclose(f, -0.5 * beta, atol=1e-10)
    assert torch.allclose(g2, beta, atol=1e-8)


@pytest.mark.parametrize("proc", PROCESSES, ids=IDS)
def test_conversions_round_trip(proc):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, generator=g, dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, 6, dtype=torch.float64)
    x0 = torch.randn(6, 3, 4, generator=g, dtype=torch.float64)
    for src in PREDICTIONS:
        out = convert(x0, "x0", src, x, t, proc)
        back = convert(out, src, "x0", x, t, proc)
        assert torch.allclose(back, x0, atol=1e-9, rtol=1e-9), src
        for dst in PREDICTIONS:
            two = convert(convert(out, src, dst, x, t, proc), dst, src, x, t, proc)
            assert torch.allclose(two, out, atol=1e-8, rtol=1e-8), (src, dst)


def test_zero_terminal_snr():
    proc = P.DiscreteVP.from_betas("scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   zero_terminal_snr=True)
    assert float(proc.alphas_cumprod[-1]) == 0.0
    base = P.DiscreteVP.from_betas("scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert torch.allclose(proc.alphas_cumprod[0], base.alphas_cumprod[0])
    t1 = torch.ones(4, dtype=torch.float64)
    x0 = torch.randn(4, 5, dtype=torch.float64)
    eps = torch.randn(4, 5, dtype=torch.float64)
    x = eps  # alpha(1) = 0
    for dst in ("v", "flow", "x0"):
        out = convert(x0, "x0", dst, x, t1, proc)
        assert torch.isfinite(out).all(), dst
    with pytest.raises(ValueError, match="zero terminal SNR"):
        Denoiser(torch.nn.Identity(), proc, "eps")
    with pytest.raises(ValueError, match="alpha"):
        convert(eps, "eps", "x0", x, t1, proc)


@pytest.mark.parametrize("proc", PROCESSES, ids=IDS)
@pytest.mark.parametrize("name", G.GRIDS)
def test_grids_decrease_and_end_at_zero(proc, name):
    for steps in (1, 5, 37):
        g = G.make(name, steps, process=proc)
        assert g.shape == (steps + 1,)
        assert float(g[-1]) == 0.0 and float(g[0]) <= 1.0
        assert (g[1:] < g[:-1]).all()


def test_grid_bad_input():
    with pytest.raises(ValueError, match="unknown grid"):
        G.make("nope", 10, process=P.EDM())
    with pytest.raises(ValueError, match="steps"):
        G.make("karras", 0, process=P.EDM())


@pytest.mark.parametrize("proc", PROCESSES, ids=IDS)
@pytest.mark.parametrize("pred", PREDICTIONS)
@pytest.mark.parametrize("w", ["simple", "min_snr", "edm", "likelihood", "x0"])
def test_weights_finite_on_log_snr_range(proc, pred, w):
    lam = torch.linspace(-30, 30, 61, dtype=torch.float64)
    t = proc.t_of_log_snr(lam).clamp(1e-6, 1 - 1e-6)
    wt = L.weight(w, t, proc, pred)
    assert torch.isfinite(wt).all() and (wt >= 0).all()


class _OffsetNet(torch.nn.Module):
    """A 'network' whose x0 estimate is x0_true + delta exactly, in any parameterisation."""

    def __init__(self, proc, pred, x0, delta):
        super().__init__()
        self.proc, self.pred, self.x0, self.delta = proc, pred, x0, delta

    def forward(self, x, t, cond=None):
        t = self.t  # the true t: with EDM preconditioning the net only sees c_noise
        if self.pred == "edm":
            from shared.param import edm_precond

            a, s = self.proc.alpha(t), self.proc.sigma(t)
            c_skip, c_out, c_in, _ = edm_precond(s / a, 0.5)
            x_hat = x / c_in[:, None]
            return (self.x0 + self.delta - c_skip[:, None] * x_hat) / c_out[:, None]
        return convert(self.x0 + self.delta, "x0", self.pred, x, t, self.proc)


@pytest.mark.parametrize("pred", ["eps", "x0", "v", "flow", "edm"])
def test_loss_weighting_is_parameterisation_invariant(pred):
    # the same x0 error costs the same under weighting "x0" whatever the prediction type
    proc = P.CosineVP()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 10, generator=g, dtype=torch.float64)
    delta = 0.1 * torch.randn(8, 10, generator=g, dtype=torch.float64)
    den = Denoiser(_OffsetNet(proc, pred, x0, delta), proc, pred)
    t = torch.linspace(0.1, 0.9, 8, dtype=torch.float64)
    den.net.t = t
    loss = L.diffusion_loss(den, x0, t=t, weighting="x0", generator=g)
    assert torch.allclose(loss, (delta**2).mean(1), rtol=1e-8)


def test_sigmoid_weighting():
    proc = P.CosineVP()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    w = L.weight("sigmoid:2", t, proc, "x0")
    assert torch.allclose(w, torch.sigmoid(2 - proc.log_snr(t)), rtol=1e-12)
    # same x0-scale weight under another parameterisation: divided by its units factor (eps: snr)
    assert torch.allclose(L.weight("sigmoid:2", t, proc, "eps"), w / torch.exp(proc.log_snr(t)), rtol=1e-10)
    L.check_weighting("sigmoid:-1.5")
    for bad in ("sigmoid:x", "sigmoid", "snr"):
        with pytest.raises(ValueError):
            L.check_weighting(bad)
        with pytest.raises(ValueError):
            L.weight(bad, t, proc, "x0")


def test_categorical_cross_entropy_objective():
    """objective='ce' on +-1 one-hots with a 2 softmax - 1 head is the mean over positions of
    -log p(true class), divided by the number of classes (elementwise form over all entries)."""
    proc = P.CosineVP()
    g = torch.Generator().manual_seed(0)
    B, N, K = 4, 6, 5
    labels = torch.randint(0, K, (B, N), generator=g)
    x0 = 2.0 * torch.nn.functional.one_hot(labels, K).double() - 1.0
    logits = torch.randn(B, N, K, generator=g, dtype=torch.float64)

    class Head(torch.nn.Module):  # a fixed simplex x0 head, whatever the input
        def forward(self, x, t, cond=None):
            return 2 * torch.softmax(logits, -1) - 1

    den = Denoiser(Head(), proc, "x0")
    t = torch.full((B,), 0.5, dtype=torch.float64)
    loss = L.diffusion_loss(den, x0, t=t, weighting="simple", generator=g, objective="ce")
    nll = -torch.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]  # [B, N]
    w = L.weight("simple", t, proc, "x0")
    assert torch.allclose(loss, w * nll.mean(1) / K, rtol=1e-12)
    # a (nearly) one-hot head on the true classes costs (almost) nothing
    logits = 1e4 * (x0 + 1)
    assert L.diffusion_loss(den, x0, t=t, weighting="simple", generator=g, objective="ce").abs().max() < 1e-9
    with pytest.raises(ValueError, match="x0 head"):
        L.diffusion_loss(Denoiser(Head(), proc, "eps"), x0, t=t, objective="ce")
    with pytest.raises(ValueError, match="objective"):
        L.diffusion_loss(den, x0, t=t, objective="l1")


def test_time_samplers_and_loss_aware():
    proc = P.EDM()
    g = torch.Generator().manual_seed(0)
    for name in L.TIME_SAMPLERS:
        t = L.sample_t(name, 1000, process=proc, generator=g)
        assert t.shape == (1000,) and (t > 0).all() and (t <= 1).all()
    d = P.DiscreteVP.from_betas("linear")
    t = L.sample_t("uniform", 500, process=d, generator=g)
    assert torch.allclose(t * 1000, (t * 1000).round())
    las = L.LossAwareSampler(bins=4, history=2)
    for _ in range(3):
        tt = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=torch.float64)
        las.update(tt, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    t, w = las.sample(20000, generator=g)
    assert abs(float(w.mean()) - 1.0) < 0.03  # importance weights average to 1
    assert float((t > 0.75).float().mean()) > float((t < 0.25).float().mean())


def test_drop_condition():
    g = torch.Generator().manual_seed(0)
    c = torch.arange(1000) + 100  # no real label equals the null id
    out, keep = L.drop_condition(c, 0.2, generator=g, null=10, return_mask=True)
    assert ((out == 10) == ~keep).all() and abs(float((~keep).float().mean()) - 0.2) < 0.04
    with pytest.raises(ValueError, match="drop probability"):
        L.drop_condition(c, 1.5)


def test_spaces_invariants_through_sampling():
    g = torch.Generator().manual_seed(0)
    proc = P.CosineVP()
    grid = G.make("log_snr", 10, process=proc)
    solver = make("ddpm")
    # centre of mass (ragged)
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    com = CenterOfMass(batch=batch)
    x = com.noise(torch.zeros(9, 3, dtype=torch.float64), g)
    out = sample(lambda x, t: 0.5 * x, x, grid, solver, process=proc, space=com, generator=g)
    means = torch.zeros(3, 3, dtype=torch.float64).index_add_(0, batch, out)
    assert means.abs().max() < 1e-12
    assert torch.allclose(com.dim(out), torch.tensor([6.0, 3.0, 9.0], dtype=torch.float64))
    # dense centre of mass with node mask
    nm = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    comd = CenterOfMass(node_mask=nm)
    z = comd.noise(torch.zeros(2, 3, 3, dtype=torch.float64), g)
    assert (z * nm[..., None]).sum(1).abs().max() < 1e-12 and z[0, 2].abs().max() == 0
    # symmetric adjacency
    adj = SymmetricAdjacency()
    a = adj.noise(torch.zeros(2, 5, 5, 4, dtype=torch.float64), g)
    out = sample(lambda x, t: 0.3 * x, a, grid, solver, process=proc, space=adj, generator=g)
    assert torch.equal(out, out.transpose(1, 2))
    assert out.diagonal(dim1=1, dim2=2).abs().max() == 0
    assert torch.allclose(adj.dim(out), torch.full((2,), 40.0, dtype=torch.float64))
    # masked: fixed entries stay fixed
    mask = torch.tensor([True, False, True, False]).expand(3, 4)
    fixed = torch.tensor([0.0, 7.0, 0.0, -2.0], dtype=torch.float64).expand(3, 4)
    m = Masked(mask=mask, fixed=fixed)
    x = m.project(m.noise(torch.zeros(3, 4, dtype=torch.float64), g))
    from shared.guidance import project
    out = sample(lambda x, t: 0.1 * x, x, grid, solver, process=proc, space=m, generator=g,
                 hooks=[project(m)])
    assert torch.equal(out[:, 1], torch.full((3,), 7.0, dtype=torch.float64))
    assert torch.equal(out[:, 3], torch.full((3,), -2.0, dtype=torch.float64))
    # ragged reductions
    r = Ragged(batch)
    assert torch.allclose(r.sum(torch.ones(9, 2)), torch.tensor([6.0, 4.0, 8.0]))


def test_bad_input_errors():
    proc = P.EDM()
    D = lambda x, t: x  # noqa: E731
    grid = G.make("karras", 5, process=proc)
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="NaN"):
        sample(D, torch.full((3, 2), float("nan")), grid, make("euler"), process=proc)
    with pytest.raises(ValueError, match="decreasing"):
        sample(D, x, grid.flip(0), make("euler"), process=proc)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample(D, x, torch.tensor([1.5, 0.0]), make("euler"), process=proc)
    with pytest.raises(ValueError, match="t must lie"):
        P.check_t(torch.tensor([0.5, 1.2]))
    with pytest.raises(ValueError, match="shape"):
        P.check_t(torch.tensor(0.5))
    den = Denoiser(torch.nn.Identity(), proc, "x0")
    with pytest.raises(ValueError, match="entries"):
        L.diffusion_loss(den, x, t=torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="unknown solver"):
        make("rk45")
    with pytest.raises(ValueError, match="unknown prediction"):
        Denoiser(torch.nn.Identity(), proc, "noise")
    with pytest.raises(ValueError, match="unknown process"):
        P.make("vp-ish")
    with pytest.raises(ValueError, match="non-increasing"):
        P.DiscreteVP(torch.tensor([0.5, 0.9]))


def test_import_shared_is_light():
    import subprocess
    import sys

    code = ("import sys, shared, shared.sample, shared.guidance, shared.loss, shared.likelihood;"
            "bad=[m for m in ('diffusers','gluonts','monai','rdkit','torch_geometric','accelerate')"
            " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_prior_scale():
    g = torch.Generator().manual_seed(0)
    from shared.sample import prior

    x = prior((20000, 1), process=P.EDM(), generator=g, dtype=torch.float64)
    assert abs(float(x.std()) - math.sqrt(1 + 80.0**2)) / 80.0 < 0.02


@pytest.mark.parametrize("proc", PROCESSES, ids=IDS)
def test_uniform_time_fast_path_is_exact(proc):
    # a repeated grid time goes through a per-process cache; it must equal the plain formula
    for v in (0.013, 0.5, 0.97):
        t = torch.tensor(v, dtype=torch.float32).expand(5)
        for name in ("alpha", "sigma", "log_snr"):
            fast = getattr(proc, name)(t)
            plain = getattr(type(proc), name).__wrapped__(proc, t.contiguous())
            assert torch.equal(fast, plain), name
            assert P.uniform_value(fast) == float(plain[0])
            assert torch.equal(getattr(proc, name)(t), fast)  # second call: memo hit


def test_fast_path_is_skipped_under_torch_compile():
    """The per-process caches are keyed by tensor identity; traced by dynamo they made a compiled
    training step recompile for every new ``t`` (TrainConfig.compile was unusable). Under
    ``torch.compile`` the coefficients take the plain path: one graph for every time value."""
    import torch._dynamo

    proc = P.CosineVP()

    def coef(x, t):
        return proc.alpha(t)[:, None] * x + proc.sigma(t)[:, None]

    torch._dynamo.reset()
    f = torch.compile(coef, backend="eager")
    x = torch.ones(4, 3, dtype=torch.float64)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for v in (0.1, 0.35, 0.6, 0.85):  # uniform times (the cached case) and a fresh tensor each call
            t = torch.full((4,), v, dtype=torch.float64)
            want = coef(x, t.clone())
            assert torch.allclose(f(x, t), want, rtol=0, atol=1e-15)
    torch._dynamo.reset()


def test_registered_times_give_the_tensor_value_and_respect_in_place_changes():
    proc = P.CosineVP()
    t = torch.tensor([0.3], dtype=torch.float64)
    with P.registered_times((t,), (0.3,)):
        assert P.time_value(t) == 0.3
        a = proc.alpha(t)
        assert torch.equal(a, type(proc).alpha.__wrapped__(proc, t.clone()))
        t.fill_(0.6)  # an in-place change drops the registration (version check)
        assert P.time_value(t) is None
        assert torch.equal(proc.alpha(t), type(proc).alpha.__wrapped__(proc, t.clone()))
    assert P.time_value(t) is None  # gone after the loop
    # CUDA-like / non-uniform tensors are not registered
    u = torch.tensor([0.1, 0.2])
    with P.registered_times(u.unbind(0)[:1] + (u,), (0.1, 0.2)):
        assert P.time_value(u) is None


def test_scalar_tensor_multiplies_like_the_float():
    from shared.spaces import scalar

    x32 = torch.randn(3, 5)
    c = 0.7310000000001
    for x in (x32, x32.double()):
        s = scalar(c, x)
        assert torch.is_tensor(s) and s.ndim == 0 and s.dtype == x.dtype
        assert torch.equal(x * s, x * c)
        assert scalar(c, x) is s  # cached
    assert scalar(c, x32.to(torch.bfloat16)) == c  # low precision keeps the Python float


@pytest.mark.parametrize("solver", ["ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m"])
def test_sampling_fast_path_equals_plain_path(solver, monkeypatch):
    # the sampling loop registers its grid times so coefficients come from caches; switching that
    # off (and clearing every cache) must give the same sample to float64 rounding
    import contextlib

    import shared.sample as SM

    proc = P.LinearVP()
    net = lambda x, t, cond=None: 0.3 * x + 0.1 * t.reshape(-1, 1)  # noqa: E731
    den = Denoiser(net, proc, "eps")
    x_T = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grid = G.make("log_snr", 12, process=proc)
    fast = sample(den, x_T, grid, make(solver))
    again = sample(den, x_T, grid, make(solver))  # warm caches
    monkeypatch.setattr(SM, "registered_times", lambda *a: contextlib.nullcontext())
    proc2 = P.LinearVP()
    plain = sample(Denoiser(net, proc2, "eps"), x_T, grid.clone(), make(solver))
    assert torch.equal(fast, again)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_affine_x0_folded_into_ddim_and_euler_steps(prediction):
    # Denoiser.affine gives x0_hat = p x + q out; DDIM/Euler fold it into their update. The
    # folded step must equal the step through x0_hat (float64 rounding), also for bound
    # denoisers, and a subclass that overrides forward must be called, not bypassed.
    from shared.process import registered_times

    proc = P.CosineVP()
    net = lambda x, t, cond=None: 0.3 * x + 0.1 * t.reshape(-1, 1) + (0 if cond is None else cond)  # noqa: E731,E501
    den = Denoiser(net, proc, prediction)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    tcol = torch.tensor([0.8, 0.5], dtype=torch.float64)
    t, tn = tcol.unsqueeze(1).expand(-1, 4).unbind(0)
    with registered_times((t, tn), tcol.tolist()):
        out, p, q = den.affine(x, t)
        torch.testing.assert_close(p * x + q * out, den(x, t), rtol=1e-13, atol=1e-13)
        for name in ("ddim", "euler"):
            folded, _ = make(name).step(den, x, t, tn, (), process=proc, space=den.space)
            plain, _ = make(name).step(lambda x_, t_: den(x_, t_), x, t, tn, (), process=proc,
                                       space=den.space)
            torch.testing.assert_close(folded, plain, rtol=1e-13, atol=1e-13)
            bound = den.bind(cond=1.0)
            got, _ = make(name).step(bound, x, t, tn, (), process=proc, space=den.space)
            want, _ = make(name).step(lambda x_, t_: bound(x_, t_), x, t, tn, (), process=proc,
                                      space=den.space)
            torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)

        class Clamped(Denoiser):
            def forward(self, x, t, cond=None):
                return super().forward(x, t, cond).clamp(-0.1, 0.1)

        cl = Clamped(net, proc, prediction)
        assert cl.affine(x, t) is None
        step, _ = make("euler").step(cl, x, t, tn, (), process=proc, space=cl.space)
        want, _ = make("euler").step(lambda x_, t_: cl(x_, t_), x, t, tn, (), process=proc,
                                     space=cl.space)
        assert torch.equal(step, want)

        class Shifted(Denoiser):  # a raw() override (the subclass hook) is honoured by affine
            def raw(self, x, t, cond=None):
                return super().raw(x, t, cond) + 0.01

        sh = Shifted(net, proc, prediction)
        step, _ = make("ddim").step(sh, x, t, tn, (), process=proc, space=sh.space)
        want, _ = make("ddim").step(lambda x_, t_: sh(x_, t_), x, t, tn, (), process=proc,
                                    space=sh.space)
        torch.testing.assert_close(step, want, rtol=1e-13, atol=1e-13)
    assert den.affine(x, t) is None  # outside a sampling loop: no float time, no affine form


def test_masked_fixed_entries_agree_between_training_and_sampling():
    from shared.sample import prior

    mask = torch.tensor([False, True, True]).expand(4, 3)
    fixed = torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64).expand(4, 3)
    m = Masked(mask=mask, fixed=fixed)
    proc = P.CosineVP()
    x0 = m.project(torch.randn(4, 3, dtype=torch.float64))
    x_t, eps = L.q_sample(proc, x0, torch.full((4,), 0.7, dtype=torch.float64), space=m,
                          generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_t[:, 0], fixed[:, 0]) and torch.equal(eps[:, 0], torch.zeros(4, dtype=torch.float64))
    x_T = prior((4, 3), process=proc, space=m, generator=torch.Generator().manual_seed(0),
                dtype=torch.float64)
    assert torch.equal(x_T[:, 0], fixed[:, 0])
