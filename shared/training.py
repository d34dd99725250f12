"""One trainer for every domain, built on ``accelerate``.

``Trainer(config, out_dir).fit(model, loss_fn, data)`` runs ``config.steps`` optimizer steps of
AdamW with LR warm-up + cosine/constant schedule, gradient clipping, gradient accumulation,
mixed precision (autocast through accelerate), an EMA copy with power warm-up, a tqdm bar,
``metrics.csv`` (+ TensorBoard when installed), step checkpoints (``shared.checkpoint``) and
exact resume. Multi-GPU / multi-node: run the same script under ``accelerate launch``.

Contract of ``loss_fn(model, batch, generator) -> Tensor``: a per-sample loss ``[B]`` or a
scalar (the mean is taken). ``model`` is the plain module you passed (``torch.compile``d when
``config.compile``), so its own methods (``model.raw(x, t)``) can be called; under DDP the whole
loss call is the wrapped forward, so gradients are synchronised correctly. ``generator`` is a ``torch.Generator`` on the training device owned
by the trainer; take every random draw of the loss from it (``torch.randn(..., generator=g,
device=g.device)``). It is re-seeded before every micro-step from ``(seed, process rank, step,
micro-step)``, so noise draws do not depend on history and resume is exact without storing it.

Data and exact resume:

* ``data`` a ``torch.utils.data.Dataset`` or a ``Tensor`` (anything with ``__len__`` and
  ``__getitem__`` that is not a DataLoader): the trainer draws the indices itself. The sample
  stream is the concatenation of per-epoch permutations ``randperm(N, seed=(seed, epoch))``;
  optimizer step ``s`` consumes stream positions ``[s*B, (s+1)*B)`` with ``B =
  config.batch_size`` the GLOBAL batch. That block is cut into ``grad_accum`` micro-batches and
  each micro-batch into ``num_processes`` equal shards (rank ``r`` takes shard ``r``), so one
  process and N processes see exactly the same global batch, and the position after resume is a
  pure function of the step. Batches are built with ``collate_fn`` (default
  ``torch.utils.data.default_collate``; a Tensor is indexed directly).
* ``data`` a ``DataLoader``: it is passed through ``accelerator.prepare`` (sharded across
  processes; its own ``batch_size`` is the per-process micro-batch) and cycled. On resume the
  ``step * grad_accum`` consumed batches are skipped, which reproduces the order when the
  loader shuffles with its own seeded ``generator=``.
* any other iterable: cycled (``iter()`` again when exhausted), consumed batches skipped on
  resume; not sharded (use a Dataset or DataLoader for several processes).

Global RNG states (python, numpy, torch, CUDA) of every rank are saved in checkpoints and
restored on resume, so models using dropout resume exactly too.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import (
    CheckpointError,
    atomic_write_text,
    list_checkpoints,
    load_checkpoint,
    load_into,
    save_step_checkpoint,
)
from .config import ConfigError, TrainConfig, to_dict

__all__ = ["Trainer", "LossFn", "lr_at", "ema_decay_at", "move_to_device", "derive_seed", "seed_all"]

LossFn = Callable[[nn.Module, Any, torch.Generator], Tensor]
Callback = Callable[["Trainer", dict], None]

METRIC_COLUMNS = ("step", "loss", "loss_avg", "lr", "grad_norm", "samples_per_s", "elapsed_s")


# --------------------------------------------------------------------------- small pure helpers


class _TimeBudget:
    """``TrainConfig.max_seconds`` inside one ``fit``: the time progress of the LR schedule
    (counted from the end of warm-up) and the stop decision. Under several processes the
    elapsed time is the maximum over processes, so all of them stop at the same step."""

    def __init__(self, cfg: TrainConfig, acc: Any = None) -> None:
        self.cfg, self.acc = cfg, acc
        self.t0 = time.perf_counter()
        self.t_warm: float | None = None
        self.elapsed = 0.0

    def _now(self) -> float:
        e = time.perf_counter() - self.t0
        if self.acc is not None:
            e = float(self.acc.reduce(torch.tensor(e, device=self.acc.device), "max"))
        return e

    def progress(self, step: int) -> float:
        if self.cfg.max_seconds <= 0:
            return 0.0
        self.elapsed = self._now()
        if step < self.cfg.warmup_steps:
            return 0.0
        if self.t_warm is None:
            self.t_warm = self.elapsed
        return min(1.0, (self.elapsed - self.t_warm) / max(self.cfg.max_seconds - self.t_warm, 1e-9))

    def spent(self) -> bool:
        if self.cfg.max_seconds <= 0:
            return False
        self.elapsed = self._now()
        return self.elapsed >= self.cfg.max_seconds


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy SeedSequence), for independent streams."""
    ss = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts] + [len(parts)])
    lo, hi = (int(v) for v in ss.generate_state(2, dtype=np.uint32))
    return (lo | (hi << 32)) & (2**63 - 1)


