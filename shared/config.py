"""Frozen-dataclass configs, presets, dotted overrides, JSON/YAML files.

Conventions
-----------
* Every config is a ``@dataclass(frozen=True)``; nested configs are fields whose type is
  another dataclass (a domain config has a ``train: TrainConfig`` field).
* Each domain's ``configs.py`` defines ``tiny()``, ``default()`` and ``gpu()`` returning its
  frozen config; :func:`preset` picks one by name.
* Overrides are ``"dotted.key=value"`` strings; values are parsed against the field's type
  annotation (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``Optional``/unions,
  ``tuple[...]``/``list[...]``, nested dataclasses via their leaves only).
* Files are JSON (``.json``) or YAML (``.yaml``/``.yml``, needs ``pyyaml``).

Nothing here imports torch, so ``import shared.config`` is cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

__all__ = [
    "ConfigError",
    "TrainConfig",
    "PRESET_NAMES",
    "to_dict",
    "from_dict",
    "apply_overrides",
    "parse_override",
    "save_config",
    "load_config",
    "config_hash",
    "preset",
    "field_paths",
]

C = TypeVar("C")

#: The preset names every domain provides.
PRESET_NAMES: tuple[str, ...] = ("tiny", "default", "gpu")


class ConfigError(ValueError):
    """A config value, key, file or preset is invalid. The message names the offending key."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :class:`shared.training.Trainer`.

    steps:            optimizer steps in total.
    batch_size:       GLOBAL samples per optimizer step (summed over processes and
                      gradient-accumulation micro-steps) when the trainer batches a Dataset
                      itself; must be divisible by ``num_processes * grad_accum``.
    lr:               peak learning rate of AdamW.
    weight_decay:     AdamW decoupled weight decay.
    warmup_steps:     linear LR warm-up from 0 to ``lr`` over this many steps.
    lr_schedule:      'cosine' (decay to 0 at ``steps``) or 'constant' after warm-up.
    grad_clip:        max global grad norm; ``0`` disables clipping.
    ema_decay:        EMA decay ceiling; ``0`` disables EMA.
    ema_warmup:       False: constant ``ema_decay``. True: power warm-up as in diffusers'
                      ``EMAModel`` (``decay_k = min(ema_decay, 1 - (1 + k) ** -ema_power)``,
                      ``k`` = EMA updates so far). An int ``N > 0``: the EMA copies the model
                      for the first N steps, then power warm-up.
    ema_power:        exponent of the power warm-up (2/3 as diffusers' default; 3/4 is
                      common for short runs).
    mixed_precision:  'no', 'bf16' or 'fp16' (autocast through accelerate).
    grad_accum:       micro-steps per optimizer step.
    checkpoint_every: save a checkpoint every N steps (0: only at the end).
    keep_checkpoints: how many step checkpoints to keep (>= 1; older ones are deleted).
    log_every:        write a metrics row every N steps.
    seed:             seeds parameters' init (where the domain uses it), data order and noise.
    device:           'auto' (CUDA when present), 'cpu' or 'cuda'.
    compile:          wrap the model in ``torch.compile``.
    num_workers:      DataLoader workers for domains that build a DataLoader.
    max_seconds:      wall-clock budget of one ``fit`` call (0: none). Training stops after the
                      step that spends it, or at ``steps``, whichever comes first; after warm-up
                      the cosine schedule follows the larger of step and time progress, so it
                      still decays to 0 when the time runs out first. For fixed-time runs (GPU
                      benchmarks); the stopping step depends on the machine, so results do too.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: Literal["cosine", "constant"] = "constant"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: Union[bool, int] = True
    ema_power: float = 2.0 / 3.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    grad_accum: int = 1
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    num_workers: int = 0
    max_seconds: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            ("steps", self.steps >= 0, "must be >= 0"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("lr", self.lr >= 0 and math.isfinite(self.lr), "must be a finite number >= 0"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("warmup_steps", self.warmup_steps >= 0, "must be >= 0"),
            ("grad_clip", self.grad_clip >= 0, "must be >= 0 (0 disables)"),
            ("ema_decay", 0.0 <= self.ema_decay < 1.0, "must be in [0, 1) (0 disables EMA)"),
            ("ema_warmup", isinstance(self.ema_warmup, bool) or self.ema_warmup >= 0,
             "must be a bool or a step count >= 0"),
            ("grad_accum", self.grad_accum >= 1, "must be >= 1"),
            ("checkpoint_every", self.checkpoint_every >= 0, "must be >= 0 (0: only at the end)"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, "must be >= 1"),
            ("log_every", self.log_every >= 1, "must be >= 1"),
            ("num_workers", self.num_workers >= 0, "must be >= 0"),
            ("max_seconds", self.max_seconds >= 0 and math.isfinite(self.max_seconds),
             "must be a finite number of seconds >= 0 (0: no time budget)"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"train.{name}={getattr(self, name)!r} {why}")
        for name, allowed in (("lr_schedule", ("cosine", "constant")),
                              ("mixed_precision", ("no", "bf16", "fp16")),
                              ("device", ("auto", "cpu", "cuda"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"train.{name}={getattr(self, name)!r} is not one of {list(allowed)}")


# --------------------------------------------------------------------------- type helpers


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - unresolvable forward refs: fall back to raw strings
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    if tp is Any:
        return "Any"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(value: Any, tp: Any, key: str, *, from_string: bool) -> Any:
    """Check ``value`` against annotation ``tp`` and convert it (strings parsed if from_string)."""
    if tp is Any or tp is object:
        return _parse_literal_string(value) if from_string and isinstance(value, str) else value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")

    if origin is Literal:
        for a in args:
            try:
                v = _coerce(value, type(a), key, from_string=from_string)
            except ConfigError:
                continue
            if v == a and type(v) is type(a):
                return a
        raise bad
    if origin in (Union, types.UnionType):
        if value is None or (from_string and isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        # bool before int: "true" must not become 1, and 1 must not become True.
        ordered = sorted((a for a in args if a is not type(None)), key=lambda a: a is not bool)
        for a in ordered:
            try:
                return _coerce(value, a, key, from_string=from_string)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if value is None or (from_string and isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_string and isinstance(value, str):
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer() and not from_string:
            return int(value)
        if from_string and isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:  # "1e3" is accepted as an int when it is integral
                    f = float(value)
                except ValueError:
                    raise bad from None
                if f.is_integer():
                    return int(f)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if from_string and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin in (tuple, list, Sequence, typing.Sequence) or tp in (tuple, list):
        if from_string and isinstance(value, str):
            s = value.strip()
            if s.startswith("["):
                try:
                    value = json.loads(s)
                except json.JSONDecodeError:
                    raise bad from None
            else:
                value = [p.strip() for p in s.split(",") if p.strip()] if s else []
        if not isinstance(value, (list, tuple)):
            raise bad
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}: {value!r}")
            items = [_coerce(v, a, f"{key}[{i}]", from_string=from_string) for i, (v, a) in enumerate(zip(value, args))]
        else:
            elem = args[0] if args else Any
            items = [_coerce(v, elem, f"{key}[{i}]", from_string=from_string) for i, v in enumerate(value)]
        return list(items) if origin is list or tp is list else tuple(items)
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        if from_string and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise bad from None
        if not isinstance(value, Mapping):
            raise bad
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, key, from_string=False): _coerce(v, vt, f"{key}.{k}", from_string=from_string)
                for k, v in value.items()}
    if _is_dataclass_type(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _from_dict(tp, value, prefix=key + ".")
        raise bad
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise bad
    return value  # unknown annotation kind (e.g. a Protocol): accept as is


def _parse_literal_string(s: str) -> Any:
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        return s


# --------------------------------------------------------------------------- dict <-> config


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a (frozen) dataclass config; tuples become lists (JSON-ready)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise ConfigError(f"to_dict expects a dataclass instance, got {type(cfg).__name__}")

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def _from_dict(cls: type, d: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {d!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in d if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s} for {cls.__name__}; valid keys: "
            + ", ".join(prefix + n for n in names))
    kwargs = {k: _coerce(v, hints.get(k, Any), prefix + k, from_string=False) for k, v in d.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # missing required fields
        raise ConfigError(f"{prefix or cls.__name__ + ': '}{e}") from None


def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
    """Build dataclass ``cls`` from a nested dict. Strict: an unknown key raises
    :class:`ConfigError` naming the dotted key; values are type-checked against annotations
    (ints are accepted for floats, lists for tuples). Missing keys take the field defaults."""
    if not _is_dataclass_type(cls):
        raise ConfigError(f"from_dict expects a dataclass type, got {cls!r}")
    return _from_dict(cls, d, prefix="")


def field_paths(cfg_or_cls: Any, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a config (nested dataclasses expanded)."""
    cls = cfg_or_cls if isinstance(cfg_or_cls, type) else type(cfg_or_cls)
    hints = _hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name, Any)
        if _is_dataclass_type(tp):
            out += field_paths(tp, prefix + f.name + ".")
        else:
            out.append(prefix + f.name)
    return out


# --------------------------------------------------------------------------- overrides


def parse_override(item: str) -> tuple[str, str]:
    """Split ``"a.b=value"`` (a leading ``--`` is allowed) into ``("a.b", "value")``."""
    s = item[2:] if item.startswith("--") else item
    if "=" not in s or not s.split("=", 1)[0].strip():
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.lr=3e-4)")
    k, v = s.split("=", 1)
    return k.strip(), v


def apply_overrides(cfg: C, overrides: Sequence[str] | Mapping[str, Any]) -> C:
    """Return a new config with dotted overrides applied.

    ``overrides`` is a list of ``"train.lr=3e-4"`` strings (values parsed against the field's
    annotation) or a mapping ``{"train.lr": 3e-4}`` (values type-checked). An unknown key or a
    value of the wrong type raises :class:`ConfigError` naming the dotted key and listing the
    valid keys. ``cfg`` itself is not changed.
    """
    if isinstance(overrides, Mapping):
        items = [(k, v, False) for k, v in overrides.items()]
    elif isinstance(overrides, str):
        raise ConfigError("apply_overrides expects a list of 'key=value' strings, not one string")
    else:
        items = [(*parse_override(o), True) for o in overrides]
    for key, value, from_string in items:
        cfg = _set_path(cfg, key, value, from_string=from_string, root=cfg)
    return cfg


def _set_path(cfg: Any, key: str, value: Any, *, from_string: bool, root: Any) -> Any:
    parts = key.split(".")
    obj = cfg
    chain = []
    for i, p in enumerate(parts):
        if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(field_paths(root))}")
        names = {f.name for f in dataclasses.fields(obj)}
        if p not in names:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(field_paths(root))}")
        chain.append((obj, p))
        obj = getattr(obj, p)
    parent, leaf = chain[-1]
    tp = _hints(type(parent)).get(leaf, Any)
    if _is_dataclass_type(tp) and from_string:
        raise ConfigError(f"{key} is a section, set its leaves instead: "
                          + ", ".join(field_paths(tp, key + ".")))
    new_val = _coerce(value, tp, key, from_string=from_string)
    # rebuild the frozen chain bottom-up
    for obj_, name in reversed(chain):
        try:
            new_val = dataclasses.replace(obj_, **{name: new_val})
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None
    return new_val


# --------------------------------------------------------------------------- files


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _yaml():
    try:
        import yaml  # type: ignore
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("YAML config files need pyyaml: pip install pyyaml (or use .json)") from None
    return yaml


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as JSON (``.json``) or YAML (``.yaml``/``.yml``), atomically."""
    path = Path(path)
    d = to_dict(cfg)
    if path.suffix in (".yaml", ".yml"):
        text = _yaml().safe_dump(d, sort_keys=False)
    elif path.suffix == ".json":
        text = json.dumps(d, indent=2) + "\n"
    else:
        raise ConfigError(f"{path}: config files must end in .json, .yaml or .yml")
    _atomic_write_text(path, text)
    return path


def load_config(cls: type[C], path: str | os.PathLike) -> C:
    """Read a JSON/YAML file written by :func:`save_config` (or by hand) into ``cls`` (strict)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            d = _yaml().safe_load(text)
        else:
            d = json.loads(text)
    except Exception as e:
        raise ConfigError(f"{path}: not valid {'YAML' if path.suffix != '.json' else 'JSON'}: {e}") from None
    if not isinstance(d, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return from_dict(cls, d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def config_hash(cfg: Any, length: int = 16) -> str:
    """Stable hex digest of a config's content (and class name): sorted-key JSON, sha256."""
    payload = {"class": type(cfg).__qualname__, "config": to_dict(cfg)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


# --------------------------------------------------------------------------- presets


def preset(module_or_mapping: Any, name: str) -> Any:
    """Return preset ``name`` from a domain's ``configs`` module (functions ``tiny``,
    ``default``, ``gpu``, plus any names listed in its ``PRESETS``) or from a mapping of
    name -> config or zero-argument callable. Unknown name -> :class:`ConfigError` listing
    the valid names."""
    if isinstance(module_or_mapping, Mapping):
        table = dict(module_or_mapping)
    else:
        names = list(PRESET_NAMES) + [n for n in getattr(module_or_mapping, "PRESETS", ()) if n not in PRESET_NAMES]
        table = {n: getattr(module_or_mapping, n) for n in names if callable(getattr(module_or_mapping, n, None))}
    if name not in table:
        where = getattr(module_or_mapping, "__name__", "presets")
        raise ConfigError(f"unknown preset {name!r} in {where}; valid presets: {', '.join(table) or '(none)'}")
    p = table[name]
    return p() if callable(p) and not dataclasses.is_dataclass(p) else p
