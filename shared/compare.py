"""The cross-domain harness behind ``diffsuite compare``.

For each available domain: train the preset's model (or reuse a cached one, keyed by the
config hash, under ``<cache>/<domain>-<preset>-<hash>/``; an interrupted training resumes from
its step checkpoints), then sweep solver x grid x NFE x seed with the domain's ``generate`` and
``evaluate``. Every cell appends its rows to ``results.csv``; then ``report.md`` and the plots
are written from that file.

NFE and steps: a cell's ``nfe`` is the requested budget of model evaluations. The number of
solver steps is ``steps = max(1, nfe // solver.nfe_per_step)``; ``nfe_actual`` records the
evaluations this really costs, per :func:`shared.sample.count_nfe`. For Heun
(``nfe_per_step = 2``) the last step ends at sigma = 0 and is a plain Euler step, so
``nfe_actual = 2 * steps - 1`` (nfe=10 -> 5 steps -> 9 evaluations); for the predictor-corrector
``nfe_per_step = 1 + n_corrector``.

``results.csv`` is tidy: one row per (domain, solver, grid, nfe, seed, metric) with columns
``domain, solver, grid, nfe, seed, metric, value, seconds, steps, nfe_actual, peak_mem_mb,
direction, headline`` (``seconds``: wall time of generation for that cell; ``peak_mem_mb``:
peak CUDA memory of the cell on GPU, the process's peak RSS so far on CPU; ``direction``:
'min'/'max' on the headline metric's row, empty otherwise).

Resume: a cell's rows are written with one ``write`` + flush + fsync, headline row last. On
start, a half-written last line is dropped, rows of cells without their headline row are
removed (the file is rewritten atomically), and cells already present are skipped. Failed
cells are logged in ``errors.jsonl`` (and retried on the next run), not in ``results.csv``.

A domain's task may define ``compare_samples(preset) -> int`` (samples per cell); otherwise
:data:`DEFAULT_SAMPLES` is used.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import resource
import shutil
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import PRESET_NAMES, apply_overrides, config_hash
from .registry import available_domains, domain_names, get_task

__all__ = [
    "CompareSpec",
    "CompareResult",
    "run_compare",
    "spec_from_args",
    "steps_for_nfe",
    "read_results",
    "write_report",
    "solver_ranking",
    "COLUMNS",
    "DEFAULT_SOLVERS",
    "DEFAULT_SAMPLES",
]

COLUMNS = ("domain", "solver", "grid", "nfe", "seed", "metric", "value", "seconds", "steps", "nfe_actual",
           "peak_mem_mb", "direction", "headline")
DEFAULT_SOLVERS = ("ddim", "euler", "heun", "dpmpp_2m", "euler_ancestral")
DEFAULT_GRIDS = ("uniform",)
DEFAULT_SAMPLES = {"tiny": 16, "default": 128, "gpu": 512}
CELL_KEY = ("domain", "solver", "grid", "nfe", "seed")


@dataclass(frozen=True)
class CompareSpec:
    """What to sweep. ``domains=None`` means every importable domain."""

    domains: tuple[str, ...] | None = None
    preset: str = "default"
    solvers: tuple[str, ...] = DEFAULT_SOLVERS
    nfe: tuple[int, ...] = (5, 10, 20, 50)
    grids: tuple[str, ...] = DEFAULT_GRIDS
    seeds: tuple[int, ...] = (0, 1, 2)
    n: int | None = None
    out: str = "runs/compare"
    cache: str | None = None
    device: str = "auto"

    def validate(self) -> None:
        from . import grid as grids
        from . import solvers

        if self.preset not in PRESET_NAMES:
            raise ValueError(f"unknown preset {self.preset!r}; valid presets: {', '.join(PRESET_NAMES)}")
        for s in self.solvers:
            if s not in solvers.SOLVERS:
                raise ValueError(f"unknown solver {s!r}; valid solvers: {', '.join(solvers.SOLVERS)}")
        for g in self.grids:
            if g not in grids.GRIDS:
                raise ValueError(f"unknown grid {g!r}; valid grids: {', '.join(grids.GRIDS)}")
        if not self.solvers or not self.grids or not self.nfe or not self.seeds:
            raise ValueError("--solvers, --grids, --nfe and --seeds must each name at least one value")
        if any(n < 1 for n in self.nfe):
            raise ValueError(f"--nfe values must be >= 1, got {list(self.nfe)}")
        if self.n is not None and self.n < 1:
            raise ValueError("--n must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {self.device!r}; valid: auto, cpu, cuda")
        if self.domains is not None:
            known = domain_names()
            for d in self.domains:
                if d not in known:
                    raise ValueError(f"unknown domain {d!r}; valid domains: {', '.join(known)}")


@dataclass
class CompareResult:
    out: Path
    domains_completed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    cells: int = 0           # cells present in results.csv for the swept domains
    new_cells: int = 0       # cells run by this call
    errors: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def summary(self) -> str:
        lines = [f"compare: {len(self.domains_completed)} domain(s) done "
                 f"({', '.join(self.domains_completed) or 'none'}), {self.cells} cells "
                 f"({self.new_cells} new), {self.errors} failed cells, {self.seconds:.1f}s"]
        for d, why in self.skipped.items():
            lines.append(f"  skipped {d}: {why}")
        if self.errors:
            lines.append(f"  failures: {self.out / 'errors.jsonl'}")
        lines.append(f"results: {self.out / 'results.csv'}")
        lines.append(f"report:  {self.out / 'report.md'}")
        lines.append(f"plots:   {self.out / 'plots'}")
        return "\n".join(lines)


def _csv_list(s: str | None, cast=str) -> tuple | None:
    if s is None:
        return None
    try:
        return tuple(cast(x.strip()) for x in s.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"cannot parse {s!r} as a comma list of {cast.__name__}") from None


def spec_from_args(args: Any) -> CompareSpec:
    """Build and validate a :class:`CompareSpec` from the CLI namespace (ValueError on bad input)."""
    domains = None if args.domains in (None, "", "all") else _csv_list(args.domains)
    spec = CompareSpec(
        domains=domains,
        preset=args.preset,
        solvers=_csv_list(args.solvers) or DEFAULT_SOLVERS,
        nfe=_csv_list(args.nfe, int) or (5, 10, 20, 50),
        grids=_csv_list(args.grids) or DEFAULT_GRIDS,
        seeds=_csv_list(args.seeds, int) or (0,),
        n=args.n,
        out=args.out,
        cache=args.cache,
        device=args.device,
    )
    spec.validate()
    return spec


def steps_for_nfe(solver: Any, nfe: int) -> int:
    """``max(1, nfe // solver.nfe_per_step)`` (see the module docstring)."""
    return max(1, int(nfe) // int(solver.nfe_per_step))


def _nfe_actual(solver: Any, steps: int) -> int:
    try:
        from .sample import count_nfe

        return int(count_nfe(solver, steps))
    except Exception:  # pragma: no cover - kernel without count_nfe
        return int(solver.nfe_per_step) * steps


# --------------------------------------------------------------------------- results file


def _fsync_append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _rows_to_text(rows: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    for r in rows:
        w.writerow({k: r.get(k, "") for k in COLUMNS})
    return buf.getvalue()


def _cell_key(row: Mapping[str, Any]) -> tuple:
    return (row["domain"], row["solver"], row["grid"], int(row["nfe"]), int(row["seed"]))


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a results.csv (value/seconds as float, nfe/seed/steps as int); a half-written
    last line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        if None in r or any(r.get(k) is None for k in COLUMNS):
            continue  # malformed line
        try:
            r = dict(r)
            r["nfe"], r["seed"], r["steps"], r["nfe_actual"] = (int(r["nfe"]), int(r["seed"]),
                                                               int(r["steps"]), int(r["nfe_actual"]))
            r["value"], r["seconds"] = float(r["value"]), float(r["seconds"])
            r["peak_mem_mb"] = float(r["peak_mem_mb"]) if r["peak_mem_mb"] else float("nan")
            r["headline"] = r["headline"] in ("1", "True", "true")
        except (ValueError, TypeError):
            continue
        rows.append(r)
    return rows


def _prepare_results_file(path: Path) -> set[tuple]:
    """Drop a torn last line and rows of incomplete cells; return the set of complete cells."""
    from .checkpoint import atomic_write_text

    header = ",".join(COLUMNS) + "\n"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, header)
        return set()
    raw = path.read_text(encoding="utf-8")
    if not raw.startswith(header.rstrip("\n")):
        raise ValueError(f"{path} has another layout (header {raw.splitlines()[0] if raw else ''!r}); "
                         "use another --out")
    rows = read_results(path)
    done = {_cell_key(r) for r in rows if r["headline"]}
    keep = [r for r in rows if _cell_key(r) in done]
    clean = header + _rows_to_text(keep)
    if clean != raw:
        atomic_write_text(path, clean)
    return done


# --------------------------------------------------------------------------- running


def _peak_mem_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mem_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def _progress(enabled: bool, **kw):
    from tqdm.auto import tqdm

    return tqdm(disable=not (enabled and sys.stderr.isatty()), dynamic_ncols=True, **kw)


def _train_or_load(task, cfg, cache_root: Path, preset: str, progress: bool, log) -> tuple[Any, Any, str]:
    """Cached model for this config (trained here if missing). Returns (model, cfg, where)."""
    from .training import Trainer, seed_all

    key_cfg = apply_overrides(cfg, ["train.device=auto"])  # the device does not change the model
    d = cache_root / f"{task.name}-{preset}-{config_hash(key_cfg)}"
    final = d / "model"
    if (d / "DONE").exists() and final.exists():
        log(f"[{task.name}] reusing cached model {final}")
        model, cfg_loaded = task.load(final)
        return model, cfg, "cache"
    d.mkdir(parents=True, exist_ok=True)
    log(f"[{task.name}] training preset {preset!r} ({cfg.train.steps} steps) -> {d}")
    t0 = time.perf_counter()
    data = task.load_data(cfg)
    seed_all(cfg.train.seed)  # the weights do not depend on which domains trained before this one
    model = task.build(cfg)
    trainer = Trainer(cfg.train, d / "run", config_to_save=cfg, meta={"domain": task.name, "preset": preset},
                      progress=progress)
    model = task.train(cfg, model, data, trainer)
    tmp = d / "model.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    task.save(model, cfg, tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    from .checkpoint import atomic_write_text

    atomic_write_text(d / "DONE", json.dumps({"seconds": time.perf_counter() - t0}) + "\n")
    return model, cfg, "trained"


def run_compare(spec: CompareSpec, *, progress: bool = True, log=None) -> CompareResult:
    """Run (or resume) the sweep described by ``spec``; write results.csv, report.md, plots."""
    import torch

    from . import grid as grids
    from . import solvers

    spec.validate()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    out = Path(spec.out)
    cache_root = Path(spec.cache) if spec.cache else out / "cache"
    res = CompareResult(out=out)

    statuses = available_domains()
    wanted = list(spec.domains) if spec.domains is not None else sorted(statuses)
    runnable = []
    for name in wanted:
        st = statuses[name]
        if st.ok:
            runnable.append(name)
        else:
            res.skipped[name] = st.describe()
            log(f"[{name}] skipped: {st.describe()}")

    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    results_path = out / "results.csv"
    done = _prepare_results_file(results_path)
    device = torch.device("cuda" if spec.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if spec.device == "auto" else spec.device))
    meta = {"preset": spec.preset, "device": str(device), "spec": dataclasses.asdict(spec), "domains": {}}

    for name in runnable:
        task = get_task(name)
        try:
            cfg = apply_overrides(task.config(spec.preset), [f"train.device={spec.device}"])
            model, cfg, how = _train_or_load(task, cfg, cache_root, spec.preset, progress, log)
            model = model.to(device).eval()
            data = task.load_data(cfg)
        except Exception as e:
            res.errors += 1
            res.skipped[name] = f"training/loading failed: {type(e).__name__}: {e}"
            _log_error(out, {"domain": name, "stage": "train", "error": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc()})
            log(f"[{name}] FAILED to train/load: {type(e).__name__}: {e}")
            continue
        metric_name, direction = task.headline_metric
        n = spec.n or (task.compare_samples(spec.preset) if hasattr(task, "compare_samples")
                       else DEFAULT_SAMPLES[spec.preset])
        meta["domains"][name] = {"headline": metric_name, "direction": direction, "n": n, "model": how}
        cells = [(s, g, nfe, seed) for g in spec.grids for s in spec.solvers for nfe in spec.nfe for seed in spec.seeds]
        todo = [c for c in cells if (name, c[0], c[1], c[2], c[3]) not in done]
        bar = _progress(progress, total=len(cells), initial=len(cells) - len(todo), desc=f"{name} sweep")
        domain_errors = 0
        for solver_name, grid_name, nfe, seed in todo:
            solver = solvers.make(solver_name)
            steps = steps_for_nfe(solver, nfe)
            try:
                grid_t = grids.make(grid_name, steps, process=model.process)
                gen = torch.Generator(device=device).manual_seed(int(seed))
                _peak_mem_reset(device)
                t0 = time.perf_counter()
                with torch.no_grad():
                    samples = task.generate(model, n, solver=solver, grid=grid_t, generator=gen, data=data)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                secs = time.perf_counter() - t0
                mem = _peak_mem_mb(device)
                metrics = task.evaluate(samples, data)
                if metric_name not in metrics:
                    raise KeyError(f"evaluate() returned no headline metric {metric_name!r} "
                                   f"(got {sorted(metrics)})")
            except KeyboardInterrupt:
                raise
            except Exception as e:
                domain_errors += 1
                _log_error(out, {"domain": name, "solver": solver_name, "grid": grid_name, "nfe": nfe,
                                 "seed": seed, "error": f"{type(e).__name__}: {e}",
                                 "traceback": traceback.format_exc()})
                bar.update(1)
                continue
            base = {"domain": name, "solver": solver_name, "grid": grid_name, "nfe": nfe, "seed": seed,
                    "seconds": f"{secs:.6g}", "steps": steps, "nfe_actual": _nfe_actual(solver, steps),
                    "peak_mem_mb": f"{mem:.1f}"}
            rows = [{**base, "metric": k, "value": repr(float(v)), "direction": "", "headline": 0}
                    for k, v in sorted(metrics.items()) if k != metric_name]
            rows.append({**base, "metric": metric_name, "value": repr(float(metrics[metric_name])),
                         "direction": direction, "headline": 1})  # headline last: marks the cell complete
            _fsync_append(results_path, _rows_to_text(rows))
            done.add((name, solver_name, grid_name, nfe, seed))
            res.new_cells += 1
            bar.update(1)
            bar.set_postfix({metric_name: f"{float(metrics[metric_name]):.4g}"})
        bar.close()
        if domain_errors:
            res.errors += domain_errors
            log(f"[{name}] {domain_errors} cell(s) failed; see {out / 'errors.jsonl'}")
        _sample_picture(task, model, data, spec, n, device, out, log)
        res.domains_completed.append(name)

    rows = read_results(results_path)
    res.cells = len({_cell_key(r) for r in rows if r["headline"] and r["domain"] in res.domains_completed})
    res.seconds = time.perf_counter() - t_start
    meta["skipped"] = res.skipped
    meta["seconds"] = res.seconds
    write_report(rows, out, meta=meta)
    return res


def _log_error(out: Path, rec: Mapping[str, Any]) -> None:
    _fsync_append(out / "errors.jsonl", json.dumps({**rec, "time": time.time()}) + "\n")


def _sample_picture(task, model, data, spec: CompareSpec, n: int, device, out: Path, log) -> None:
    """One picture of samples per domain (first solver and grid, largest NFE, seed 0)."""
    import torch

    from . import grid as grids
    from . import solvers

    path = out / "plots" / f"samples_{task.name}.png"
    if path.exists():
        return
    try:
        solver = solvers.make(spec.solvers[0])
        g = grids.make(spec.grids[0], steps_for_nfe(solver, max(spec.nfe)), process=model.process)
        gen = torch.Generator(device=device).manual_seed(int(spec.seeds[0]))
        with torch.no_grad():
            samples = task.generate(model, min(n, 64), solver=solver, grid=g, generator=gen, data=data)
        task.plot(samples, data, path)
    except Exception as e:  # a picture is a nice-to-have; never fail the sweep for it
        log(f"[{task.name}] sample picture failed: {type(e).__name__}: {e}")


# --------------------------------------------------------------------------- report


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def _headline_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[tuple, list[float]]]:
    """domain -> (solver, grid, nfe) -> headline values over seeds."""
    t: dict[str, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["headline"] and math.isfinite(r["value"]):
            t[r["domain"]][(r["solver"], r["grid"], r["nfe"])].append(r["value"])
    return t


def _directions(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    return {r["domain"]: (r["metric"], r["direction"]) for r in rows if r["headline"]}


def solver_ranking(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, float, dict[str, float]]]:
    """Solvers ranked by their normalised headline score averaged over domains.

    Per domain, the seed-mean headline of every (solver, grid, nfe) setting is min-max scaled to
    [0, 1] with 1 = best (direction respected); a solver's domain score is the mean over its
    grids x NFEs (0.5 when all settings of a domain tie); its overall score is the mean over
    domains. Returns
    ``[(solver, overall, {domain: score})]`` best first."""
    table = _headline_table(rows)
    dirs = _directions(rows)
    per: dict[str, dict[str, float]] = defaultdict(dict)
    for dom, cells in table.items():
        means = {k: sum(v) / len(v) for k, v in cells.items()}
        lo, hi = min(means.values()), max(means.values())
        sign_max = dirs[dom][1] == "max"
        by_solver: dict[str, list[float]] = defaultdict(list)
        for (solver, _, _), m in means.items():
            if hi == lo:  # every setting ties: neutral score
                by_solver[solver].append(0.5)
                continue
            s = (m - lo) / (hi - lo)
            by_solver[solver].append(s if sign_max else 1.0 - s)
        for solver, ss in by_solver.items():
            per[solver][dom] = sum(ss) / len(ss)
    ranking = [(s, sum(d.values()) / len(d), dict(d)) for s, d in per.items()]
    ranking.sort(key=lambda x: (-x[1], x[0]))
    return ranking


def best_settings(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[tuple, float, float]]:
    """domain -> ((solver, grid, nfe), mean, std) of the best seed-mean headline."""
    table = _headline_table(rows)
    dirs = _directions(rows)
    out = {}
    for dom, cells in table.items():
        stats = {k: _mean_std(v) for k, v in cells.items()}
        pick = max if dirs[dom][1] == "max" else min
        k = pick(stats, key=lambda k: (stats[k][0], -k[2]) if pick is max else (stats[k][0], k[2]))
        out[dom] = (k, *stats[k])
    return out


def write_report(rows: Sequence[Mapping[str, Any]], out: str | os.PathLike, *, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``report.md`` and ``plots/metric_vs_nfe_<domain>.png`` from results rows."""
    from .checkpoint import atomic_write_text

    out = Path(out)
    meta = dict(meta or {})
    dirs = _directions(rows)
    table = _headline_table(rows)
    lines = ["# diffsuite compare", ""]
    if meta:
        spec = meta.get("spec", {})
        lines += [f"Preset `{meta.get('preset')}` on `{meta.get('device')}`; solvers "
                  f"{', '.join(spec.get('solvers', []))}; grids {', '.join(spec.get('grids', []))}; "
                  f"NFE {', '.join(map(str, spec.get('nfe', [])))}; seeds {', '.join(map(str, spec.get('seeds', [])))}.",
                  "", "Values are the mean ± std over seeds of each domain's headline metric. "
                  "`steps = max(1, nfe // nfe_per_step)`; Heun's last step is Euler, so it costs "
                  "`2*steps - 1` evaluations (column `nfe_actual` of results.csv).", ""]
        if meta.get("seconds") is not None:
            lines += [f"Wall time of this run: {meta['seconds']:.1f} s.", ""]
    skipped = meta.get("skipped") or {}
    if skipped:
        lines += ["Skipped domains:", ""] + [f"- **{d}**: {why}" for d, why in skipped.items()] + [""]
    if not rows:
        lines += ["No results yet.", ""]

    ranking = solver_ranking(rows)
    if ranking:
        doms = sorted(table)
        lines += ["## Solver ranking (all domains)", "",
                  "Per domain, each setting's seed-mean headline is min-max normalised to [0, 1] "
                  "(1 = best, direction respected); a solver's score is its mean over grids × NFE, "
                  "averaged over domains.", "",
                  "| rank | solver | score | " + " | ".join(doms) + " |",
                  "|---|---|---|" + "---|" * len(doms)]
        for i, (s, score, per) in enumerate(ranking, 1):
            lines.append(f"| {i} | {s} | {score:.3f} | " +
                         " | ".join(f"{per[d]:.3f}" if d in per else "–" for d in doms) + " |")
        lines.append("")

    best = best_settings(rows)
    if best:
        lines += ["## Best setting per domain", "", "| domain | headline | solver | grid | NFE | value |",
                  "|---|---|---|---|---|---|"]
        for dom, ((s, g, nfe), m, sd) in sorted(best.items()):
            name, d = dirs[dom]
            lines.append(f"| {dom} | {name} ({d}) | {s} | {g} | {nfe} | {m:.4g} ± {sd:.2g} |")
        lines.append("")

    for dom in sorted(table):
        name, d = dirs[dom]
        nfes = sorted({k[2] for k in table[dom]})
        lines += [f"## {dom}", "", f"Headline: `{name}` ({'lower' if d == 'min' else 'higher'} is better).", "",
                  "| solver | grid | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
                  "|---|---|" + "---|" * len(nfes)]
        for s, g in sorted({(k[0], k[1]) for k in table[dom]}):
            cells = []
            for nfe in nfes:
                v = table[dom].get((s, g, nfe))
                cells.append("–" if not v else "{:.4g} ± {:.2g}".format(*_mean_std(v)))
            lines.append(f"| {s} | {g} | " + " | ".join(cells) + " |")
        sec = [r for r in rows if r["domain"] == dom and not r["headline"]]
        if sec:
            (bs, bg, bn), _, _ = best[dom]
            at = defaultdict(list)
            for r in sec:
                if (r["solver"], r["grid"], r["nfe"]) == (bs, bg, bn):
                    at[r["metric"]].append(r["value"])
            if at:
                lines += ["", f"Secondary metrics at the best setting ({bs}, {bg}, NFE {bn}): " +
                          ", ".join("{} {:.4g} ± {:.2g}".format(k, *_mean_std(v)) for k, v in sorted(at.items()))]
        secs = [r["seconds"] for r in rows if r["domain"] == dom and r["headline"]]
        lines += ["", f"Sampling wall time per cell: {sum(secs) / len(secs):.3g} s on average.", ""]
        plot = out / "plots" / f"metric_vs_nfe_{dom}.png"
        if _plot_domain(dom, table[dom], name, d, plot):
            lines += [f"![{dom}: {name} vs NFE](plots/{plot.name})", ""]
        pic = out / "plots" / f"samples_{dom}.png"
        if pic.exists():
            lines += [f"![{dom} samples](plots/{pic.name})", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _plot_domain(dom: str, cells: Mapping[tuple, list[float]], metric: str, direction: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401
    except Exception:  # pragma: no cover - matplotlib missing
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    grids_ = sorted({k[1] for k in cells})
    styles = ["-", "--", ":", "-."]
    for s in sorted({k[0] for k in cells}):
        for gi, g in enumerate(grids_):
            pts = sorted((k[2], *_mean_std(v)) for k, v in cells.items() if k[0] == s and k[1] == g)
            if not pts:
                continue
            x, m, sd = zip(*pts)
            label = s if len(grids_) == 1 else f"{s} / {g}"
            ax.errorbar(x, m, yerr=sd, marker="o", ms=3, capsize=2, ls=styles[gi % len(styles)], label=label)
    ax.set_xscale("log")
    nfes = sorted({k[2] for k in cells})
    ax.set_xticks(nfes)
    ax.set_xticklabels([str(n) for n in nfes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("NFE")
    ax.set_ylabel(f"{metric} ({'lower' if direction == 'min' else 'higher'} is better)")
    ax.set_title(dom)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True
