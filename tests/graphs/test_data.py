"""Encoding, conversions, validity, loaders and the benchmark lookup (real NAS-Bench-201 data)."""

import gzip
import itertools

import pytest
import torch

from graphs.data import (ADJACENCY, DATASETS, EDGE_INDEX, N_NODES, N_TYPES, OPS, ArchError, NB201Lookup,
                         arch_to_onehot, arch_to_ops, decode, expected_best_of_random, from_pyg, from_signed,
                         is_valid, load_nb201, load_split_permutation, onehot_to_arch, onehot_to_ops,
                         ops_to_arch, ops_to_onehot, to_pyg, to_signed, validity_errors)

BEST_C10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


@pytest.fixture(scope="module")
def table():
    return load_nb201()


def test_table_is_the_full_benchmark(table):
    assert len(table.archs) == 15625 == len(set(table.archs))
    assert table.ops.shape == (15625, 8)
    # every combination of 5 ops on 6 edges appears exactly once
    assert len({tuple(o) for o in table.ops[:, 1:7].tolist()}) == 5 ** 6
    assert abs(float(table.acc["cifar10"].max()) - 94.373) < 1e-3
    assert abs(float(table.acc["cifar100"].max()) - 73.513) < 1e-3
    assert abs(float(table.acc["imagenet16"].max()) - 47.311) < 1e-3
    assert table.archs[int(table.acc["cifar10"].argmax())] == BEST_C10


def test_round_trip_all_cells(table):
    onehot = ops_to_onehot(table.ops)  # [15625, 8, 7]
    assert onehot.shape == (15625, N_NODES, N_TYPES)
    assert torch.equal(onehot_to_ops(onehot), table.ops)
    assert torch.equal(decode(to_signed(onehot)), table.ops)
    assert torch.equal(from_signed(to_signed(onehot)), onehot)
    for a, x in zip(table.archs, onehot):
        assert onehot_to_arch(x) == a
        assert torch.equal(arch_to_onehot(a), x)


def test_pyg_round_trip_all_cells(table):
    from torch_geometric.data import Batch, Data

    datas = [to_pyg(a) for a in table.archs]
    assert all(isinstance(d, Data) for d in datas[:3])
    assert datas[0].x.shape == (8, 7) and datas[0].edge_index.shape == (2, 10)
    assert [from_pyg(d) for d in datas] == list(table.archs)
    b = Batch.from_data_list(datas[:4])
    assert b.num_graphs == 4 and b.x.shape == (32, 7)
    d = to_pyg(table.ops[7], y=91.5)
    assert d.arch == table.archs[7] and float(d.y) == 91.5


def test_adjacency_is_the_nb201_dag():
    # nodes: [input, e(1<-0), e(2<-0), e(2<-1), e(3<-0), e(3<-1), e(3<-2), output]
    expected = {(0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 6), (3, 6), (4, 7), (5, 7), (6, 7)}
    assert set(map(tuple, ADJACENCY.nonzero().tolist())) == expected
    assert set(map(tuple, EDGE_INDEX.t().tolist())) == expected
    assert torch.equal(torch.triu(ADJACENCY, 1), ADJACENCY)  # topologically ordered DAG


def test_arch_string_order_matches_node_order():
    ops = arch_to_ops("|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|")
    assert [OPS[i] for i in ops] == ["input", "none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                                     "avg_pool_3x3", "none", "output"]


@pytest.mark.parametrize("bad, why", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "3 '+'"),
    ("|conv5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv5x5'"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must read node 0"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "must have 2 inputs"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must look like"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "must be 'op~j'"),
    (42, "must be a string"),
])
def test_malformed_strings_raise(bad, why):
    with pytest.raises(ArchError, match=why.replace("(", r"\(").replace("+", r"\+")):
        arch_to_ops(bad)


def _onehot(types):
    return ops_to_onehot(torch.tensor(types))


