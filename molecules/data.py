"""Molecule data: QM9 loaders, user files (CSV / SMILES / SDF), SMILES one-hot encoding, PyG
graphs, dense graph tensors, property scaling and splits.

Representations (all round-trip through RDKit):

* **RDKit ``Mol``** with implicit hydrogens; canonical SMILES without stereo
  (``Chem.MolToSmiles(mol, isomericSmiles=False)``), as in the seed paper.
* **SMILES one-hot** (Luu & Buehler 2023): the 22 symbols of :data:`SMILES_ALPHABET` (index 0
  is the pad symbol ``"_"``), length 32; a molecule is ``[L, V]`` with the symbol's entry +1 and
  all others -1 ("zeros set to -1").
* **PyG ``Data``**: ``x: [n] long`` atom class in :data:`ATOM_TYPES` (element + formal charge),
  ``edge_index: [2, E]`` (both directions), ``edge_attr: [E] long`` bond class
  (1 single, 2 double, 3 triple; Kekulé form), ``smiles``; hydrogens implicit.
* **Dense graphs** for diffusion: atom classes ``[B, N]`` (-1 = no node), bond classes
  ``[B, N, N]`` (0 = no bond), ``N = 9`` heavy atoms for QM9.

QM9 properties (:data:`PROPERTY_NAMES`, in the seed paper's order) and their units as stored in
the vendored CSV: see :data:`PROPERTY_UNITS`.
"""

from __future__ import annotations

import csv
import gzip
import io
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "PROPERTY_NAMES", "PROPERTY_UNITS", "ATOM_TYPES", "BOND_ORDERS", "SMILES_ALPHABET",
    "SMILES_LENGTH", "MAX_NODES", "InvalidReport", "MoleculeTable", "PropertyScaler",
    "MoleculeDataset", "canonical_smiles", "parse_smiles", "load_qm9", "load_qm9_smiles",
    "read_csv", "read_smiles_file", "read_sdf", "read_molecules", "tokenize", "smiles_to_tokens",
    "tokens_to_smiles", "smiles_to_onehot", "onehot_to_smiles", "mol_to_graph", "graph_to_mol",
    "mol_to_dense", "dense_to_mol", "pyg_to_dense", "random_split", "scaffold_split",
]

#: The 12 QM9 properties the seed paper conditions on, in its order.
PROPERTY_NAMES: tuple[str, ...] = ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "cv", "u0",
                                   "u298", "h298", "g298")
#: Units of the properties as stored in ``qm9_sample_20k.csv`` (QM9's own units).
PROPERTY_UNITS: dict[str, str] = {
    "mu": "Debye", "alpha": "Bohr^3", "homo": "Hartree", "lumo": "Hartree", "gap": "Hartree",
    "r2": "Bohr^2", "zpve": "Hartree", "cv": "cal/(mol K)", "u0": "Hartree", "u298": "Hartree",
    "h298": "Hartree", "g298": "Hartree",
}
#: Heavy-atom classes of QM9 with implicit H: (element, formal charge).
ATOM_TYPES: tuple[tuple[str, int], ...] = (("C", 0), ("N", 0), ("O", 0), ("F", 0), ("N", 1),
                                           ("O", -1), ("N", -1), ("C", -1))
#: Bond classes 1..3 (0 = no bond), Kekulé bond orders.
BOND_ORDERS: tuple[str, ...] = ("NONE", "SINGLE", "DOUBLE", "TRIPLE")
#: Highest total bond order (implicit H) per atom class of :data:`ATOM_TYPES`.
MAX_VALENCE: tuple[int, ...] = (4, 3, 2, 1, 4, 1, 2, 3)
#: The 22 SMILES symbols of QM9 (canonical, no stereo); "_" pads.
SMILES_ALPHABET: tuple[str, ...] = ("_", "C", "N", "O", "F", "c", "n", "o", "(", ")", "=", "#",
                                    "[", "]", "H", "+", "-", "1", "2", "3", "4", "5")
SMILES_LENGTH = 32
MAX_NODES = 9

_DATASETS = "datasets"


