"""The compare harness: ranking on known metric curves, tidy CSV, resume after a kill, and a real
tiny sweep over every installed domain."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from shared import registry
from shared.checkpoint import load_checkpoint, save_checkpoint
from shared.compare import (
    COLUMNS,
    CompareSpec,
    read_results,
    run_compare,
    solver_ranking,
    steps_for_nfe,
)
from shared.config import TrainConfig
from shared.process import CosineVP
from shared.registry import Splits


@dataclass(frozen=True)
class FakeConfig:
    tag: str = "x"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1, device="cpu"))


class FakeModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.process = CosineVP()


def make_fake(name: str, metric: str, direction: str, c: dict[str, float]):
    """A domain whose headline is c[solver] / steps (+ 0.01 * seed), flipped for 'max'."""

    class Fake:
        headline_metric = (metric, direction)
        extra = name
        trained = 0
        evaluated = 0
        kill_after = None

        def config(self, preset):
            return FakeConfig(tag=preset)

        def load_data(self, cfg):
            return Splits(train=torch.zeros(4, 1))

        def build(self, cfg):
            return FakeModel()

        def train(self, cfg, model, data, trainer):
            type(self).trained += 1
            return model

        def generate(self, model, n, *, solver, grid, guidance=None, generator=None, data=None):
            return {"solver": solver.name, "steps": len(grid) - 1, "seed": generator.initial_seed(), "n": n}

        def evaluate(self, s, data):
            k = type(self)
            if k.kill_after is not None and k.evaluated >= k.kill_after:
                raise KeyboardInterrupt("simulated kill")
            k.evaluated += 1
            err = c[s["solver"]] / s["steps"] + 0.01 * s["seed"]
            return {metric: err if direction == "min" else 1.0 - err, "aux": float(s["n"])}

        def save(self, model, cfg, path):
            save_checkpoint(path, model, {"tag": cfg.tag})

        def load(self, path):
            load_checkpoint(path)
            return FakeModel(), FakeConfig()

        def plot(self, samples, data, path):
            Path(path).write_bytes(b"\x89PNG fake")

    Fake.name = name
    return Fake


@pytest.fixture
def fakes():
    a = make_fake("fa", "err", "min", {"ddim": 1.0, "euler": 2.0, "heun": 0.25})
    b = make_fake("fb", "score", "max", {"ddim": 0.2, "euler": 2.0, "heun": 1.0})
    registry.register("fa", a)
    registry.register("fb", b)
    yield a, b
    registry.unregister("fa")
    registry.unregister("fb")


def _spec(tmp_path, **kw):
    base = dict(domains=("fa", "fb"), preset="tiny", solvers=("ddim", "euler", "heun"), nfe=(4, 8),
                grids=("uniform",), seeds=(0, 1), n=3, out=str(tmp_path / "out"), device="cpu")
    return CompareSpec(**{**base, **kw})


def test_steps_from_nfe():
    from shared.solvers import make

    assert steps_for_nfe(make("ddim"), 10) == 10
    assert steps_for_nfe(make("heun"), 10) == 5
    assert steps_for_nfe(make("heun"), 1) == 1


def test_report_ranks_and_csv_is_tidy(tmp_path, fakes):
    res = run_compare(_spec(tmp_path), progress=False, log=lambda m: None)
    assert res.ok and res.domains_completed == ["fa", "fb"] and res.cells == 2 * 3 * 2 * 2
    out = tmp_path / "out"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    keys = [(r["domain"], r["solver"], r["grid"], r["nfe"], r["seed"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)) == 24 * 2  # headline + aux per cell, one row each
    heun8 = [r for r in rows if r["solver"] == "heun" and r["nfe"] == "8" and r["domain"] == "fa"
             and r["metric"] == "err"]
    assert {r["steps"] for r in heun8} == {"4"} and {r["nfe_actual"] for r in heun8} == {"7"}
    # Known curves (hand-computed): per domain, seed-mean headline of each (solver, nfe), min-max
    # normalised with 1 = best, averaged over NFE, then over domains.
    #   fa (min, c/steps): ddim .25/.125, euler .5/.25, heun(2,4 steps) .125/.0625
    #       -> ddim .714286, euler .285714, heun .928571
    #   fb (max, 1 - c/steps): ddim .95/.975, euler .5/.75, heun .5/.75
    #       -> ddim .973684, euler .263158, heun .263158
    ranking = solver_ranking(read_results(out / "results.csv"))
    assert [s for s, _, _ in ranking] == ["ddim", "heun", "euler"]
    scores = {s: sc for s, sc, _ in ranking}
    assert scores["ddim"] == pytest.approx((0.714286 + 0.973684) / 2, abs=1e-5)
    assert scores["heun"] == pytest.approx((0.928571 + 0.263158) / 2, abs=1e-5)
    assert scores["euler"] == pytest.approx((0.285714 + 0.263158) / 2, abs=1e-5)
    report = (out / "report.md").read_text()
    assert "## Solver ranking" in report and "| 1 |" in report
    best_fa = [ln for ln in report.splitlines() if ln.startswith("| fa | err (min) |")]
    assert best_fa and "| heun | uniform | 8 | 0.0675 ± 0.0071 |" in best_fa[0]
    best_fb = [ln for ln in report.splitlines() if ln.startswith("| fb | score (max) |")]
    assert best_fb and "| ddim | uniform | 8 |" in best_fb[0]
    assert (out / "plots" / "metric_vs_nfe_fa.png").stat().st_size > 1000
    assert (out / "plots" / "samples_fb.png").exists()
    # second run: everything cached and recorded, nothing re-run or duplicated
    trained = fakes[0].trained
    res2 = run_compare(_spec(tmp_path), progress=False, log=lambda m: None)
    assert res2.new_cells == 0 and fakes[0].trained == trained
    assert len(read_results(out / "results.csv")) == 48


def test_killed_run_resumes_without_duplicates(tmp_path, fakes):
    fa, _ = fakes
    fa.kill_after = 5
    with pytest.raises(KeyboardInterrupt):
        run_compare(_spec(tmp_path), progress=False, log=lambda m: None)
    path = tmp_path / "out" / "results.csv"
    assert len({(r["solver"], r["nfe"], r["seed"]) for r in read_results(path)}) == 5
    with open(path, "a") as f:  # a half-written line, as if killed mid-write
        f.write("fa,heun,uniform,8,1,er")
    fa.kill_after = None
    res = run_compare(_spec(tmp_path), progress=False, log=lambda m: None)
    rows = read_results(path)
    keys = [(r["domain"], r["solver"], r["grid"], r["nfe"], r["seed"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)) == 48
    assert res.new_cells == 24 - 5 and res.cells == 24
    assert path.read_text().endswith("\n")


def test_failed_cells_are_logged_not_recorded(tmp_path, fakes):
    res = run_compare(_spec(tmp_path, domains=("fa",), grids=("uniform",), nfe=(4,), seeds=(0,),
                            solvers=("ddim", "dpmpp_2m")), progress=False, log=lambda m: None)
    # 'dpmpp_2m' is not in the fake's table -> KeyError inside evaluate -> logged, run continues
    assert res.errors == 1 and res.cells == 1
    err = [json.loads(x) for x in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert err[0]["solver"] == "dpmpp_2m" and "KeyError" in err[0]["error"]


def test_bad_spec_rejected(tmp_path, fakes):
    with pytest.raises(ValueError, match="valid solvers"):
        _spec(tmp_path, solvers=("rk4",)).validate()
    with pytest.raises(ValueError, match="valid domains"):
        _spec(tmp_path, domains=("nope",)).validate()
    with pytest.raises(ValueError, match="valid presets"):
        _spec(tmp_path, preset="huge").validate()
    from shared.cli import main

    with pytest.raises(SystemExit) as e:
        main(["compare", "--domains", "fa", "--grids", "spiral", "--out", str(tmp_path / "c")])
    assert e.value.code == 2 and not (tmp_path / "c").exists()


# --------------------------------------------------------------------------- real domains

REAL = ("imaging", "molecules", "timeseries", "graphs", "medical")


@pytest.mark.parametrize("domain", REAL)
def test_real_tiny_sweep(domain, tmp_path):
    """Tiny preset, one solver, two NFE budgets, one seed, through the real domain task.
    Skipped only while the domain's task module is missing or its extra is not installed."""
    st = registry.available_domains()[domain]
    if not st.ok:
        pytest.skip(f"{domain} not available: {st.describe()}")
    spec = CompareSpec(domains=(domain,), preset="tiny", solvers=("ddim",), nfe=(2, 4), grids=("uniform",),
                       seeds=(0,), n=4, out=str(tmp_path / "out"), device="cpu")
    res = run_compare(spec, progress=False, log=lambda m: None)
    errors = (tmp_path / "out" / "errors.jsonl")
    assert res.ok, errors.read_text()[-3000:] if errors.exists() else res.summary()
    assert res.domains_completed == [domain] and res.cells == 2
    rows = read_results(tmp_path / "out" / "results.csv")
    head = [r for r in rows if r["headline"]]
    assert {r["nfe"] for r in head} == {2, 4}
    assert all(r["value"] == r["value"] for r in head), "headline metric is NaN"


def test_benchmark_script_quick_json(tmp_path, fakes):
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "compare.py"), "--quick", "--json", str(out),
                        "--domains", "none", "--out", str(tmp_path / "b")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    assert set(data) >= {"domains_completed", "cells", "seconds"}
