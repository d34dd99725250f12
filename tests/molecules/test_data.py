"""Loaders, encodings and the graph space on the vendored QM9 files."""

import numpy as np
import pytest
import torch

from molecules import data as D
from molecules.space import MolGraphSpace, decode_dense, encode_dense, pack, unpack


@pytest.fixture(scope="module")
def qm9():
    return D.load_qm9(limit=300)


def test_load_qm9_properties_and_units(qm9):
    assert len(qm9) == 300
    assert qm9.props.shape == (300, 12) and qm9.names == D.PROPERTY_NAMES
    assert set(D.PROPERTY_UNITS) == set(D.PROPERTY_NAMES)
    gap = qm9.props[:, qm9.names.index("gap")]
    # HOMO-LUMO gap in Hartree equals lumo - homo in the file
    diff = qm9.props[:, qm9.names.index("lumo")] - qm9.props[:, qm9.names.index("homo")]
    assert torch.allclose(gap, diff, atol=2e-4)
    assert qm9.ids[0].startswith("gdb_")
    assert all(D.canonical_smiles(s) == s for s in qm9.smiles)


def test_smiles_onehot_round_trip(qm9):
    smi = [s for s in qm9.smiles if len(s) <= D.SMILES_LENGTH]
    x = D.smiles_to_onehot(smi)
    assert x.shape == (len(smi), 32, 22) and len(D.SMILES_ALPHABET) == 22
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    assert D.onehot_to_smiles(x) == smi


def test_mol_graph_round_trip(qm9):
    for s, m in zip(qm9.smiles, qm9.mols):
        g = D.mol_to_graph(m)
        assert g.edge_index.shape[1] == g.edge_attr.numel()
        assert D.canonical_smiles(D.graph_to_mol(g)) == s
        a, b = D.mol_to_dense(m)
        assert torch.equal(b, b.T)
        assert D.canonical_smiles(D.dense_to_mol(a, b)) == s


def test_dense_relaxation_round_trip(qm9):
    ds = D.MoleculeDataset(qm9, D.PropertyScaler.fit(qm9.props))
    X, E, nm = encode_dense(ds.atoms, ds.bonds, len(D.ATOM_TYPES), len(D.BOND_ORDERS))
    x = pack(X, E)
    X2, E2 = unpack(x, 9, 8, 4)
    a, b = decode_dense(X2, E2, nm)
    assert torch.equal(a, ds.atoms) and torch.equal(b, ds.bonds)
    # scaled properties lie in [0, 1] and invert exactly
    sc = D.PropertyScaler.fit(qm9.props)
    z = sc.transform(qm9.props)
    assert z.min() >= 0 and z.max() <= 1
    assert torch.allclose(sc.inverse(z), qm9.props, rtol=1e-5, atol=1e-5)


