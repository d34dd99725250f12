"""The pieces of the medical benchmark's GPU mode that a CPU can check: parallel phantom
generation equals serial generation, the batched set loss equals the per-image one, and the
``gpu`` preset is consistent. (The CUDA run itself: ``benchmarks/medical.py --preset gpu``;
its CPU smoke run, ``--preset gpu --device cpu --smoke``, takes ~35 s, too slow for here.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medical.configs import LossConfig, gpu
from medical.data import make_phantoms
from medical.detection import batched_match, hungarian_match, set_loss, set_loss_batched


def test_parallel_phantoms_equal_serial(tmp_path):
    a = make_phantoms(tmp_path / "serial", 5, seed=3, size=(128, 64), partial=(0.3, 0.3))
    b = make_phantoms(tmp_path / "par", 5, seed=3, size=(128, 64), partial=(0.3, 0.3), workers=2)
    assert json.loads(a.read_text()) == json.loads(b.read_text())
    for i in range(5):
        fn = f"phantom_{i:05d}.png"
        assert (tmp_path / "serial" / fn).read_bytes() == (tmp_path / "par" / fn).read_bytes()


def _boxes(n, g):
    c = torch.rand(n, 2, generator=g) * torch.tensor([256.0, 128.0])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([20.0, 40.0]) + 2
    return torch.cat([c - wh / 2, c + wh / 2], -1)


@pytest.mark.parametrize("loss_cfg", [LossConfig(), LossConfig(match_k=3),
                                      LossConfig(match_k=5, match_dynamic=True, match_center=2.5)])
def test_batched_set_loss_equals_per_image(loss_cfg):
    g = torch.Generator().manual_seed(0)
    B, N, size = 5, 24, (256, 128)
    counts = [3, 0, 7, 1, 9]
    stages = [(_boxes(B * N, g).reshape(B, N, 4).requires_grad_(True),
               [torch.randn(B, N, k, generator=g).requires_grad_(True) for k in (4, 8, 4)]) for _ in range(2)]
    gtb = [_boxes(m, g) for m in counts]
    gtl = [torch.stack([torch.randint(-1, k, (m,), generator=g) for k in (4, 8, 4)], -1) for m in counts]
    a = set_loss(stages, gtb, gtl, size, loss_cfg)
    b = set_loss_batched(stages, gtb, gtl, size, loss_cfg)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    leaves = [stages[0][0], stages[1][1][1]]
    for x, y in zip(torch.autograd.grad(a.sum(), leaves), torch.autograd.grad(b.sum(), leaves)):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-6)
    # the matching itself
    boxes, logits = stages[0]
    Mx = max(counts)
    pb = torch.zeros(B, Mx, 4)
    pl = torch.full((B, Mx, 3), -1, dtype=torch.long)
    for i, m in enumerate(counts):
        pb[i, :m], pl[i, :m] = gtb[i], gtl[i]
    got = batched_match(boxes.detach(), [lg.detach() for lg in logits], pb, pl, counts, size, loss_cfg)
    for i in range(B):
        r, c = hungarian_match(boxes[i].detach(), [lg[i].detach() for lg in logits], gtb[i], gtl[i], size, loss_cfg)
        np.testing.assert_array_equal(got[i][0], r)
        np.testing.assert_array_equal(got[i][1], c)


def test_gpu_preset():
    cfg = gpu()
    assert cfg.loss.batched and cfg.train.mixed_precision == "bf16" and cfg.data.workers == -1
    assert cfg.train.warmup_steps < 100 and cfg.sample.num_proposals >= cfg.model.num_proposals
