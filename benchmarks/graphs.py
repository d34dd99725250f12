"""Benchmark of the graphs domain: predictor-guided NAS-Bench-201 search vs random search.

``python benchmarks/graphs.py [--quick] --json PATH``

Per seed: train the score network (label-free) on DiffusionNAG's 15,000-cell training split;
per label regime and target dataset: train the noise-aware predictor on a counted label budget,
generate cells with ``shared.guidance.classifier`` guidance, rank the valid unique cells by the
predictor and look up the top-k (k = 5) in order. Random search with the same number of lookups
runs in the same process with the same seed, and its exact expectation is computed from the table.

JSON keys (per dataset ``ds`` in cifar10, cifar100, imagenet16, for the headline regime, the
first of ``--regimes``; ``headline_regime`` names it and ``regimes_explained`` describes each):
``best_acc_<ds>`` (mean over seeds of the best looked-up accuracy), ``best_acc_<ds>_seeds``,
``lookups_<ds>``, ``hits_<ds>`` (seeds reaching the goal), ``goal_met_<ds>`` (>= 4 of 5 seeds
at the goal with <= 5 lookups and every seed above its same-budget random search),
``random_best_acc_<ds>`` (measured, same budget), ``random_expected_<ds>`` (exact),
``labels_<ds>_*`` (predictor labels per dataset, counted apart from the lookups);
candidate diagnostics (read from the table for analysis, never counted as lookups):
``cand_*`` = unique valid candidates, the best accuracy among them, how many reach the goal, the
predictor's rank of the best one, Spearman of predictor vs accuracy over all candidates and over
the predictor's top 50, top-5 hit rate; ``pred_table_spearman_<ds>`` over all 15,625 cells;
``validity``, ``uniqueness``, ``novelty`` (unguided samples, w.r.t. the training split);
``wall_time_s``; all regimes under ``regimes``; every (seed, regime, dataset) under ``rows``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

# this file is named like the package it benchmarks: keep its folder off the import path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch  # noqa: E402

GOALS = {"cifar10": 94.3, "cifar100": 73.3, "imagenet16": 46.5}
REGIMES = {
    # name: (labels_target, labels_other)
    "target100": (100, 0),
    "transfer": (0, 15000),
    "target100+transfer": (100, 15000),
}
REGIMES_EXPLAINED = {
    "target100": "100 labelled training-split cells of the target dataset only (100 lookups on the target, "
                 "counted as predictor labels, apart from the <= 5 search lookups)",
    "transfer": "no label of the target dataset; 15,000 labelled training-split cells of EACH of the two other "
                "datasets; the target score is the mean of the predictor's standardised outputs for them",
    "target100+transfer": "100 labelled cells of the target dataset + 15,000 of each other dataset (the same "
                          "cells); one multi-dataset predictor, scored with its target-dataset output",
}
#: what the benchmark changes on top of the preset (recorded in the JSON). The default preset now
#: carries the benchmark's settings itself (predictor 1500 steps, 512 samples), so nothing here.
BENCH_OVERRIDES: dict = {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, small model (< 2 min)")
    ap.add_argument("--json", required=True, help="output JSON path")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--regimes", default=None, help=f"comma list of {', '.join(REGIMES)}")
    ap.add_argument("--datasets", default="cifar10,cifar100,imagenet16")
    ap.add_argument("--scale", type=float, default=None, help="guidance scale (default: the config's)")
    ap.add_argument("--ensemble", type=int, default=None, help="predictors in the ensemble (default: config's)")
    ap.add_argument("--predictor-steps", type=int, default=None)
    ap.add_argument("--n-samples", type=int, default=None, help="cells generated per search")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--preset", default="default")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from shared import grid as grids
    from shared import solvers
    from shared.config import apply_overrides, to_dict
    from shared.training import Trainer

    from graphs.data import expected_best_of_random
    from graphs.task import GraphsTask, Guidance, random_search, search, train_predictor

    t_start = time.perf_counter()
    task = GraphsTask()
    cfg = task.config(args.preset)
    if not args.quick and BENCH_OVERRIDES.get(args.preset):
        cfg = apply_overrides(cfg, BENCH_OVERRIDES[args.preset])
    if args.ensemble is not None:
        cfg = apply_overrides(cfg, {"predictor.ensemble": args.ensemble})
    if args.predictor_steps is not None:
        cfg = apply_overrides(cfg, {"predictor.steps": args.predictor_steps})
    if args.n_samples is not None:
        cfg = apply_overrides(cfg, {"search.n_samples": args.n_samples})
    if args.quick:
        cfg = apply_overrides(cfg, {"model.hidden": 32, "model.layers": 2, "model.heads": 2, "train.steps": 300,
                                    "predictor.hidden": 32, "predictor.steps": 300, "search.n_samples": 128,
                                    "search.steps": 20})
    if args.scale is not None:
        cfg = apply_overrides(cfg, {"search.scale": args.scale})
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 5)))
    regimes = (args.regimes or "target100+transfer").split(",")
    for r in regimes:
        if r not in REGIMES:
            ap.error(f"unknown regime {r!r}; choose from {', '.join(REGIMES)}")
    datasets = args.datasets.split(",")
    data = task.load_data(cfg)
    table = data.extra["table"]
    s = cfg.search
    solver = solvers.make(s.solver)

    rows, unguided = [], []
    for seed in seeds:
        cfg_s = apply_overrides(cfg, {"train.seed": seed, "predictor.seed": seed})
        t0 = time.perf_counter()
        model = task.build(cfg_s)
        tr = Trainer(cfg_s.train, None, progress=False)
        tr.fit(model.denoiser, _loss(cfg_s), data.train)
        if tr.ema_model is not None:
            model.denoiser.load_state_dict(tr.ema_model.state_dict())
        model.eval()
        t_train = time.perf_counter() - t0
        grid = grids.make(s.grid, s.steps, process=model.process)
        # unguided quality (validity / uniqueness / novelty need no predictor)
        t0 = time.perf_counter()
        model.cfg = replace(cfg_s, predictor=replace(cfg_s.predictor, labels_target=1, labels_other=0))
        x = search(model, s.n_samples, solver=solver, grid=grid, guidance=0.0,
                   generator=torch.Generator().manual_seed(10_000 + seed))
        ev = task.evaluate(x, data)
        unguided.append({k: ev[k] for k in ("validity", "uniqueness", "novelty", "oracle_mean_acc")})
        print(f"seed {seed}: score net trained in {t_train:.0f}s; unguided {unguided[-1]}", flush=True)
        for regime in regimes:
            nt, no = REGIMES[regime]
            cfg_r = replace(cfg_s, predictor=replace(cfg_s.predictor, labels_target=nt, labels_other=no))
            model.cfg = cfg_r
            for ds in datasets:
                t0 = time.perf_counter()
                model.reset_predictor(seed)
                counts = train_predictor(model, data, dataset=ds)
                t_pred = time.perf_counter() - t0
                t0 = time.perf_counter()
                smp = search(model, s.n_samples, solver=solver, grid=grid,
                             guidance=Guidance(ds, s.scale, tuple(s.interval)),
                             generator=torch.Generator().manual_seed(20_000 + seed))
                ev = task.evaluate(smp, data)
                t_gen = time.perf_counter() - t0
                k = int(ev[f"lookups_{ds}"])
                rnd = random_search(table, ds, k, torch.Generator().manual_seed(30_000 + seed))
                row = {"seed": seed, "regime": regime, "dataset": ds, "best_acc": ev["best_acc"], "lookups": k,
                       **_candidates(smp, table, ds), "pred_table_spearman": _table_spearman(model, table, ds),
                       "top1_acc": ev["top1_acc"], "lookups_to_best": ev["lookups_to_best"], "random_best_acc": rnd, "validity": ev["validity"],
                       "uniqueness": ev["uniqueness"], "novelty": ev["novelty"],
                       "oracle_mean_acc": ev["oracle_mean_acc"], "labels": counts,
                       "t_train_s": t_train, "t_predictor_s": t_pred, "t_generate_s": t_gen,
                       "top5_accs": [a for _, a in _lookups(smp, table)]}
                rows.append(row)
                _write(Path(args.json), {"partial": True, "rows": rows, "unguided": unguided,
                                         "elapsed_s": time.perf_counter() - t_start})
                print(f"  {regime:>20s} {ds:>10s}: best {ev['best_acc']:.2f} (top1 {ev['top1_acc']:.2f}) "
                      f"in {k} lookups, random {rnd:.2f}; valid {ev['validity']:.3f} uniq {ev['uniqueness']:.3f} "
                      f"mean {ev['oracle_mean_acc']:.2f}; labels {counts}; pred {t_pred:.0f}s gen {t_gen:.0f}s; "
                      f"candidates {row['cand_unique']} (best {row['cand_best']:.2f}, {row['cand_at_goal']} at goal, "
                      f"predictor rank {row['cand_rank_of_best']}, spearman {row['cand_spearman']:.3f} / "
                      f"top50 {row['cand_spearman_top50']:.3f})",
                      flush=True)

    wall = time.perf_counter() - t_start
    out = _summarise(rows, unguided, regimes, datasets, table, expected_best_of_random)
    out.update({"wall_time_s": wall, "quick": args.quick, "seeds": seeds, "goals": GOALS,
                "regimes_explained": {r: REGIMES_EXPLAINED[r] for r in regimes},
                "overrides": BENCH_OVERRIDES.get(args.preset, {}) if not args.quick else {},
                "config": to_dict(cfg), "rows": rows, "threads": args.threads})
    _print_table(out, regimes, datasets)
    path = Path(args.json)
    _write(path, out)
    print(f"wall time {wall:.0f}s; wrote {path}")
    return 0


def _write(path: Path, obj) -> None:
    """Atomic JSON write (a crash never leaves a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _loss(cfg):
    from shared.loss import diffusion_loss

    m = cfg.model

    def loss_fn(den, batch, g):
        return diffusion_loss(den, batch, time_sampler=m.time_sampler, weighting=m.weighting, generator=g)
    return loss_fn


def _lookups(smp, table):
    from graphs.data import NB201Lookup
    from graphs.task import rank_and_lookup

    return rank_and_lookup(smp, NB201Lookup(table))


def _spearman(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.numel() < 3:
        return float("nan")
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def _candidates(smp, table, ds) -> dict:
    """Diagnostics of the candidate pool (unique valid generated cells) read from the table; an
    analysis of the predictor and the sampler, not lookups of the search."""
    idx = table.index()
    order = torch.argsort(smp.scores, descending=True, stable=True).tolist()
    archs, seen, scores = smp.archs(), set(), []
    ranked = []
    for i in order:
        a = archs[i]
        if a is None or a in seen:
            continue
        seen.add(a)
        ranked.append(a)
        scores.append(float(smp.scores[i]))
    acc = [float(table.acc[ds][idx[a]]) for a in ranked]
    if not acc:
        nan = float("nan")
        return {"cand_unique": 0, "cand_best": nan, "cand_at_goal": 0, "cand_rank_of_best": None,
                "cand_spearman": nan, "cand_spearman_top50": nan, "cand_top5_hit_rate": nan}
    best = max(acc)
    true_top5 = set(sorted(range(len(acc)), key=lambda i: -acc[i])[:5])
    return {"cand_unique": len(acc), "cand_best": best, "cand_at_goal": sum(a >= GOALS[ds] - 1e-9 for a in acc),
            "cand_rank_of_best": 1 + acc.index(best), "cand_spearman": _spearman(scores, acc),
            "cand_spearman_top50": _spearman(scores[:50], acc[:50]),
            "cand_top5_hit_rate": len(true_top5 & set(range(5))) / min(5, len(acc))}


def _table_spearman(model, table, ds) -> float:
    """Spearman of the predictor's clean-cell score vs the accuracy over all 15,625 cells."""
    z = model.predict_accuracy(table.ops, ds).float().cpu()
    return _spearman(z, table.acc[ds])


def _mean(v):
    return sum(v) / len(v) if v else float("nan")


def _summarise(rows, unguided, regimes, datasets, table, ebr):
    out = {"regimes": {}}
    for k in ("validity", "uniqueness", "novelty", "oracle_mean_acc"):
        out[k] = _mean([u[k] for u in unguided])
    for regime in regimes:
        r = {}
        for ds in datasets:
            sel = [x for x in rows if x["regime"] == regime and x["dataset"] == ds]
            best = [x["best_acc"] for x in sel]
            k = max(x["lookups"] for x in sel)
            r[f"best_acc_{ds}"] = _mean(best)
            r[f"best_acc_{ds}_seeds"] = best
            r[f"lookups_{ds}"] = k
            r[f"lookups_to_best_{ds}_seeds"] = [x.get("lookups_to_best") for x in sel]
            r[f"top1_acc_{ds}"] = _mean([x["top1_acc"] for x in sel])
            r[f"hits_{ds}"] = sum(b >= GOALS[ds] - 1e-9 for b in best)
            rnd = [x["random_best_acc"] for x in sel]
            r[f"above_random_{ds}"] = sum(b > q for b, q in zip(best, rnd))
            r[f"goal_met_{ds}"] = bool(len(best) >= 5 and r[f"hits_{ds}"] >= 4 and k <= 5
                                       and r[f"above_random_{ds}"] == len(best))
            for key in ("cand_unique", "cand_best", "cand_at_goal", "cand_rank_of_best", "cand_spearman",
                        "cand_spearman_top50", "cand_top5_hit_rate", "pred_table_spearman"):
                r[f"{key}_{ds}_seeds"] = [x.get(key) for x in sel]
                r[f"{key}_{ds}"] = _mean([x[key] for x in sel if x.get(key) is not None])
            r[f"random_best_acc_{ds}"] = _mean([x["random_best_acc"] for x in sel])
            r[f"random_best_acc_{ds}_seeds"] = [x["random_best_acc"] for x in sel]
            r[f"random_expected_{ds}"] = ebr(table.acc[ds], k)
            r[f"optimum_{ds}"] = float(table.acc[ds].max())
            r[f"guided_validity_{ds}"] = _mean([x["validity"] for x in sel])
            r[f"guided_uniqueness_{ds}"] = _mean([x["uniqueness"] for x in sel])
            r[f"guided_novelty_{ds}"] = _mean([x["novelty"] for x in sel])
            r[f"guided_oracle_mean_acc_{ds}"] = _mean([x["oracle_mean_acc"] for x in sel])
            for name, c in sel[0]["labels"].items():
                r[f"labels_{ds}_{name}"] = c
        out["regimes"][regime] = r
    head = out["regimes"][regimes[0]]
    out["headline_regime"] = regimes[0]
    out.update({k: v for k, v in head.items()})
    return out


def _print_table(out, regimes, datasets):
    print()
    print(f"unguided samples: validity {out['validity']:.3f}, uniqueness {out['uniqueness']:.3f}, "
          f"novelty {out['novelty']:.3f}")
    print()
    print("| regime | dataset | labels (target / other, each) | lookups | best acc (mean) | seeds at goal | "
          "random, same run | random, expected | optimum | goal met |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for regime in regimes:
        r = out["regimes"][regime]
        for ds in datasets:
            others = [r[f"labels_{ds}_{o}"] for o in ("cifar10", "cifar100", "imagenet16") if o != ds]
            print(f"| {regime} | {ds} | {r[f'labels_{ds}_{ds}']} / {max(others)} | {r[f'lookups_{ds}']} | "
                  f"{r[f'best_acc_{ds}']:.2f} | {r[f'hits_{ds}']}/{len(r[f'best_acc_{ds}_seeds'])} "
                  f"(>= {GOALS[ds]}) | {r[f'random_best_acc_{ds}']:.2f} | {r[f'random_expected_{ds}']:.2f} | "
                  f"{r[f'optimum_{ds}']:.2f} | {'yes' if r[f'goal_met_{ds}'] else 'no'} |")


if __name__ == "__main__":
    sys.exit(main())
