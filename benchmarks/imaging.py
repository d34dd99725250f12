"""imaging benchmark: pixel and latent class-conditional diffusion on MNIST, guidance, solvers,
and diffusers' own scheduler loop on the same trained UNet.

    python benchmarks/imaging.py [--quick] [--preset default|gpu] --json PATH [--out DIR] [--threads 1]

Writes JSON (updated after every stage, so a partial run leaves its figures) with

* ``fd_pixel`` / ``fd_latent`` — digits FD: Fréchet distance on the penultimate features of the
  project's MNIST classifier (``imaging/weights``) between generated and held-out test images.
  NOT Inception FID; lower is better; held-out val vs test gives the noise floor ``fd_floor``.
* ``cond_accuracy`` — classifier accuracy of class-conditional samples at the CFG scale chosen by
  the benchmark (``cfg_scale``: smallest scale of the scan reaching 95 %, else the most accurate);
  ``cfg_scan`` has every scale's accuracy and FD.
* ``fd_vs_nfe`` — ``{solver: {nfe: fd}}`` for DDIM, Heun (EDM, Karras grid) and DPM-Solver++(2M).
* ``diffusers_fd_nfe10`` — ``{scheduler: fd}`` from diffusers' ``DDIMScheduler`` and
  ``DPMSolverMultistepScheduler`` loops (``timestep_spacing="trailing"``, the same grid as our
  ``uniform``) at 10 evaluations with the same UNet, guidance, labels and starting noise; DDIM is
  run with ``clip_sample=False`` (the same algorithm as ours) and with diffusers' default
  ``clip_sample=True`` (``ddim_clip_sample``); ``ours_best_fd_nfe10`` for the goal check.
* ``train_images_per_s`` and ``sample_images_per_s`` (wall clock, this machine).

``--quick`` trains for a few dozen steps (numbers are only a smoke test of the pipeline).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SOLVERS = {"ddim": ("ddim", "uniform"), "heun": ("heun", "karras"), "dpmpp_2m": ("dpmpp_2m", "uniform")}


def settings(quick: bool, preset: str) -> dict:
    if quick:
        return dict(pixel_steps=40, latent_steps=60, vae_steps=40, batch=32, n_eval=100, n_scan=50,
                    scales=[1.0, 3.0], nfes=[10], fd_steps=10)
    if preset == "gpu":
        return dict(pixel_steps=None, latent_steps=None, vae_steps=None, batch=None, n_eval=2000, n_scan=500,
                    scales=[1.0, 1.5, 2.0, 3.0, 4.0], nfes=[5, 10, 20, 50], fd_steps=20)
    return dict(pixel_steps=1500, latent_steps=1500, vae_steps=500, batch=64, n_eval=1000, n_scan=300,
                scales=[1.0, 2.0, 3.0, 4.0], nfes=[5, 10, 20], fd_steps=20)


from shared.checkpoint import atomic_write_text  # noqa: E402


def write_json(path: Path, res: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(res, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default="default", choices=["default", "gpu"])
    ap.add_argument("--json", required=True)
    ap.add_argument("--out", default="/tmp/imaging_bench", help="folder for PNG grids")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="pixel,latent", help="comma list of pixel, latent")
    ap.add_argument("--pixel-steps", type=int, default=None, help="override the pixel UNet's training steps")
    ap.add_argument("--latent-steps", type=int, default=None, help="override the latent UNet's training steps")
    ap.add_argument("--vae-steps", type=int, default=None, help="override the autoencoder's training steps")
    ap.add_argument("--batch", type=int, default=None, help="override the training batch size (CPU presets)")
    ap.add_argument("--n-eval", type=int, default=None, help="override the number of generated images per metric")
    ap.add_argument("--nfes", default=None, help="override the NFE list, e.g. 5,10")
    ap.add_argument("--scales", default=None, help="override the CFG scales scanned, e.g. 1,3")
    ap.add_argument("--init-pixel", default=None, help="start the pixel model from this checkpoint (continue training)")
    ap.add_argument("--cfg-scale", type=float, default=None, help="skip the scan and use this CFG scale")
    a = ap.parse_args(argv)
    parts = set(a.parts.split(","))
    if not parts <= {"pixel", "latent"} or not parts:
        ap.error("--parts takes pixel and/or latent")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    t_start = time.perf_counter()

    from imaging.metrics import classifier_info, image_metrics
    from imaging.task import ImagingTask
    from shared.config import apply_overrides
    from shared.training import Trainer

    st = settings(a.quick, a.preset)
    for key, val in (("pixel_steps", a.pixel_steps), ("latent_steps", a.latent_steps), ("vae_steps", a.vae_steps),
                     ("n_eval", a.n_eval), ("batch", a.batch)):
        if val is not None:
            st[key] = val
    if a.n_eval is not None:
        st["n_scan"] = min(st["n_scan"], a.n_eval)
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
    if st["pixel_steps"]:
        base = apply_overrides(base, {"train.steps": st["pixel_steps"], "train.batch_size": st["batch"],
                                      "train.warmup_steps": min(100, st["pixel_steps"] // 10),
                                      "vae_train.steps": st["vae_steps"], "vae_train.batch_size": st["batch"]})
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

    def train(cfg, tag):
        model = task.build(cfg)
        if tag == "pixel" and a.init_pixel:
            from shared.checkpoint import load_into

            load_into(a.init_pixel, {"model": model})
            res["pixel_init"] = str(a.init_pixel)
        t0 = time.perf_counter()
        tr = Trainer(cfg.train, None, progress=True)
        model = task.train(cfg, model, data, tr)
        dt = time.perf_counter() - t0
        n_img = cfg.train.steps * cfg.train.batch_size
        print(f"[{tag}] trained {cfg.train.steps} steps in {dt:.1f}s", flush=True)
        return model, dt, n_img

    labels = torch.arange(st["n_eval"]) % 10
    seeds = list(range(a.seed * 100000, a.seed * 100000 + st["n_eval"]))

    def gen(model, solver, grid, scale, n=None):
        n = n or st["n_eval"]
        return model.sample(labels[:n], solver=solver, grid=grid, guidance_scale=scale, seeds=seeds[:n],
                            batch_size=250)

    res["parts"] = sorted(parts)
    res["train_images_per_s"], res["train_seconds"], res["sample_images_per_s"] = {}, {}, {}
    scale = a.cfg_scale
    if "pixel" in parts:
        scale = pixel_part(a, st, res, task, base, data, ref, labels, seeds, train, gen, out_json, out_dir, scale)
    if "latent" in parts:
        latent_part(a, st, res, task, data, ref, labels, seeds, train, gen, out_json, out_dir,
                    scale if scale is not None else base.sample.guidance_scale)
    res["wall_s"] = time.perf_counter() - t_start
    write_json(out_json, res)
    print_table(res)
    return 0


def pixel_part(a, st, res, task, base, data, ref, labels, seeds, train, gen, out_json, out_dir, scale):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    from imaging.metrics import image_metrics
    from imaging.model import per_sample_generators
    from shared import grid as G
    from shared import solvers as S
    from shared.interop.diffusers import run_scheduler_loop
    from shared.param import convert
    from shared.sample import count_nfe, prior

    model, dt, n_img = train(base, "pixel")
    task.save(model, base, out_dir / "pixel_model")
    res["train_images_per_s"]["pixel"] = n_img / dt
    res["train_seconds"]["pixel"] = dt
    res["pixel_params"] = sum(p.numel() for p in model.denoiser.parameters())

    # CFG scale scan with DPM-Solver++(2M), fd_steps steps
    dpm = S.make("dpmpp_2m")
    g_fd = G.make("uniform", st["fd_steps"], process=model.process)
    scan = {}
    for s in ([] if scale is not None else st["scales"]):
        x = gen(model, dpm, g_fd, s, st["n_scan"])
        m = image_metrics(x.clamp(-1, 1), ref, labels[: st["n_scan"]])
        scan[str(s)] = {"class_accuracy": m["class_accuracy"], "fd": m["fd"]}
        print(f"[cfg scan] scale {s}: acc {m['class_accuracy']:.3f} fd {m['fd']:.2f}", flush=True)
    if scale is None:
        ok = [float(s) for s, v in scan.items() if v["class_accuracy"] >= 0.95]
        scale = min(ok) if ok else float(max(scan, key=lambda s: scan[s]["class_accuracy"]))
    res["cfg_scan"], res["cfg_scale"] = scan, scale
    write_json(out_json, res)

    t0 = time.perf_counter()
    x = gen(model, dpm, g_fd, scale)
    sample_dt = time.perf_counter() - t0
    m = image_metrics(x.clamp(-1, 1), ref, labels)
    res.update(fd_pixel=m["fd"], cond_accuracy=m["class_accuracy"], precision_pixel=m["precision"],
               recall_pixel=m["recall"])
    res["sample_images_per_s"][f"pixel_dpmpp_2m_{st['fd_steps']}steps_cfg"] = st["n_eval"] / sample_dt
    task.plot(x, data, out_dir / "pixel_samples.png")
    print(f"[pixel] fd {m['fd']:.2f} acc {m['class_accuracy']:.3f} P {m['precision']:.2f} R {m['recall']:.2f}", flush=True)
    write_json(out_json, res)

    # solvers x NFE
    fd_nfe: dict = {}
    for name, (sv_name, grid_name) in SOLVERS.items():
        sv = S.make(sv_name)
        fd_nfe[name] = {}
        for nfe in st["nfes"]:
            steps = (nfe + 1) // 2 if sv_name == "heun" else nfe
            real_nfe = count_nfe(sv, steps)
            x = gen(model, sv, G.make(grid_name, steps, process=model.process), scale)
            fd_nfe[name][str(real_nfe)] = image_metrics(x.clamp(-1, 1), ref)["fd"]
            print(f"[nfe] {name} ({grid_name}) nfe {real_nfe}: fd {fd_nfe[name][str(real_nfe)]:.2f}", flush=True)
        res["fd_vs_nfe"] = fd_nfe
        write_json(out_json, res)
    res["fd_vs_nfe_grids"] = {k: v[1] for k, v in SOLVERS.items()}

    # diffusers' own loops on the same UNet, labels, guidance and starting noise, 10 evaluations
    proc = model.process
    sched_cfg = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=2e-2,
                     prediction_type="epsilon", timestep_spacing="trailing")
    dif = {}
    n = st["n_eval"]
    for name, cls in (("ddim", DDIMScheduler), ("ddim_clip_sample", DDIMScheduler),
                      ("dpmpp_2m", DPMSolverMultistepScheduler)):
        outs = []
        for s0 in range(0, n, 250):
            y = labels[s0:s0 + 250]
            gens = per_sample_generators(len(y), seeds=seeds[s0:s0 + 250])
            x_T = prior((len(y), *model.data_shape), process=proc, generator=gens)
            den = model.guided(y, scale)

            def eps_fn(inp, k, den=den):
                t = proc.t_of_index(k).to(torch.float32)
                return convert(den(inp, t), "x0", "eps", inp, t, proc)

            extra = {"ddim": {"clip_sample": False}, "ddim_clip_sample": {"clip_sample": True},
                     "dpmpp_2m": {"algorithm_type": "dpmsolver++", "solver_order": 2}}[name]
            sched = cls(**sched_cfg, **extra)
            with torch.no_grad():
                outs.append(run_scheduler_loop(sched, eps_fn, x_T, 10))
        x = torch.cat(outs)
        dif[name] = image_metrics(x.clamp(-1, 1), ref)["fd"]
        print(f"[diffusers] {name} 10 steps: fd {dif[name]:.2f}", flush=True)
    res["diffusers_fd_nfe10"] = dif
    ours10 = {k: v["10"] for k, v in fd_nfe.items() if "10" in v}
    ours10.update({f"heun_nfe9": fd_nfe["heun"].get("9")} if "9" in fd_nfe.get("heun", {}) else {})
    res["ours_fd_nfe10"] = ours10
    vals = [v for v in ours10.values() if v is not None]
    res["ours_best_fd_nfe10"] = min(vals) if vals else None
    # same algorithm on the same grid gives the same images up to float rounding: 0.1 % tolerance
    res["goal_nfe10_met"] = bool(vals) and min(vals) <= min(dif.values()) * (1 + 1e-3)
    write_json(out_json, res)
    return scale


def latent_part(a, st, res, task, data, ref, labels, seeds, train, gen, out_json, out_dir, scale):
    from imaging.metrics import image_metrics
    from shared import grid as G
    from shared import solvers as S
    from shared.config import apply_overrides

    dpm = S.make("dpmpp_2m")
    res["cfg_scale_latent"] = scale
    lat_cfg = task.config("latent")
    over = {"train.steps": st["latent_steps"], "train.batch_size": st["batch"],
            "vae_train.steps": st["vae_steps"], "vae_train.batch_size": st["batch"]}
    if a.preset == "gpu" and not a.quick:
        lat_cfg = dataclasses.replace(task.config("gpu"), latent=True)
    else:
        lat_cfg = apply_overrides(lat_cfg, over)
    t0 = time.perf_counter()
    lat, dt, n_img = train(lat_cfg, "latent")
    task.save(lat, lat_cfg, out_dir / "latent_model")
    res["train_seconds"]["latent_total"] = dt
    res["train_images_per_s"]["latent_total"] = n_img / dt
    res["autoencoder_val_mse"] = getattr(lat, "autoencoder_val_mse", None)
    res["latent_scale"] = float(lat.latent_scale)
    t0 = time.perf_counter()
    x = gen(lat, dpm, G.make("uniform", st["fd_steps"], process=lat.process), scale)
    res["sample_images_per_s"][f"latent_dpmpp_2m_{st['fd_steps']}steps_cfg"] = st["n_eval"] / (time.perf_counter() - t0)
    m = image_metrics(x.clamp(-1, 1), ref, labels)
    res.update(fd_latent=m["fd"], cond_accuracy_latent=m["class_accuracy"], precision_latent=m["precision"],
               recall_latent=m["recall"])
    task.plot(x, data, out_dir / "latent_samples.png")
    print(f"[latent] fd {m['fd']:.2f} acc {m['class_accuracy']:.3f}", flush=True)
    write_json(out_json, res)


def print_table(r: dict) -> None:
    f = lambda v: "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
    print("\n| metric | value |\n|---|---|")
    for k in ("fd_floor", "fd_pixel", "fd_latent", "cfg_scale", "cond_accuracy", "cond_accuracy_latent",
              "precision_pixel", "recall_pixel", "ours_best_fd_nfe10", "goal_nfe10_met", "autoencoder_val_mse",
              "wall_s"):
        print(f"| {k} | {f(r.get(k))} |")
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
