"""imaging benchmark: latent and pixel class-conditional diffusion on MNIST, guidance, solvers,
and diffusers' own scheduler loop on the same trained UNet.

    python benchmarks/imaging.py [--quick] [--preset default|gpu] --json PATH [--out DIR] [--threads 1]
    python benchmarks/imaging.py --preset gpu --budget 100 --json PATH      # on a CUDA machine

``--preset gpu`` trains the ``gpu`` preset's models (16M-parameter UNets, bf16, batch 256) for a
fixed wall-clock budget (``--budget`` seconds for the whole run: autoencoder 10 %, latent UNet 30 %,
pixel UNet 20 % through ``train.max_seconds``; the rest is sampling and evaluation) and records
the steps each model reached and the peak GPU memory.

The latent model (AutoencoderKL 32x32x1 -> 8x8x4 + a class-conditional UNet, ``latent`` preset) is
the main model on the CPU: every latent training step costs ~1/5 of a pixel step, so at a 30-minute
budget it is the one that learns its classes. The pixel model (``default`` preset) is trained with
a smaller budget and reported beside it. Writes JSON (updated after every stage, so a partial run
leaves its figures) with

* ``fd_latent`` / ``fd_pixel`` — digits FD: Fréchet distance on the penultimate features of the
  project's MNIST classifier (``imaging/weights``) between generated and held-out test images.
  NOT Inception FID; lower is better; held-out val vs test gives the noise floor ``fd_floor``.
* ``cond_accuracy`` — classifier accuracy of class-conditional samples of the latent model at the
  CFG scale chosen by the benchmark (``cfg_scale``). The scale is chosen on a VALIDATION batch
  (other seeds, FD against the val split; ``cfg_scan``): among scales whose accuracy is >= 95 %
  with 95 % confidence (Wilson lower bound) the one with the lowest FD, else the most accurate. ``cfg_variants`` adds a guidance interval and
  CFG rescale at the chosen scale (validation batch). ``cond_accuracy_pixel`` is the pixel model
  at the same scale.
* ``fd_vs_nfe`` — ``{solver: {nfe: fd}}`` for DDIM, Heun (EDM, Karras grid) and DPM-Solver++(2M)
  on the latent model.
* ``diffusers_fd_nfe10`` — ``{scheduler: fd}`` from diffusers' ``DDIMScheduler`` and
  ``DPMSolverMultistepScheduler`` loops (``timestep_spacing="trailing"``, the same grid as our
  ``uniform``) at 10 evaluations with the same latent UNet, guidance, labels and starting noise;
  DDIM is run with ``clip_sample=False`` (the same algorithm as ours) and with diffusers' default
  ``clip_sample=True`` (``ddim_clip_sample``); ``ours_best_fd_nfe10`` for the goal check.
* ``train_images_per_s``, ``train_seconds`` and ``sample_images_per_s`` (wall clock, this machine).

``--quick`` trains for a few dozen steps (numbers are only a smoke test of the pipeline).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/<domain>.py would shadow the domain packages: the repository root goes first and
# this folder leaves the import path (it is sys.path[0] when a script here is run directly)
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "benchmarks")]

SOLVERS = {"ddim": ("ddim", "uniform"), "heun": ("heun", "karras"), "dpmpp_2m": ("dpmpp_2m", "uniform")}
VAL_SEED_OFFSET = 10_000_000  # validation-batch seeds never overlap the evaluation seeds


def settings(quick: bool, preset: str) -> dict:
    if quick:
        return dict(pixel_steps=30, latent_steps=60, vae_steps=40, batch=32, n_eval=100, n_scan=50, n_nfe=50,
                    n_pixel=20, scales=[1.0, 3.0], nfes=[10], fd_steps=10)
    if preset == "gpu":
        return dict(pixel_steps=None, latent_steps=None, vae_steps=None, batch=None, n_eval=2000, n_scan=500,
                    n_nfe=1000, n_pixel=1000, scales=[1.0, 2.0, 3.0, 4.0, 6.0], nfes=[5, 10, 20],
                    fd_steps=20)
    return dict(pixel_steps=150, latent_steps=2500, vae_steps=300, batch=64, n_eval=1000, n_scan=200, n_nfe=500,
                n_pixel=100, scales=[1.0, 2.0, 3.0, 4.0, 6.0], nfes=[5, 10, 20], fd_steps=20)


from shared.checkpoint import atomic_write_text  # noqa: E402


def write_json(path: Path, res: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(res, indent=1) + "\n")


def accuracy_lower_bound(acc: float, n: int, z: float = 1.645) -> float:
    """One-sided 95 % Wilson lower confidence bound of an accuracy measured on ``n`` samples."""
    if n <= 0:
        return 0.0
    d = 1 + z * z / n
    c = acc + z * z / (2 * n)
    r = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n))
    return (c - r) / d


def choose_scale(scan: dict, n: int, target: float = 0.95) -> float:
    """Among scales whose validation accuracy is ``>= target`` with 95 % confidence (Wilson lower
    bound on ``n`` validation samples) the one with the lowest FD, else the most accurate scale
    (ties: lower FD). The bound matters: a scale at 0.965 on 200 validation samples is not reliably
    above 0.95 on fresh samples."""
    ok = {s: v for s, v in scan.items() if accuracy_lower_bound(v["class_accuracy"], n) >= target}
    if ok:
        return float(min(ok, key=lambda s: ok[s]["fd"]))
    return float(max(scan, key=lambda s: (scan[s]["class_accuracy"], -scan[s]["fd"])))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default="default", choices=["default", "gpu"])
    ap.add_argument("--json", required=True)
    ap.add_argument("--out", default="/tmp/imaging_bench", help="folder for PNG grids and the trained models")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=None,
                    help="wall-clock seconds for the whole run (gpu preset: default 100): the trainings get "
                         "fixed shares of it through train.max_seconds")
    ap.add_argument("--parts", default="latent,pixel", help="comma list of latent, pixel")
    ap.add_argument("--pixel-steps", type=int, default=None, help="override the pixel UNet's training steps")
    ap.add_argument("--latent-steps", type=int, default=None, help="override the latent UNet's training steps")
    ap.add_argument("--vae-steps", type=int, default=None, help="override the autoencoder's training steps")
    ap.add_argument("--batch", type=int, default=None, help="override the training batch size (CPU presets)")
    ap.add_argument("--n-eval", type=int, default=None, help="override the number of generated images per metric")
    ap.add_argument("--nfes", default=None, help="override the NFE list, e.g. 5,10")
    ap.add_argument("--scales", default=None, help="override the CFG scales scanned, e.g. 1,3")
    ap.add_argument("--init-pixel", default=None, help="start the pixel model from this checkpoint (continue training)")
    ap.add_argument("--init-latent", default=None, help="start the latent model (autoencoder + UNet) from this "
                                                        "checkpoint; the autoencoder is then not retrained")
    ap.add_argument("--reuse-latent", default=None, help="evaluate this trained latent checkpoint (e.g. "
                                                         "<out>/latent_model of an earlier run) instead of training")
    ap.add_argument("--cfg-scale", type=float, default=None, help="skip the scan and use this CFG scale")
    a = ap.parse_args(argv)
    parts = set(a.parts.split(","))
    if not parts <= {"pixel", "latent"} or not parts:
        ap.error("--parts takes pixel and/or latent")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.preset == "gpu" and not a.quick and a.budget is None:
        a.budget = 100.0
    if a.budget is not None and a.budget <= 0:
        ap.error(f"--budget must be > 0 seconds, got {a.budget}")
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()
    t_start = time.perf_counter()

    from imaging.metrics import classifier_info, image_metrics
    from imaging.task import ImagingTask
    from shared.config import apply_overrides

    st = settings(a.quick, a.preset)
    for key, val in (("pixel_steps", a.pixel_steps), ("latent_steps", a.latent_steps), ("vae_steps", a.vae_steps),
                     ("n_eval", a.n_eval), ("batch", a.batch)):
        if val is not None:
            st[key] = val
    if a.n_eval is not None:
        for k in ("n_scan", "n_nfe", "n_pixel"):
            st[k] = min(st[k], a.n_eval)
    if a.nfes:
        st["nfes"] = [int(v) for v in a.nfes.split(",")]
    if a.scales:
        st["scales"] = [float(v) for v in a.scales.split(",")]
    if st["batch"] is None and (a.pixel_steps or a.latent_steps or a.vae_steps):
        ap.error("step overrides are for the CPU presets")
    out_json, out_dir = Path(a.json), Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = ImagingTask()
    base = task.config("gpu" if a.preset == "gpu" else "default")
    data = task.load_data(base)
    ref = data.test.images
    res: dict = {
        "mode": "quick" if a.quick else a.preset, "settings": st,
        "device": "cuda:" + torch.cuda.get_device_name() if torch.cuda.is_available() else
        f"cpu ({platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()})",
        "fd_note": "digits FD: Frechet distance on the MNIST classifier's 64-d penultimate features "
                   "(imaging/weights/mnist_classifier), NOT Inception FID",
        "classifier_test_accuracy": classifier_info()["test_accuracy"],
    }
    res["fd_floor"] = image_metrics(data.val.images[: st["n_eval"]], ref)["fd"]
    print(f"held-out val vs test FD floor ({st['n_eval']} images): {res['fd_floor']:.3f}", flush=True)

    ctx = dict(a=a, st=st, res=res, task=task, data=data, ref=ref, out_json=out_json, out_dir=out_dir,
               labels=torch.arange(st["n_eval"]) % 10,
               seeds=list(range(a.seed * 100000, a.seed * 100000 + st["n_eval"])))
    res["parts"] = sorted(parts)
    res["train_images_per_s"], res["train_seconds"], res["sample_images_per_s"] = {}, {}, {}
    scale = a.cfg_scale
    if "latent" in parts:
        scale = latent_part(ctx, scale)
    if "pixel" in parts:
        pixel_part(ctx, scale, base, apply_overrides)
    res["wall_s"] = time.perf_counter() - t_start
    if torch.cuda.is_available():
        res["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    res["budget_s"] = a.budget
    write_json(out_json, res)
    print_table(res)
    return 0


def _budgeted(cfg, budget, *, unet: float, vae: float = 0.0):
    """``cfg`` with ``train.max_seconds`` (and ``vae_train.max_seconds``) set to their share of
    the run's wall-clock budget (unchanged without a budget)."""
    if budget is None:
        return cfg
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_seconds=unet * budget))
    if vae:
        cfg = dataclasses.replace(cfg, vae_train=dataclasses.replace(cfg.vae_train, max_seconds=vae * budget))
    return cfg


