"""Train the molecules models from the command line.

    python -m molecules.train --preset default --out runs/mol [--key=value ...] [--samples 256]

Overrides are dotted config keys (``train.steps=2000``, ``graph.hidden=128``,
``data.split=scaffold``, ``smiles.enabled=false``). Writes ``<out>/final`` (safetensors + JSON
checkpoint), ``<out>/metrics.csv`` (training log), ``<out>/eval.json`` (validity, uniqueness,
novelty, ... of ``--samples`` graph samples) and ``<out>/samples.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict:
    from shared import grid as grids
    from shared import solvers
    from shared.config import apply_overrides, save_config
    from shared.training import Trainer

    from .task import MoleculesTask, sample_smiles

    ap = argparse.ArgumentParser(prog="python -m molecules.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="default", choices=["tiny", "default", "gpu"])
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--samples", type=int, default=256, help="graph samples to evaluate after training (0: none)")
    ap.add_argument("--solver", default="ddim")
    ap.add_argument("--grid", default="uniform")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: 1 on CPU, where small graph models run fastest)")
    args, rest = ap.parse_known_args(argv)
    bad = [r for r in rest if not (r.startswith("--") and "=" in r)]
    if bad:
        ap.error(f"unrecognised arguments {bad}; overrides look like --train.steps=100")

    if args.threads is not None or not torch.cuda.is_available():
        torch.set_num_threads(args.threads or 1)
    task = MoleculesTask()
    cfg = apply_overrides(task.config(args.preset), [r[2:] for r in rest])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    data = task.load_data(cfg)
    model = task.build(cfg)
    t0 = time.perf_counter()
    trainer = Trainer(cfg.train, out, config_to_save=cfg, meta={"domain": "molecules"})
    model = task.train(cfg, model, data, trainer)
    train_s = time.perf_counter() - t0
    task.save(model, cfg, out / "final")
    result: dict = {"train_seconds": train_s, "steps": cfg.train.steps}
    if args.samples > 0:
        g = grids.make(args.grid, cfg.sample_steps, process=model.process)
        solver = solvers.make(args.solver)
        gen = torch.Generator(device=model.prop_lo.device).manual_seed(args.seed)
        s = task.generate(model, args.samples, solver=solver, grid=g, generator=gen)
        result["graph"] = task.evaluate(s, data)
        task.plot(s, data, out / "samples.png")
        if model.smiles is not None:
            ss = sample_smiles(model, args.samples, solver=solver, grid=g, generator=gen)
            result["smiles"] = task.evaluate(ss, data)
    (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
