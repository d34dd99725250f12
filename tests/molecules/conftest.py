"""Shared fixtures of the molecules tests."""

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """The ``tiny`` preset trained for its few steps on the real QM9 sample:
    ``(task, cfg, data, model, run_dir)``."""
    from shared.training import Trainer

    from molecules.task import MoleculesTask

    torch.set_num_threads(1)
    task = MoleculesTask()
    cfg = task.config("tiny")
    data = task.load_data(cfg)
    out = tmp_path_factory.mktemp("run")
    model = task.train(cfg, task.build(cfg), data, Trainer(cfg.train, out, progress=False))
    return task, cfg, data, model, out