def test_invalid_rows_reported_and_skipped(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("smiles,gap\nCCO,0.3\nC1CC,0.2\nnot_a_smiles,0.1\nc1ccccc1,0.25\n")
    with pytest.warns(UserWarning, match=r"skipped 2 invalid row\(s\).*C1CC"):
        t = D.read_csv(p)
    assert t.smiles == ["CCO", "c1ccccc1"] and t.invalid.count == 2
    assert t.names == ("gap",) and t.props[:, 0].tolist() == [0.3, 0.25]


def test_read_sdf_and_smi(tmp_path, qm9):
    from rdkit import Chem

    path = tmp_path / "x.sdf"
    w = Chem.SDWriter(str(path))
    for m, gap in zip(qm9.mols[:5], qm9.props[:5, 4].tolist()):
        m = Chem.Mol(m)
        m.SetProp("gap", str(gap))
        w.write(m)
    w.close()
    t = D.read_sdf(path, props=("gap",))
    assert t.smiles == qm9.smiles[:5]
    assert torch.allclose(t.props[:, 0], qm9.props[:5, 4])
    smi = tmp_path / "x.smi"
    smi.write_text("CCO ethanol\nCC(=O)O acid\n")
    assert D.read_molecules(smi).smiles == ["CCO", "CC(=O)O"]
    with pytest.raises(ValueError, match="unsupported"):
        D.read_molecules(tmp_path / "x.xyz")
    with pytest.raises(FileNotFoundError):
        D.read_sdf(tmp_path / "missing.sdf")


def test_bad_inputs():
    with pytest.raises(ValueError, match="longer than length"):
        D.smiles_to_tokens("C" * 40)
    with pytest.raises(ValueError, match="outside the alphabet"):
        D.smiles_to_tokens("CCCl")
    from rdkit import Chem

    with pytest.raises(ValueError, match="not one of the QM9 classes"):
        D.mol_to_dense(Chem.MolFromSmiles("CCCl"))
    with pytest.raises(ValueError, match="heavy atoms"):
        D.mol_to_dense(Chem.MolFromSmiles("CCCCCCCCCC"))
    with pytest.raises(ValueError, match="onehot|expected"):
        D.onehot_to_smiles(torch.zeros(2, 32, 5))


def test_csv_missing_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("smiles,mu\nCCO,1.0\n")
    with pytest.raises(ValueError, match=r"\['alpha'"):
        D.load_qm9(p)
    q = tmp_path / "nosmiles.csv"
    q.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no 'smiles' column"):
        D.read_csv(q)


def test_splits(qm9):
    a = D.random_split(300, (0.8, 0.1, 0.1), seed=1)
    b = D.random_split(300, (0.8, 0.1, 0.1), seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sorted(np.concatenate(a).tolist()) == list(range(300))
    parts = D.scaffold_split(qm9.smiles, (0.8, 0.1, 0.1), seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(300))
    from rdkit.Chem.Scaffolds import MurckoScaffold

    sc = [MurckoScaffold.MurckoScaffoldSmiles(smiles=s) for s in qm9.smiles]
    train_sc = {sc[i] for i in parts[0]}
    assert not any(sc[i] in train_sc for i in parts[2])
    with pytest.raises(ValueError, match="sum to 1"):
        D.random_split(10, (0.5, 0.2))


def test_graph_space_noise_and_dim():
    nm = torch.tensor([[True] * 3 + [False] * 6, [True] * 9])
    sp = MolGraphSpace(nm, 8, 4)
    x = torch.zeros(2, 9 * 8 + 81 * 4)
    z = sp.noise(x, torch.Generator().manual_seed(0))
    X, E = unpack(z, 9, 8, 4)
    assert torch.equal(E, E.transpose(1, 2))
    assert (X[0, 3:] == 0).all() and (E[0, 3:] == 0).all() and (E[0, :, 3:] == 0).all()
    assert (torch.diagonal(E, dim1=1, dim2=2) == 0).all()
    assert sp.dim(x).tolist() == [3 * 8 + 3 * 4, 9 * 8 + 36 * 4]
    # per-free-entry variance is 1 (upper triangle counted once)
    big = MolGraphSpace(torch.ones(4000, 9, dtype=torch.bool), 8, 4)
    zz = big.noise(torch.zeros(4000, 9 * 8 + 81 * 4), torch.Generator().manual_seed(1))
    assert abs(float((big.sum(zz**2) / big.dim(zz)).mean()) - 1.0) < 0.01
    y = sp.project(z + 1.0)
    assert torch.allclose(sp.project(y), y)


def test_pyg_batch_to_dense_matches(qm9):
    from torch_geometric.data import Batch

    graphs = [D.mol_to_graph(m) for m in qm9.mols[:20]]
    atoms, bonds = D.pyg_to_dense(Batch.from_data_list(graphs))
    for i, m in enumerate(qm9.mols[:20]):
        a, b = D.mol_to_dense(m)
        assert torch.equal(atoms[i], a) and torch.equal(bonds[i], b)
    assert len(qm9.subset(range(3)).graphs()) == 3
