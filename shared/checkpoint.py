"""Checkpoints: safetensors weights + JSON config, atomic writes, never unpickled.

A checkpoint is a directory::

    <ckpt>/model.safetensors        weights of one or several named modules, keys "<name>.<param>"
    <ckpt>/config.json              {"format_version", "diffsuite_version", "domain", "meta",
                                     "config", "modules": {name: {key: shape}}, "files": {...}}
    <ckpt>/train_state.safetensors  optional: every tensor of the train state (optimizer moments,
                                     EMA weights, RNG states) under its flattened path
    <ckpt>/train_state.json         optional: the non-tensor rest of the train state

``config.json`` is written last and records size and sha256 of every other file, so a
truncated or corrupt file is detected and named (:class:`CheckpointError`).

Atomicity: each file is written to a temporary file in the same directory, flushed,
fsync'ed and ``os.replace``'d; the directory is assembled as ``<ckpt>.tmp-XXXX`` and renamed
into place only when complete. A training run keeps ``<run>/step_00000100/`` directories plus a
``<run>/latest`` pointer file (itself replaced atomically); the previous good checkpoint is kept
until the next one is complete (see :func:`save_step_checkpoint`).

Loading never calls ``torch.load`` or ``pickle``: safetensors and JSON only. A file that looks
like a pickle or a zip archive (``torch.save`` output) is refused without being parsed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "FORMAT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "load_into",
    "latest_checkpoint",
    "list_checkpoints",
    "save_step_checkpoint",
    "step_dir_name",
    "atomic_write_bytes",
    "atomic_write_text",
    "flatten_state",
    "unflatten_state",
]

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
LATEST = "latest"
_STEP_RE = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, truncated, unsafe (pickle) or does not fit the model.
    The message names the file."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    state_dicts: module name -> state dict (CPU tensors).
    config:      the resolved config as a plain dict (``shared.config.from_dict`` rebuilds it).
    meta:        {"domain", "diffsuite_version", "format_version", "step", ... user meta}.
    train_state: the nested train state given to :func:`save_checkpoint`, or None.
    path:        the checkpoint directory that was read.
    """

    state_dicts: dict[str, dict[str, Tensor]]
    config: dict[str, Any]
    meta: dict[str, Any]
    train_state: dict[str, Any] | None
    path: Path


# --------------------------------------------------------------------------- atomic files


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + fsync + os.replace:
    readers see the old content or the new one, never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- safety checks

