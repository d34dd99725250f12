"""Train an imaging diffusion model, sample, evaluate, save.

    python -m imaging.train --preset default --out runs/x [--key=value ...]
    python -m imaging.train --preset latent --out runs/lat train.steps=2000 sample.guidance_scale=3

Writes ``<out>/model`` (checkpoint: safetensors + JSON), ``<out>/checkpoints`` (trainer step
checkpoints, resumable), ``<out>/metrics.csv``, ``<out>/samples.png`` and ``<out>/eval.json``
(digits FD on classifier features, precision, recall, class accuracy). ``--threads`` sets torch's
CPU threads (1 is fastest on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m imaging.train", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default", help="tiny | default | gpu | latent")
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--config", default=None, help="JSON/YAML config file (replaces the preset)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--no-eval", action="store_true", help="skip sampling and metrics")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=2000 diffusion.prediction=v")
    args, extra = ap.parse_known_args(argv)
    overrides = list(args.overrides) + [e for e in extra if "=" in e]
    bad = [e for e in extra if "=" not in e]
    if bad:
        ap.error(f"unrecognised arguments: {' '.join(bad)}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from shared import grid as G
    from shared import solvers as S
    from shared.config import apply_overrides, load_config, save_config
    from shared.training import Trainer

    from .configs import ImagingConfig
    from .task import ImagingTask

    task = ImagingTask()
    cfg = load_config(ImagingConfig, args.config) if args.config else task.config(args.preset)
    cfg = apply_overrides(cfg, overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")

    data = task.load_data(cfg)
    model = task.build(cfg)
    t0 = time.perf_counter()
    trainer = Trainer(cfg.train, out, config_to_save=cfg, meta={"domain": "imaging"})
    model = task.train(cfg, model, data, trainer)
    train_s = time.perf_counter() - t0
    task.save(model, cfg, out / "model")
    print(f"trained in {train_s:.1f}s -> {out / 'model'}")
    if args.no_eval:
        return 0
    sc = cfg.sample
    solver = S.make(sc.solver)
    grid = G.make(sc.grid, sc.steps, process=model.process)
    t0 = time.perf_counter()
    samples = task.generate(model, sc.eval_samples, solver=solver, grid=grid,
                            guidance={"scale": sc.guidance_scale, "interval": sc.guidance_interval},
                            generator=torch.Generator().manual_seed(cfg.train.seed), batch_size=sc.batch_size,
                            progress=True)
    sample_s = time.perf_counter() - t0
    metrics = task.evaluate(samples, data)
    task.plot(samples, data, out / "samples.png")
    report = {"metrics": metrics, "train_seconds": train_s, "sample_seconds": sample_s,
              "solver": sc.solver, "grid": sc.grid, "steps": sc.steps, "guidance_scale": sc.guidance_scale,
              "n_samples": sc.eval_samples, "fd_note": "Frechet distance on the MNIST classifier's penultimate "
              "features (imaging/weights/mnist_classifier), not Inception FID"}
    if hasattr(model, "autoencoder_val_mse"):
        report["autoencoder_val_mse"] = model.autoencoder_val_mse
    (out / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
