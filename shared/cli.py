"""The ``diffsuite`` command.

::

    diffsuite domains
    diffsuite train <domain> --preset tiny|default|gpu --out DIR [--device D] [--key=value ...]
    diffsuite sample <domain> --checkpoint DIR [--n N] [--solver S] [--steps K] [--grid G]
                     [--seed S] [--out DIR] [--device D]
    diffsuite evaluate <domain> --checkpoint DIR [--n N] [--solver S] [--steps K] [--grid G] [--seed S]
    diffsuite compare [--domains all|a,b] [--preset P] [--solvers ...] [--nfe 5,10,20,50]
                      [--grids ...] [--seeds 0,1,2] [--out DIR] [--device auto]

``train``, ``sample``, ``evaluate`` and ``compare`` take ``--threads N`` (torch CPU threads; on a
shared machine 1 per process is usually fastest).
Bad input (unknown domain, preset, override key, solver or grid; wrong value type) prints the
valid choices and exits with code 2 before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

from .config import PRESET_NAMES, ConfigError, apply_overrides, parse_override
from .registry import DomainNotFound, DomainUnavailable, available_domains, domain_names, get_task

__all__ = ["main", "build_parser", "UsageError"]

MODEL_SUBDIR = "model"  # where `diffsuite train` stores the final model (task.save)


class UsageError(Exception):
    """Bad command-line input: reported with exit code 2, nothing written."""


def _fail(msg: str) -> NoReturn:
    raise UsageError(msg)


# --------------------------------------------------------------------------- validation helpers


def _task(name: str):
    try:
        return get_task(name)
    except DomainNotFound as e:
        _fail(str(e))
    except DomainUnavailable as e:
        _fail(str(e))


def _config(task, preset: str, overrides: Sequence[str], device: str | None):
    if preset not in PRESET_NAMES:
        _fail(f"unknown preset {preset!r}; valid presets: {', '.join(PRESET_NAMES)}")
    try:
        cfg = task.config(preset)
    except (ConfigError, KeyError, ValueError) as e:
        _fail(f"{task.name}: cannot build preset {preset!r}: {e}")
    ovr = list(overrides)
    if device is not None:
        ovr.append(f"train.device={device}")
    try:
        return apply_overrides(cfg, ovr)
    except ConfigError as e:
        _fail(str(e))


def _solver(name: str):
    from . import solvers

    if name not in solvers.SOLVERS:
        _fail(f"unknown solver {name!r}; valid solvers: {', '.join(solvers.SOLVERS)}")
    return solvers.make(name)


def _grid_name(name: str) -> str:
    from . import grid

    if name not in grid.GRIDS:
        _fail(f"unknown grid {name!r}; valid grids: {', '.join(grid.GRIDS)}")
    return name


def _split_overrides(extra: Sequence[str]) -> list[str]:
    out = []
    for item in extra:
        if not item.startswith("--") or "=" not in item:
            _fail(f"unrecognised argument {item!r}; config overrides look like --train.lr=3e-4")
        try:
            k, v = parse_override(item)
        except ConfigError as e:
            _fail(str(e))
        out.append(f"{k}={v}")
    return out


def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        _fail("--device cuda but no CUDA device is available")
    return torch.device(device)


def model_path(checkpoint: str | Path) -> Path:
    """``DIR/model`` when DIR is a `diffsuite train` output directory, else DIR."""
    p = Path(checkpoint)
    if not p.exists():
        _fail(f"--checkpoint {p}: no such directory")
    return p / MODEL_SUBDIR if (p / MODEL_SUBDIR).is_dir() else p


# --------------------------------------------------------------------------- commands


def cmd_domains(args: argparse.Namespace) -> int:
    statuses = available_domains()
    if args.json:
        print(json.dumps({n: {"status": s.status, "missing": list(s.missing), "reason": s.reason,
                              "extra": s.extra} for n, s in statuses.items()}, indent=2))
        return 0
    width = max((len(n) for n in statuses), default=6)
    for n, s in statuses.items():
        print(f"{n:<{width}}  {s.describe()}")
    if not statuses:
        print("no domains registered (is diffsuite installed with `pip install -e .`?)")
    return 0


def cmd_train(args: argparse.Namespace, extra: Sequence[str]) -> int:
    overrides = _split_overrides(extra)
    task = _task(args.domain)
    cfg = _config(task, args.preset, overrides, args.device)
    out = Path(args.out)
    from .training import Trainer, seed_all

    t0 = time.perf_counter()
    data = task.load_data(cfg)
    seed_all(cfg.train.seed)  # the weights come from the config's seed, not from load_data's draws
    model = task.build(cfg)
    trainer = Trainer(cfg.train, out, config_to_save=cfg, meta={"domain": task.name, "preset": args.preset},
                      progress=None if not args.no_progress else False)
    model = task.train(cfg, model, data, trainer)
    if trainer.is_main_process:
        task.save(model, cfg, out / MODEL_SUBDIR)
        print(f"trained {task.name} ({args.preset}) for {cfg.train.steps} steps in "
              f"{time.perf_counter() - t0:.1f}s; model: {out / MODEL_SUBDIR}, metrics: {out / 'metrics.csv'}")
    return 0


def _generate(args: argparse.Namespace):
    import torch

    task = _task(args.domain)
    solver = _solver(args.solver)
    grid_name = _grid_name(args.grid)
    if args.n < 1 or args.steps < 1:
        _fail("--n and --steps must be >= 1")
    path = model_path(args.checkpoint)
    device = resolve_device(args.device)
    from . import grid as grids
    from .checkpoint import CheckpointError

    try:
        model, cfg = task.load(path)
    except (CheckpointError, FileNotFoundError) as e:
        _fail(f"cannot load {task.name} model from {path}: {e}")
    model = model.to(device).eval()
    try:
        g = grids.make(grid_name, args.steps, process=model.process)
    except ValueError as e:
        _fail(f"grid {grid_name!r} with {args.steps} steps: {e}")
    data = task.load_data(cfg)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        samples = task.generate(model, args.n, solver=solver, grid=g, generator=gen, data=data)
    return task, samples, data, time.perf_counter() - t0


def cmd_sample(args: argparse.Namespace) -> int:
    task, samples, data, secs = _generate(args)
    out = Path(args.out) if args.out else Path(args.checkpoint) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    task.plot(samples, data, out / "samples.png")
    saved = _save_samples(samples, out / "samples.safetensors")
    print(f"{args.n} {task.name} samples ({args.solver}, {args.grid}, {args.steps} steps) in {secs:.2f}s; "
          f"picture: {out / 'samples.png'}" + (f"; tensors: {saved}" if saved else ""))
    return 0


def _save_samples(samples: Any, path: Path) -> Path | None:
    import torch

    from .checkpoint import atomic_write_bytes

    if isinstance(samples, torch.Tensor):
        tensors = {"samples": samples}
    elif isinstance(samples, dict) and samples and all(isinstance(v, torch.Tensor) for v in samples.values()):
        tensors = dict(samples)
    else:
        return None
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
    return path


def cmd_evaluate(args: argparse.Namespace) -> int:
    task, samples, data, secs = _generate(args)
    metrics = task.evaluate(samples, data)
    name, direction = task.headline_metric
    print(json.dumps({"domain": task.name, "headline": name, "direction": direction,
                      "metrics": metrics, "sample_seconds": secs}, indent=2))
    if args.out:
        from .checkpoint import atomic_write_text

        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out) / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from . import compare

    try:
        spec = compare.spec_from_args(args)
    except (ValueError, ConfigError) as e:
        _fail(str(e))
    result = compare.run_compare(spec, progress=not args.no_progress)
    print(result.summary())
    return 0 if result.ok else 1


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffsuite", description="Diffusion models for science: one kernel, five domains.")
    sub = p.add_subparsers(dest="command", metavar="{domains,train,sample,evaluate,compare}")
    sub.required = True

    d = sub.add_parser("domains", help="list domains and what their extras lack")
    d.add_argument("--json", action="store_true")

    t = sub.add_parser("train", help="train a domain model (extra --key=value args override the config)")
    t.add_argument("domain")
    t.add_argument("--preset", default="default", help=f"one of {', '.join(PRESET_NAMES)}")
    t.add_argument("--out", required=True, help="run directory (resumes when it holds checkpoints)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    t.add_argument("--no-progress", action="store_true")

    for name, helptext in (("sample", "draw samples from a trained model"),
                           ("evaluate", "draw samples and compute the domain's metrics")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("domain")
        s.add_argument("--checkpoint", required=True, help="output of `diffsuite train` or a saved model dir")
        s.add_argument("--n", type=int, default=16 if name == "sample" else 64)
        s.add_argument("--solver", default="dpmpp_2m")
        s.add_argument("--steps", type=int, default=20)
        s.add_argument("--grid", default="uniform")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--out", default=None)
        s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    c = sub.add_parser("compare", help="sweep solvers x grids x NFE x seeds across domains")
    c.add_argument("--domains", default="all", help="'all' or a comma list")
    c.add_argument("--preset", default="default", help=f"one of {', '.join(PRESET_NAMES)}")
    c.add_argument("--solvers", default=None, help="comma list (default: a representative set)")
    c.add_argument("--nfe", default="5,10,20,50", help="comma list of model-evaluation budgets")
    c.add_argument("--grids", default=None, help="comma list (default: log_snr)")
    c.add_argument("--seeds", default="0,1,2")
    c.add_argument("--n", type=int, default=None, help="samples per cell (default: per preset)")
    c.add_argument("--out", default="runs/compare")
    c.add_argument("--cache", default=None, help="checkpoint cache dir (default: <out>/cache)")
    c.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    c.add_argument("--no-progress", action="store_true")
    for sp in (t, c) + tuple(sub.choices[n] for n in ("sample", "evaluate")):
        sp.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 on a shared machine)")
    return p


def _apply_threads(args: argparse.Namespace) -> None:
    n = getattr(args, "threads", None)
    if n is None:
        return
    if n < 1:
        _fail(f"--threads must be >= 1, got {n}")
    import torch

    torch.set_num_threads(n)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command != "train" and extra:
            _fail(f"unrecognised arguments: {' '.join(extra)}")
        _apply_threads(args)
        if args.command == "domains":
            return cmd_domains(args)
        if args.command == "train":
            return cmd_train(args, extra)
        if args.command == "sample":
            return cmd_sample(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "compare":
            return cmd_compare(args)
    except UsageError as e:
        parser.exit(2, f"diffsuite {args.command}: error: {e}\n")
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