def _check_safetensors_bytes(data: bytes, path: Path) -> None:
    """Refuse pickles/zips and truncated files before anything parses them."""
    if _looks_like_safetensors(data):
        return
    if data[:1] == b"\x80" or data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        raise CheckpointError(
            f"{path}: refusing to load a pickle/zip file (torch.save format); diffsuite "
            "checkpoints are safetensors + JSON and are never unpickled")
    if len(data) < 9:
        raise CheckpointError(f"{path}: truncated or empty safetensors file ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    raise CheckpointError(f"{path}: truncated or corrupt safetensors file (header length {n}, "
                          f"file has {len(data)} bytes)")


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < 9:
        return False
    n = int.from_bytes(data[:8], "little")
    return 0 < n <= len(data) - 8 and data[8:9] == b"{"


def _read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    if raw[:1] == b"\x80" or raw[:4] == b"PK\x03\x04":
        raise CheckpointError(f"{path}: refusing to load a pickle/zip file; expected JSON")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated JSON ({e})") from None


def _load_safetensors(path: Path, expect: Mapping[str, Any] | None) -> dict[str, Tensor]:
    from safetensors.torch import load as st_load

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    _check_safetensors_bytes(data, path)
    if expect is not None:
        if expect.get("bytes") is not None and expect["bytes"] != len(data):
            raise CheckpointError(f"{path}: truncated or corrupt ({len(data)} bytes, expected {expect['bytes']})")
        if expect.get("sha256") and hashlib.sha256(data).hexdigest() != expect["sha256"]:
            raise CheckpointError(f"{path}: corrupt (sha256 mismatch)")
    try:
        return st_load(data)
    except Exception as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------- train-state flattening


def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, Tensor]]:
    """Split a nested structure into a JSON-able skeleton and a flat ``{path: tensor}`` dict.

    Tensors and numpy arrays become ``{"__tensor__": path}`` / ``{"__ndarray__": path}``;
    tuples ``{"__tuple__": [...]}``; dicts with non-string keys ``{"__items__": [[k, v], ...]}``.
    """
    tensors: dict[str, Tensor] = {}

    def rec(x: Any, p: str) -> Any:
        if isinstance(x, Tensor):
            tensors[p] = x.detach().to("cpu").contiguous().clone()
            return {"__tensor__": p}
        if isinstance(x, np.ndarray):
            tensors[p] = torch.from_numpy(np.ascontiguousarray(x).copy())
            return {"__ndarray__": p}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, Mapping):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: rec(v, f"{p}/{k}" if p else k) for k, v in x.items()}
            return {"__items__": [[rec(k, f"{p}/k{i}"), rec(v, f"{p}/{i}")] for i, (k, v) in enumerate(x.items())]}
        if isinstance(x, tuple):
            return {"__tuple__": [rec(v, f"{p}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [rec(v, f"{p}/{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return rec(dataclasses.asdict(x), p)
        raise CheckpointError(f"train_state entry {p!r} of type {type(x).__name__} cannot be saved "
                              "(use tensors, numbers, strings, lists, tuples, dicts)")

    return rec(obj, prefix), tensors


def unflatten_state(skeleton: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""

    def rec(x: Any) -> Any:
        if isinstance(x, dict):
            if set(x) == {"__tensor__"}:
                return tensors[x["__tensor__"]]
            if set(x) == {"__ndarray__"}:
                return tensors[x["__ndarray__"]].numpy()
            if set(x) == {"__tuple__"}:
                return tuple(rec(v) for v in x["__tuple__"])
            if set(x) == {"__items__"}:
                return {rec(k): rec(v) for k, v in x["__items__"]}
            return {k: rec(v) for k, v in x.items()}
        if isinstance(x, list):
            return [rec(v) for v in x]
        return x

    try:
        return rec(skeleton)
    except KeyError as e:
        raise CheckpointError(f"train state refers to a missing tensor {e}") from None


# --------------------------------------------------------------------------- save


def _package_version() -> str:
    try:
        import importlib.metadata as md

        return md.version("diffsuite")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def _config_to_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        from .config import to_dict

        return to_dict(config)
    if isinstance(config, Mapping):
        return json.loads(json.dumps(dict(config)))  # fail early if not JSON-able
    raise CheckpointError(f"config must be a dataclass or a dict, got {type(config).__name__}")


def _state_dict_of(obj: Any, name: str) -> dict[str, Tensor]:
    if isinstance(obj, nn.Module):
        sd = obj.state_dict()
    elif isinstance(obj, Mapping):
        sd = dict(obj)
    else:
        raise CheckpointError(f"module {name!r}: expected an nn.Module or a state dict, got {type(obj).__name__}")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            raise CheckpointError(f"module {name!r}: state entry {k!r} is not a tensor ({type(v).__name__})")
        # clone: safetensors refuses shared storage (tied weights) and non-contiguous tensors
        out[k] = v.detach().to("cpu").contiguous().clone()
    return out


def _normalise_modules(modules: Any) -> dict[str, Any]:
    if isinstance(modules, nn.Module):
        return {"model": modules}
    if isinstance(modules, Mapping):
        for n in modules:
            if not isinstance(n, str) or not n or "." in n:
                raise CheckpointError(f"module names must be non-empty strings without dots, got {n!r}")
        return dict(modules)
    raise CheckpointError(f"modules must be an nn.Module or a dict name -> nn.Module, got {type(modules).__name__}")


def save_checkpoint(path: str | os.PathLike, modules: Mapping[str, nn.Module] | nn.Module, config: Any = None,
                    *, meta: Mapping[str, Any] | None = None, train_state: Mapping[str, Any] | None = None) -> Path:
    """Write checkpoint directory ``path`` atomically (see module docstring).

    modules:     an ``nn.Module`` (saved as ``"model"``) or ``{name: nn.Module | state_dict}``.
    config:      a dataclass config or a JSON-able dict (stored resolved in ``config.json``).
    meta:        JSON-able extras, e.g. ``{"domain": "imaging", "step": 100}``.
    train_state: nested dict of tensors / numbers / strings / lists (optimizer state, EMA, RNG).

    If ``path`` already exists it is replaced only once the new directory is complete.
    Returns ``path``.
    """
    from safetensors.torch import save as st_save

    path = Path(path)
    mods = _normalise_modules(modules)
    flat: dict[str, Tensor] = {}
    shapes: dict[str, dict[str, list[int]]] = {}
    for name, m in mods.items():
        sd = _state_dict_of(m, name)
        shapes[name] = {k: list(v.shape) for k, v in sd.items()}
        for k, v in sd.items():
            flat[f"{name}.{k}"] = v
    cfg_dict = _config_to_dict(config)
    meta = dict(meta or {})
    try:
        json.dumps(meta)
    except TypeError as e:
        raise CheckpointError(f"meta must be JSON-able: {e}") from None

    files: dict[str, bytes] = {MODEL_FILE: st_save(flat, metadata={"format": "pt"})}
    if train_state is not None:
        skeleton, tensors = flatten_state(dict(train_state))
        files[STATE_TENSORS] = st_save(tensors, metadata={"format": "pt"})
        files[STATE_JSON] = (json.dumps(skeleton, indent=1) + "\n").encode()

    header = {
        "format_version": FORMAT_VERSION,
        "diffsuite_version": _package_version(),
        "domain": meta.get("domain"),
        "meta": meta,
        "config": cfg_dict,
        "config_class": (f"{type(config).__module__}:{type(config).__qualname__}"
                         if dataclasses.is_dataclass(config) else None),
        "modules": shapes,
        "files": {n: {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in files.items()},
    }
    files[CONFIG_FILE] = (json.dumps(header, indent=1) + "\n").encode()

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.tmp-", dir=path.parent))
    try:
        for name, data in files.items():  # config.json last
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if path.exists():
            old = path.parent / f"{path.name}.old-{os.getpid()}-{tmp.name.rsplit('-', 1)[-1]}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# --------------------------------------------------------------------------- run directories


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete step checkpoints in ``run_dir`` (those with a config.json), oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    out = []
    for p in run_dir.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / CONFIG_FILE).is_file():
            out.append((int(m.group(1)), p))
    return [p for _, p in sorted(out)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named by ``<run_dir>/latest``, else the newest complete ``step_*``
    directory, else ``run_dir`` itself if it is a checkpoint, else None. A training run
    directory (with a ``checkpoints/`` folder, as the Trainer writes) is searched there."""
    run_dir = Path(run_dir)
    if (run_dir / "checkpoints").is_dir() and not (run_dir / LATEST).exists() and not list_checkpoints(run_dir):
        found = latest_checkpoint(run_dir / "checkpoints")
        if found is not None:
            return found
    pointer = run_dir / LATEST
    if pointer.is_file():
        try:
            target = run_dir / pointer.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            target = None
        if target is not None and (target / CONFIG_FILE).is_file():
            return target
    steps = list_checkpoints(run_dir)
    if steps:
        return steps[-1]
    if (run_dir / CONFIG_FILE).is_file() and (run_dir / MODEL_FILE).is_file():
        return run_dir
    return None


def save_step_checkpoint(run_dir: str | os.PathLike, step: int, modules: Any, config: Any = None, *,
                         meta: Mapping[str, Any] | None = None, train_state: Mapping[str, Any] | None = None,
                         keep: int = 2) -> Path:
    """Save ``<run_dir>/step_XXXXXXXX`` atomically, then point ``<run_dir>/latest`` at it
    (atomic), then delete all but the ``keep`` newest step checkpoints. A crash at any point
    leaves the previous good checkpoint loadable."""
    run_dir = Path(run_dir)
    meta = {**(meta or {}), "step": int(step)}
    path = save_checkpoint(run_dir / step_dir_name(step), modules, config, meta=meta, train_state=train_state)
    atomic_write_text(run_dir / LATEST, path.name + "\n")
    for old in list_checkpoints(run_dir)[:-max(1, keep)]:
        if old != path:
            shutil.rmtree(old, ignore_errors=True)
    return path


# --------------------------------------------------------------------------- load


def _resolve(path: Path) -> Path:
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.is_file():
        if path.suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"):
            raise CheckpointError(f"{path}: refusing to load a pickle-based file; diffsuite checkpoints "
                                  "are directories of safetensors + JSON")
        if path.name in (MODEL_FILE, CONFIG_FILE):
            return path.parent
        raise CheckpointError(f"{path}: expected a checkpoint directory")
    if (path / CONFIG_FILE).exists() or (path / MODEL_FILE).exists():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"{path}: no checkpoint found (no {CONFIG_FILE}, no 'latest', no step_* dirs)")
    return found


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint directory (or a run directory: its latest checkpoint).

    Verifies every file against the sizes and sha256 recorded in ``config.json``; refuses
    pickles. Raises :class:`CheckpointError` naming the file on any problem."""
    path = _resolve(Path(path))
    header = _read_json(path / CONFIG_FILE)
    if not isinstance(header, dict) or "format_version" not in header:
        raise CheckpointError(f"{path / CONFIG_FILE}: not a diffsuite checkpoint header")
    if header["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path / CONFIG_FILE}: format version {header['format_version']} is newer "
                              f"than this diffsuite supports ({FORMAT_VERSION})")
    files = header.get("files", {})
    flat = _load_safetensors(path / MODEL_FILE, files.get(MODEL_FILE))
    state_dicts: dict[str, dict[str, Tensor]] = {n: {} for n in header.get("modules", {})}
    for k, v in flat.items():
        name, _, key = k.partition(".")
        state_dicts.setdefault(name, {})[key] = v
    for name, shapes in header.get("modules", {}).items():
        got = state_dicts.get(name, {})
        if set(got) != set(shapes) or any(list(got[k].shape) != s for k, s in shapes.items()):
            raise CheckpointError(f"{path / MODEL_FILE}: content does not match the module table in {CONFIG_FILE}")
    train_state = None
    if STATE_JSON in files or (path / STATE_JSON).exists():
        skeleton = _read_json(path / STATE_JSON)
        if STATE_JSON in files:
            raw = (path / STATE_JSON).read_bytes()
            if hashlib.sha256(raw).hexdigest() != files[STATE_JSON]["sha256"]:
                raise CheckpointError(f"{path / STATE_JSON}: corrupt (sha256 mismatch)")
        tensors = _load_safetensors(path / STATE_TENSORS, files.get(STATE_TENSORS))
        train_state = unflatten_state(skeleton, tensors)
    meta = dict(header.get("meta") or {})
    meta.setdefault("domain", header.get("domain"))
    meta["diffsuite_version"] = header.get("diffsuite_version")
    meta["format_version"] = header.get("format_version")
    meta.setdefault("config_class", header.get("config_class"))
    return Checkpoint(state_dicts=state_dicts, config=header.get("config") or {}, meta=meta,
                      train_state=train_state, path=path)


def load_into(path: str | os.PathLike | Checkpoint, modules: Mapping[str, nn.Module] | nn.Module,
              strict: bool = True) -> Checkpoint:
    """Load weights into ``modules`` (an ``nn.Module`` = ``{"model": m}``, or a dict by name).

    Names and shapes are checked first; with ``strict`` any missing / unexpected key or any
    missing module raises :class:`CheckpointError` listing them, and nothing is modified.
    With ``strict=False`` matching keys are loaded and the rest reported in the return value's
    ``meta["load_report"]``; shape mismatches always raise. Returns the :class:`Checkpoint`."""
    ckpt = path if isinstance(path, Checkpoint) else load_checkpoint(path)
    mods = _normalise_modules(modules)
    problems: list[str] = []
    report: dict[str, dict[str, list[str]]] = {}
    for name, m in mods.items():
        if name not in ckpt.state_dicts:
            problems.append(f"module {name!r} not in checkpoint (has: {', '.join(ckpt.state_dicts) or 'none'})")
            continue
        own = m.state_dict()
        sd = ckpt.state_dicts[name]
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        bad = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
               for k in sorted(set(own) & set(sd)) if sd[k].shape != own[k].shape]
        report[name] = {"missing": missing, "unexpected": unexpected}
        if bad:
            problems.append(f"module {name!r}: shape mismatch: " + "; ".join(bad[:10]))
        if strict and (missing or unexpected):
            problems.append(f"module {name!r}: missing keys {missing[:10]}, unexpected keys {unexpected[:10]}")
    if problems:
        raise CheckpointError(f"{ckpt.path}: does not fit the model: " + " | ".join(problems))
    for name, m in mods.items():
        sd = ckpt.state_dicts[name]
        own = m.state_dict()
        with torch.no_grad():
            m.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=strict)
    ckpt.meta["load_report"] = report
    return ckpt
