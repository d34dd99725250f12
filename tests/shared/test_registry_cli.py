"""Registry discovery (tolerant of broken domains) and the `diffsuite` CLI on a fake domain."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import torch

from shared import registry
from shared.cli import main
from shared.registry import DomainNotFound, DomainTask, DomainUnavailable, available_domains, get_task


class _EP:
    def __init__(self, name, value, loader):
        self.name, self.value, self._loader = name, value, loader

    def load(self):
        return self._loader()


@pytest.fixture
def fake_entry_points(monkeypatch, toy_task):
    def missing_pkg():
        raise ModuleNotFoundError("No module named 'rdkit'", name="rdkit")

    def own_module_missing():
        raise ModuleNotFoundError("No module named 'graphs.task'", name="graphs.task")

    def buggy():
        raise RuntimeError("boom")

    eps = {"toy": _EP("toy", "toy.task:ToyTask", lambda: toy_task),
           "molecules": _EP("molecules", "molecules.task:MoleculesTask", missing_pkg),
           "graphs": _EP("graphs", "graphs.task:GraphsTask", own_module_missing),
           "medical": _EP("medical", "medical.task:MedicalTask", buggy)}
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    registry.unregister("toy")  # exercise the entry-point path
    registry._CACHE.clear()
    yield eps
    registry._CACHE.clear()


def test_discovery_tolerates_broken_domains(fake_entry_points):
    st = available_domains(refresh=True)
    assert st["toy"].ok
    assert not st["molecules"].ok and st["molecules"].missing == ("rdkit",)
    assert "pip install" in st["molecules"].describe()
    assert not st["graphs"].ok and st["graphs"].missing == () and "graphs.task" in st["graphs"].reason
    assert not st["medical"].ok and "boom" in st["medical"].reason
    assert isinstance(get_task("toy"), DomainTask)
    with pytest.raises(DomainUnavailable, match="rdkit"):
        get_task("molecules")
    with pytest.raises(DomainNotFound, match="valid domains: graphs, medical, molecules, toy"):
        get_task("nope")


def test_real_entry_points_are_declared():
    names = set(registry._entry_points())
    assert {"imaging", "molecules", "timeseries", "graphs", "medical"} <= names
    available_domains()  # must not raise whatever state the domains are in


def test_cli_domains(fake_entry_points, capsys):
    assert main(["domains"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "ok" in out and "rdkit" in out
    assert main(["domains", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["molecules"]["missing"] == ["rdkit"]


@pytest.mark.parametrize("argv, needle", [
    (["train", "nope", "--out", "OUT"], "valid domains"),
    (["train", "toy", "--preset", "huge", "--out", "OUT"], "valid presets: tiny, default, gpu"),
    (["train", "toy", "--preset", "tiny", "--out", "OUT", "--train.lrr=1"], "train.lr"),
    (["train", "toy", "--preset", "tiny", "--out", "OUT", "--train.steps=many"], "train.steps"),
    (["train", "toy", "--preset", "tiny", "--out", "OUT", "stray"], "--train.lr=3e-4"),
    (["sample", "toy", "--checkpoint", "OUT", "--solver", "rk45"], "valid solvers"),
    (["train", "toy", "--preset", "tiny", "--out", "OUT", "--threads", "0"], "--threads must be >= 1"),
])
def test_cli_bad_input_exit_2_nothing_written(toy_task, tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    argv = [str(out) if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_cli_train_sample_evaluate(toy_task, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "toy", "--preset", "tiny", "--out", str(out), "--train.steps=20",
                 "--no-progress"]) == 0
    assert (out / "model" / "model.safetensors").exists() and (out / "metrics.csv").exists()
    assert (out / "checkpoints" / "latest").exists()
    capsys.readouterr()
    before = torch.get_num_threads()
    try:
        assert main(["sample", "toy", "--checkpoint", str(out), "--n", "32", "--steps", "5",
                     "--solver", "ddim", "--grid", "uniform", "--device", "cpu", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert (out / "samples" / "samples.png").stat().st_size > 0
    assert (out / "samples" / "samples.safetensors").exists()
    capsys.readouterr()
    assert main(["evaluate", "toy", "--checkpoint", str(out), "--n", "32", "--steps", "4",
                 "--grid", "uniform", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["headline"] == "mean_err" and res["direction"] == "min" and "std_err" in res["metrics"]
    with pytest.raises(SystemExit) as e:
        main(["sample", "toy", "--checkpoint", str(tmp_path / "missing")])
    assert e.value.code == 2


def test_cli_train_weights_come_from_the_config_seed(toy_task, tmp_path, capsys, monkeypatch):
    """Two `train` runs in one process give the same weights even when something drew from the
    global generators in between and the domain's ``build`` does not seed (the harness seeds
    with ``train.seed`` before it builds)."""
    from safetensors.torch import load_file

    seeded_build = toy_task.build

    def unseeded_build(self, cfg):  # the toy model, initialised from whatever the global state is
        with torch.random.fork_rng():
            cls = type(seeded_build(self, cfg))
        return cls(cfg.width)

    monkeypatch.setattr(toy_task, "build", unseeded_build)
    weights = []
    for k in range(2):
        torch.randn(100 + k)
        out = tmp_path / f"run{k}"
        assert main(["train", "toy", "--preset", "tiny", "--out", str(out), "--train.steps=3", "--no-progress"]) == 0
        weights.append(load_file(str(out / "model" / "model.safetensors")))
    capsys.readouterr()
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=0, atol=0, msg=k)


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "shared.cli", "domains"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "imaging" in r.stdout
    r = subprocess.run([sys.executable, "-m", "shared.cli", "train", "nope", "--out", "x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "valid domains" in r.stderr