def _rdkit():
    try:
        from rdkit import Chem, RDLogger
    except ImportError as e:  # pragma: no cover - extra not installed
        raise ImportError("the molecules domain needs RDKit: pip install 'diffsuite[molecules]'") from e
    RDLogger.DisableLog("rdApp.*")
    return Chem


# --------------------------------------------------------------------------- SMILES / Mol


@dataclass
class InvalidReport:
    """Rows that could not be used: ``count`` and up to 5 ``examples`` ``(row, text, reason)``."""

    count: int = 0
    examples: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, row: int, text: str, reason: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append((row, text, reason))

    def warn(self, what: str) -> None:
        """Emit one warning naming the count and examples (no-op when nothing was skipped)."""
        if self.count:
            ex = "; ".join(f"row {r}: {t!r} ({why})" for r, t, why in self.examples)
            warnings.warn(f"{what}: skipped {self.count} invalid row(s), e.g. {ex}", stacklevel=3)


def canonical_smiles(mol_or_smiles, *, isomeric: bool = False) -> str | None:
    """Canonical SMILES of a ``Mol`` or SMILES string (None when RDKit cannot parse it)."""
    Chem = _rdkit()
    mol = Chem.MolFromSmiles(mol_or_smiles) if isinstance(mol_or_smiles, str) else mol_or_smiles
    if mol is None:
        return None
    return Chem.MolToSmiles(mol, isomericSmiles=isomeric)


def parse_smiles(smiles: Sequence[str], *, what: str = "SMILES") -> tuple[list, list[int], InvalidReport]:
    """Parse SMILES into RDKit ``Mol``s. Returns ``(mols, kept_rows, report)``; invalid rows are
    reported (one warning with count and examples) and skipped, never silently."""
    Chem = _rdkit()
    mols, kept, rep = [], [], InvalidReport()
    for i, s in enumerate(smiles):
        m = Chem.MolFromSmiles(s) if isinstance(s, str) and s.strip() else None
        if m is None:
            rep.add(i, str(s), "RDKit cannot parse it")
            continue
        mols.append(m)
        kept.append(i)
    rep.warn(what)
    return mols, kept, rep


# --------------------------------------------------------------------------- tables and files


@dataclass
class MoleculeTable:
    """Molecules with optional properties.

    smiles:  canonical SMILES (no stereo), ``[M]``.
    mols:    RDKit ``Mol`` (implicit H), ``[M]``.
    props:   ``[M, P]`` float64 tensor (NaN where unknown) or None.
    names:   property names ``[P]``.
    ids:     row identifiers (e.g. QM9 ``mol_id``).
    invalid: what was skipped while reading.
    """

    smiles: list[str]
    mols: list
    props: Tensor | None = None
    names: tuple[str, ...] = ()
    ids: list[str] = field(default_factory=list)
    invalid: InvalidReport = field(default_factory=InvalidReport)

    def __len__(self) -> int:
        return len(self.smiles)

    def subset(self, idx: Sequence[int]) -> "MoleculeTable":
        idx = list(int(i) for i in idx)
        return MoleculeTable([self.smiles[i] for i in idx], [self.mols[i] for i in idx],
                             None if self.props is None else self.props[idx], self.names,
                             [self.ids[i] for i in idx] if self.ids else [], self.invalid)

    def graphs(self) -> list:
        """PyG ``Data`` graphs of all molecules (see :func:`mol_to_graph`)."""
        return [mol_to_graph(m) for m in self.mols]