def _train(ctx, cfg, tag, init=None):
    from shared.checkpoint import load_into
    from shared.training import Trainer

    task, res = ctx["task"], ctx["res"]
    model = task.build(cfg)
    if init:
        load_into(init, {"model": model})
        res[f"{tag}_init"] = str(init)
    t0 = time.perf_counter()
    tr = Trainer(cfg.train, None, progress=True)
    if init and model.is_latent:  # keep the given autoencoder; train only the UNet
        from imaging.task import LatentSet

        model.to(tr.device)
        mean, std = task._posterior(model.autoencoder.vae, ctx["data"].train.images, tr.device)
        ds = LatentSet(mean, std, ctx["data"].train.labels)
        tr.fit(model.denoiser, task.diffusion_loss_fn(cfg, model), ds)
        if tr.ema_model is not None:
            model.denoiser.load_state_dict(tr.ema_model.state_dict())
        model.eval()
    else:
        model = task.train(cfg, model, ctx["data"], tr)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    steps = tr.step  # fewer than cfg.train.steps when a time budget stopped it
    res[f"{tag}_train_steps_done"] = steps
    if getattr(model, "autoencoder_train_steps", None) is not None:
        res[f"{tag}_autoencoder_steps_done"] = model.autoencoder_train_steps
    print(f"[{tag}] trained {steps} steps in {dt:.1f}s", flush=True)
    return model, dt, steps * cfg.train.batch_size


