import math

import pytest
import torch

from shared import grid as G
from shared import solvers as S


def test_tiny_unet_trains_and_weights_move(trained):
    model, before, trainer = trained
    assert trainer.step == 3
    assert all(math.isfinite(h["loss"]) for h in trainer.history)
    after = model.state_dict()
    moved = [k for k in before if k.startswith("denoiser.") and not torch.equal(before[k], after[k])]
    assert moved, "training did not change the UNet"
    assert model.denoiser.prediction == "eps" and model.null_class == 10


def test_tiny_vae_and_latent_unet_train(trained_latent):
    model, before, cfg = trained_latent
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("autoencoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("denoiser."))
    scale = float(model.latent_scale)
    assert math.isfinite(scale) and scale > 0 and scale != 1.0  # computed from data
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    z = model.encode(x)
    assert z.shape == (3, *model.data_shape) == (3, 2, 8, 8)
    assert model.decode(z).shape == x.shape
    imgs = model.sample([1, 2], solver=S.make("ddim"), grid=G.make("uniform", 3, process=model.process),
                        guidance_scale=2.0, seeds=[0, 1])
    assert imgs.shape == (2, 1, 16, 16) and imgs.abs().max() <= 1


@pytest.mark.parametrize("solver,grid", [("heun", "karras"), ("euler_ancestral", "uniform")])
def test_generation_shapes_and_seed_determinism(trained, solver, grid):
    model, _, _ = trained
    sv, gr = S.make(solver), G.make(grid, 2, process=model.process)
    labels = [0, 3, 7, 9]
    a = model.sample(labels, solver=sv, grid=gr, guidance_scale=2.0, seeds=[1, 2, 3, 4])
    b = model.sample(labels, solver=sv, grid=gr, guidance_scale=2.0, seeds=[1, 2, 3, 4], batch_size=2)
    c = model.sample(labels, solver=sv, grid=gr, guidance_scale=2.0, seeds=[5, 2, 3, 4])
    assert a.shape == (4, 1, 16, 16) and torch.isfinite(a).all()
    # a sample depends on its seed only, not on the batch it was drawn in
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a[0], c[0]) and torch.allclose(a[1:], c[1:], atol=1e-4)


def test_guidance_scale_zero_equals_unconditional(trained):
    model, _, _ = trained
    sv, gr = S.make("dpmpp_2m"), G.make("log_snr", 2, process=model.process)
    g0 = model.sample([1, 5, 8], solver=sv, grid=gr, guidance_scale=0.0, seeds=[0, 1, 2])
    unc = model.sample(None, n=3, solver=sv, grid=gr, seeds=[0, 1, 2])
    torch.testing.assert_close(g0, unc)
    # and a guided denoiser at scale 0 through shared.guidance.cfg is the null-class denoiser
    from shared.guidance import cfg as cfg_guidance

    y = torch.tensor([1, 5, 8])
    x, t = torch.randn(3, 1, 16, 16), torch.full((3,), 0.5)
    d0 = cfg_guidance(model.denoiser, y, torch.full_like(y, 10), 0.0)(x, t)
    torch.testing.assert_close(d0, model.conditional(torch.full_like(y, 10))(x, t), rtol=1e-5, atol=1e-5)
    d1 = model.guided(y, 1.0)(x, t)
    torch.testing.assert_close(d1, model.conditional(y)(x, t))


def test_label_errors(trained):
    model, _, _ = trained
    sv, gr = S.make("ddim"), G.make("uniform", 2, process=model.process)
    with pytest.raises(ValueError, match="class ids"):
        model.sample([11], solver=sv, grid=gr)
    with pytest.raises(ValueError, match="seeds"):
        model.sample([1, 2], solver=sv, grid=gr, seeds=[1])


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m"])
def test_diffusers_scheduler_loop_matches_our_solver(trained, name):
    """diffusers' own DDIM / DPM-Solver++(2M) loop (trailing spacing) on our trained, guided UNet
    gives the same images as the kernel solver on the same grid: the time mapping is exact."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    from imaging.model import per_sample_generators
    from shared.interop.diffusers import run_scheduler_loop
    from shared.param import convert
    from shared.sample import prior

    model, _, _ = trained
    proc, y, steps = model.process, torch.tensor([2, 7]), 4
    ours = model.sample(y, solver=S.make(name), grid=G.make("uniform", steps, process=proc), guidance_scale=2.0,
                        seeds=[11, 12])
    den = model.guided(y, 2.0)

    def eps_fn(inp, k):
        t = proc.t_of_index(k).to(torch.float32)
        return convert(den(inp, t), "x0", "eps", inp, t, proc)

    kw = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon", timestep_spacing="trailing")
    sched = DDIMScheduler(**kw, clip_sample=False) if name == "ddim" else \
        DPMSolverMultistepScheduler(**kw, algorithm_type="dpmsolver++", solver_order=2)
    x_T = prior((2, *model.data_shape), process=proc, generator=per_sample_generators(2, seeds=[11, 12]))
    theirs = run_scheduler_loop(sched, eps_fn, x_T, steps)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("process,prediction,grid", [("discrete_vp", "v", "uniform"), ("edm", "edm", "karras"),
                                                     ("flow", "flow", "uniform")])
def test_other_prediction_types_train_and_sample(task, tiny_cfg, tiny_data, process, prediction, grid):
    from shared.config import apply_overrides
    from shared.training import Trainer

    cfg = apply_overrides(tiny_cfg, {"diffusion.process": process, "diffusion.prediction": prediction,
                                     "diffusion.time_sampler": "lognormal" if process == "edm" else "uniform",
                                     "train.steps": 2})
    model = task.build(cfg)
    model = task.train(cfg, model, tiny_data, Trainer(cfg.train, None, progress=False))
    assert all(math.isfinite(h["loss"]) for h in model.train_history)
    out = model.sample([3, 4], solver=S.make("heun"), grid=G.make(grid, 2, process=model.process), guidance_scale=1.5,
                       seeds=[0, 1])
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()
