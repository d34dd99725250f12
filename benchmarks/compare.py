#!/usr/bin/env python
"""Cross-domain sweep benchmark (``diffsuite compare`` with fixed settings).

    python benchmarks/compare.py --quick --json bench_out/compare.json
        tiny presets, solver ddim, NFE 2 and 4, seed 0, 8 samples per cell, every installed domain
    python benchmarks/compare.py --json bench_out/compare_default.json
        default presets and the default sweep (what `bash run.sh demo` runs)

Writes JSON ``{"domains_completed", "cells", "seconds", "skipped", "errors", "out"}``.
``--domains none`` runs nothing (checks the plumbing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/<domain>.py would shadow the domain packages: the repository root goes first and
# this folder leaves the import path (it is sys.path[0] when a script here is run directly)
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "benchmarks")]

from shared.compare import CompareSpec, run_compare  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny presets, 1 solver, 2 NFE, 1 seed")
    p.add_argument("--json", default=None, help="write the summary JSON here")
    p.add_argument("--domains", default="all", help="'all', 'none' or a comma list")
    p.add_argument("--out", default=None, help="output dir (default: a temp dir for --quick, else bench_out/compare)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args(argv)

    domains = None if args.domains == "all" else (() if args.domains == "none" else
                                                   tuple(d for d in args.domains.split(",") if d))
    tmp = None
    if args.out is None and args.quick:
        tmp = tempfile.TemporaryDirectory(prefix="diffsuite-bench-")
        out = tmp.name
    else:
        out = args.out or str(ROOT / "bench_out" / "compare")
    if args.quick:
        spec = CompareSpec(domains=domains, preset="tiny", solvers=("ddim",), nfe=(2, 4), grids=("uniform",),
                           seeds=(0,), n=8, out=out, device=args.device)
    else:
        spec = CompareSpec(domains=domains, preset="default", out=out, device=args.device)
    t0 = time.perf_counter()
    res = run_compare(spec, progress=sys.stderr.isatty())
    summary = {"domains_completed": res.domains_completed, "cells": res.cells, "seconds": time.perf_counter() - t0,
               "skipped": res.skipped, "errors": res.errors, "out": None if tmp else out,
               "preset": spec.preset}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