def _open_text(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise FileNotFoundError(f"molecule file not found: {path}")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig", newline="")


def _vendored(name: str) -> Path:
    return Path(str(resources.files("molecules") / _DATASETS / name))


def _table_from_rows(rows: list[dict], smiles_col: str, prop_cols: Sequence[str], id_col: str | None,
                     what: str) -> MoleculeTable:
    Chem = _rdkit()
    rep = InvalidReport()
    smiles, mols, props, ids = [], [], [], []
    for i, r in enumerate(rows):
        s = (r.get(smiles_col) or "").strip()
        m = Chem.MolFromSmiles(s) if s else None
        if m is None:
            rep.add(i, s, "RDKit cannot parse it" if s else "empty SMILES")
            continue
        vals = []
        try:
            for c in prop_cols:
                v = (r.get(c) or "").strip()
                vals.append(float(v) if v else float("nan"))
        except ValueError:
            rep.add(i, s, f"non-numeric property value in column {c!r}")
            continue
        smiles.append(Chem.MolToSmiles(m, isomericSmiles=False))
        mols.append(m)
        props.append(vals)
        ids.append(str(r.get(id_col, i)) if id_col else str(i))
    rep.warn(what)
    P = torch.tensor(props, dtype=torch.float64).reshape(len(props), len(prop_cols)) if prop_cols else None
    return MoleculeTable(smiles, mols, P, tuple(prop_cols), ids, rep)


def read_csv(path: str | Path, *, smiles_col: str | None = None, props: Sequence[str] | None = None,
             id_col: str | None = None, limit: int | None = None) -> MoleculeTable:
    """Read a CSV (optionally ``.gz``) with a SMILES column and numeric property columns.

    ``smiles_col`` defaults to the first column named ``smiles`` / ``SMILES`` (case-insensitive);
    ``props`` defaults to every other column that parses as numbers. Invalid SMILES are reported
    and skipped. Raises ``ValueError`` naming the missing column."""
    path = Path(path)
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        rows = []
        for r in reader:
            rows.append(r)
            if limit is not None and len(rows) >= limit:
                break
    if smiles_col is None:
        cand = [c for c in cols if c.strip().lower() == "smiles"]
        if not cand:
            raise ValueError(f"{path}: no 'smiles' column (columns: {cols}); pass smiles_col=")
        smiles_col = cand[0]
    if smiles_col not in cols:
        raise ValueError(f"{path}: column {smiles_col!r} not found (columns: {cols})")
    if props is None:
        props = []
        for c in cols:
            if c == smiles_col or c == id_col:
                continue
            try:
                [float(r[c]) for r in rows[:50] if r.get(c)]
                if any(r.get(c) for r in rows[:50]):
                    props.append(c)
            except ValueError:
                continue
    missing = [c for c in props if c not in cols]
    if missing:
        raise ValueError(f"{path}: property column(s) {missing} not found (columns: {cols})")
    return _table_from_rows(rows, smiles_col, list(props), id_col, str(path))


def load_qm9(path: str | Path | None = None, *, limit: int | None = None) -> MoleculeTable:
    """QM9 molecules with the 12 properties of :data:`PROPERTY_NAMES` (units in
    :data:`PROPERTY_UNITS`). Default: the vendored 20,000-molecule sample. ``path`` may point to
    any CSV with a ``smiles`` column and those property columns (e.g. the full QM9 CSV)."""
    p = Path(path) if path is not None else _vendored("qm9_sample_20k.csv.gz")
    with _open_text(p) as f:
        cols = next(csv.reader(f))
    id_col = "mol_id" if "mol_id" in cols else None
    return read_csv(p, props=PROPERTY_NAMES, id_col=id_col, limit=limit)


_QM9_ALL: set[str] | None = None


def load_qm9_smiles(path: str | Path | None = None, *, progress: bool = False) -> set[str]:
    """Canonical SMILES (no stereo) of all 133,247 QM9 molecules (the vendored list, or
    ``path``): the reference set for novelty against the whole of QM9. Cached for the vendored
    file (canonicalising takes ~15 s)."""
    global _QM9_ALL
    if path is None and _QM9_ALL is not None:
        return _QM9_ALL
    Chem = _rdkit()
    p = Path(path) if path is not None else _vendored("qm9_smiles_133k.csv.gz")
    with _open_text(p) as f:
        rows = [r[0] for r in csv.reader(f)][1:]
    if progress:
        from tqdm.auto import tqdm
        rows = tqdm(rows, desc="canonicalising QM9", leave=False)
    out = set()
    for s in rows:
        m = Chem.MolFromSmiles(s)
        if m is not None:
            out.add(Chem.MolToSmiles(m, isomericSmiles=False))
    if path is None:
        _QM9_ALL = out
    return out


def read_smiles_file(path: str | Path) -> MoleculeTable:
    """Read ``.smi`` / ``.txt`` (one SMILES per line, optional name after whitespace) or
    ``.csv`` (see :func:`read_csv`). Invalid lines are reported and skipped."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".gz"):
        return read_csv(path)
    with _open_text(path) as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    if lines and lines[0].lower() in ("smiles", "smiles name"):
        lines = lines[1:]
    rows = [{"smiles": ln.split()[0], "id": (ln.split()[1] if len(ln.split()) > 1 else str(i))}
            for i, ln in enumerate(lines)]
    return _table_from_rows(rows, "smiles", [], "id", str(path))


def read_sdf(path: str | Path, *, props: Sequence[str] = ()) -> MoleculeTable:
    """Read an SDF file (hydrogens removed). ``props`` names SD tags to read as numbers.
    Unreadable records are reported and skipped."""
    Chem = _rdkit()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SDF file not found: {path}")
    rep = InvalidReport()
    smiles, mols, vals, ids = [], [], [], []
    for i, m in enumerate(Chem.SDMolSupplier(str(path), removeHs=True)):
        if m is None:
            rep.add(i, f"record {i}", "RDKit cannot read it")
            continue
        try:
            row = [float(m.GetProp(p)) if m.HasProp(p) else float("nan") for p in props]
        except ValueError:
            rep.add(i, f"record {i}", "non-numeric property")
            continue
        smiles.append(Chem.MolToSmiles(m, isomericSmiles=False))
        mols.append(m)
        vals.append(row)
        ids.append(m.GetProp("_Name") if m.HasProp("_Name") and m.GetProp("_Name") else str(i))
    rep.warn(str(path))
    P = torch.tensor(vals, dtype=torch.float64).reshape(len(vals), len(props)) if props else None
    return MoleculeTable(smiles, mols, P, tuple(props), ids, rep)


def read_molecules(path: str | Path) -> MoleculeTable:
    """Read molecules from ``.sdf``, ``.csv``(``.gz``), ``.smi`` or ``.txt`` by extension."""
    p = Path(path)
    if p.suffix.lower() == ".sdf":
        return read_sdf(p)
    if p.suffix.lower() in (".csv", ".gz", ".smi", ".txt"):
        return read_smiles_file(p)
    raise ValueError(f"{p}: unsupported molecule file type {p.suffix!r} (use .sdf, .csv, .smi, .txt)")


# --------------------------------------------------------------------------- SMILES one-hot

_SYM = {s: i for i, s in enumerate(SMILES_ALPHABET)}


def tokenize(smiles: str) -> list[str]:
    """Character tokens of a SMILES (the seed paper's encoding is per character)."""
    return list(smiles)


def smiles_to_tokens(smiles: str, length: int = SMILES_LENGTH) -> Tensor:
    """Token ids ``[length]`` (pad = 0). Raises ``ValueError`` for an unknown symbol or a SMILES
    longer than ``length``."""
    toks = tokenize(smiles)
    if len(toks) > length:
        raise ValueError(f"SMILES {smiles!r} has {len(toks)} symbols, longer than length={length}")
    bad = [c for c in toks if c not in _SYM or c == "_"]
    if bad:
        raise ValueError(f"SMILES {smiles!r} has symbol(s) {sorted(set(bad))} outside the alphabet "
                         f"{''.join(SMILES_ALPHABET[1:])}")
    ids = [_SYM[c] for c in toks] + [0] * (length - len(toks))
    return torch.tensor(ids, dtype=torch.long)


def tokens_to_smiles(tokens: Tensor) -> list[str]:
    """``tokens: [B, L]`` -> SMILES strings (pad symbols dropped wherever they are)."""
    return ["".join(SMILES_ALPHABET[i] for i in row if i != 0) for row in tokens.tolist()]


def smiles_to_onehot(smiles: Sequence[str], length: int = SMILES_LENGTH) -> Tensor:
    """Seed-paper encoding ``[B, length, 22]``: +1 at the symbol, -1 elsewhere."""
    tok = torch.stack([smiles_to_tokens(s, length) for s in smiles])
    return 2.0 * torch.nn.functional.one_hot(tok, len(SMILES_ALPHABET)).float() - 1.0


def onehot_to_smiles(x: Tensor) -> list[str]:
    """Decode ``x: [B, L, 22]`` (any real values) by argmax per position."""
    if x.ndim != 3 or x.shape[-1] != len(SMILES_ALPHABET):
        raise ValueError(f"expected [B, L, {len(SMILES_ALPHABET)}], got {tuple(x.shape)}")
    return tokens_to_smiles(x.argmax(-1))


# --------------------------------------------------------------------------- graphs

_ATOM = {a: i for i, a in enumerate(ATOM_TYPES)}


def _bond_class(bond) -> int:
    from rdkit import Chem

    bt = bond.GetBondType()
    table = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}
    if bt not in table:
        raise ValueError(f"bond type {bt} is not Kekulé single/double/triple")
    return table[bt]


def _kekule(mol):
    Chem = _rdkit()
    has_h = any(a.GetAtomicNum() == 1 for a in mol.GetAtoms())
    m = Chem.RemoveHs(mol) if has_h else Chem.Mol(mol)
    Chem.Kekulize(m, clearAromaticFlags=True)
    return m


def mol_to_graph(mol):
    """RDKit ``Mol`` -> PyG ``Data`` (implicit H, Kekulé bonds).

    ``x: [n] long`` atom class (:data:`ATOM_TYPES`), ``charge: [n] long``, ``edge_index: [2, E]``
    both directions, ``edge_attr: [E] long`` bond class 1..3, ``smiles``. Raises ``ValueError``
    for atoms outside :data:`ATOM_TYPES`."""
    from torch_geometric.data import Data

    Chem = _rdkit()
    m = _kekule(mol)
    xs, ch = [], []
    for a in m.GetAtoms():
        key = (a.GetSymbol(), a.GetFormalCharge())
        if key not in _ATOM:
            raise ValueError(f"atom {key[0]} with charge {key[1]:+d} is not one of the QM9 classes {ATOM_TYPES}")
        xs.append(_ATOM[key])
        ch.append(key[1])
    src, dst, attr = [], [], []
    for b in m.GetBonds():
        i, j, c = b.GetBeginAtomIdx(), b.GetEndAtomIdx(), _bond_class(b)
        src += [i, j]
        dst += [j, i]
        attr += [c, c]
    return Data(x=torch.tensor(xs, dtype=torch.long), charge=torch.tensor(ch, dtype=torch.long),
                edge_index=torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
                edge_attr=torch.tensor(attr, dtype=torch.long), num_nodes=len(xs),
                smiles=Chem.MolToSmiles(mol, isomericSmiles=False))


def _build_mol(types: Sequence[int], bonds: Iterable[tuple[int, int, int]], sanitize: bool = True):
    Chem = _rdkit()
    m = Chem.RWMol()
    for k in types:
        el, q = ATOM_TYPES[int(k)]
        a = Chem.Atom(el)
        a.SetFormalCharge(q)
        m.AddAtom(a)
    bt = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    for i, j, c in bonds:
        if c:
            m.AddBond(int(i), int(j), bt[int(c)])
    mol = m.GetMol()
    if sanitize:
        try:
            Chem.SanitizeMol(mol)
        except Exception:
            return None
    return mol


def graph_to_mol(data, *, sanitize: bool = True):
    """PyG ``Data`` (as from :func:`mol_to_graph`) -> RDKit ``Mol``; None when sanitisation
    fails (with ``sanitize=True``)."""
    ei, ea = data.edge_index, data.edge_attr
    bonds = [(int(i), int(j), int(c)) for (i, j), c in zip(ei.t().tolist(), ea.tolist()) if i < j]
    return _build_mol(data.x.tolist(), bonds, sanitize)


def _dense_lists(mol, max_nodes: int) -> tuple[list[int], list[tuple[int, int, int]]]:
    m = _kekule(mol)
    n = m.GetNumAtoms()
    if n > max_nodes:
        raise ValueError(f"molecule with {n} heavy atoms > max_nodes={max_nodes}")
    atoms = []
    for a in m.GetAtoms():
        key = (a.GetSymbol(), a.GetFormalCharge())
        if key not in _ATOM:
            raise ValueError(f"atom {key[0]} with charge {key[1]:+d} is not one of the QM9 classes {ATOM_TYPES}")
        atoms.append(_ATOM[key])
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), _bond_class(b)) for b in m.GetBonds()]
    return atoms, bonds