def _gen(ctx, model, solver, grid, scale, n, *, val=False, interval=None, rescale=0.0):
    labels = torch.arange(n) % 10
    off = VAL_SEED_OFFSET if val else 0
    seeds = ctx["seeds"][:n] if not val else [off + s for s in ctx["seeds"][:n]]
    return model.sample(labels, solver=solver, grid=grid, guidance_scale=scale, guidance_interval=interval,
                        guidance_rescale=rescale, seeds=seeds, batch_size=250)


def latent_part(ctx, scale):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    from imaging.metrics import image_metrics
    from imaging.model import per_sample_generators
    from shared import grid as G
    from shared import solvers as S
    from shared.config import apply_overrides
    from shared.interop.diffusers import run_scheduler_loop
    from shared.param import convert
    from shared.sample import count_nfe, prior

    a, st, res, task, data, ref = ctx["a"], ctx["st"], ctx["res"], ctx["task"], ctx["data"], ctx["ref"]
    out_json, out_dir = ctx["out_json"], ctx["out_dir"]
    if a.preset == "gpu" and not a.quick:
        lat_cfg = _budgeted(dataclasses.replace(task.config("gpu"), latent=True), a.budget, vae=0.10, unet=0.30)
    else:
        lat_cfg = apply_overrides(task.config("latent"), {
            "train.steps": st["latent_steps"], "train.batch_size": st["batch"],
            "train.warmup_steps": min(50, st["latent_steps"] // 10),
            "vae_train.steps": st["vae_steps"], "vae_train.batch_size": st["batch"]})
    if a.reuse_latent:
        model, lat_cfg = task.load(a.reuse_latent)
        res["latent_model"] = f"reused {a.reuse_latent} (not trained in this run)"
    else:
        model, dt, n_img = _train(ctx, lat_cfg, "latent", a.init_latent)
        task.save(model, lat_cfg, out_dir / "latent_model")
        res["train_seconds"]["latent_total"] = dt
        res["train_images_per_s"]["latent_unet_and_autoencoder"] = n_img / dt
    res["latent_train_steps"] = lat_cfg.train.steps
    res["autoencoder_val_mse"] = getattr(model, "autoencoder_val_mse", None)
    res["latent_scale"] = float(model.latent_scale)
    res["latent_params"] = sum(p.numel() for p in model.denoiser.parameters())
    write_json(out_json, res)

    # CFG scale chosen on a validation batch (other seeds; FD against the val split)
    dpm = S.make("dpmpp_2m")
    g_fd = G.make("uniform", st["fd_steps"], process=model.process)
    n_scan = st["n_scan"]
    val_labels = torch.arange(n_scan) % 10
    scan = {}
    for s in ([] if scale is not None else st["scales"]):
        x = _gen(ctx, model, dpm, g_fd, s, n_scan, val=True)
        m = image_metrics(x.clamp(-1, 1), data.val.images, val_labels)
        scan[str(s)] = {"class_accuracy": m["class_accuracy"], "fd": m["fd"]}
        print(f"[cfg scan, validation] scale {s}: acc {m['class_accuracy']:.3f} fd {m['fd']:.2f}", flush=True)
        res["cfg_scan"] = scan
        write_json(out_json, res)
    if scale is None:
        scale = choose_scale(scan, n_scan)
    res["cfg_scan"], res["cfg_scale"] = scan, scale
    res["cfg_scan_note"] = (f"validation batch: {n_scan} samples, seeds offset {VAL_SEED_OFFSET}, FD vs the val split; "
                            "rule: lowest FD among scales whose accuracy is >= 0.95 with 95 % confidence (one-sided Wilson "
                            "bound), else the most accurate")
    variants = {}
    for name, kw in (("interval_t<=0.8", {"interval": (0.0, 0.8)}), ("interval_t>=0.2", {"interval": (0.2, 1.0)}),
                     ("rescale_0.7", {"rescale": 0.7})):
        if a.quick:
            break
        x = _gen(ctx, model, dpm, g_fd, scale, n_scan, val=True, **kw)
        m = image_metrics(x.clamp(-1, 1), data.val.images, val_labels)
        variants[name] = {"class_accuracy": m["class_accuracy"], "fd": m["fd"]}
        print(f"[cfg variant, validation] scale {scale} {name}: acc {m['class_accuracy']:.3f} fd {m['fd']:.2f}",
              flush=True)
    res["cfg_variants"] = variants
    write_json(out_json, res)

    n, labels = st["n_eval"], ctx["labels"]
    t0 = time.perf_counter()
    x = _gen(ctx, model, dpm, g_fd, scale, n)
    res["sample_images_per_s"][f"latent_dpmpp_2m_{st['fd_steps']}steps_cfg"] = n / (time.perf_counter() - t0)
    m = image_metrics(x.clamp(-1, 1), ref, labels)
    res.update(fd_latent=m["fd"], cond_accuracy=m["class_accuracy"], cond_accuracy_latent=m["class_accuracy"],
               precision_latent=m["precision"], recall_latent=m["recall"], cond_accuracy_model="latent")
    x1 = _gen(ctx, model, dpm, g_fd, 1.0, n)
    m1 = image_metrics(x1.clamp(-1, 1), ref, labels)
    res.update(fd_latent_unguided_scale1=m1["fd"], cond_accuracy_latent_scale1=m1["class_accuracy"])
    task.plot(x, data, out_dir / "latent_samples.png")
    print(f"[latent] scale {scale}: fd {m['fd']:.2f} acc {m['class_accuracy']:.3f} P {m['precision']:.2f} "
          f"R {m['recall']:.2f}; scale 1: fd {m1['fd']:.2f} acc {m1['class_accuracy']:.3f}", flush=True)
    write_json(out_json, res)

    # solvers x NFE on the latent model
    n = st["n_nfe"]
    fd_nfe: dict = {}
    for name, (sv_name, grid_name) in SOLVERS.items():
        sv = S.make(sv_name)
        fd_nfe[name] = {}
        for nfe in st["nfes"]:
            steps = (nfe + 1) // 2 if sv_name == "heun" else nfe
            real_nfe = count_nfe(sv, steps)
            x = _gen(ctx, model, sv, G.make(grid_name, steps, process=model.process), scale, n)
            fd_nfe[name][str(real_nfe)] = image_metrics(x.clamp(-1, 1), ref)["fd"]
            print(f"[nfe] {name} ({grid_name}) nfe {real_nfe}: fd {fd_nfe[name][str(real_nfe)]:.2f}", flush=True)
        res["fd_vs_nfe"] = fd_nfe
        write_json(out_json, res)
    res["fd_vs_nfe_grids"] = {k: v[1] for k, v in SOLVERS.items()}
    res["fd_vs_nfe_n"] = n

    # diffusers' own loops on the same UNet, labels, guidance and starting noise, 10 evaluations
    proc = model.process
    sched_cfg = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=2e-2,
                     prediction_type="epsilon", timestep_spacing="trailing")
    dif = {}
    for name, cls in (("ddim", DDIMScheduler), ("ddim_clip_sample", DDIMScheduler),
                      ("dpmpp_2m", DPMSolverMultistepScheduler)):
        outs = []
        for s0 in range(0, n, 250):
            y = labels[s0:s0 + 250][: n - s0]
            gens = per_sample_generators(len(y), seeds=ctx["seeds"][s0:s0 + len(y)])
            x_T = prior((len(y), *model.data_shape), process=proc, generator=gens).to(model.device)
            den = model.guided(y.to(model.device), scale)

            def eps_fn(inp, k, den=den):
                t = proc.t_of_index(k).to(device=inp.device, dtype=torch.float32)
                return convert(den(inp, t), "x0", "eps", inp, t, proc)

            extra = {"ddim": {"clip_sample": False}, "ddim_clip_sample": {"clip_sample": True},
                     "dpmpp_2m": {"algorithm_type": "dpmsolver++", "solver_order": 2}}[name]
            sched = cls(**sched_cfg, **extra)
            with torch.no_grad():
                outs.append(model.decode(run_scheduler_loop(sched, eps_fn, x_T, 10)))
        x = torch.cat(outs)
        dif[name] = image_metrics(x.clamp(-1, 1), ref)["fd"]
        print(f"[diffusers] {name} 10 steps: fd {dif[name]:.2f}", flush=True)
    res["diffusers_fd_nfe10"] = dif
    ours10 = {k: v["10"] for k, v in fd_nfe.items() if "10" in v}
    ours10.update({"heun_nfe9": fd_nfe["heun"].get("9")} if "9" in fd_nfe.get("heun", {}) else {})
    res["ours_fd_nfe10"] = ours10
    vals = [v for v in ours10.values() if v is not None]
    res["ours_best_fd_nfe10"] = min(vals) if vals else None
    # same algorithm on the same grid gives the same images up to float rounding: 0.1 % tolerance
    res["goal_nfe10_met"] = bool(vals) and min(vals) <= min(dif.values()) * (1 + 1e-3)
    write_json(out_json, res)
    return scale


