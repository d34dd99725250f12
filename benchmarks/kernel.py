"""Kernel benchmark: convergence orders, sampling error against diffusers at equal NFE, and
per-step overhead against diffusers' scheduler loop — all measured in one run.

    python benchmarks/kernel.py [--quick] --json PATH

* ``order``: measured convergence orders of Euler, Heun, DPM-Solver++(2M) and (3M) on a 2-D
  Gaussian mixture with its exact denoiser (least-squares slope of log error vs log steps).
* ``err_ratio_dpmpp2m_nfe{10,20}``: RMS error (against a 2048-step Heun reference from the same
  noise) of our DPM-Solver++(2M) with our best grid, divided by that of diffusers'
  ``DPMSolverMultistepScheduler`` (dpmsolver++, order 2, its default spacing) at the same number of
  model evaluations on the same exact model (a DDPM linear schedule, eps output).
* ``overhead_ratio_per_step``: median wall time per step of our sampling loop divided by
  diffusers' loop (DDIM, DPM-Solver++ and Euler) with a trivial eps model, batch 1, 1x8x8; the
  worst of the three. diffusers' loop is a pipeline's own (``scale_model_input``, model,
  ``step``), ours is ``sample()`` on a ``Denoiser``; both include ``set_timesteps`` / grid checks.
  The median CPU time of this thread (``thread_cpu``) is reported beside it: it is what to read
  when the machine is shared, as wall time then includes waiting for a core.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from shared import grid as G
from shared import process as P
from shared import solvers as S
from shared.sample import sample
from shared.testing import GMM, two_d_mixture

F64 = torch.float64


def measure_orders(ns):
    proc = P.EDM()
    gm = two_d_mixture()
    D = gm.denoiser(proc)
    k = lambda n: torch.exp(torch.linspace(math.log(80.0), math.log(0.05), n + 1, dtype=F64))  # noqa
    grid = lambda n: proc.t_of_edm_sigma(k(n))  # noqa: E731
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * 80.0
    ref = sample(D, x_T, grid(1024), S.make("dpmpp_3m"), process=proc)
    out = {}
    for name in ("euler", "heun", "dpmpp_2m", "dpmpp_3m"):
        use = ns if name != "dpmpp_3m" else [n for n in ns if n <= 32]
        errs = [float((sample(D, x_T, grid(n), S.make(name), process=proc) - ref).pow(2).mean().sqrt())
                for n in use]
        out[name] = float(-np.polyfit(np.log(use), np.log(errs), 1)[0])
    return out


def _image_gmm(dim: int) -> GMM:
    g = torch.Generator().manual_seed(3)
    means = 0.6 * torch.randn(4, dim, generator=g, dtype=F64)
    return GMM(means, torch.tensor([0.05, 0.1, 0.02, 0.08], dtype=F64),
               torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64))


def error_vs_diffusers(nfes, n_samples):
    from diffusers import DPMSolverMultistepScheduler

    from shared.interop.diffusers import (eps_fn_denoiser, process_from_scheduler_config,
                                          run_scheduler_loop, scheduler_grid)

    sc = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)
    proc = process_from_scheduler_config(sc.config)
    gm = _image_gmm(64)
    D = gm.denoiser(proc)

    def eps_fn(x, ts):
        t = proc.t_of_index(ts)
        flat = x.reshape(x.shape[0], -1)
        x0 = D(flat, t).reshape(x.shape)
        a = proc.alpha(t).reshape(-1, 1, 1, 1)
        s = proc.sigma(t).reshape(-1, 1, 1, 1)
        return (x - a * x0) / s

    z = torch.randn(n_samples, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    x_T = z  # VP: unit noise at t = 1 for both loops (DPM-Solver's init_noise_sigma is 1)
    ref = sample(eps_fn_denoiser(eps_fn, proc), x_T, G.make("log_snr", 2048, process=proc),
                 S.make("heun"), process=proc)
    rms = lambda a: float((a - ref).pow(2).mean().sqrt())  # noqa: E731
    res = {}
    for nfe in nfes:
        sc_n = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)
        theirs = run_scheduler_loop(sc_n, eps_fn, z, nfe)
        e_theirs = rms(theirs)
        ours = {}
        for gname in ("uniform", "log_snr", "karras", "quadratic", "linspace"):
            x = sample(eps_fn_denoiser(eps_fn, proc), x_T, G.make(gname, nfe, process=proc),
                       S.make("dpmpp_2m"), process=proc)
            ours[gname] = rms(x)
        # the same timesteps as diffusers (a parity check: the ratio should be ~1)
        same = sample(eps_fn_denoiser(eps_fn, proc), x_T, scheduler_grid(sc_n, proc),
                      S.make("dpmpp_2m"), process=proc)
        best = min(ours, key=ours.get)
        res[nfe] = {"diffusers": e_theirs, "ours": ours, "best_grid": best,
                    "ratio": ours[best] / e_theirs, "ratio_same_timesteps": rms(same) / e_theirs}
    return res


def overhead(repeats, steps):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    from shared.interop.diffusers import eps_fn_denoiser, process_from_scheduler_config

    def trivial(x, ts):
        return 0.1 * x

    @torch.no_grad()
    def diffusers_loop(sc, x_T):
        # exactly a diffusers pipeline's loop (e.g. DDPMPipeline): the scheduler's timestep goes
        # to the model as is; nothing is added around the scheduler calls
        sc.set_timesteps(steps)
        x = x_T * sc.init_noise_sigma
        for ts in sc.timesteps:
            out = trivial(sc.scale_model_input(x, ts), ts)
            x = sc.step(out, ts, x, return_dict=False)[0]
        return x

    @torch.no_grad()
    def our_loop(den, proc, solver, spacing, x_T):
        # the grid is built inside the timing, as diffusers' set_timesteps is
        return sample(den, x_T, G.make(spacing, steps, process=proc), solver, process=proc)

    pairs = [("ddim", DDIMScheduler(clip_sample=False), "ddim"),
             ("dpmpp_2m", DPMSolverMultistepScheduler(), "dpmpp_2m"),
             ("euler", EulerDiscreteScheduler(timestep_spacing="trailing"), "euler")]
    out = {}
    torch.set_num_threads(1)
    for label, sc, ours_name in pairs:
        proc = process_from_scheduler_config(sc.config)
        den = eps_fn_denoiser(trivial, proc)
        z = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        spacing = sc.config.timestep_spacing  # leading / linspace / trailing, as diffusers uses
        solver = S.make(ours_name)
        wall = {"d": [], "o": []}
        cpu = {"d": [], "o": []}
        for _ in range(repeats):
            for who, run in (("d", lambda: diffusers_loop(sc, z)),
                             ("o", lambda: our_loop(den, proc, solver, spacing, z))):
                w0, c0 = time.perf_counter(), time.thread_time()
                run()
                wall[who].append((time.perf_counter() - w0) / steps)
                cpu[who].append((time.thread_time() - c0) / steps)
        d, o = statistics.median(wall["d"]), statistics.median(wall["o"])
        dc, oc = statistics.median(cpu["d"]), statistics.median(cpu["o"])
        out[label] = {"diffusers_us": d * 1e6, "ours_us": o * 1e6, "ratio": o / d,
                      "diffusers_cpu_us": dc * 1e6, "ours_cpu_us": oc * 1e6,
                      "ratio_thread_cpu": oc / dc, "grid_spacing": spacing}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (under a minute)")
    ap.add_argument("--json", type=Path, required=True, help="where to write the JSON results")
    args = ap.parse_args(argv)
    t0 = time.time()
    ns = [8, 16, 32, 64]
    orders = measure_orders(ns)
    errs = error_vs_diffusers([10, 20], n_samples=64 if args.quick else 256)
    ovh = overhead(repeats=10 if args.quick else 100, steps=50)
    result = {
        "order": orders,
        "err_ratio_dpmpp2m_nfe10": errs[10]["ratio"],
        "err_ratio_dpmpp2m_nfe20": errs[20]["ratio"],
        "overhead_ratio_per_step": max(v["ratio"] for v in ovh.values()),
        "overhead_ratio_per_step_thread_cpu": max(v["ratio_thread_cpu"] for v in ovh.values()),
        "details": {"errors": errs, "overhead": ovh, "torch": torch.__version__,
                    "seconds": time.time() - t0, "quick": args.quick},
    }
    print("| quantity | value | goal |\n|---|---|---|")
    for k, v in orders.items():
        print(f"| order {k} | {v:.2f} | nominal |")
    for nfe in (10, 20):
        e = errs[nfe]
        print(f"| err ratio DPM++2M NFE {nfe} (ours {e['best_grid']} / diffusers) | "
              f"{e['ratio']:.3f} ({min(e['ours'].values()):.2e} / {e['diffusers']:.2e}) | <= 1.0 |")
        print(f"| same ratio on diffusers' own timesteps (parity) | {e['ratio_same_timesteps']:.3f} | ~1 |")
    for k, v in ovh.items():
        print(f"| overhead per step {k} (ours / diffusers), wall | {v['ratio']:.2f} "
              f"({v['ours_us']:.0f} us / {v['diffusers_us']:.0f} us) | <= 0.5 |")
        print(f"| overhead per step {k} (ours / diffusers), thread CPU | {v['ratio_thread_cpu']:.2f} "
              f"({v['ours_cpu_us']:.0f} us / {v['diffusers_cpu_us']:.0f} us) | <= 0.5 |")
    print(f"\nwall time {time.time() - t0:.1f}s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