def mol_to_dense(mol, max_nodes: int = MAX_NODES) -> tuple[Tensor, Tensor]:
    """``(atoms [N] long (-1 = no node), bonds [N, N] long (0 = none))`` with ``N = max_nodes``
    (implicit H, Kekulé bonds). Raises ``ValueError`` when the molecule has more heavy atoms or
    atoms outside :data:`ATOM_TYPES`."""
    a, bl = _dense_lists(mol, max_nodes)
    atoms = np.full(max_nodes, -1, dtype=np.int64)
    atoms[:len(a)] = a
    bonds = np.zeros((max_nodes, max_nodes), dtype=np.int64)
    for i, j, c in bl:
        bonds[i, j] = bonds[j, i] = c
    return torch.from_numpy(atoms), torch.from_numpy(bonds)


def pyg_to_dense(graphs, max_nodes: int = MAX_NODES) -> tuple[Tensor, Tensor]:
    """PyG ``Batch`` (or list of ``Data`` from :func:`mol_to_graph`) -> dense
    ``(atoms [B, N] long, -1 = no node; bonds [B, N, N] long)``, the model's batch format."""
    from torch_geometric.data import Batch
    from torch_geometric.utils import to_dense_adj, to_dense_batch

    batch = graphs if isinstance(graphs, Batch) else Batch.from_data_list(list(graphs))
    counts = torch.bincount(batch.batch, minlength=batch.num_graphs)
    if counts.numel() and int(counts.max()) > max_nodes:
        raise ValueError(f"a graph has {int(counts.max())} nodes > max_nodes={max_nodes}")
    atoms, mask = to_dense_batch(batch.x, batch.batch, fill_value=-1, max_num_nodes=max_nodes)
    bonds = to_dense_adj(batch.edge_index, batch.batch, batch.edge_attr, max_num_nodes=max_nodes)
    return atoms.long(), bonds.long()


