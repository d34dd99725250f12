import dataclasses
import json

import pytest
import torch

from shared import grid as G
from shared import solvers as S
from shared.config import ConfigError, apply_overrides
from shared.registry import DomainTask


def test_protocol_and_registry(task):
    from shared.registry import get_task

    assert isinstance(task, DomainTask)
    assert task.headline_metric == ("fd", "min") and task.extra == "imaging"
    assert type(get_task("imaging")).__name__ == "ImagingTask"
    for p in ("tiny", "default", "gpu", "latent"):
        assert task.config(p).train.steps > 0
    with pytest.raises(ConfigError, match="valid presets"):
        task.config("huge")


def test_end_to_end_save_load_identical(task, tiny_cfg, tiny_data, trained, tmp_path):
    model, _, _ = trained
    solver, grid = S.make("ddim"), G.make("uniform", 2, process=model.process)
    s = task.generate(model, 12, solver=solver, grid=grid, guidance=2.0, generator=torch.Generator().manual_seed(3))
    assert s.images.shape == (12, 1, 16, 16) and s.labels.tolist() == [i % 10 for i in range(12)]
    m = task.evaluate(s, tiny_data)
    assert {"fd", "precision", "recall", "class_accuracy"} <= set(m) and m["fd"] > 0
    task.save(model, tiny_cfg, tmp_path / "ck")
    model2, cfg2 = task.load(tmp_path / "ck")
    assert cfg2 == tiny_cfg
    s2 = task.generate(model2, 12, solver=solver, grid=grid, guidance=2.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s.images, s2.images)
    task.plot(s, tiny_data, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0
    # guidance as a dict with an interval and explicit labels
    s3 = task.generate(model, 3, solver=solver, grid=grid, guidance={"scale": 3.0, "interval": (0.2, 0.8), "labels": [4, 4, 4]},
                       generator=torch.Generator().manual_seed(3))
    assert s3.labels.tolist() == [4, 4, 4]


def test_latent_save_load_keeps_scale(task, trained_latent, tmp_path):
    model, _, cfg = trained_latent
    task.save(model, cfg, tmp_path / "lat")
    m2, cfg2 = task.load(tmp_path / "lat")
    assert cfg2.vae.scaling_factor == pytest.approx(float(model.latent_scale))
    assert float(m2.latent_scale) == pytest.approx(float(model.latent_scale))
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(m2.encode(x), model.encode(x))


def test_bad_inputs(task, tiny_cfg, tiny_data, trained, tmp_path):
    model, _, _ = trained
    solver, grid = S.make("ddim"), G.make("uniform", 2, process=model.process)
    with pytest.raises(ValueError, match="guidance keys"):
        task.generate(model, 2, solver=solver, grid=grid, guidance={"scal": 2})
    with pytest.raises(ValueError, match="positive"):
        task.generate(model, 0, solver=solver, grid=grid)
    with pytest.raises(ValueError, match="shape"):
        task.evaluate(torch.zeros(4, 1, 8, 8), tiny_data)
    with pytest.raises(ConfigError, match="unknown config key"):
        apply_overrides(tiny_cfg, ["unet.channels=3"])
    with pytest.raises(ValueError, match="data.path"):
        task.load_data(apply_overrides(tiny_cfg, ["data.source=folder"]))
    with pytest.raises(ValueError, match="num_classes"):
        task.load_data(apply_overrides(tiny_cfg, ["data.num_classes=5"]))
    with pytest.raises(ValueError, match="divisible"):
        task.build(apply_overrides(tiny_cfg, ["data.image_size=17"]))
    # loading a missing / non-checkpoint path fails cleanly and writes nothing
    from shared.checkpoint import CheckpointError

    with pytest.raises(CheckpointError):
        task.load(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_folder_source_and_unconditional(task, tiny_cfg, tmp_path):
    import numpy as np
    from PIL import Image

    for c in range(3):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.full((20, 20), 40 * c + i, np.uint8)).save(tmp_path / "imgs" / f"c{c}" / f"{i}.png")
    cfg = apply_overrides(tiny_cfg, {"data.source": "folder", "data.path": str(tmp_path / "imgs"),
                                     "data.val_size": 4, "data.test_size": 4, "data.train_size": 0,
                                     "data.num_classes": 3, "class_conditional": False})
    data = task.load_data(cfg)
    assert len(data.train) == 16 and data.train.shape == (1, 16, 16)
    model = task.build(cfg)
    assert model.null_class is None
    out = model.sample(None, n=2, solver=S.make("ddim"), grid=G.make("uniform", 2, process=model.process))
    assert out.shape == (2, 1, 16, 16)


def test_train_cli(tmp_path):
    from imaging.train import main

    assert main(["--preset", "tiny", "--out", str(tmp_path / "run"), "train.steps=2", "sample.eval_samples=20"]) == 0
    rep = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert "fd" in rep["metrics"] and (tmp_path / "run" / "samples.png").exists()
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--out", str(tmp_path / "r2"), "--bogus"])


def test_report_json_prints_and_writes_atomically(tmp_path, capsys):
    import json

    from imaging.metrics import report_json

    res = {"diffusion_classifier_acc": 0.5, "n_images": 4}
    out = tmp_path / "sub" / "res.json"
    report_json(res, out)
    assert json.loads(capsys.readouterr().out) == res
    assert json.loads(out.read_text()) == res and not list(out.parent.glob("*.tmp*"))
    report_json(res, None)  # stdout only
    assert json.loads(capsys.readouterr().out) == res