def seed_all(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators with ``seed``: what
    :meth:`Trainer.fit` does at the start of a fresh run, and what a caller does before building
    the model, so that its weights do not depend on earlier work in the process."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def lr_at(step: int, cfg: TrainConfig, time_progress: float = 0.0) -> float:
    """LR of the update that makes step ``step + 1`` (0-based ``step``): linear warm-up over
    ``warmup_steps`` updates, then constant or cosine decay to 0 at ``cfg.steps``.

    ``time_progress`` (in [0, 1], used with ``cfg.max_seconds``): the fraction of the post-warm-up
    time budget already spent; the cosine follows whichever progress is further along."""
    f = 1.0
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        f = (step + 1) / cfg.warmup_steps
    elif cfg.lr_schedule == "cosine":
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, max((step - cfg.warmup_steps) / span, time_progress))
        f = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * f


def ema_decay_at(step: int, cfg: TrainConfig) -> float:
    """EMA decay used after optimizer step ``step`` (1-based). 0 means "copy the weights".

    ema_warmup False: ``ema_decay``. True: ``min(ema_decay, 1 - (1 + k) ** -ema_power)`` with
    ``k = step - 1`` EMA updates so far (diffusers ``EMAModel`` with ``use_ema_warmup``,
    ``inv_gamma=1``). int N: copy for ``step <= N``, then the power warm-up with ``k = step - N - 1``.
    """
    w = cfg.ema_warmup
    if w is False:
        return cfg.ema_decay
    start = 0 if w is True else int(w)
    if step <= start:
        return 0.0
    k = step - start - 1
    return min(cfg.ema_decay, 1.0 - (1.0 + k) ** (-cfg.ema_power))


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors (nested in dicts/lists/tuples) and objects with ``.to`` (PyG batches)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to_device(v, device) for k, v in batch.items()}) if not hasattr(batch, "to") \
            else batch.to(device)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    if hasattr(batch, "to") and callable(batch.to):
        try:
            return batch.to(device)
        except TypeError:
            return batch
    return batch


def _rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: Mapping[str, Any]) -> None:
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = st["numpy"]
    np.random.set_state(tuple(np_state))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(list(st["cuda"]))
        except Exception as e:  # pragma: no cover - different GPU count
            warnings.warn(f"could not restore CUDA RNG state: {e}")


# --------------------------------------------------------------------------- data streams


def _is_indexable_dataset(data: Any) -> bool:
    from torch.utils.data import DataLoader, IterableDataset

    if isinstance(data, (DataLoader, IterableDataset)):
        return False
    return hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, Mapping))


