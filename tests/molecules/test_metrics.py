"""Metrics on sets with a known answer."""

import numpy as np
import pytest

from molecules import data as D
from molecules import metrics as M


def test_qm9_itself_is_valid_and_unique():
    t = D.load_qm9(limit=200)
    r = M.validity_report(t.mols, reference=t.smiles[:100])
    assert r["validity"] == 1.0 and r["uniqueness"] == 1.0 and r["connectivity"] == 1.0
    assert r["novelty"] == pytest.approx(100 / 200)
    assert M.validity_report(t.smiles, reference=set(t.smiles))["novelty"] == 0.0


def test_duplicate_and_invalid():
    # OCC duplicates CCO; C1CC is an unclosed ring (invalid); "" is invalid
    r = M.validity_report(["CCO", "OCC", "C1CC", "c1ccccc1", ""], reference={"CCO"})
    assert r["validity"] == pytest.approx(3 / 5)
    assert r["uniqueness"] == pytest.approx(2 / 3)
    assert r["novelty"] == pytest.approx(1 / 2)
    assert r["valid_unique"] == pytest.approx(2 / 5)


def test_valence_violation_invalid_and_fragments():
    from rdkit import Chem

    bad = Chem.RWMol(Chem.MolFromSmiles("C"))
    for _ in range(5):  # pentavalent carbon
        i = bad.AddAtom(Chem.Atom("C"))
        bad.AddBond(0, i, Chem.BondType.SINGLE)
    r = M.validity_report([bad.GetMol(), Chem.MolFromSmiles("CCO.C")], reference=set())
    assert r["validity"] == 0.5 and r["connectivity"] == 0.0
    assert Chem.MolToSmiles(M.largest_fragment(Chem.MolFromSmiles("CCO.C"))) == "CCO"
    with pytest.raises(ValueError, match="no samples"):
        M.validity_report([])


def test_regression_metrics():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    assert M.regression_metrics(t, t) == {"mae": 0.0, "r2": 1.0, "n": 4.0}
    r = M.regression_metrics(t, np.full(4, t.mean()))
    assert r["r2"] == pytest.approx(0.0) and r["mae"] == pytest.approx(1.0)
    r = M.regression_metrics(t, np.array([1.0, np.nan, 3.0, 4.0]))
    assert r["n"] == 3.0
    with pytest.raises(ValueError, match="sizes differ"):
        M.regression_metrics(t, t[:2])


def test_descriptors_and_qed_sa():
    from rdkit import Chem

    ms = [Chem.MolFromSmiles("CCO"), None, Chem.MolFromSmiles("c1ccccc1")]
    d = M.descriptor_table(ms, ["n_heavy", "mol_wt"])
    assert d[0, 0] == 3 and np.isnan(d[1]).all() and d[2, 1] == pytest.approx(78.114, abs=0.01)
    q = M.distribution_metrics(ms)
    assert 0 < q["qed_mean"] < 1 and 1 <= q["sa_mean"] <= 10
    with pytest.raises(ValueError, match="unknown RDKit descriptor"):
        M.rdkit_descriptor("foo", ms[0])


def test_draw_grid(tmp_path):
    from rdkit import Chem

    p = tmp_path / "g.png"
    M.draw_grid([Chem.MolFromSmiles("CCO"), None], p, legends=["ethanol", "x"])
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no valid"):
        M.draw_grid([None], tmp_path / "h.png")
    assert not (tmp_path / "h.png").exists()