def dense_to_mol(atoms: Tensor, bonds: Tensor, *, sanitize: bool = True):
    """Inverse of :func:`mol_to_dense` for one graph: ``atoms [N]`` (-1 = absent),
    ``bonds [N, N]`` symmetric classes. None when sanitisation fails."""
    keep = [i for i, a in enumerate(atoms.tolist()) if a >= 0]
    pos = {i: k for k, i in enumerate(keep)}
    b = bonds.tolist()
    edges = [(pos[i], pos[j], b[i][j]) for ii, i in enumerate(keep) for j in keep[ii + 1:] if b[i][j] > 0]
    return _build_mol([atoms[i] for i in keep], edges, sanitize)


# --------------------------------------------------------------------------- properties, datasets


@dataclass
class PropertyScaler:
    """Min-max scaling of properties to [0, 1] (seed paper). ``lo, hi: [P]``."""

    lo: Tensor
    hi: Tensor

    @classmethod
    def fit(cls, props: Tensor) -> "PropertyScaler":
        lo = torch.nan_to_num(props, nan=float("inf")).amin(0)
        hi = torch.nan_to_num(props, nan=float("-inf")).amax(0)
        return cls(lo.to(torch.float64), hi.to(torch.float64))

    def transform(self, y: Tensor) -> Tensor:
        return ((y.to(torch.float64) - self.lo) / (self.hi - self.lo).clamp_min(1e-12)).float()

    def inverse(self, z: Tensor) -> Tensor:
        return z.to(torch.float64) * (self.hi - self.lo) + self.lo


