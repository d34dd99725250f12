"""Train the box-diffusion detector and score it on the test split.

    python -m medical.train --preset default --out runs/medical [--key=value ...]

Overrides are dotted config keys, e.g. ``--train.steps=500 --data.n_train=200
--data.json_path=/data/dentex/train.json --data.image_dir=/data/dentex/xrays``. Writes the
trainer's ``metrics.csv`` and checkpoints, the final model under ``OUT/model``, ``OUT/metrics.json``
(DENTEX scores, DDIM with ``sample.steps`` steps), ``OUT/detections.png`` and
``OUT/dentex_predictions.json`` (challenge format).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m medical.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default", choices=["tiny", "default", "gpu"])
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    args, extra = p.parse_known_args(argv)

    import torch

    from shared import grid as G
    from shared import solvers
    from shared.config import ConfigError, apply_overrides, parse_override
    from shared.training import Trainer

    from .task import MedicalTask, to_dentex_json

    task = MedicalTask()
    cfg = task.config(args.preset)
    try:
        overrides = []
        for item in extra:
            if not item.startswith("--") or "=" not in item:
                raise ConfigError(f"unrecognised argument {item!r}; overrides look like --train.steps=100")
            k, v = parse_override(item)
            overrides.append(f"{k}={v}")
        cfg = apply_overrides(cfg, overrides)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    t0 = time.perf_counter()
    data = task.load_data(cfg)
    model = task.build(cfg)
    trainer = Trainer(cfg.train, out, config_to_save=cfg, meta={"domain": "medical", "preset": args.preset})
    model = task.train(cfg, model, data, trainer)
    task.save(model, cfg, out / "model")
    g = G.make(cfg.sample.grid, cfg.sample.steps, process=model.process)
    samples = task.generate(model, len(data.test), solver=solvers.make(cfg.sample.solver), grid=g,
                            generator=torch.Generator().manual_seed(args.seed), data=data)
    metrics = task.evaluate(samples, data)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    task.plot(samples, data, out / "detections.png")
    sizes = [data.test[s["index"]]["orig_size"] for s in samples]
    (out / "dentex_predictions.json").write_text(json.dumps(to_dentex_json(samples, sizes, cfg.data.image_size)))
    print(f"trained medical ({args.preset}) {cfg.train.steps} steps in {time.perf_counter() - t0:.0f}s; "
          f"DENTEX AP aggregate {metrics['ap_aggregate']:.4f} (quadrant {metrics['ap_quadrant']:.4f}, tooth "
          f"{metrics['ap_tooth']:.4f}, diagnosis {metrics['ap_diagnosis']:.4f}); outputs in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
