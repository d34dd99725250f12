"""Inverse design from a trained checkpoint: molecules for target properties, as a CSV.

    python -m molecules.design runs/mol/final --target gap=0.25 --n 100 --best-of 4 --out designs.csv
    python -m molecules.design runs/mol/final --target gap=0.25 --route smiles --best-of 32 --out d.csv

``--route graph`` (default): the graph model with predictor guidance (``PropertyGuidance``, DDPM on
the uniform grid; the benchmark's scale 1000 and 150 steps by default), ``--best-of k`` candidates
per molecule of which the forward model keeps the nearest (``molecules.task.select_best``).
``--route smiles``: the seed paper's SMILES diffusion with classifier-free guidance (``--scale``,
default the checkpoint's ``smiles.guidance_scale``); its samples are valid ~20 % of the time, so
give it tens of candidates per molecule (the benchmark's 32: R² 0.83-0.87 on the gap by an
independent network and 0.81-0.82 by a fingerprint model, against ~0.5 for one draw). Targets are in the QM9 file's units (gap in
Hartree; ``molecules.data.PROPERTY_UNITS``); properties not named are left free.

Writes ``--out`` (CSV: ``smiles`` canonical, empty when invalid; ``valid``; ``target_<p>`` and
``pred_<p>``, the forward model's prediction, for every targeted property) and a PNG grid of the
valid designs beside it, and prints a summary. The forward model that guides (and selects) also
predicts here: grade designs with an independent model before trusting them
(``benchmarks/molecules.py`` uses a second network and a fingerprint kernel ridge).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

import torch

__all__ = ["main", "parse_targets"]


def parse_targets(items: list[str], names) -> dict[str, float]:
    """``["gap=0.25", "mu=2"]`` -> ``{"gap": 0.25, "mu": 2.0}``; names must be the model's properties."""
    out: dict[str, float] = {}
    for it in items:
        key, sep, val = it.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--target {it!r}: expected PROPERTY=VALUE, e.g. gap=0.25")
        if key not in names:
            raise ValueError(f"--target {it!r}: unknown property {key!r}; the model knows {', '.join(names)}")
        try:
            v = float(val)
        except ValueError:
            raise ValueError(f"--target {it!r}: {val!r} is not a number") from None
        if not math.isfinite(v):
            raise ValueError(f"--target {it!r}: the value must be finite")
        if key in out:
            raise ValueError(f"--target {key!r} given twice")
        out[key] = v
    if not out:
        raise ValueError("give at least one --target PROPERTY=VALUE")
    return out


def main(argv: list[str] | None = None) -> dict:
    from shared import grid as grids
    from shared import solvers
    from shared.checkpoint import atomic_write_text

    from .metrics import draw_grid, regression_metrics
    from .task import MoleculesTask, PropertyGuidance, sample_graphs, sample_smiles

    ap = argparse.ArgumentParser(prog="python -m molecules.design", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a checkpoint directory written by python -m molecules.train (<out>/final)")
    ap.add_argument("--target", action="append", default=[], metavar="PROPERTY=VALUE",
                    help="a target property in the data's units (repeatable), e.g. gap=0.25")
    ap.add_argument("--n", type=int, default=64, help="molecules to design")
    ap.add_argument("--route", choices=["graph", "smiles"], default="graph")
    ap.add_argument("--best-of", type=int, default=1, help="candidates per molecule; the forward model keeps the nearest "
                         "(graph route: 4; smiles route: ~32, its validity is ~0.2)")
    ap.add_argument("--scale", type=float, default=None,
                    help="guidance scale (graph: predictor guidance, default 1000; smiles: CFG, default the checkpoint's)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (graph default 150, smiles 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="CSV path (a PNG grid is written beside it)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default 1 on CPU)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    if args.best_of < 1:
        ap.error(f"--best-of must be >= 1, got {args.best_of}")
    if args.steps is not None and args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")

    task = MoleculesTask()
    model, cfg = task.load(args.checkpoint)  # CheckpointError names a missing or damaged checkpoint
    try:
        targets = parse_targets(args.target, model.property_names)
    except ValueError as e:
        ap.error(str(e))
    if model.predictor is None:
        ap.error("this checkpoint has no forward model (predictor.enabled=false): it cannot guide, select or predict")
    if args.route == "smiles" and model.smiles is None:
        ap.error("this checkpoint has no SMILES model (smiles.enabled=false); use --route graph")
    if args.threads is not None or not torch.cuda.is_available():
        torch.set_num_threads(args.threads or 1)
    gen = torch.Generator(device=model.prop_lo.device).manual_seed(args.seed)
    steps = args.steps or (150 if args.route == "graph" else 50)
    g = grids.make("uniform", steps, process=model.process)
    if args.route == "graph":
        scale = 1000.0 if args.scale is None else args.scale
        s = sample_graphs(model, args.n, solver=solvers.make("ddpm"), grid=g, generator=gen, progress=True,
                          guidance=PropertyGuidance(targets, scale=scale), best_of=args.best_of)
    else:
        scale = args.scale
        s = sample_smiles(model, args.n, solver=solvers.make("ddpm"), grid=g, targets=targets, scale=scale,
                          generator=gen, progress=True, best_of=args.best_of)
        scale = model.cfg.smiles.guidance_scale if scale is None else scale

    names = list(targets)
    idx = [model.property_names.index(p) for p in names]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["smiles", "valid"] + [f"target_{p}" for p in names] + [f"pred_{p}" for p in names])
    for i in range(len(s)):
        pred = [float(s.pred[i, j]) for j in idx]
        w.writerow([s.smiles[i] or "", int(s.mols[i] is not None)] + [targets[p] for p in names]
                   + ["" if not math.isfinite(v) else f"{v:.6g}" for v in pred])
    out = Path(args.out)
    atomic_write_text(out, buf.getvalue())  # fsync'ed temp file + os.replace
    summary: dict = {"route": args.route, "n": len(s), "best_of": args.best_of, "scale": scale, "steps": steps,
                     "validity": sum(m is not None for m in s.mols) / len(s), "csv": str(out)}
    for p, j in zip(names, idx):
        r = regression_metrics(s.targets[:, j].numpy(), s.pred[:, j].numpy())
        summary[f"mae_{p}_by_forward_model"] = r["mae"]
    legends = [f"{sm}\n" + ", ".join(f"{p} {float(s.pred[i, j]):.3g}" for p, j in zip(names, idx)) if sm else ""
               for i, sm in enumerate(s.smiles)]
    if any(m is not None for m in s.mols):
        draw_grid(s.mols, out.with_suffix(".png"), legends=legends)
        summary["png"] = str(out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
