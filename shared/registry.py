"""The domain contract (:class:`DomainTask`), data splits, and discovery of installed domains.

Domains register through entry points (``[project.entry-points."diffsuite.domains"]`` in
pyproject.toml), so the kernel never imports a domain package by name. A domain whose module
fails to import (e.g. its pip extra is missing) is reported as unavailable with the reason;
it does not break discovery of the others.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import re
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # keep `import shared.registry` free of torch / accelerate
    from torch import nn

    from .training import Trainer

__all__ = [
    "DomainTask",
    "Splits",
    "DomainStatus",
    "DomainNotFound",
    "DomainUnavailable",
    "ENTRY_POINT_GROUP",
    "discover",
    "available_domains",
    "get_task",
    "register",
    "unregister",
]

ENTRY_POINT_GROUP = "diffsuite.domains"


@dataclass
class Splits:
    """A domain's data: ``train``/``val``/``test`` in the domain's own format (a Dataset, a
    tensor, a gluonts dataset, a list of PyG ``Data`` ...) and ``extra`` for anything else the
    domain needs (class names, normalisation statistics, reference sets for metrics)."""

    train: Any
    val: Any = None
    test: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class DomainTask(Protocol):
    """What every domain's ``task.py`` provides (one class, instantiated without arguments).

    ``generate`` receives a kernel solver (``shared.solvers.make(name)``) and a grid (1-D
    decreasing tensor of times in [0, 1] ending at 0, ``shared.grid.make(name, steps,
    process=model.process)``); all randomness comes from ``generator``.
    """

    name: str
    headline_metric: tuple[str, Literal["min", "max"]]
    extra: str  # pip extra name, e.g. "imaging"

    def config(self, preset: str) -> Any: ...  # frozen dataclass with a `.train: TrainConfig`

    def load_data(self, cfg: Any) -> Splits: ...

    def build(self, cfg: Any) -> nn.Module: ...  # exposes .process and .space

    def train(self, cfg: Any, model: nn.Module, data: Splits, trainer: Trainer) -> nn.Module: ...

    def generate(self, model: nn.Module, n: int, *, solver: Any, grid: Any, guidance: Any = None,
                 generator: Any = None, data: Splits | None = None) -> Any: ...

    def evaluate(self, samples: Any, data: Splits) -> dict[str, float]: ...

    def save(self, model: nn.Module, cfg: Any, path: Any) -> None: ...

    def load(self, path: Any) -> tuple[nn.Module, Any]: ...

    def plot(self, samples: Any, data: Splits, path: Any) -> None: ...  # one PNG of samples


class DomainNotFound(LookupError):
    """No domain of that name is registered. The message lists the valid names."""


class DomainUnavailable(ImportError):
    """The domain is registered but cannot be imported (missing packages or a bug)."""


@dataclass(frozen=True)
class DomainStatus:
    """Discovery result for one domain.

    status: 'ok' or 'unavailable'. missing: top-level packages that failed to import
    (``ModuleNotFoundError``), to be installed with ``pip install -e '.[<extra>]'``.
    reason: one-line error for unavailable domains.
    """

    name: str
    target: str
    status: Literal["ok", "unavailable"]
    missing: tuple[str, ...] = ()
    reason: str = ""
    extra: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        if self.ok:
            return "ok"
        if self.missing:
            hint = f" (pip install -e '.[{self.extra or self.name}]')"
            return "missing packages: " + ", ".join(self.missing) + hint
        return "unavailable: " + self.reason


# Tasks registered by hand (tests, notebooks, plug-ins without packaging).
_MANUAL: dict[str, Any] = {}
_CACHE: dict[str, tuple[DomainStatus, Any]] = {}


def register(name: str, task_or_factory: Any) -> None:
    """Register a task (instance, class or zero-argument factory) under ``name``, overriding
    an entry point of the same name. Meant for tests and experiments."""
    _MANUAL[name] = task_or_factory
    _CACHE.pop(name, None)


def unregister(name: str) -> None:
    _MANUAL.pop(name, None)
    _CACHE.pop(name, None)


def _entry_points() -> dict[str, Any]:
    eps = md.entry_points()
    sel = eps.select(group=ENTRY_POINT_GROUP) if hasattr(eps, "select") else eps.get(ENTRY_POINT_GROUP, [])
    return {ep.name: ep for ep in sel}


def _instantiate(obj: Any) -> Any:
    return obj() if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "generate")) else obj


def _load(name: str) -> tuple[DomainStatus, Any]:
    if name in _CACHE:
        return _CACHE[name]
    if name in _MANUAL:
        obj = _MANUAL[name]
        target = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"
        try:
            task = _instantiate(obj)
        except Exception as e:
            res = (DomainStatus(name, target, "unavailable", reason=f"{type(e).__name__}: {e}"), None)
        else:
            res = (DomainStatus(name, target, "ok", extra=getattr(task, "extra", name)), task)
        _CACHE[name] = res
        return res
    eps = _entry_points()
    if name not in eps:
        raise DomainNotFound(f"unknown domain {name!r}; valid domains: {', '.join(_names()) or '(none)'}")
    ep = eps[name]
    try:
        task = _instantiate(ep.load())
    except ModuleNotFoundError as e:
        missing = e.name.split(".")[0] if e.name else _missing_from_message(str(e))
        own = ep.value.split(":")[0].split(".")[0]
        if missing == own:
            # the domain package itself (or one of its modules) is not there yet
            res = (DomainStatus(name, ep.value, "unavailable", reason=f"ModuleNotFoundError: {e}", extra=name), None)
        else:
            res = (DomainStatus(name, ep.value, "unavailable", missing=(missing,),
                                reason=f"ModuleNotFoundError: {e}", extra=name), None)
    except Exception as e:  # a bug in the domain: report it, do not break the others
        last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        where = f" ({last.filename}:{last.lineno})" if last else ""
        res = (DomainStatus(name, ep.value, "unavailable", reason=f"{type(e).__name__}: {e}{where}", extra=name), None)
    else:
        res = (DomainStatus(name, ep.value, "ok", extra=getattr(task, "extra", name)), task)
    _CACHE[name] = res
    return res


def _missing_from_message(msg: str) -> str:
    m = re.search(r"No module named '([^']+)'", msg)
    return m.group(1).split(".")[0] if m else "?"


def _names() -> list[str]:
    return sorted(set(_entry_points()) | set(_MANUAL))


def discover(refresh: bool = False) -> dict[str, DomainStatus]:
    """Import every registered domain (once; ``refresh=True`` retries) and return its status."""
    if refresh:
        _CACHE.clear()
        importlib.invalidate_caches()
    return {n: _load(n)[0] for n in _names()}


def available_domains(refresh: bool = False) -> dict[str, DomainStatus]:
    """name -> :class:`DomainStatus` for all registered domains (``.ok``, ``.missing``,
    ``.describe()``), importable or not."""
    return discover(refresh)


def get_task(name: str) -> DomainTask:
    """The task instance of domain ``name``.

    Raises :class:`DomainNotFound` (lists valid names) for an unknown name and
    :class:`DomainUnavailable` (says what is missing) when it cannot be imported."""
    status, task = _load(name)
    if task is None:
        raise DomainUnavailable(f"domain {name!r} is not available: {status.describe()}")
    return task


def domain_names(only_ok: bool = False) -> list[str]:
    """Registered domain names (sorted); ``only_ok`` keeps only importable ones."""
    if only_ok:
        return [n for n, s in discover().items() if s.ok]
    return _names()

