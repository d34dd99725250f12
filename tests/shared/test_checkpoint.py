"""Checkpoints: round trip, atomicity under a crash, pickle refusal, corruption detection."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from shared import checkpoint as ck
from shared.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_into,
    save_checkpoint,
    save_step_checkpoint,
)
from shared.config import TrainConfig


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))


def test_roundtrip_modules_config_train_state(tmp_path):
    a, b = _net(0), _net(1)
    opt = torch.optim.AdamW(a.parameters())
    a(torch.randn(4, 3)).sum().backward()
    opt.step()
    ts = {"step": 7, "optimizer": opt.state_dict(), "rng": {"numpy": np.random.get_state(),
          "torch": torch.get_rng_state()}, "lst": [1, 2.5, None, "s"]}
    p = save_checkpoint(tmp_path / "c", {"net": a, "ema": b.state_dict()}, TrainConfig(steps=3),
                        meta={"domain": "toy"}, train_state=ts)
    c = load_checkpoint(p)
    assert set(c.state_dicts) == {"net", "ema"}
    assert c.config["steps"] == 3 and c.meta["domain"] == "toy" and c.meta["format_version"] == 1
    assert c.train_state["step"] == 7 and c.train_state["lst"] == [1, 2.5, None, "s"]
    np_state = c.train_state["rng"]["numpy"]
    assert np_state[0] == "MT19937" and np.array_equal(np_state[1], np.random.get_state()[1])
    opt2 = torch.optim.AdamW(_net(3).parameters())
    opt2.load_state_dict(c.train_state["optimizer"])  # int keys and tuples survive
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    fresh = _net(5)
    load_into(p, {"net": fresh})
    for k, v in a.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    # single module form
    save_checkpoint(tmp_path / "single", a)
    assert set(load_checkpoint(tmp_path / "single").state_dicts) == {"model"}


def test_tied_weights_save(tmp_path):
    m = nn.Module()
    m.a = nn.Linear(4, 4, bias=False)
    m.b = nn.Linear(4, 4, bias=False)
    m.b.weight = m.a.weight
    save_checkpoint(tmp_path / "t", m)
    load_into(tmp_path / "t", m)


def test_load_into_checks_names_and_shapes_before_touching_model(tmp_path):
    save_checkpoint(tmp_path / "c", _net(0))
    other = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_into(tmp_path / "c", other)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    extra = nn.Sequential(*_net(0), nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_into(tmp_path / "c", extra)
    load_into(tmp_path / "c", extra, strict=False)
    with pytest.raises(CheckpointError, match="not in checkpoint"):
        load_into(tmp_path / "c", {"other": _net(0)})


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    good = _net(0)
    save_step_checkpoint(run, 100, good, meta={"k": 1})
    real_replace = os.replace

    def crash(src, dst, *a, **k):  # the process "dies" when the new step dir would be renamed in
        if "step_00000200" in str(dst):
            raise KeyboardInterrupt("simulated kill")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(ck.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_step_checkpoint(run, 200, _net(1))
    monkeypatch.setattr(ck.os, "replace", real_replace)
    assert latest_checkpoint(run).name == "step_00000100"
    c = load_checkpoint(run)
    assert c.meta["step"] == 100
    assert torch.equal(c.state_dicts["model"]["0.weight"], good[0].weight)
    assert not any("tmp" in p.name for p in run.iterdir()), "temporary directory left behind"


def test_crash_while_writing_pointer_keeps_previous(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_step_checkpoint(run, 1, _net(0))
    real = ck.atomic_write_bytes

    def torn(path, data):  # a torn write of the pointer happens in a temp file that is never renamed
        raise OSError("disk full")

    monkeypatch.setattr(ck, "atomic_write_bytes", torn)
    with pytest.raises(OSError):
        save_step_checkpoint(run, 2, _net(1))
    monkeypatch.setattr(ck, "atomic_write_bytes", real)
    assert (run / "latest").read_text().strip() == "step_00000001"
    assert load_checkpoint(run).meta["step"] == 1
    # keep= removes older ones only after a successful save
    save_step_checkpoint(run, 3, _net(1), keep=1)
    assert [p.name for p in ck.list_checkpoints(run)] == ["step_00000003"]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_refused_without_execution(tmp_path):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Evil(str(marker)), protocol=4)
    c = save_checkpoint(tmp_path / "c", _net(0))
    (c / "model.safetensors").write_bytes(payload)
    with pytest.raises(CheckpointError, match="pickle") as e:
        load_checkpoint(c)
    assert "model.safetensors" in str(e.value)
    assert not marker.exists()
    # torch.save's zip format is refused too, whatever the file is called
    z = tmp_path / "c2"
    save_checkpoint(z, _net(0))
    with zipfile.ZipFile(z / "model.safetensors", "w") as f:
        f.writestr("archive/data.pkl", payload)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(z)
    assert not marker.exists()
    bad = tmp_path / "weights.pt"
    bad.write_bytes(payload)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(bad)
    assert not marker.exists()
    # a pickled train_state.json is refused as well
    c3 = save_checkpoint(tmp_path / "c3", _net(0), train_state={"step": 1})
    (c3 / "train_state.json").write_bytes(payload)
    with pytest.raises(CheckpointError, match="train_state.json"):
        load_checkpoint(c3)
    assert not marker.exists()


def test_truncated_and_corrupt_files_named(tmp_path):
    run = tmp_path / "run"
    save_step_checkpoint(run, 1, _net(0))
    p = save_step_checkpoint(run, 2, _net(1), train_state={"w": torch.ones(100)})
    f = p / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(p)
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(p)
    # a bit flip with the right size is caught by the checksum
    p2 = save_step_checkpoint(run, 3, _net(1), train_state={"w": torch.ones(100)}, keep=3)
    g = p2 / "train_state.safetensors"
    raw = bytearray(g.read_bytes())
    raw[-1] ^= 0xFF
    g.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="train_state.safetensors"):
        load_checkpoint(p2)
    (p2 / "config.json").write_text('{"format_version": 1, "fil')
    with pytest.raises(CheckpointError, match="config.json"):
        load_checkpoint(p2)
    # the previous good checkpoint still loads
    assert load_checkpoint(run / "step_00000001").meta["step"] == 1


def test_missing_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_checkpoint(tmp_path / "empty")
    assert latest_checkpoint(tmp_path / "empty") is None