def test_invalidity_breakdown_on_known_graphs():
    import torch

    from molecules.metrics import invalidity_breakdown

    atoms = torch.full((3, 9), -1)
    bonds = torch.zeros(3, 9, 9, dtype=torch.long)
    atoms[0, :3] = 0                      # C-C=C: valid
    bonds[0, 0, 1] = bonds[0, 1, 0] = 1
    bonds[0, 1, 2] = bonds[0, 2, 1] = 2
    atoms[1, :2] = torch.tensor([3, 2])   # F=O: fluorine over-valent (one atom)
    bonds[1, 0, 1] = bonds[1, 1, 0] = 2
    atoms[2, :2] = 0                      # two separate carbons: valid but fragmented
    b = invalidity_breakdown(atoms, bonds)
    assert b["frac_valid"] == 2 / 3 and b["frac_valence"] == 1 / 3 and b["frac_other_invalid"] == 0
    assert b["frac_valid_fragmented"] == 1 / 3 and b["mean_overvalent_atoms"] == 1.0
    assert b["frac_charged_atoms"] == 0.0


def test_graph_statistics_on_known_graphs():
    import torch

    from molecules.metrics import graph_statistics

    atoms = torch.full((2, 9), -1)
    bonds = torch.zeros(2, 9, 9, dtype=torch.long)
    atoms[0, :3] = 0                      # C-C=C
    bonds[0, 0, 1] = bonds[0, 1, 0] = 1
    bonds[0, 1, 2] = bonds[0, 2, 1] = 2
    atoms[1, :2] = torch.tensor([3, 2])   # F=O: the fluorine is over-valent, the oxygen is not
    bonds[1, 0, 1] = bonds[1, 1, 0] = 2
    s = graph_statistics(atoms, bonds)
    assert s["atom_class_count"][:4] == [3, 0, 1, 1]
    assert s["overvalent_rate_by_class"][0] == 0.0 and s["overvalent_rate_by_class"][3] == 1.0
    assert s["overvalent_rate_by_class"][2] == 0.0 and s["overvalent_rate_by_class"][1] is None
    # 4 pairs of present atoms: (C,C) x3 in the first graph (one none, one single, one double), (F,O) double
    assert s["bond_class_freq"] == [0.25, 0.25, 0.5, 0.0]


def test_tanimoto_kernel_ridge_exact_on_real_molecules(tmp_path):
    """The kernel is RDKit's Tanimoto similarity of the same Morgan bits; the fit solves
    (K + alpha I) w = y - mean exactly, so the training predictions are y - alpha w; a safetensors
    round trip predicts identically; None gives NaN."""
    import torch
    from rdkit import DataStructs
    from rdkit.Chem import rdFingerprintGenerator
    from safetensors.torch import load_file, save_file

    t = D.load_qm9(limit=120)
    mols, y = t.mols[:100], t.props[:100, 4].numpy()
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    m = M.TanimotoKernelRidge(alpha=0.05).fit(mols, y)
    x = torch.from_numpy(M.morgan_fingerprints(mols[:5])).double()
    k = m._kernel(x, x)
    for i in range(5):
        for j in range(5):
            want = DataStructs.TanimotoSimilarity(gen.GetFingerprint(mols[i]), gen.GetFingerprint(mols[j]))
            assert float(k[i, j]) == pytest.approx(want, abs=1e-12)
    np.testing.assert_allclose(m.predict(mols), y - 0.05 * m._w.numpy(), rtol=0, atol=1e-9)
    save_file(m.state_dict(), str(tmp_path / "fp.safetensors"))
    m2 = M.TanimotoKernelRidge.from_state_dict(load_file(str(tmp_path / "fp.safetensors")))
    held = list(t.mols[100:]) + [None]
    p1, p2 = m.predict(held), m2.predict(held)
    assert np.isnan(p1[-1]) and np.isnan(p2[-1])
    np.testing.assert_array_equal(p1, p2)
    # held-out molecules are predicted better than their mean (a real, if small, model)
    assert M.regression_metrics(t.props[100:, 4].numpy(), p1[:-1])["r2"] > 0
    with pytest.raises(ValueError, match="alpha must be > 0"):
        M.TanimotoKernelRidge(alpha=0)
    with pytest.raises(RuntimeError, match="before fit"):
        M.TanimotoKernelRidge().predict(mols)
    with pytest.raises(ValueError, match="at least 2 valid"):
        M.TanimotoKernelRidge().fit([mols[0], None], [0.1, 0.2])