def test_validity_rules_on_hand_made_graphs():
    good = [0, 2, 3, 4, 5, 6, 2, 1]
    assert validity_errors(torch.tensor(good)) == []
    assert validity_errors(_onehot(good)) == []
    assert "node 0 must be input" in validity_errors(torch.tensor([2, 2, 3, 4, 5, 6, 2, 1]))[0]
    assert "node 7 must be output" in validity_errors(torch.tensor([0, 2, 3, 4, 5, 6, 2, 3]))[0]
    assert "node 3 is input" in validity_errors(torch.tensor([0, 2, 3, 0, 5, 6, 2, 1]))[0]
    assert "node 2 is output" in validity_errors(torch.tensor([0, 2, 1, 4, 5, 6, 2, 1]))[0]
    two = _onehot(good)
    two[4, 6] = 1.0  # two types on node 4
    assert validity_errors(two) == ["node 4 does not have exactly one type"]
    zero = _onehot(good)
    zero[5] = 0.0
    assert validity_errors(zero) == ["node 5 does not have exactly one type"]
    assert "must be [8, 7]" in validity_errors(torch.zeros(8, 6))[0]
    batch = torch.tensor([good, [2, 2, 3, 4, 5, 6, 2, 1], [0, 2, 3, 0, 5, 6, 2, 1], [0, 2, 3, 4, 5, 6, 2, 1]])
    assert is_valid(batch).tolist() == [True, False, False, True]
    with pytest.raises(ArchError, match="invalid cell"):
        ops_to_arch([0, 2, 3, 0, 5, 6, 2, 1])
    with pytest.raises(ArchError, match="not a one-hot"):
        onehot_to_ops(two)


def test_decode_and_pyg_bad_inputs():
    with pytest.raises(ArchError, match=r"\[B, 8, 7\]"):
        decode(torch.zeros(3, 8, 6))
    with pytest.raises(ArchError, match="NaN"):
        decode(torch.full((1, 8, 7), float("nan")))
    d = to_pyg(BEST_C10)
    d.edge_index = d.edge_index[:, :-1]
    with pytest.raises(ArchError, match="fixed NAS-Bench-201"):
        from_pyg(d)
    with pytest.raises(ArchError, match="values in"):
        ops_to_onehot(torch.tensor([0, 2, 3, 4, 5, 9, 2, 1]))


def test_split_permutation_and_loaders(tmp_path, table):
    perm = load_split_permutation()
    assert perm.shape == (15625,) and torch.equal(perm.sort().values, torch.arange(15625))
    bad = tmp_path / "perm.txt"
    bad.write_text("0\n1\n1\n")
    with pytest.raises(ValueError, match="not a permutation"):
        load_split_permutation(bad, n=3)
    csv = tmp_path / "t.csv.gz"
    csv.write_bytes(gzip.compress(b"CIFAR10TestAccuracy200Epochs,ArchitectureString\n90,|none~0|+|none~0|none~1|"
                                  b"+|none~0|none~1|none~2|\n"))
    with pytest.raises(ValueError, match="missing columns"):
        load_nb201(csv)
    with pytest.raises(FileNotFoundError):
        load_nb201(tmp_path / "nope.csv")


def test_lookup_counts_each_new_architecture_once(table):
    lk = NB201Lookup(table)
    a = lk.lookup(BEST_C10, "cifar10")
    assert abs(a - 94.3733) < 1e-3
    assert lk.lookup(BEST_C10, "cifar10") == a and lk.count("cifar10") == 1
    lk.lookup(arch_to_ops(table.archs[5]), "cifar10")
    assert lk.count("cifar10") == 2 and lk.count("cifar100") == 0
    assert [h[0] for h in lk.history("cifar10")] == [BEST_C10, table.archs[5]]
    with pytest.raises(ValueError, match="unknown dataset"):
        lk.lookup(BEST_C10, "mnist")
    with pytest.raises(ArchError):
        lk.lookup("|bogus~0|", "cifar10")


def test_expected_best_of_random_exact(table):
    vals = torch.tensor([3.0, 1.0, 4.0, 1.5, 9.0, 2.6])
    for k in (1, 2, 3, 6):
        brute = torch.tensor([max(c) for c in itertools.combinations(vals.tolist(), k)], dtype=torch.float64).mean()
        assert abs(expected_best_of_random(vals, k) - float(brute)) < 1e-9
    # the reference figures of the hand-off README (expected best after 5 lookups)
    ref = {"cifar10": 92.64, "cifar100": 68.94, "imagenet16": 41.97}
    for ds in DATASETS:
        assert abs(expected_best_of_random(table.acc[ds], 5) - ref[ds]) < 0.01
    with pytest.raises(ValueError):
        expected_best_of_random(vals, 7)
