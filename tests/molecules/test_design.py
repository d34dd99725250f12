"""The inverse-design CLI on a tiny trained checkpoint: CSV, PNG, best-of, bad input."""

import csv

import pytest

from molecules import design


@pytest.fixture(scope="module")
def ckpt(tiny_trained, tmp_path_factory):
    task, cfg, _, model, _ = tiny_trained
    path = tmp_path_factory.mktemp("design") / "final"
    task.save(model, cfg, path)
    return path


@pytest.mark.parametrize("route", ["graph", "smiles"])
def test_design_writes_csv_for_the_targets(ckpt, tmp_path, route):
    out = tmp_path / "d.csv"
    s = design.main([str(ckpt), "--target", "gap=0.25", "--target", "mu=2", "--n", "3", "--best-of", "2",
                     "--steps", "3", "--route", route, "--out", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 and s["n"] == 3 and s["best_of"] == 2 and s["route"] == route
    assert list(rows[0]) == ["smiles", "valid", "target_gap", "target_mu", "pred_gap", "pred_mu"]
    for r in rows:
        assert float(r["target_gap"]) == 0.25 and float(r["target_mu"]) == 2.0
        assert (r["valid"] == "1") == bool(r["smiles"]) == bool(r["pred_gap"])
    assert s["validity"] == sum(r["valid"] == "1" for r in rows) / 3
    # same seed, same designs
    again = design.main([str(ckpt), "--target", "gap=0.25", "--target", "mu=2", "--n", "3", "--best-of", "2",
                         "--steps", "3", "--route", route, "--out", str(tmp_path / "e.csv")])
    assert (tmp_path / "e.csv").read_text() == out.read_text() and again["validity"] == s["validity"]


def test_design_bad_input(ckpt, tmp_path, capsys):
    out = tmp_path / "d.csv"
    out.write_text("keep me\n")
    for argv, msg in [(["--target", "foo=1"], "unknown property 'foo'"), (["--target", "gap"], "PROPERTY=VALUE"),
                      (["--target", "gap=x"], "not a number"), ([], "at least one --target"),
                      (["--target", "gap=0.2", "--target", "gap=0.3"], "given twice"),
                      (["--target", "gap=0.2", "--n", "0"], "--n must be >= 1"),
                      (["--target", "gap=0.2", "--best-of", "0"], "--best-of must be >= 1")]:
        with pytest.raises(SystemExit):
            design.main([str(ckpt), "--out", str(out)] + argv)
        assert msg in capsys.readouterr().err
    assert out.read_text() == "keep me\n"  # nothing written on bad input
    from shared.checkpoint import CheckpointError

    with pytest.raises(CheckpointError):
        design.main([str(tmp_path / "nothing"), "--target", "gap=0.2", "--out", str(out)])
    assert design.parse_targets(["gap=0.25", " mu = 2 "], ("mu", "gap")) == {"gap": 0.25, "mu": 2.0}
