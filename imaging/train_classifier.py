"""Train the metric classifier (:class:`imaging.backbones.DigitClassifier`) on the MNIST train split.

    python -m imaging.train_classifier [--steps 1500] [--out imaging/weights] [--seed 0]

Writes ``mnist_classifier.safetensors`` (weights) and ``mnist_classifier.json`` (constructor
config, the data split, validation and held-out test accuracy, training settings) atomically.
The shipped weights in ``imaging/weights/`` were produced by this script with its defaults.
Training uses only the train split of :func:`imaging.data.mnist_splits`; the test split is the
held-out reference of the image metrics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .backbones import DigitClassifier, count_params
from .data import mnist_splits

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
NAME = "mnist_classifier"


def shift_augment(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random integer translations by up to ``max_shift`` pixels (background -1 fills in)."""
    if max_shift <= 0:
        return x
    B, _, H, W = x.shape
    p = max_shift
    xp = F.pad(x, (p, p, p, p), value=-1.0)
    dx = torch.randint(0, 2 * p + 1, (B,), generator=generator, device=generator.device).tolist()
    dy = torch.randint(0, 2 * p + 1, (B,), generator=generator, device=generator.device).tolist()
    return torch.stack([xp[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])


@torch.no_grad()
def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    hits = 0
    for i in range(0, len(images), batch):
        hits += int((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
    return hits / len(images)


def train_classifier(*, steps: int = 2000, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                     max_shift: int = 2, progress: bool = True) -> tuple[DigitClassifier, dict]:
    """Train a :class:`DigitClassifier` with ``shared.training.Trainer`` (AdamW, cosine LR, EMA);
    returns the EMA model and a report dict with val/test accuracy."""
    from shared.config import TrainConfig
    from shared.training import Trainer

    train, val, test = mnist_splits()
    torch.manual_seed(seed)
    model = DigitClassifier()
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=1e-4, warmup_steps=50,
                      lr_schedule="cosine", ema_decay=0.995, seed=seed, device="cpu", log_every=50)

    def loss_fn(m, batch, g):
        x, y = batch
        return F.cross_entropy(m(shift_augment(x, max_shift, g)), y, reduction="none")

    t0 = time.perf_counter()
    trainer = Trainer(cfg, None, progress=progress)
    trainer.fit(model, loss_fn, train)
    elapsed = time.perf_counter() - t0
    best = trainer.sampling_model.eval()
    report = {
        "config": best.config(),
        "params": count_params(best),
        "data": {"source": "MNIST t10k (vendored, imaging/datasets)", "split": "imaging.data.mnist_splits()",
                 "train": len(train), "val": len(val), "test": len(test)},
        "val_accuracy": accuracy(best, val.images, val.labels),
        "test_accuracy": accuracy(best, test.images, test.labels),
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "max_shift": max_shift,
                  "ema_decay": cfg.ema_decay, "seconds": round(elapsed, 1)},
        "produced_by": "python -m imaging.train_classifier",
    }
    return best, report


def save_classifier(model: DigitClassifier, report: dict, out_dir: str | Path = WEIGHTS_DIR,
                    name: str = NAME) -> Path:
    """Write ``<name>.safetensors`` + ``<name>.json`` atomically; returns the weights path."""
    from safetensors.torch import save

    from shared.checkpoint import atomic_write_bytes, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out / f"{name}.safetensors", save(sd, metadata={"format": "pt"}))
    atomic_write_text(out / f"{name}.json", json.dumps(report, indent=1) + "\n")
    return out / f"{name}.safetensors"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(WEIGHTS_DIR))
    a = ap.parse_args(argv)
    model, report = train_classifier(steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed)
    path = save_classifier(model, report, a.out)
    print(json.dumps({k: report[k] for k in ("val_accuracy", "test_accuracy", "params")}), "->", path)


if __name__ == "__main__":
    main()