def pixel_part(ctx, scale, base, apply_overrides):
    from imaging.metrics import image_metrics
    from shared import grid as G
    from shared import solvers as S

    a, st, res, task, data, ref = ctx["a"], ctx["st"], ctx["res"], ctx["task"], ctx["data"], ctx["ref"]
    if st["pixel_steps"]:
        base = apply_overrides(base, {"train.steps": st["pixel_steps"], "train.batch_size": st["batch"],
                                      "train.warmup_steps": min(100, st["pixel_steps"] // 10)})
    base = _budgeted(base, a.budget, unet=0.20)
    model, dt, n_img = _train(ctx, base, "pixel", a.init_pixel)
    task.save(model, base, ctx["out_dir"] / "pixel_model")
    res["train_images_per_s"]["pixel"] = n_img / dt
    res["train_seconds"]["pixel"] = dt
    res["pixel_train_steps"] = base.train.steps
    res["pixel_params"] = sum(p.numel() for p in model.denoiser.parameters())
    scale = base.sample.guidance_scale if scale is None else scale
    n = st["n_pixel"]
    dpm, g_fd = S.make("dpmpp_2m"), G.make("uniform", st["fd_steps"], process=model.process)
    t0 = time.perf_counter()
    x = _gen(ctx, model, dpm, g_fd, scale, n)
    res["sample_images_per_s"][f"pixel_dpmpp_2m_{st['fd_steps']}steps_cfg"] = n / (time.perf_counter() - t0)
    m = image_metrics(x.clamp(-1, 1), ref, torch.arange(n) % 10)
    res.update(fd_pixel=m["fd"], cond_accuracy_pixel=m["class_accuracy"], precision_pixel=m["precision"],
               recall_pixel=m["recall"], cfg_scale_pixel=scale, fd_pixel_n=n)
    task.plot(x, data, ctx["out_dir"] / "pixel_samples.png")
    print(f"[pixel] fd {m['fd']:.2f} acc {m['class_accuracy']:.3f} P {m['precision']:.2f} R {m['recall']:.2f}",
          flush=True)
    write_json(ctx["out_json"], res)


def print_table(r: dict) -> None:
    f = lambda v: "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    print("\n| metric | value |\n|---|---|")
    for k in ("fd_floor", "fd_latent", "fd_pixel", "cfg_scale", "cond_accuracy", "cond_accuracy_latent_scale1",
              "cond_accuracy_pixel", "precision_latent", "recall_latent", "ours_best_fd_nfe10", "goal_nfe10_met",
              "autoencoder_val_mse", "wall_s"):
        print(f"| {k} | {f(r.get(k))} |")
    for k, v in r.get("cfg_scan", {}).items():
        print(f"| validation scale {k}: acc / FD | {f(v['class_accuracy'])} / {f(v['fd'])} |")
    for k, v in r.get("cfg_variants", {}).items():
        print(f"| validation {k}: acc / FD | {f(v['class_accuracy'])} / {f(v['fd'])} |")
    for k, v in r.get("diffusers_fd_nfe10", {}).items():
        print(f"| diffusers {k} FD @10 | {f(v)} |")
    for k, v in r.get("train_images_per_s", {}).items():
        print(f"| train images/s ({k}) | {f(v)} |")
    for k, v in r.get("sample_images_per_s", {}).items():
        print(f"| sample images/s ({k}) | {f(v)} |")
    nfes = sorted({int(n) for d in r.get("fd_vs_nfe", {}).values() for n in d})
    if nfes:
        print("\n| solver (grid) | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
        print("|---|" + "---|" * len(nfes))
        for s, d in r["fd_vs_nfe"].items():
            print(f"| {s} ({r.get('fd_vs_nfe_grids', {}).get(s, '')}) | "
                  + " | ".join(f(d.get(str(n))) for n in nfes) + " |")


if __name__ == "__main__":
    sys.exit(main())