class MoleculeDataset(torch.utils.data.Dataset):
    """Tensors of a :class:`MoleculeTable` for training (one dict per molecule):

    ``atoms [N] long`` (-1 pad), ``bonds [N, N] long``, ``tokens [L] long`` (pad 0),
    ``y [P] float`` (scaled properties, 0 where unknown), ``y_known [P] bool``.

    Molecules that do not fit (more than ``max_nodes`` heavy atoms, a SMILES longer than
    ``length`` or outside the alphabet, atoms outside :data:`ATOM_TYPES`) are reported with a
    warning and skipped; ``kept`` holds the table rows used."""

    def __init__(self, table: MoleculeTable, scaler: PropertyScaler | None, *,
                 max_nodes: int = MAX_NODES, length: int = SMILES_LENGTH):
        rep = InvalidReport()
        atoms, bonds, toks, kept = [], [], [], []
        for i, (s, m) in enumerate(zip(table.smiles, table.mols)):
            try:
                a, b = mol_to_dense(m, max_nodes)
                tk = smiles_to_tokens(s, length)
            except ValueError as e:
                rep.add(i, s, str(e))
                continue
            atoms.append(a)
            bonds.append(b)
            toks.append(tk)
            kept.append(i)
        rep.warn("MoleculeDataset")
        self.invalid = rep
        self.kept = kept
        self.smiles = [table.smiles[i] for i in kept]
        self.atoms = torch.stack(atoms) if atoms else torch.empty(0, max_nodes, dtype=torch.long)
        self.bonds = torch.stack(bonds) if bonds else torch.empty(0, max_nodes, max_nodes, dtype=torch.long)
        self.tokens = torch.stack(toks) if toks else torch.empty(0, length, dtype=torch.long)
        if table.props is not None and scaler is not None:
            raw = table.props[kept]
            self.y_raw = raw
            self.y_known = torch.isfinite(raw)
            self.y = torch.nan_to_num(scaler.transform(raw), nan=0.0)
        else:
            self.y_raw = torch.zeros(len(kept), 0, dtype=torch.float64)
            self.y_known = torch.zeros(len(kept), 0, dtype=torch.bool)
            self.y = torch.zeros(len(kept), 0)

    def __len__(self) -> int:
        return len(self.kept)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"atoms": self.atoms[i], "bonds": self.bonds[i], "tokens": self.tokens[i],
                "y": self.y[i], "y_known": self.y_known[i]}

    def batch(self, idx) -> dict[str, Tensor]:
        """Items ``idx`` stacked in one gather per field: the same dict as collating
        ``[self[i] for i in idx]``, without the Python loop over items (a GPU step is shorter than
        that loop at batch 512)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return {"atoms": self.atoms[idx], "bonds": self.bonds[idx], "tokens": self.tokens[idx],
                "y": self.y[idx], "y_known": self.y_known[idx]}


# --------------------------------------------------------------------------- splits


def random_split(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> list[np.ndarray]:
    """Index arrays for a seeded random split of ``n`` items by ``fractions`` (summing to 1)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions)[:-1] * n).astype(int)
    return [np.sort(p) for p in np.split(perm, cuts)]


def scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   seed: int = 0) -> list[np.ndarray]:
    """Bemis–Murcko scaffold split: molecules sharing a scaffold land in the same part. Scaffold
    groups are ordered largest first (ties broken by a seeded shuffle) and filled greedily."""
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    from rdkit.Chem.Scaffolds import MurckoScaffold

    _rdkit()
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(smiles):
        try:
            sc = MurckoScaffold.MurckoScaffoldSmiles(smiles=s, includeChirality=False)
        except Exception:
            sc = s
        groups.setdefault(sc, []).append(i)
    keys = list(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    keys = sorted((keys[k] for k in order), key=lambda k: -len(groups[k]))
    n = len(smiles)
    caps = [f * n for f in fractions]
    parts: list[list[int]] = [[] for _ in fractions]
    for k in keys:
        for p in range(len(parts)):
            if len(parts[p]) + len(groups[k]) <= caps[p] or p == len(parts) - 1:
                parts[p] += groups[k]
                break
    return [np.sort(np.array(p, dtype=int)) for p in parts]
