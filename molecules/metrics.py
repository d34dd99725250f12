"""Quality metrics for generated molecules (RDKit).

* **validity** — fraction of samples whose molecule sanitises (RDKit ``SanitizeMol``); a valid
  molecule is represented by its largest fragment (the usual QM9 convention).
* **uniqueness** — distinct canonical SMILES among the valid ones / number valid.
* **novelty** — unique valid SMILES not in the reference (training) set / number unique.
* **connectivity** — fraction of valid molecules that are one fragment; **valid_connected** —
  fraction of all samples that are valid *and* one fragment (the strict figure: a model that
  emits disconnected atoms scores high validity by the largest-fragment rule, not here).
* **QED / SA** — mean and std over valid molecules (SA: Ertl & Schuffenhauer, RDKit Contrib).
* **property fidelity** — MAE and R² between targets and predictions (forward model, or exact
  RDKit descriptors for :data:`~molecules.configs.RDKIT_DESCRIPTORS`).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from .data import MAX_VALENCE

__all__ = ["sanitize", "largest_fragment", "validity_report", "invalidity_breakdown", "graph_statistics",
           "distribution_metrics",
           "rdkit_descriptor", "descriptor_table", "regression_metrics", "draw_grid", "qed_sa",
           "morgan_fingerprints", "TanimotoKernelRidge"]


def _chem():
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem


def sanitize(mol):
    """A sanitised copy of ``mol`` or None (None in, None out)."""
    Chem = _chem()
    if mol is None:
        return None
    m = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(m)
    except Exception:
        return None
    return m


def largest_fragment(mol):
    """Largest connected fragment (by heavy atoms) of a sanitised molecule."""
    Chem = _chem()
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    return max(frags, key=lambda f: f.GetNumAtoms()) if len(frags) > 1 else mol


def validity_report(samples: Sequence, reference: Iterable[str] | None = None,
                    reference_name: str = "novelty") -> dict[str, float]:
    """Validity, uniqueness, novelty and connectivity of ``samples`` (RDKit ``Mol`` or None, or
    SMILES strings). ``reference``: canonical SMILES the novelty is measured against."""
    Chem = _chem()
    n = len(samples)
    if n == 0:
        raise ValueError("no samples to evaluate")
    valid, connected = [], 0
    for s in samples:
        m = Chem.MolFromSmiles(s) if isinstance(s, str) and s else (s if not isinstance(s, str) else None)
        m = sanitize(m)
        if m is None or m.GetNumAtoms() == 0:
            continue
        frags = Chem.GetMolFrags(m)
        connected += len(frags) == 1
        lf = largest_fragment(m)
        smi = Chem.MolToSmiles(lf, isomericSmiles=False)
        if Chem.MolFromSmiles(smi) is None:  # SMILES that RDKit cannot read back is not valid
            continue
        valid.append(smi)
    nv = len(valid)
    uniq = set(valid)
    out = {"validity": nv / n, "uniqueness": len(uniq) / nv if nv else 0.0,
           "connectivity": connected / nv if nv else 0.0, "valid_unique": len(uniq) / n,
           "valid_connected": connected / n,
           "n_samples": float(n)}
    if reference is not None:
        ref = reference if isinstance(reference, (set, frozenset)) else set(reference)
        out[reference_name] = (len(uniq - ref) / len(uniq)) if uniq else 0.0
    return out


def invalidity_breakdown(atoms, bonds) -> dict[str, float]:
    """Why dense generated graphs are (in)valid, as fractions of all samples: ``frac_valid``
    (sanitises), ``frac_valence`` (some atom's bond orders exceed its class's valence),
    ``frac_other_invalid`` (no valence excess but sanitisation fails, e.g. aromaticity),
    ``frac_valid_fragmented`` (valid but more than one fragment), ``mean_overvalent_atoms``
    (among valence failures) and ``frac_charged_atoms`` (charged classes among all atoms).
    ``atoms [n, N]`` (-1 absent), ``bonds [n, N, N]`` classes (bond order = class)."""
    import torch

    from .data import dense_to_mol

    Chem = _chem()
    atoms, bonds = torch.as_tensor(atoms), torch.as_tensor(bonds)
    n = atoms.shape[0]
    if n == 0:
        raise ValueError("no samples to break down")
    maxv = torch.tensor(MAX_VALENCE)
    present = atoms >= 0
    order = (bonds * (present[:, :, None] & present[:, None, :])).sum(-1)
    over = (order > maxv[atoms.clamp_min(0)]) & present
    n_over = over.sum(1)
    valid = frag = valence = other = 0
    for i in range(n):
        m = dense_to_mol(atoms[i], bonds[i])
        if m is not None:
            valid += 1
            frag += len(Chem.GetMolFrags(m)) > 1
        elif n_over[i] > 0:
            valence += 1
        else:
            other += 1
    bad = n_over[n_over > 0]
    return {"frac_valid": valid / n, "frac_valence": valence / n, "frac_other_invalid": other / n,
            "frac_valid_fragmented": frag / n,
            "mean_overvalent_atoms": float(bad.float().mean()) if bad.numel() else 0.0,
            "frac_charged_atoms": float(((atoms >= 4) & present).sum()) / max(1, int(present.sum()))}


def graph_statistics(atoms, bonds) -> dict:
    """Where decoded dense graphs put their atoms and bonds (compare generated samples with the
    training graphs): ``atom_class_freq [K]`` over present atoms, ``bond_class_freq [C]`` over
    pairs of present atoms (class 0 = no bond), ``overvalent_rate_by_class [K]`` (fraction of the
    atoms of each class whose bond-order sum exceeds :data:`MAX_VALENCE`; None where a class
    does not occur) and ``atom_class_count [K]``. ``atoms [n, N]`` (-1 absent), ``bonds [n, N, N]``."""
    import torch

    atoms, bonds = torch.as_tensor(atoms), torch.as_tensor(bonds)
    K, N = len(MAX_VALENCE), atoms.shape[1]
    present = atoms >= 0
    iu = torch.triu_indices(N, N, 1)
    pp = present[:, iu[0]] & present[:, iu[1]]
    bc = torch.bincount(bonds[:, iu[0], iu[1]][pp], minlength=4).double()
    ac = torch.bincount(atoms[present], minlength=K)
    order = (bonds * (present[:, :, None] & present[:, None, :])).sum(-1)
    over = (order > torch.tensor(MAX_VALENCE)[atoms.clamp_min(0)]) & present
    oc = torch.bincount(atoms[over], minlength=K)
    return {"atom_class_freq": (ac.double() / max(1, int(ac.sum()))).tolist(),
            "bond_class_freq": (bc / bc.sum().clamp_min(1)).tolist(),
            "overvalent_rate_by_class": [float(o) / int(a) if int(a) else None for o, a in zip(oc, ac)],
            "atom_class_count": ac.tolist()}


def qed_sa(mols: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """QED and SA score arrays over the non-None molecules."""
    from rdkit.Chem import QED
    from rdkit.Contrib.SA_Score import sascorer

    q, s = [], []
    for m in mols:
        if m is None:
            continue
        try:
            q.append(QED.qed(m))
            s.append(sascorer.calculateScore(m))
        except Exception:  # pragma: no cover - descriptor failure on an odd molecule
            continue
    return np.array(q, dtype=float), np.array(s, dtype=float)


def distribution_metrics(mols: Sequence, reference_mols: Sequence | None = None) -> dict[str, float]:
    """QED/SA mean and std of valid ``mols`` (and of ``reference_mols`` as ``ref_*``)."""
    out: dict[str, float] = {}
    for tag, ms in (("", mols), ("ref_", reference_mols)):
        if ms is None:
            continue
        q, s = qed_sa([sanitize(m) for m in ms])
        out[f"{tag}qed_mean"] = float(q.mean()) if q.size else float("nan")
        out[f"{tag}qed_std"] = float(q.std()) if q.size else float("nan")
        out[f"{tag}sa_mean"] = float(s.mean()) if s.size else float("nan")
        out[f"{tag}sa_std"] = float(s.std()) if s.size else float("nan")
    return out


def rdkit_descriptor(name: str, mol) -> float:
    """Exact RDKit descriptor ``name`` (one of RDKIT_DESCRIPTORS) of ``mol``."""
    from rdkit.Chem import QED, Crippen, Descriptors, rdMolDescriptors

    if name == "logp":
        return float(Crippen.MolLogP(mol))
    if name == "mol_wt":
        return float(Descriptors.MolWt(mol))
    if name == "tpsa":
        return float(rdMolDescriptors.CalcTPSA(mol))
    if name == "qed":
        return float(QED.qed(mol))
    if name == "n_heavy":
        return float(mol.GetNumHeavyAtoms())
    raise ValueError(f"unknown RDKit descriptor {name!r}")


def descriptor_table(mols: Sequence, names: Sequence[str]) -> np.ndarray:
    """``[M, len(names)]`` RDKit descriptors (NaN for None molecules)."""
    out = np.full((len(mols), len(names)), np.nan)
    for i, m in enumerate(mols):
        if m is None:
            continue
        for j, nm in enumerate(names):
            out[i, j] = rdkit_descriptor(nm, m)
    return out


def regression_metrics(target, pred) -> dict[str, float]:
    """MAE and R² (1 - SS_res / SS_tot around the targets' mean) over finite pairs."""
    t, p = np.asarray(target, dtype=float).ravel(), np.asarray(pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"target and prediction sizes differ: {t.shape} vs {p.shape}")
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    if t.size == 0:
        return {"mae": float("nan"), "r2": float("nan"), "n": 0.0}
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - float(((t - p) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {"mae": float(np.abs(t - p).mean()), "r2": r2, "n": float(t.size)}


def morgan_fingerprints(mols: Sequence, radius: int = 2, n_bits: int = 2048) -> np.ndarray:
    """Morgan (ECFP-like) bit fingerprints ``[n, n_bits]`` uint8 of RDKit molecules (all-zero rows
    for None)."""
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    out = np.zeros((len(mols), n_bits), dtype=np.uint8)
    for i, m in enumerate(mols):
        if m is not None:
            out[i] = gen.GetFingerprintAsNumPy(m)
    return out


class TanimotoKernelRidge:
    """Kernel ridge regression on Morgan fingerprints with the Tanimoto kernel
    ``k(a, b) = |a & b| / (|a| + |b| - |a & b|)``, the standard fingerprint baseline of
    cheminformatics: a property model of another family than the graph networks (no shared
    architecture, no gradient training), to grade generated molecules without sharing their
    guide's inductive biases. ``fit(mols, y)`` solves ``(K + alpha I) w = y - mean(y)`` by Cholesky
    (float64; memory ``8 n^2`` bytes); ``predict(mols)`` gives NaN for None."""

    def __init__(self, alpha: float = 0.05, radius: int = 2, n_bits: int = 2048):
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha, self.radius, self.n_bits = alpha, radius, n_bits
        self._x: torch.Tensor | None = None

    def _kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        inter = a @ b.T
        return inter / (a.sum(1, keepdim=True) + b.sum(1)[None] - inter).clamp_min(1.0)

    def fit(self, mols: Sequence, y) -> "TanimotoKernelRidge":
        y = torch.as_tensor(np.asarray(y, dtype=np.float64))
        keep = torch.tensor([m is not None for m in mols]) & torch.isfinite(y)
        if int(keep.sum()) < 2:
            raise ValueError("TanimotoKernelRidge.fit needs at least 2 valid molecules with finite targets")
        idx = keep.nonzero().flatten().tolist()
        x = torch.from_numpy(morgan_fingerprints([mols[i] for i in idx], self.radius, self.n_bits)).double()
        yk = y[keep]
        self._mean = float(yk.mean())
        k = self._kernel(x, x)
        k.diagonal().add_(self.alpha)
        self._w = torch.cholesky_solve((yk - self._mean)[:, None], torch.linalg.cholesky(k)).flatten()
        self._x = x
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors for ``safetensors`` (fingerprints as uint8, weights, mean, settings)."""
        if self._x is None:
            raise RuntimeError("TanimotoKernelRidge.state_dict before fit")
        return {"x": self._x.to(torch.uint8), "w": self._w, "mean": torch.tensor([self._mean], dtype=torch.float64),
                "settings": torch.tensor([self.alpha, self.radius, self.n_bits], dtype=torch.float64)}

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "TanimotoKernelRidge":
        alpha, radius, n_bits = sd["settings"].tolist()
        m = cls(alpha, int(radius), int(n_bits))
        if sd["x"].shape != (sd["w"].numel(), m.n_bits):
            raise ValueError(f"fingerprints {tuple(sd['x'].shape)} do not match {sd['w'].numel()} weights "
                             f"of {m.n_bits} bits")
        m._x, m._w, m._mean = sd["x"].double(), sd["w"].double(), float(sd["mean"][0])
        return m

    def predict(self, mols: Sequence) -> np.ndarray:
        if self._x is None:
            raise RuntimeError("TanimotoKernelRidge.predict before fit")
        out = np.full(len(mols), np.nan)
        idx = [i for i, m in enumerate(mols) if m is not None]
        if idx:
            x = torch.from_numpy(morgan_fingerprints([mols[i] for i in idx], self.radius, self.n_bits)).double()
            out[idx] = (self._kernel(x, self._x) @ self._w + self._mean).numpy()
        return out


def draw_grid(mols: Sequence, path, *, legends: Sequence[str] | None = None, per_row: int = 6,
              size: int = 220, max_mols: int = 24) -> None:
    """PNG grid of molecules (invalid ones skipped) with legends, via RDKit Draw."""
    from rdkit.Chem import Draw

    pairs = [(m, (legends[i] if legends else "")) for i, m in enumerate(mols) if m is not None][:max_mols]
    if not pairs:
        raise ValueError("no valid molecules to draw")
    img = Draw.MolsToGridImage([m for m, _ in pairs], molsPerRow=per_row, subImgSize=(size, size),
                               legends=[lg for _, lg in pairs])
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(str(path))
