"""Config dataclasses: dotted overrides, strict dicts, files, hashes, presets."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from shared.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    config_hash,
    field_paths,
    from_dict,
    load_config,
    preset,
    save_config,
    to_dict,
)


@dataclass(frozen=True)
class Model:
    width: int = 8
    dims: tuple[int, ...] = (1, 2)
    act: Literal["silu", "gelu"] = "silu"
    dropout: Optional[float] = None
    size: tuple[int, int] = (32, 16)


@dataclass(frozen=True)
class Cfg:
    name: str = "x"
    model: Model = field(default_factory=Model)
    train: TrainConfig = field(default_factory=TrainConfig)


def test_overrides_parse_against_annotations():
    c = Cfg()
    c2 = apply_overrides(c, ["train.lr=3e-4", "train.steps=1e3", "model.dims=3,4,5", "model.act=gelu",
                             "model.dropout=0.1", "train.ema_warmup=false", "train.compile=true",
                             "--name=run one"])
    assert c2.train.lr == 3e-4 and isinstance(c2.train.lr, float)
    assert c2.train.steps == 1000 and isinstance(c2.train.steps, int)
    assert c2.model.dims == (3, 4, 5) and c2.model.act == "gelu" and c2.model.dropout == 0.1
    assert c2.train.ema_warmup is False and c2.train.compile is True and c2.name == "run one"
    assert c == Cfg(), "the original config must not change"
    # bool | int: an integer stays an int (steps of warm-up), 'true' stays a bool
    assert apply_overrides(c, ["train.ema_warmup=100"]).train.ema_warmup == 100
    assert apply_overrides(c, ["train.ema_warmup=true"]).train.ema_warmup is True
    assert apply_overrides(c, ["model.dropout=none"]).model.dropout is None
    assert apply_overrides(c, {"train.lr": 1}).train.lr == 1.0
    # fixed-length tuples: each item parsed against its own type, the length checked
    assert apply_overrides(c, ["model.size=64,8"]).model.size == (64, 8)
    assert from_dict(Cfg, to_dict(apply_overrides(c, ["model.size=[4, 2]"]))).model.size == (4, 2)
    with pytest.raises(ConfigError, match="model.size"):
        apply_overrides(c, ["model.size=1,2,3"])
    with pytest.raises(ConfigError, match=r"model.size\[1\]"):
        apply_overrides(c, ["model.size=1,x"])


@pytest.mark.parametrize("item, key", [
    ("train.lr=abc", "train.lr"),
    ("train.steps=1.5", "train.steps"),
    ("train.compile=maybe", "train.compile"),
    ("model.act=relu", "model.act"),
    ("model.width=true", "model.width"),
    ("train.lr_schedule=linear", "train.lr_schedule"),
])
def test_wrong_types_rejected_naming_key(item, key):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Cfg(), [item])
    assert key in str(e.value)


@pytest.mark.parametrize("item, key", [("train.lrr=1", "train.lrr"), ("modell.width=2", "modell.width"),
                                       ("model.width.x=2", "model.width.x")])
def test_unknown_keys_rejected_listing_valid_keys(item, key):
    with pytest.raises(ConfigError) as e:
        apply_overrides(Cfg(), [item])
    msg = str(e.value)
    assert key in msg and "train.lr" in msg and "model.width" in msg


def test_malformed_override_and_section_override():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Cfg(), ["train.lr"])
    with pytest.raises(ConfigError, match="train.steps"):
        apply_overrides(Cfg(), ["train=3"])


def test_train_config_validation_names_field():
    with pytest.raises(ConfigError, match="train.batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="train.ema_decay"):
        apply_overrides(Cfg(), ["train.ema_decay=1.5"])


def test_dict_roundtrip_and_strictness():
    c = apply_overrides(Cfg(), ["model.dims=7", "train.seed=3"])
    d = to_dict(c)
    assert d["model"]["dims"] == [7]
    assert from_dict(Cfg, d) == c
    with pytest.raises(ConfigError, match="train.bogus"):
        from_dict(Cfg, {"train": {"bogus": 1}})
    with pytest.raises(ConfigError, match="model.width"):
        from_dict(Cfg, {"model": {"width": "wide"}})
    assert "train.num_workers" in field_paths(Cfg)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_files_roundtrip(tmp_path, suffix):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    c = apply_overrides(Cfg(), ["train.lr=1e-3", "model.dropout=0.2"])
    p = save_config(c, tmp_path / f"c{suffix}")
    assert load_config(Cfg, p) == c
    (tmp_path / f"bad{suffix}").write_text('{"train": {"lr": "fast"}}')
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(Cfg, tmp_path / f"bad{suffix}")
    with pytest.raises(ConfigError, match=".json"):
        save_config(c, tmp_path / "c.txt")


def test_hash_is_stable_and_sensitive():
    a, b = Cfg(), Cfg()
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(apply_overrides(a, ["train.seed=1"]))
    assert len(config_hash(a)) == 16


def test_preset_lookup():
    mod = types.SimpleNamespace(__name__="toy.configs", tiny=lambda: Cfg(name="tiny"),
                                default=lambda: Cfg(name="default"), gpu=lambda: Cfg(name="gpu"))
    assert preset(mod, "tiny").name == "tiny"
    assert preset({"a": Cfg(name="a")}, "a").name == "a"
    with pytest.raises(ConfigError) as e:
        preset(mod, "huge")
    assert "tiny, default, gpu" in str(e.value) and "huge" in str(e.value)
