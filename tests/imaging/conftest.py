"""Shared fixtures for the imaging tests: tiny config, data, and one tiny trained model."""

import dataclasses

import pytest
import torch

# One intra-op thread: on a busy 2-core machine torch's default of 2 threads is many times slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def task():
    from imaging.task import ImagingTask

    return ImagingTask()


@pytest.fixture(scope="session")
def tiny_cfg(task):
    return task.config("tiny")


@pytest.fixture(scope="session")
def tiny_data(task, tiny_cfg):
    return task.load_data(tiny_cfg)


@pytest.fixture(scope="session")
def trained(task, tiny_cfg, tiny_data):
    """A tiny pixel model trained for a few steps (weights move away from init)."""
    from shared.training import Trainer

    model = task.build(tiny_cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(tiny_cfg.train, None, progress=False)
    model = task.train(tiny_cfg, model, tiny_data, trainer)
    return model, before, trainer


@pytest.fixture(scope="session")
def trained_latent(task, tiny_cfg, tiny_data):
    from shared.training import Trainer

    cfg = dataclasses.replace(tiny_cfg, latent=True)
    model = task.build(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model = task.train(cfg, model, tiny_data, Trainer(cfg.train, None, progress=False))
    return model, before, cfg
