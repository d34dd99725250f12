"""Train the graphs model: ``python -m graphs.train --preset default --out runs/x [--key=value ...]``.

Trains the score network (``shared.training.Trainer``; checkpoints under ``<out>/checkpoints``),
then the noise-aware predictor on the configured label budget, saves the final model to
``<out>/model`` (safetensors + JSON), runs one guided search and writes ``<out>/metrics.json`` and
``<out>/cells.png`` (top-ranked cells).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m graphs.train", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default", choices=["tiny", "default", "gpu"])
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--seed", type=int, default=None, help="sampling seed (default: train.seed)")
    args, rest = ap.parse_known_args(argv)
    bad = [r for r in rest if not (r.startswith("--") and "=" in r)]
    if bad:
        ap.error(f"overrides must look like --key=value (e.g. --train.steps=100), got {bad}")

    import torch

    from shared import grid as grids
    from shared import solvers
    from shared.config import apply_overrides
    from shared.training import Trainer

    from .task import GraphsTask

    task = GraphsTask()
    cfg = apply_overrides(task.config(args.preset), rest)
    out = Path(args.out)
    data = task.load_data(cfg)
    model = task.build(cfg)
    trainer = Trainer(cfg.train, out, config_to_save=cfg, meta={"domain": "graphs"})
    model = task.train(cfg, model, data, trainer)
    task.save(model, cfg, out / "model")
    s = cfg.search
    gen = torch.Generator(device=model.label_mean.device).manual_seed(cfg.train.seed if args.seed is None else args.seed)
    samples = task.generate(model, s.n_samples, solver=solvers.make(s.solver),
                            grid=grids.make(s.grid, s.steps, process=model.process), generator=gen)
    metrics = task.evaluate(samples, data)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    task.plot(samples, data, out / "cells.png")
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
