"""Quality metrics for generated cells and a drawing of cells (operations on edges)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

from .data import EDGES, is_valid, parse_arch

__all__ = ["validity", "uniqueness", "novelty", "plot_cells"]


def validity(ops: Tensor) -> float:
    """Fraction of valid cells among type indices ``[N, 8]``."""
    if ops.shape[0] == 0:
        return 0.0
    return float(is_valid(ops).float().mean())


def uniqueness(archs: Sequence[str]) -> float:
    """Distinct / total among valid arch strings."""
    return len(set(archs)) / len(archs) if archs else 0.0


def novelty(archs: Iterable[str], reference: set[str] | frozenset[str]) -> float:
    """Fraction of distinct arch strings not in ``reference`` (e.g. the training split)."""
    u = set(archs)
    return len(u - set(reference)) / len(u) if u else 0.0


_COLORS = {"none": "#bbbbbb", "skip_connect": "#4c72b0", "nor_conv_1x1": "#dd8452",
           "nor_conv_3x3": "#c44e52", "avg_pool_3x3": "#55a868"}
_SHORT = {"none": "none", "skip_connect": "skip", "nor_conv_1x1": "conv1x1", "nor_conv_3x3": "conv3x3",
          "avg_pool_3x3": "pool3x3"}


def _draw(ax, arch: str, title: str | None) -> None:
    nodes = parse_arch(arch)
    ops = [op for node in nodes for op, _ in node]
    pos = {0: (0.0, 0.0), 1: (1.0, 1.0), 2: (2.0, -1.0), 3: (3.0, 0.0)}
    frac = {(2, 1): 0.3}  # where along the edge its label sits (avoids the crossing)
    for (i, j), op in zip(EDGES, ops):
        (x0, y0), (x1, y1) = pos[j], pos[i]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="-|>", color=_COLORS[op], lw=2.2 if op != "none" else 1.0,
                                    linestyle="-" if op != "none" else "--", shrinkA=12, shrinkB=12))
        f = frac.get((i, j), 0.5)
        ax.text(x0 + f * (x1 - x0), y0 + f * (y1 - y0), _SHORT[op], fontsize=7, ha="center", va="center",
                color=_COLORS[op], bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    for k, (x, y) in pos.items():
        ax.scatter([x], [y], s=420, c="white", edgecolors="black", zorder=3)
        ax.text(x, y, "in" if k == 0 else ("out" if k == 3 else str(k)), ha="center", va="center", fontsize=8,
                zorder=4)
    ax.set_xlim(-0.5, 3.5)
    ax.set_ylim(-1.5, 1.5)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)


def plot_cells(archs: Sequence[str], path: str | os.PathLike, *, titles: Sequence[str] | None = None) -> Path:
    """Draw cells (feature maps as nodes, operations on edges) into one PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not archs:
        raise ValueError("no cells to plot")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plot path must end in .png, got {path}")
    n = len(archs)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < n:
            _draw(ax, archs[k], titles[k] if titles else None)
        else:
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
