"""Shared pytest set-up for all packages.

* ``gpu``-marked tests are skipped without CUDA.
* Under pytest-xdist each worker gets an even share of the CPU threads (no oversubscription).
* ``load_benchmark(name)`` imports ``benchmarks/<name>.py`` (named like the package it measures,
  so it is loaded from its path under another module name).
* ``toy_task`` registers a tiny fake domain ("toy": 2-D Gaussian mixture, MLP eps-model) through
  ``shared.registry.register`` so CLI / harness tests do not depend on the real domains.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)


def pytest_configure(config):
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    threads = max(1, (os.cpu_count() or 1) // max(1, _WORKERS))
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# --------------------------------------------------------------------------- a fake domain


def _toy_classes():
    import torch
    from torch import nn

    from shared.checkpoint import load_checkpoint, load_into, save_checkpoint
    from shared.config import TrainConfig, from_dict
    from shared.param import Denoiser
    from shared.process import CosineVP
    from shared.registry import Splits
    from shared.sample import prior, sample

    @dataclass(frozen=True)
    class ToyConfig:
        width: int = 32
        n_train: int = 256
        train: TrainConfig = field(default_factory=lambda: TrainConfig(
            steps=30, batch_size=32, lr=3e-3, log_every=10, device="cpu", ema_decay=0.9))

    class Net(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.f = nn.Sequential(nn.Linear(3, width), nn.SiLU(), nn.Linear(width, 2))

        def forward(self, x, t, cond=None):
            return self.f(torch.cat([x, t[:, None].to(x.dtype)], dim=1))  # [B, 3] -> [B, 2]

    class ToyModel(Denoiser):
        def __init__(self, width: int):
            super().__init__(Net(width), CosineVP(), "eps")

    class ToyTask:
        name = "toy"
        headline_metric = ("mean_err", "min")
        extra = "toy"

        def config(self, preset: str):
            from shared.config import preset as pick

            return pick({"tiny": ToyConfig(), "default": ToyConfig(width=64),
                         "gpu": ToyConfig(width=128)}, preset)

        def load_data(self, cfg):
            g = torch.Generator().manual_seed(123)
            x = torch.randn(cfg.n_train, 2, generator=g) * 0.3 + torch.tensor([1.0, -1.0])
            return Splits(train=x, val=x[:64], test=x[:64])

        def build(self, cfg):
            torch.manual_seed(cfg.train.seed)
            return ToyModel(cfg.width)

        def train(self, cfg, model, data, trainer):
            def loss_fn(m, x0, g):
                t = torch.rand(x0.shape[0], generator=g, device=g.device).clamp(1e-3, 1 - 1e-3)
                eps = torch.randn(x0.shape, generator=g, device=g.device)
                a, s = model.process.alpha(t).float(), model.process.sigma(t).float()
                xt = a[:, None] * x0 + s[:, None] * eps
                return ((m.raw(xt, t) - eps) ** 2).mean(1)

            trainer.fit(model, loss_fn, data.train)
            return trainer.sampling_model

        def generate(self, model, n, *, solver, grid, guidance=None, generator=None, data=None):
            x = prior((n, 2), process=model.process, generator=generator)
            with torch.no_grad():
                return sample(model, x, grid, solver, generator=generator)

        def evaluate(self, samples, data):
            ref = data.test
            return {"mean_err": float((samples.mean(0) - ref.mean(0)).norm()),
                    "std_err": float((samples.std(0) - ref.std(0)).norm())}

        def save(self, model, cfg, path):
            save_checkpoint(path, {"model": model}, cfg, meta={"domain": self.name})

        def load(self, path):
            ck = load_checkpoint(path)
            cfg = from_dict(ToyConfig, ck.config)
            m = ToyModel(cfg.width)
            load_into(ck, {"model": m})
            return m, cfg

        def plot(self, samples, data, path):
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(3, 3))
            ax.scatter(samples[:, 0], samples[:, 1], s=3)
            fig.savefig(path)
            plt.close(fig)

    return ToyTask, ToyConfig


@pytest.fixture
def toy_task():
    """Register the fake 'toy' domain for the duration of a test; yields the task class."""
    from shared import registry

    ToyTask, _ = _toy_classes()
    registry.register("toy", ToyTask)
    try:
        yield ToyTask
    finally:
        registry.unregister("toy")


@pytest.fixture
def toy_config_cls():
    return _toy_classes()[1]


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("molecules")``: the module ``benchmarks/molecules.py``, loaded from its path."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", root / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
