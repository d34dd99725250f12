"""Pre-train a GPD model and save it.

    python -m timeseries.train --preset default --out runs/ts [--train-on m4_hourly,ili]
                               [--key=value ...]   e.g. --train.steps=2000 --model.hidden=512

``--train-on`` pools the training splits of several datasets (zero-shot: leave the evaluation
dataset out). Writes ``<out>/model`` (safetensors + JSON), ``<out>/metrics.csv`` and the
trainer's step checkpoints under ``<out>/checkpoints`` (re-running resumes). With
``--eval`` it also forecasts the configured test windows and prints the metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from shared.config import ConfigError, apply_overrides

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m timeseries.train", description="Pre-train a GPD window model.")
    p.add_argument("--preset", default="default", help="tiny, default or gpu")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--train-on", default=None, help="comma list of etth1, ili, m4_hourly (data.train_on)")
    p.add_argument("--eval", action="store_true", help="forecast the test windows after training")
    p.add_argument("--no-progress", action="store_true")
    args, extra = p.parse_known_args(argv)
    overrides = [e[2:] if e.startswith("--") else e for e in extra]
    from .task import TimeseriesTask

    task = TimeseriesTask()
    try:
        cfg = task.config(args.preset)
        if args.train_on:
            overrides.append(f"data.train_on={args.train_on}")
        cfg = apply_overrides(cfg, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from shared.training import Trainer

    from .data import DataError

    out = Path(args.out)
    t0 = time.perf_counter()
    try:
        data = task.load_data(cfg)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = task.build(cfg)
    trainer = Trainer(cfg.train, out, config_to_save=cfg, meta={"domain": "timeseries", "preset": args.preset},
                      progress=False if args.no_progress else None)
    model = task.train(cfg, model, data, trainer)
    task.save(model, cfg, out / "model")
    t_train = time.perf_counter() - t0
    print(f"trained GPD on {'+'.join(cfg.data.train_on)} ({len(data.train)} windows, {cfg.train.steps} steps) "
          f"in {t_train:.1f}s; model: {out / 'model'}")
    if args.eval:
        import torch

        from shared import grid as grids
        from shared import solvers

        fc = cfg.forecast
        t1 = time.perf_counter()
        s = task.generate(model, len(data.test[0]), solver=solvers.make(fc.solver),
                          grid=grids.make(fc.grid, fc.steps, process=model.process),
                          generator=torch.Generator().manual_seed(cfg.train.seed), data=data)
        metrics = task.evaluate(s, data)
        metrics["forecast_seconds"] = time.perf_counter() - t1
        print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
