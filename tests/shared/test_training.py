"""Trainer: exact resume, NaN detection, schedules, EMA, accumulation, DDP equivalence."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch
from torch import nn

from shared.checkpoint import load_checkpoint
from shared.config import ConfigError, TrainConfig
from shared.training import Trainer, ema_decay_at, lr_at

DATA = torch.randn(96, 4, generator=torch.Generator().manual_seed(0))


def make_model(seed=0, dropout=0.1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 32), nn.SiLU(), nn.Dropout(dropout), nn.Linear(32, 4))


def noisy_loss(model, x, g):
    """A denoising loss whose noise comes from the trainer's generator."""
    eps = torch.randn(x.shape, generator=g, device=g.device)
    return ((model(x + 0.5 * eps) - x) ** 2).mean(1)  # [B]


def plain_loss(model, x, g):
    return ((model(x) - x.flip(1)) ** 2).mean(1)


CFG = TrainConfig(steps=16, batch_size=16, lr=3e-3, warmup_steps=3, lr_schedule="cosine", log_every=1,
                  checkpoint_every=4, ema_decay=0.99, device="cpu", seed=3)


class _Kill(Exception):
    pass


def test_resume_is_exact(tmp_path):
    ref = Trainer(CFG, tmp_path / "a", progress=False)
    m_ref = ref.fit(make_model(), noisy_loss, DATA)

    def kill_at_10(trainer, rec):
        if rec["step"] == 10:
            raise _Kill

    t1 = Trainer(CFG, tmp_path / "b", progress=False)
    with pytest.raises(_Kill):
        t1.fit(make_model(), noisy_loss, DATA, callbacks=[kill_at_10])
    t2 = Trainer(CFG, tmp_path / "b", progress=False)
    m2 = t2.fit(make_model(seed=99), noisy_loss, DATA)  # init is overwritten by the checkpoint
    assert t2.resumed_from.name == "step_00000008"
    assert [h["loss"] for h in t2.history] == [h["loss"] for h in ref.history]
    for p, q in zip(m_ref.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(ref.ema_model.parameters(), t2.ema_model.parameters()):
        assert torch.equal(p, q)
    rows = (tmp_path / "b" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + CFG.steps and rows[0].startswith("step,loss")
    # final checkpoint holds model + EMA + train state
    c = load_checkpoint(tmp_path / "b" / "checkpoints")
    assert c.meta["step"] == CFG.steps and set(c.state_dicts) == {"model", "ema"}
    assert c.train_state["step"] == CFG.steps
    # a finished run resumes to "nothing to do"
    t3 = Trainer(CFG, tmp_path / "b", progress=False)
    t3.fit(make_model(), noisy_loss, DATA)
    assert t3.step == CFG.steps


def test_resume_falls_back_to_previous_good_checkpoint(tmp_path):
    cfg = replace(CFG, steps=8)
    t = Trainer(cfg, tmp_path, progress=False)
    t.fit(make_model(), noisy_loss, DATA)
    last = tmp_path / "checkpoints" / "step_00000008" / "model.safetensors"
    last.write_bytes(last.read_bytes()[:50])
    t2 = Trainer(replace(cfg, steps=10), tmp_path, progress=False)
    with pytest.warns(UserWarning, match="model.safetensors"):
        t2.fit(make_model(), noisy_loss, DATA)
    assert t2.resumed_from.name == "step_00000004"


def test_nan_loss_names_the_step():
    calls = {"n": 0}

    def bad_loss(model, x, g):
        calls["n"] += 1
        loss = plain_loss(model, x, g)
        return loss * float("nan") if calls["n"] == 3 else loss

    t = Trainer(replace(CFG, checkpoint_every=0), None, progress=False)
    with pytest.raises(FloatingPointError, match="step 3"):
        t.fit(make_model(), bad_loss, DATA)


def test_lr_and_ema_schedules():
    c = TrainConfig(steps=10, lr=1.0, warmup_steps=2, lr_schedule="cosine")
    assert [round(lr_at(s, c), 6) for s in (0, 1)] == [0.5, 1.0]
    assert lr_at(2, c) == pytest.approx(1.0) and lr_at(6, c) == pytest.approx(0.5)
    assert lr_at(9, replace(c, lr_schedule="constant")) == 1.0
    e = TrainConfig(ema_decay=0.999, ema_warmup=True, ema_power=2 / 3)
    assert ema_decay_at(1, e) == 0.0  # first update copies the weights (diffusers EMAModel)
    assert ema_decay_at(10, e) == pytest.approx(1 - 10 ** (-2 / 3))
    assert ema_decay_at(10**9, e) == 0.999
    assert ema_decay_at(5, replace(e, ema_warmup=False)) == 0.999
    assert ema_decay_at(5, replace(e, ema_warmup=5)) == 0.0
    assert ema_decay_at(6, replace(e, ema_warmup=5)) == 0.0 and ema_decay_at(8, replace(e, ema_warmup=5)) > 0


def test_time_budget_stops_and_decays_lr(monkeypatch):
    """max_seconds: a fake clock advancing 1 s per reading; stop once 10 s are spent, and the
    cosine (after warm-up) follows time progress when it runs ahead of step progress."""
    c = TrainConfig(steps=1000, lr=1.0, warmup_steps=2, lr_schedule="cosine")
    assert lr_at(500, c, time_progress=0.5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(600, c, time_progress=0.1) == pytest.approx(lr_at(600, c))  # step progress ahead
    assert lr_at(1, c, time_progress=0.9) == 1.0  # warm-up is by steps only
    import shared.training as tr

    clock = [0.0]  # fake wall clock: each optimizer step takes exactly 1 s
    monkeypatch.setattr(tr.time, "perf_counter", lambda: clock[0])

    def tick(trainer, rec):
        lrs.append(rec["lr"])
        clock[0] += 1.0

    cfg = replace(CFG, steps=1000, checkpoint_every=0, max_seconds=10.0)  # warm-up 3 steps
    t, lrs = Trainer(cfg, progress=False), []
    t.fit(make_model(), noisy_loss, DATA, callbacks=[tick])
    assert t.step == 10  # stopped by the budget, not at 1000 steps
    cos = [0.5 * (1 + math.cos(math.pi * k / 7)) for k in range(7)]  # 7 s left after warm-up
    assert lrs == pytest.approx([c * cfg.lr for c in [1 / 3, 2 / 3, 1.0] + cos])
    clock[0] = 0.0
    with pytest.warns(UserWarning, match="inside the 20-step LR warm-up"):
        Trainer(replace(cfg, warmup_steps=20), progress=False).fit(make_model(), noisy_loss, DATA, callbacks=[tick])
    with pytest.raises(ConfigError, match="max_seconds"):
        TrainConfig(max_seconds=-1)


def test_grad_accumulation_matches_full_batch():
    cfg = replace(CFG, checkpoint_every=0, ema_decay=0.0, grad_clip=0.0)
    m1 = Trainer(cfg, progress=False).fit(make_model(dropout=0.0), plain_loss, DATA)
    m2 = Trainer(replace(cfg, grad_accum=4), progress=False).fit(make_model(dropout=0.0), plain_loss, DATA)
    for p, q in zip(m1.parameters(), m2.parameters()):
        # same samples per step; only float32 summation order differs (4 partial means)
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="divisible"):
        Trainer(replace(cfg, grad_accum=3), progress=False).fit(make_model(), plain_loss, DATA)


def test_dataloader_and_iterable_inputs(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    cfg = replace(CFG, steps=6, checkpoint_every=3)
    dl = DataLoader(TensorDataset(DATA), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))

    def tuple_loss(model, batch, g):
        return plain_loss(model, batch[0], g)

    t = Trainer(cfg, tmp_path / "dl", progress=False)
    t.fit(make_model(), tuple_loss, dl)
    assert t.step == 6 and len(t.history) == 6
    t2 = Trainer(cfg, None, progress=False)
    t2.fit(make_model(), plain_loss, [DATA[:8], DATA[8:16]])  # a list of batches is cycled
    assert t2.step == 6
    assert t2.sampling_model is t2.ema_model and t2.ema_state_dict() is not None


def test_metrics_csv_and_no_out_dir(tmp_path):
    t = Trainer(replace(CFG, steps=4, log_every=2, checkpoint_every=0), tmp_path, progress=False)
    t.fit(make_model(), noisy_loss, DATA)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["step", "2", "4"]
    assert all(math.isfinite(h["loss"]) for h in t.history)


def test_bf16_autocast_on_cpu_and_switching_settings():
    """accelerate keeps one global state; Trainers with other settings in one process still work."""
    for mp in ("bf16", "no"):
        t = Trainer(replace(CFG, steps=3, checkpoint_every=0, mixed_precision=mp), progress=False)
        t.fit(make_model(), plain_loss, DATA)
        assert t.accelerator.mixed_precision == mp and math.isfinite(t.history[-1]["loss"])


# --------------------------------------------------------------------------- DDP (2 CPU processes)

DDP_SCRIPT = textwrap.dedent('''
    import sys, torch
    from torch import nn
    from safetensors.torch import save_file
    from shared.config import TrainConfig
    from shared.training import Trainer
    sys.path.insert(0, sys.argv[2])
    from test_training import CFG_DDP, DATA, make_model, plain_loss
    t = Trainer(CFG_DDP, None, progress=False)
    assert t.num_processes == 2, t.num_processes
    m = t.fit(make_model(dropout=0.0), plain_loss, DATA)
    if t.is_main_process:
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, sys.argv[1])
''')

CFG_DDP = TrainConfig(steps=5, batch_size=16, lr=1e-2, grad_clip=0.5, ema_decay=0.0, device="cpu",
                      log_every=1, seed=1)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_match_one_process(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "ddp.safetensors"
    (tmp_path / "ddp_script.py").write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    # Two processes with the env variables torchrun / `accelerate launch` would set; accelerate
    # picks them up and runs DDP with gloo on CPU, as on a real multi-process / multi-node launch.
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, str(tmp_path / "ddp_script.py"), str(out),
                                       os.path.dirname(__file__)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    for p in procs:
        try:
            log, _ = p.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, log[-3000:]
    ddp = load_file(out)
    single = Trainer(CFG_DDP, None, progress=False).fit(make_model(dropout=0.0), plain_loss, DATA)
    for k, v in single.state_dict().items():
        # Same global batch per step; DDP averages two 8-sample means where one process takes one
        # 16-sample mean, so the gradients differ only by float32 rounding (~1e-7 relative).
        # Five AdamW steps of size ~lr=1e-2 scale that to well under 1e-5 absolute.
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-5)
