#!/usr/bin/env python
"""GPU benchmark: each domain's ``gpu`` preset for a fixed short training budget.

    python benchmarks/gpu.py [--budget 50] [--n 256] [--domains all] [--json bench_out/gpu.json]
                             [--set medical:data.n_train=200 ...]

Per domain: trains for ``--budget`` seconds (stopped through ``Trainer.request_stop``), then
samples ``--n`` items with DPM-Solver++(2M), 20 steps, uniform grid, and evaluates them. Prints
training throughput (samples/s), sampling throughput (samples/s), peak GPU memory (GiB) and the
headline metric. With the default budget the whole run stays under 8 minutes for five domains.
On a machine without CUDA it prints a message and exits 0 (``--cpu-smoke`` runs the same code
path on CPU with tiny presets and a 3-second budget, to check the script itself).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/<domain>.py would shadow the domain packages: the repository root goes first and
# this folder leaves the import path (it is sys.path[0] when a script here is run directly)
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "benchmarks")]


def bench_domain(name: str, *, preset: str, budget: float, n: int, device, log, overrides=()) -> dict:
    import torch

    from shared import grid as grids
    from shared import solvers
    from shared.config import apply_overrides
    from shared.registry import get_task
    from shared.training import Trainer

    task = get_task(name)
    cfg = apply_overrides(task.config(preset), [f"train.device={device.type}", "train.checkpoint_every=0",
                                                *overrides])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_load = time.perf_counter()
    data = task.load_data(cfg)
    model = task.build(cfg)
    load_s = time.perf_counter() - t_load

    state = {"t0": None, "steps": 0}

    def stop_on_budget(trainer, rec):
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        state["steps"] = rec["step"]
        if time.perf_counter() - state["t0"] > budget:
            trainer.request_stop()

    trainer = Trainer(cfg.train, None, progress=False)
    fit = trainer.fit

    def fit_with_budget(model, loss_fn, data_, **kw):
        cbs = tuple(kw.pop("callbacks", ())) + (stop_on_budget,)
        return fit(model, loss_fn, data_, callbacks=cbs, **kw)

    trainer.fit = fit_with_budget  # the domain's train() calls trainer.fit
    t_train = time.perf_counter()
    model = task.train(cfg, model, data, trainer)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = time.perf_counter() - (state["t0"] or t_train)
    # the first step (compilation, warm-up) is excluded from the throughput
    train_steps = max(0, state["steps"] - 1)
    train_sps = train_steps * cfg.train.batch_size / max(train_s, 1e-9)

    model = model.to(device).eval()
    solver = solvers.make("dpmpp_2m")
    g = grids.make("uniform", 20, process=model.process)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        task.generate(model, min(n, 8), solver=solver, grid=g, generator=gen, data=data)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_s = time.perf_counter()
        samples = task.generate(model, n, solver=solver, grid=g, generator=gen, data=data)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sample_s = time.perf_counter() - t_s
    metrics = task.evaluate(samples, data)
    metric, direction = task.headline_metric
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"domain": name, "preset": preset, "train_steps": state["steps"], "train_seconds": train_s,
            "train_samples_per_s": train_sps, "sample_n": n, "sample_seconds": sample_s,
            "sample_samples_per_s": n / max(sample_s, 1e-9), "peak_gpu_gib": peak, "load_seconds": load_s,
            "headline": metric, "direction": direction, "value": float(metrics[metric]),
            "metrics": {k: float(v) for k, v in metrics.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=50.0, help="training seconds per domain")
    p.add_argument("--n", type=int, default=256, help="samples for the sampling throughput / metric")
    p.add_argument("--domains", default="all")
    p.add_argument("--json", default=None)
    p.add_argument("--set", action="append", default=[], metavar="DOMAIN:KEY=VALUE",
                   help="config override for one domain's preset, e.g. medical:data.n_train=200 (repeatable)")
    p.add_argument("--cpu-smoke", action="store_true", help="run on CPU with tiny presets (checks the script)")
    args = p.parse_args(argv)

    import torch

    from shared.registry import available_domains

    if args.cpu_smoke:
        device, preset, budget, n = torch.device("cpu"), "tiny", 3.0, min(args.n, 16)
    elif not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here; nothing measured. Run it on a GPU machine "
              "(or pass --cpu-smoke to check the script on CPU).")
        return 0
    else:
        device, preset, budget, n = torch.device("cuda"), "gpu", args.budget, args.n
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name(device)}")

    overrides: dict[str, list[str]] = {}
    for item in args.set:
        dom, sep, kv = item.partition(":")
        if not sep or "=" not in kv:
            p.error(f"--set {item!r}: expected DOMAIN:KEY=VALUE")
        overrides.setdefault(dom, []).append(kv)
    statuses = available_domains()
    names = sorted(statuses) if args.domains == "all" else args.domains.split(",")
    results, t_all = [], time.perf_counter()
    for name in names:
        st = statuses.get(name)
        if st is None or not st.ok:
            print(f"{name}: skipped ({st.describe() if st else 'unknown domain'})")
            continue
        try:
            r = bench_domain(name, preset=preset, budget=budget, n=n, device=device, log=print,
                             overrides=overrides.get(name, ()))
        except Exception as e:  # one domain failing must not hide the others' numbers
            print(f"{name}: FAILED: {type(e).__name__}: {e}")
            results.append({"domain": name, "error": f"{type(e).__name__}: {e}"})
            continue
        results.append(r)
        print(f"{name:<11} train {r['train_samples_per_s']:9.1f} samples/s ({r['train_steps']} steps) | "
              f"sample {r['sample_samples_per_s']:8.1f} samples/s | peak {r['peak_gpu_gib']:.2f} GiB | "
              f"{r['headline']} ({r['direction']}) = {r['value']:.4g}", flush=True)
    total = time.perf_counter() - t_all
    print(f"total {total:.0f}s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"device": str(device), "preset": preset, "budget_s": budget,
                                               "total_seconds": total, "results": results}, indent=2) + "\n")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