class _IndexStream:
    """Batches drawn by the trainer from an indexable dataset; pure function of the step."""

    def __init__(self, data: Any, batch_size: int, grad_accum: int, world: int, rank: int, seed: int,
                 collate_fn: Callable | None):
        n = len(data)
        if n == 0:
            raise ValueError("training data is empty")
        if batch_size % (grad_accum * world):
            raise ConfigError(f"train.batch_size={batch_size} must be divisible by grad_accum * num_processes "
                              f"= {grad_accum} * {world}")
        self.data, self.n, self.B, self.A, self.W, self.r, self.seed = data, n, batch_size, grad_accum, world, rank, seed
        self.micro = batch_size // (grad_accum * world)
        self.collate = collate_fn
        self._perm: tuple[int, Tensor] | None = None

    def _perm_for(self, epoch: int) -> Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, 0xDA7A, epoch))
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def indices(self, step: int, micro: int) -> Tensor:
        start = step * self.B + micro * self.W * self.micro + self.r * self.micro
        pos = torch.arange(start, start + self.micro)
        out = torch.empty(self.micro, dtype=torch.long)
        epochs = pos // self.n
        for e in epochs.unique().tolist():
            m = epochs == e
            out[m] = self._perm_for(e)[pos[m] % self.n]
        return out

    def batch(self, step: int, micro: int) -> Any:
        idx = self.indices(step, micro)
        d = self.data
        if isinstance(d, Tensor) and self.collate is None:
            return d[idx]
        items = d.__getitems__(idx.tolist()) if hasattr(d, "__getitems__") else [d[i] for i in idx.tolist()]
        if self.collate is not None:
            return self.collate(items)
        from torch.utils.data import default_collate

        return default_collate(items)


