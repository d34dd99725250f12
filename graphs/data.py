"""NAS-Bench-201 cells as graphs: the DiffusionNAG encoding, conversions, validity, lookup.

A NAS-Bench-201 cell has 4 feature maps and 6 edges ``j -> i`` (``j < i``), each carrying one of
five operations. DiffusionNAG (An et al., ICLR 2024) puts the operations on nodes: 8 nodes in the
fixed order ::

    [input, e(1<-0), e(2<-0), e(2<-1), e(3<-0), e(3<-1), e(3<-2), output]

one-hot over the 7 types :data:`OPS`, with a fixed DAG adjacency :data:`ADJACENCY` (an operation
node feeds every operation that reads its output feature map). The arch string is
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` in the same edge order.

Representations and shapes:

* arch string ``str``;
* operation indices ``ops: LongTensor [8]`` (values in ``range(7)``);
* one-hot ``x: [8, 7]`` (float), batched ``[B, 8, 7]`` — what the diffusion model sees
  (mapped to ``{-1, +1}`` by :func:`to_signed`);
* PyG ``Data(x=[8, 7], edge_index=[2, 10], arch=str)``.

Conversions round-trip all 15,625 cells (see the tests). Unknown operations and malformed
strings raise :class:`ArchError` naming the problem.

:class:`NB201Lookup` is the benchmark oracle: every query of a *new* architecture counts as one
trained architecture, per dataset.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

__all__ = [
    "OPS",
    "EDGE_OPS",
    "N_NODES",
    "N_TYPES",
    "ADJACENCY",
    "EDGE_INDEX",
    "DATASETS",
    "ArchError",
    "parse_arch",
    "arch_to_ops",
    "ops_to_arch",
    "ops_to_onehot",
    "onehot_to_ops",
    "arch_to_onehot",
    "onehot_to_arch",
    "to_signed",
    "from_signed",
    "to_pyg",
    "from_pyg",
    "is_valid",
    "validity_errors",
    "decode",
    "NB201Lookup",
    "load_nb201",
    "load_split_permutation",
    "NB201Table",
    "expected_best_of_random",
]

#: node types, in DiffusionNAG's one-hot order
OPS: tuple[str, ...] = ("input", "output", "none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                        "avg_pool_3x3")
#: the five operations an edge of the cell may carry
EDGE_OPS: tuple[str, ...] = OPS[2:]
N_NODES = 8
N_TYPES = len(OPS)
INPUT, OUTPUT = 0, 1
#: (to, from) feature-map pairs of the 6 edges, in node order 1..6
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def _adjacency() -> Tensor:
    """``[8, 8]`` 0/1 matrix, ``A[u, v] = 1`` for a directed edge ``u -> v`` between nodes."""
    A = torch.zeros(N_NODES, N_NODES, dtype=torch.long)
    # node k (1..6) is the edge (i <- j) = EDGES[k-1]; it reads feature map j and writes map i.
    writes = {k + 1: e[0] for k, e in enumerate(EDGES)}
    reads = {k + 1: e[1] for k, e in enumerate(EDGES)}
    for k in range(1, 7):
        if reads[k] == 0:
            A[0, k] = 1  # the input node produces feature map 0
        for m in range(1, 7):
            if reads[m] == writes[k]:
                A[k, m] = 1
        if writes[k] == 3:
            A[k, N_NODES - 1] = 1  # feature map 3 is the cell output
    return A


#: fixed DAG adjacency ``[8, 8]`` (``A[u, v] = 1``: u -> v)
ADJACENCY: Tensor = _adjacency()
#: the same as a PyG ``edge_index`` ``[2, 10]`` (source row, target row)
EDGE_INDEX: Tensor = ADJACENCY.nonzero().t().contiguous()
_EDGE_KEYS: Tensor = torch.sort(EDGE_INDEX[0] * N_NODES + EDGE_INDEX[1]).values

#: benchmark datasets: short name -> CSV column
DATASETS: dict[str, str] = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16": "ImageNetTestAccuracy200Epochs",
}


class ArchError(ValueError):
    """A malformed architecture string, unknown operation or invalid graph."""


# ------------------------------------------------------------------------------ conversions


def parse_arch(arch: str) -> list[list[tuple[str, int]]]:
    """Parse ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` into ``[[(op, j)], [...], [...]]``.

    Raises :class:`ArchError` on anything that is not exactly this NAS-Bench-201 form."""
    if not isinstance(arch, str):
        raise ArchError(f"arch must be a string, got {type(arch).__name__}")
    parts = arch.strip().split("+")
    if len(parts) != 3:
        raise ArchError(f"arch {arch!r}: expected 3 '+'-separated nodes, got {len(parts)}")
    out = []
    for i, part in enumerate(parts, start=1):
        if not (part.startswith("|") and part.endswith("|")) or len(part) < 3:
            raise ArchError(f"arch {arch!r}: node {i} part {part!r} must look like '|op~j|...|'")
        items = part[1:-1].split("|")
        if len(items) != i:
            raise ArchError(f"arch {arch!r}: node {i} must have {i} inputs, got {len(items)}")
        node = []
        for j, item in enumerate(items):
            if item.count("~") != 1:
                raise ArchError(f"arch {arch!r}: edge {item!r} must be 'op~j'")
            op, src = item.split("~")
            if op not in EDGE_OPS:
                raise ArchError(f"arch {arch!r}: unknown operation {op!r}; valid: {', '.join(EDGE_OPS)}")
            if src != str(j):
                raise ArchError(f"arch {arch!r}: edge {item!r} of node {i} must read node {j}")
            node.append((op, j))
        out.append(node)
    return out


def arch_to_ops(arch: str) -> Tensor:
    """Arch string -> node type indices ``LongTensor [8]`` (input, 6 edge ops, output)."""
    nodes = parse_arch(arch)
    ops = [INPUT] + [OPS.index(op) for node in nodes for op, _ in node] + [OUTPUT]
    return torch.tensor(ops, dtype=torch.long)


def ops_to_arch(ops: Sequence[int] | Tensor) -> str:
    """Node type indices ``[8]`` -> arch string. Raises :class:`ArchError` if invalid."""
    ops = torch.as_tensor(ops, dtype=torch.long).flatten().tolist()
    if len(ops) != N_NODES:
        raise ArchError(f"invalid cell: must have {N_NODES} nodes, got {len(ops)}")
    errs = _errors_of(ops)
    if errs:
        raise ArchError("invalid cell: " + "; ".join(errs))
    n = [OPS[k] for k in ops[1:7]]
    return f"|{n[0]}~0|+|{n[1]}~0|{n[2]}~1|+|{n[3]}~0|{n[4]}~1|{n[5]}~2|"


def ops_to_onehot(ops: Tensor) -> Tensor:
    """``[..., 8]`` type indices -> one-hot ``[..., 8, 7]`` float32."""
    ops = torch.as_tensor(ops, dtype=torch.long)
    if ops.shape[-1] != N_NODES or (ops < 0).any() or (ops >= N_TYPES).any():
        raise ArchError(f"ops must be [..., {N_NODES}] with values in 0..{N_TYPES - 1}, got shape "
                        f"{tuple(ops.shape)}")
    return torch.nn.functional.one_hot(ops, N_TYPES).float()


def onehot_to_ops(x: Tensor) -> Tensor:
    """Strict inverse of :func:`ops_to_onehot`: ``[..., 8, 7]`` with exactly one 1 per row.

    Raises :class:`ArchError` for rows that are not one-hot (use :func:`decode` for the
    continuous output of a diffusion model)."""
    x = torch.as_tensor(x)
    if x.shape[-2:] != (N_NODES, N_TYPES):
        raise ArchError(f"one-hot cells must be [..., {N_NODES}, {N_TYPES}], got {tuple(x.shape)}")
    binary = ((x == 0) | (x == 1)).all(-1)
    single = (x == 1).sum(-1) == 1
    if not (binary & single).all():
        raise ArchError("not a one-hot cell: every node needs exactly one type set to 1")
    return x.argmax(-1)


def arch_to_onehot(arch: str) -> Tensor:
    """Arch string -> one-hot ``[8, 7]``."""
    return ops_to_onehot(arch_to_ops(arch))


def onehot_to_arch(x: Tensor) -> str:
    """One-hot ``[8, 7]`` -> arch string (strict; raises :class:`ArchError`)."""
    return ops_to_arch(onehot_to_ops(x))


def to_signed(onehot: Tensor) -> Tensor:
    """One-hot ``{0, 1}`` -> ``{-1, +1}`` (the diffusion model's data space), same shape."""
    return 2.0 * onehot - 1.0


def from_signed(x: Tensor) -> Tensor:
    """Inverse of :func:`to_signed` (continuous, no rounding)."""
    return 0.5 * (x + 1.0)


def decode(x: Tensor) -> Tensor:
    """Continuous cells ``[B, 8, 7]`` (signed or one-hot scale) -> type indices ``[B, 8]`` by
    argmax over types. The result may be invalid: check it with :func:`is_valid`."""
    if x.ndim != 3 or x.shape[1:] != (N_NODES, N_TYPES):
        raise ArchError(f"cells must be [B, {N_NODES}, {N_TYPES}], got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ArchError("cells contain NaN or inf")
    return x.argmax(-1)


def validity_errors(ops_or_onehot: Tensor) -> list[str]:
    """Reasons why a cell is invalid (empty list = valid).

    Accepts type indices ``[8]`` or a one-hot ``[8, 7]`` (which must have exactly one type per
    node). Rules: one type per node, node 0 is ``input``, node 7 is ``output``, no other node
    is ``input`` or ``output``."""
    x = torch.as_tensor(ops_or_onehot)
    if x.ndim == 2:
        if tuple(x.shape) != (N_NODES, N_TYPES):
            return [f"one-hot cell must be [{N_NODES}, {N_TYPES}], got {tuple(x.shape)}"]
        ok = (((x == 0) | (x == 1)).all(-1) & ((x == 1).sum(-1) == 1)).tolist()
        bad = [i for i in range(N_NODES) if not ok[i]]
        if bad:
            return [f"node {i} does not have exactly one type" for i in bad]
        x = x.argmax(-1)
    if x.ndim != 1 or x.numel() != N_NODES:
        return [f"cell must have {N_NODES} nodes, got shape {tuple(x.shape)}"]
    return _errors_of(x.long().tolist())


def _errors_of(ops: list[int]) -> list[str]:
    if any(k < 0 or k >= N_TYPES for k in ops):
        return [f"type indices must be in 0..{N_TYPES - 1}"]
    errs = []
    if ops[0] != INPUT:
        errs.append(f"node 0 must be input, is {OPS[ops[0]]}")
    if ops[-1] != OUTPUT:
        errs.append(f"node {N_NODES - 1} must be output, is {OPS[ops[-1]]}")
    for i in range(1, N_NODES - 1):
        if ops[i] in (INPUT, OUTPUT):
            errs.append(f"node {i} is {OPS[ops[i]]} (only node 0 / node {N_NODES - 1} may be)")
    return errs


def is_valid(ops: Tensor) -> Tensor:
    """Vectorised validity of type indices ``[B, 8]`` -> bool ``[B]``."""
    ops = torch.as_tensor(ops, dtype=torch.long)
    if ops.ndim != 2 or ops.shape[1] != N_NODES:
        raise ArchError(f"ops must be [B, {N_NODES}], got {tuple(ops.shape)}")
    mid = ops[:, 1:-1]
    return (ops[:, 0] == INPUT) & (ops[:, -1] == OUTPUT) & (mid >= 2).all(1) & (mid < N_TYPES).all(1)


def to_pyg(arch_or_ops: str | Tensor, y: float | None = None):
    """Arch string or type indices ``[8]`` -> ``torch_geometric.data.Data`` with
    ``x: [8, 7]`` one-hot, ``edge_index: [2, 10]`` (fixed DAG), ``arch: str`` and optional
    ``y: [1]``."""
    from torch_geometric.data import Data

    if isinstance(arch_or_ops, str):
        ops = arch_to_ops(arch_or_ops)
        arch = arch_or_ops
    else:
        ops = torch.as_tensor(arch_or_ops, dtype=torch.long)
        arch = ops_to_arch(ops)
    d = Data(x=ops_to_onehot(ops), edge_index=EDGE_INDEX.clone(), arch=arch)
    if y is not None:
        d.y = torch.tensor([float(y)])
    return d


def from_pyg(data) -> str:
    """PyG ``Data`` with one-hot ``x: [8, 7]`` and the fixed ``edge_index`` -> arch string.
    Raises :class:`ArchError` if the edges are not the NAS-Bench-201 DAG."""
    ei = data.edge_index
    if ei is None or ei.shape != EDGE_INDEX.shape or not torch.equal(
            torch.sort(ei[0] * N_NODES + ei[1]).values, _EDGE_KEYS):
        raise ArchError("edge_index is not the fixed NAS-Bench-201 cell DAG")
    return onehot_to_arch(data.x)


# ------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class NB201Table:
    """All cells of the benchmark: ``archs`` (15,625 strings in benchmark order),
    ``ops: LongTensor [15625, 8]`` and ``acc[dataset]: FloatTensor [15625]`` (200-epoch test
    accuracy in %)."""

    archs: tuple[str, ...]
    ops: Tensor
    acc: dict[str, Tensor] = field(repr=False)

    def index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.archs)}


def _open_text(path: Path) -> io.TextIOBase:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return io.StringIO(raw.decode("utf-8"))


def _datasets_dir():
    return resources.files("graphs") / "datasets"


def load_nb201(path: str | os.PathLike | None = None) -> NB201Table:
    """Read the NAS-Bench-201 accuracy table (CSV, gzip ok) with columns
    ``CIFAR10TestAccuracy200Epochs, CIFAR100TestAccuracy200Epochs,
    ImageNetTestAccuracy200Epochs, ArchitectureString``. Default: the vendored copy."""
    if path is None:
        with resources.as_file(_datasets_dir() / "nb201_200ep_test_acc.csv.gz") as p:
            return load_nb201(p)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"NAS-Bench-201 table not found: {path}")
    reader = csv.DictReader(_open_text(path))
    need = list(DATASETS.values()) + ["ArchitectureString"]
    missing = [c for c in need if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; has {reader.fieldnames}")
    archs, accs = [], {k: [] for k in DATASETS}
    for row_no, row in enumerate(reader, start=2):
        archs.append(row["ArchitectureString"])
        for k, col in DATASETS.items():
            try:
                accs[k].append(float(row[col]))
            except ValueError:
                raise ValueError(f"{path}:{row_no}: column {col} is not a number: {row[col]!r}") from None
    if len(set(archs)) != len(archs):
        raise ValueError(f"{path}: duplicate architecture strings")
    ops = torch.stack([arch_to_ops(a) for a in archs])
    return NB201Table(tuple(archs), ops, {k: torch.tensor(v, dtype=torch.float32) for k, v in accs.items()})


def load_split_permutation(path: str | os.PathLike | None = None, n: int = 15625) -> Tensor:
    """DiffusionNAG's split permutation ``LongTensor [15625]`` (train = first 15,000 indices,
    test = last 625). Default: the vendored copy."""
    if path is None:
        with resources.as_file(_datasets_dir() / "diffusionnag_split_permutation.txt") as p:
            return load_split_permutation(p, n)
    text = _open_text(Path(path)).read().split()
    try:
        perm = torch.tensor([int(v) for v in text], dtype=torch.long)
    except ValueError:
        raise ValueError(f"{path}: not a list of integers") from None
    if perm.numel() != n or not torch.equal(perm.sort().values, torch.arange(n)):
        raise ValueError(f"{path}: not a permutation of 0..{n - 1}")
    return perm


class NB201Lookup:
    """The benchmark oracle: ``lookup(arch, dataset) -> accuracy (%)``.

    Every query of an architecture not queried before on that dataset counts as one trained
    architecture (``count(dataset)``); repeated queries are free (the result is cached, as a
    NAS run would keep its trained models). ``history(dataset)`` lists the queries in order.
    """

    def __init__(self, table: NB201Table):
        self.table = table
        self._index = table.index()
        self._seen: dict[str, dict[str, float]] = {k: {} for k in DATASETS}

    def _check_ds(self, dataset: str) -> None:
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")

    def lookup(self, arch: str | Tensor, dataset: str) -> float:
        """Accuracy of ``arch`` (string or type indices ``[8]``) on ``dataset``; counts once."""
        self._check_ds(dataset)
        if not isinstance(arch, str):
            arch = ops_to_arch(arch)
        if arch not in self._index:
            parse_arch(arch)  # raises a precise error for malformed strings
            raise ArchError(f"arch {arch!r} is not in the benchmark table")
        seen = self._seen[dataset]
        if arch not in seen:
            seen[arch] = float(self.table.acc[dataset][self._index[arch]])
        return seen[arch]

    def lookup_many(self, archs: Iterable[str], dataset: str) -> list[float]:
        return [self.lookup(a, dataset) for a in archs]

    def count(self, dataset: str) -> int:
        """Distinct architectures trained (looked up) on ``dataset`` so far."""
        self._check_ds(dataset)
        return len(self._seen[dataset])

    def history(self, dataset: str) -> list[tuple[str, float]]:
        self._check_ds(dataset)
        return list(self._seen[dataset].items())

    def optimum(self, dataset: str) -> float:
        """Best accuracy in the whole benchmark (for reports; not a lookup)."""
        self._check_ds(dataset)
        return float(self.table.acc[dataset].max())


def expected_best_of_random(acc: Tensor, k: int) -> float:
    """Exact expected maximum of ``k`` draws without replacement from ``acc [N]``: the i-th
    smallest value (1-based) is the maximum with probability ``C(i-1, k-1) / C(N, k)``."""
    a = torch.sort(acc.double()).values
    n = a.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    i = torch.arange(k, n + 1, dtype=torch.float64)
    log_c = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    logw = torch.lgamma(i) - torch.lgamma(i - k + 1) - math.lgamma(k) - log_c
    return float((torch.exp(logw) * a[k - 1:]).sum())