class _CycleStream:
    """Batches from a DataLoader / iterable, cycled; resume skips consumed batches."""

    def __init__(self, data: Iterable, skip: int):
        self.data = data
        self.it: Iterator | None = None
        self.epoch = 0
        for _ in range(skip):
            self._next()

    def _next(self) -> Any:
        if self.it is None:
            if hasattr(self.data, "set_epoch"):
                self.data.set_epoch(self.epoch)
            self.it = iter(self.data)
        try:
            return next(self.it)
        except StopIteration:
            if iter(self.data) is self.data:
                raise RuntimeError("the training data iterator is exhausted; pass a re-iterable "
                                   "(Dataset, DataLoader, list) so it can be cycled") from None
            self.epoch += 1
            self.it = None
            return self._next()

    def batch(self, step: int, micro: int) -> Any:
        return self._next()


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Train a model with ``loss_fn`` on ``data`` for ``config.steps`` steps (see module doc).

    Args:
        config:         :class:`shared.config.TrainConfig`.
        out_dir:        run directory: ``metrics.csv``, ``tb/`` (if TensorBoard is installed) and
                        ``checkpoints/step_XXXXXXXX`` + ``checkpoints/latest``. None: nothing
                        is written and resume is off.
        config_to_save: the full (domain) config stored in checkpoints; default ``config``.
        meta:           JSON-able extras stored in checkpoints (e.g. ``{"domain": "graphs"}``).
        progress:       show a tqdm bar; None = only when stderr is a TTY (main process).

    Attributes after ``fit``: ``model`` (unwrapped), ``ema_model`` (EMA copy in eval mode, or
    None when ``ema_decay == 0``), ``sampling_model`` (EMA if any, else model), ``history``
    (list of dicts, one per logged step: step, loss, loss_avg, lr, grad_norm, samples_per_s,
    elapsed_s), ``step`` (optimizer steps done), ``generator``, ``accelerator``.
    """

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike | None = None, *,
                 config_to_save: Any = None, meta: Mapping[str, Any] | None = None,
                 progress: bool | None = None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"Trainer needs a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.config_to_save = config_to_save if config_to_save is not None else config
        self.meta = dict(meta or {})
        self.progress = progress
        self.history: list[dict[str, Any]] = []
        self.step = 0
        self.model: nn.Module | None = None
        self.ema_model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.resumed_from: Path | None = None
        self._stop = False
        self.accelerator = self._make_accelerator(config)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(derive_seed(config.seed, self.process_index))

    # ---- accelerate plumbing

    @staticmethod
    def _make_accelerator(cfg: TrainConfig):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device='cuda' but no CUDA device is available (use 'auto' or 'cpu')")
        cpu = cfg.device == "cpu"
        mp = cfg.mixed_precision
        if mp == "fp16" and (cpu or not torch.cuda.is_available()):
            raise ConfigError("train.mixed_precision='fp16' needs a CUDA device (use 'bf16' or 'no' on CPU)")
        st = AcceleratorState._shared_state
        if st and (str(st.get("_mixed_precision", mp)) != mp or bool(st.get("_cpu", cpu)) != cpu
                   or (cpu and st.get("device") is not None and st["device"].type != "cpu")):
            # A previous Trainer in this process used other settings; accelerate keeps one global
            # state, so reset it (the process group of a distributed launch is kept).
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            AcceleratorState._reset_state(reset_partial_state=not dist)
        acc = Accelerator(cpu=cpu, mixed_precision=mp, step_scheduler_with_optimizer=False)
        acc.state._cpu = cpu  # remembered for the check above
        return acc

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def process_index(self) -> int:
        return self.accelerator.process_index

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.out_dir / "checkpoints" if self.out_dir is not None else None

    @property
    def sampling_model(self) -> nn.Module | None:
        """The EMA copy when EMA is enabled, else the trained model."""
        return self.ema_model if self.ema_model is not None else self.model

    def ema_state_dict(self) -> dict[str, Tensor] | None:
        return None if self.ema_model is None else self.ema_model.state_dict()

    # ---- main loop

    def fit(self, model: nn.Module, loss_fn: LossFn, data: Any, *, resume: bool = True,
            callbacks: Sequence[Callback] = (), collate_fn: Callable | None = None) -> nn.Module:
        """Train ``model`` and return it (unwrapped, on the training device).

        Args:
            loss_fn:    ``loss_fn(model, batch, generator) -> Tensor`` ([B] or scalar).
            data:       Dataset / Tensor (trainer draws indices), DataLoader, or iterable.
            resume:     continue from ``out_dir/checkpoints`` when a checkpoint is there.
            callbacks:  ``cb(trainer, record)`` after every optimizer step on every process;
                        ``record`` = {"step", "loss", "lr", "grad_norm"}.
            collate_fn: builds a batch from a list of items (Dataset input only).

        Raises ``FloatingPointError`` naming the step when the loss is NaN/inf.
        """
        cfg, acc = self.config, self.accelerator
        model = model.to(self.device)
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.ema_decay > 0:
            self.ema_model = copy.deepcopy(model).eval().requires_grad_(False)

        start = 0
        if resume and self.checkpoint_dir is not None:
            start = self._resume(model, optimizer)
        else:
            seed_all(cfg.seed)
        self.step = start
        self._stop = False

        # DDP must see the whole loss as its forward, so the loss is wrapped in a module and
        # loss_fn receives the plain (optionally compiled) model: `model.raw(...)` etc. work.
        train_model = _LossModule(torch.compile(model) if cfg.compile else model, loss_fn)
        train_model, optimizer = acc.prepare(train_model, optimizer)
        self.optimizer = optimizer

        if _is_indexable_dataset(data):
            stream: Any = _IndexStream(data, cfg.batch_size, cfg.grad_accum, self.num_processes,
                                       self.process_index, cfg.seed, collate_fn)
        else:
            from torch.utils.data import DataLoader

            if isinstance(data, DataLoader):
                data = acc.prepare(data)
            stream = _CycleStream(data, skip=start * cfg.grad_accum)

        log = _MetricsLog(self.out_dir, start, enabled=self.is_main_process and self.out_dir is not None)
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, disable=not (show and self.is_main_process),
                   desc="train", dynamic_ncols=True, leave=False)
        t0 = time.perf_counter()
        t_log, samples_since, loss_sum, loss_n = t0, 0, 0.0, 0
        budget = _TimeBudget(cfg, acc if self.num_processes > 1 else None)
        train_model.train()
        try:
            for step in range(start, cfg.steps):
                lr = lr_at(step, cfg, budget.progress(step))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_acc = torch.zeros((), device=self.device)
                n_samples = 0
                for micro in range(cfg.grad_accum):
                    batch = move_to_device(stream.batch(step, micro), self.device)
                    self.generator.manual_seed(derive_seed(cfg.seed, self.process_index, step, micro))
                    last = micro == cfg.grad_accum - 1
                    ctx = acc.no_sync(train_model) if (not last and self.num_processes > 1) else _nullcontext()
                    with ctx:
                        with acc.autocast():
                            loss = train_model(batch, self.generator)
                        if not isinstance(loss, Tensor):
                            raise TypeError(f"loss_fn must return a Tensor, got {type(loss).__name__}")
                        loss = loss.float()
                        if loss.ndim > 0:
                            n_samples += loss.shape[0]
                            loss = loss.mean()
                        else:
                            n_samples += _batch_len(batch)
                        acc.backward(loss / cfg.grad_accum)
                    loss_acc += loss.detach() / cfg.grad_accum
                loss_val = float(acc.reduce(loss_acc, "mean")) if self.num_processes > 1 else float(loss_acc)
                if not math.isfinite(loss_val):
                    raise FloatingPointError(f"loss is {loss_val} at step {step + 1} (no update applied)")
                grad_norm = None
                if cfg.grad_clip > 0:
                    gn = acc.clip_grad_norm_(train_model.parameters(), cfg.grad_clip)
                    grad_norm = float(gn) if gn is not None else None
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                self.step = step + 1
                if self.ema_model is not None:
                    self._ema_update(self.step)

                samples_since += n_samples * self.num_processes
                loss_sum += loss_val
                loss_n += 1
                record = {"step": self.step, "loss": loss_val, "lr": lr, "grad_norm": grad_norm}
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    rec = {**record, "loss_avg": loss_sum / loss_n,
                           "samples_per_s": samples_since / max(now - t_log, 1e-9), "elapsed_s": now - t0}
                    self.history.append(rec)
                    log.write(rec)
                    bar.set_postfix(loss=f"{loss_val:.4g}", sps=f"{rec['samples_per_s']:.1f}")
                    t_log, samples_since, loss_sum, loss_n = now, 0, 0.0, 0
                bar.update(1)
                for cb in callbacks:
                    cb(self, record)
                if self._stop or budget.spent():
                    break
                if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step != cfg.steps):
                    self.save(self.step)
            if cfg.max_seconds > 0 and budget.elapsed >= cfg.max_seconds and self.step < cfg.warmup_steps:
                warnings.warn(f"train.max_seconds={cfg.max_seconds:g} ran out at step {self.step}, inside the "
                              f"{cfg.warmup_steps}-step LR warm-up: the LR never reached its peak; use fewer "
                              "warm-up steps for this budget")
            if self.checkpoint_dir is not None and (self.step > start or not list_checkpoints(self.checkpoint_dir)):
                self.save(self.step)
        finally:
            bar.close()
            log.close()
        acc.wait_for_everyone()
        return model

    def request_stop(self) -> None:
        """Stop after the current step (a final checkpoint is still written). Call it from a
        callback; under several processes every process must make the same decision."""
        self._stop = True

    # ---- EMA

    @torch.no_grad()
    def _ema_update(self, step: int) -> None:
        decay = ema_decay_at(step, self.config)
        src = self.model
        ema_p = [p for p in self.ema_model.parameters()]
        mod_p = [p.detach() for p in src.parameters()]
        if decay == 0.0:
            torch._foreach_copy_(ema_p, mod_p)
        else:
            torch._foreach_lerp_(ema_p, mod_p, 1.0 - decay)
        for b_ema, b in zip(self.ema_model.buffers(), src.buffers()):
            b_ema.copy_(b)

    # ---- checkpoints

    def _modules(self) -> dict[str, nn.Module]:
        mods = {"model": self.model}
        if self.ema_model is not None:
            mods["ema"] = self.ema_model
        return mods

    def save(self, step: int | None = None) -> Path | None:
        """Write a step checkpoint now (collective: call on every process). Returns its path
        on the main process."""
        if self.checkpoint_dir is None:
            return None
        step = self.step if step is None else step
        acc = self.accelerator
        acc.wait_for_everyone()
        rng = [_rng_state()]
        if self.num_processes > 1:
            from accelerate.utils import gather_object

            rng = gather_object(rng)
        path = None
        if self.is_main_process:
            train_state = {
                "step": step,
                "world_size": self.num_processes,
                "optimizer": self.optimizer.state_dict(),
                "rng": {f"rank{i}": st for i, st in enumerate(rng)},
                "history": self.history,
                "train_config": to_dict(self.config),
            }
            meta = {**self.meta, "step": step}
            path = save_step_checkpoint(self.checkpoint_dir, step, self._modules(), self.config_to_save,
                                        meta=meta, train_state=train_state, keep=self.config.keep_checkpoints)
        acc.wait_for_everyone()
        return path

    def _resume(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
        candidates = list_checkpoints(self.checkpoint_dir)
        from .checkpoint import latest_checkpoint

        latest = latest_checkpoint(self.checkpoint_dir) if candidates else None
        order = ([latest] if latest is not None else []) + [c for c in reversed(candidates) if c != latest]
        for path in order:
            try:
                ckpt = load_checkpoint(path)
                if ckpt.train_state is None:
                    raise CheckpointError(f"{path}: has no train state")
                load_into(ckpt, {"model": model} | ({"ema": self.ema_model} if self.ema_model is not None else {}))
            except CheckpointError as e:
                warnings.warn(f"cannot resume from {path}: {e}; trying an older checkpoint")
                continue
            ts = ckpt.train_state
            optimizer.load_state_dict(ts["optimizer"])
            key = f"rank{self.process_index}"
            if ts.get("world_size") == self.num_processes and key in ts["rng"]:
                _set_rng_state(ts["rng"][key])
            else:
                warnings.warn("resuming with a different number of processes: global RNG states not restored")
            self.history = [dict(h) for h in ts.get("history", [])]
            self.resumed_from = path
            return int(ts["step"])
        if order:
            raise CheckpointError(f"{self.checkpoint_dir}: no loadable checkpoint (tried {', '.join(p.name for p in order)})")
        torch.manual_seed(self.config.seed)
        np.random.seed(self.config.seed % 2**32)
        random.seed(self.config.seed)
        return 0


def _batch_len(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.ndim else 1
    if isinstance(batch, Mapping):
        for v in batch.values():
            return _batch_len(v)
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_len(batch[0])
    n = getattr(batch, "num_graphs", None)
    return int(n) if n is not None else 1


class _LossModule(nn.Module):
    """``forward(batch, generator) = loss_fn(model, batch, generator)`` (what DDP wraps)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any, generator: torch.Generator) -> Tensor:
        return self.loss_fn(self.model, batch, generator)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


class _MetricsLog:
    """metrics.csv (truncated to the resume step, then appended) + optional TensorBoard."""

    def __init__(self, out_dir: Path | None, start_step: int, enabled: bool):
        self.f = None
        self.tb = None
        if not enabled or out_dir is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "metrics.csv"
        if start_step > 0 and path.exists():
            rows = list(csv.DictReader(io.StringIO(path.read_text())))
            keep = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
            w.writeheader()
            w.writerows({k: r.get(k, "") for k in METRIC_COLUMNS} for r in keep)
            atomic_write_text(path, buf.getvalue())
        else:
            atomic_write_text(path, ",".join(METRIC_COLUMNS) + "\n")
        self.f = open(path, "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=METRIC_COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tb"))
        except Exception:  # tensorboard not installed
            self.tb = None

    def write(self, rec: Mapping[str, Any]) -> None:
        if self.f is None:
            return
        self.w.writerow({k: ("" if rec.get(k) is None else rec.get(k)) for k in METRIC_COLUMNS})
        self.f.flush()
        if self.tb is not None:
            for k in ("loss", "loss_avg", "lr", "grad_norm", "samples_per_s"):
                if rec.get(k) is not None:
                    self.tb.add_scalar(f"train/{k}", rec[k], rec["step"])

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
