"""Loaders on the real DENTEX files, id-to-FDI mapping, MONAI pipelines, label-aware flip,
the phantom generator and bad-input errors."""

import gzip
import json

import numpy as np
import pytest
import torch

from medical.data import (DentexError, flip_horizontal, load_dentex, load_images, make_phantoms, parse_dentex,
                          swap_quadrants, vendored_json)


def test_real_part1_counts_and_fdi_mapping():
    d = vendored_json("dentex_train_quadrant")
    recs = parse_dentex(d)
    assert len(recs) == 693
    assert sum(len(r.boxes) for r in recs) == 2772
    # ids are mapped through the names: id 0 is quadrant "2", id 1 is "1"
    names = {c["id"]: int(c["name"]) for c in d["categories"]}
    first = d["annotations"][0]
    rec = next(r for r in recs if r.image_id == first["image_id"])
    assert rec.quadrant[0] == names[first["category_id"]] == 2
    assert set(np.concatenate([r.quadrant for r in recs]).tolist()) == {1, 2, 3, 4}
    assert all((r.tooth == -1).all() and (r.diagnosis == -1).all() for r in recs)


def test_real_hierarchical_counts_and_nulls():
    d = vendored_json("hierarchicaldet_val_quadrant_hier")
    recs = parse_dentex(d)
    assert len(recs) == 70 and sum(len(r.boxes) for r in recs) == 280
    assert all((r.tooth == -1).all() for r in recs)  # category_id_2 is null in this file
    # every image has the four quadrants exactly once
    assert all(sorted(r.quadrant.tolist()) == [1, 2, 3, 4] for r in recs)


def test_hierarchical_ids_map_to_fdi_numbers():
    d = vendored_json("hierarchicaldet_val_quadrant_hier")
    d = json.loads(json.dumps(d))
    a = d["annotations"][0]
    a["category_id_2"], a["category_id_3"] = 0, 2  # tooth id 0 is "6", diagnosis id 2 is "Impacted"
    rec = parse_dentex(d)[0]
    assert rec.tooth[0] == 6 and rec.diagnosis[0] == 3  # DIAGNOSES.index("Impacted")
    assert rec.labels()[0].tolist() == [rec.quadrant[0] - 1, 5, 3]


def test_swap_quadrants():
    assert swap_quadrants(np.array([1, 2, 3, 4, -1])).tolist() == [2, 1, 4, 3, -1]
    assert swap_quadrants(torch.tensor([4, 1])).tolist() == [3, 2]


def test_flip_swaps_quadrants_and_mirrors_boxes():
    img = torch.zeros(1, 20, 10)
    img[0, 2:5, 1:3] = 1.0
    item = {"image": img, "boxes": torch.tensor([[2.0, 1.0, 5.0, 3.0]]), "quadrant": torch.tensor([1])}
    f = flip_horizontal(item)
    assert f["quadrant"].tolist() == [2]
    assert torch.allclose(f["boxes"], torch.tensor([[15.0, 1.0, 18.0, 3.0]]))
    assert f["image"][0, 15:18, 1:3].eq(1).all() and f["image"].sum() == img.sum()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph") / "set"
    js = make_phantoms(out, 6, seed=3, size=(128, 64), partial=(0.5, 0.5))
    return out, js


def test_phantom_roundtrip(phantoms):
    out, js = phantoms
    d = json.loads(js.read_text())
    assert {"categories_1", "categories_2", "categories_3"} <= set(d)
    ds = load_dentex(js, out)
    assert len(ds) == 6 and ds.num_boxes == len(d["annotations"]) > 0
    # ids are shuffled in the JSON, but the loader returns FDI numbers / diagnosis indices
    for a in d["annotations"]:
        assert a["category_id_1"] is not None
    recs = ds.records
    q = np.concatenate([r.quadrant for r in recs])
    assert set(q.tolist()) <= {1, 2, 3, 4}
    t = np.concatenate([r.tooth for r in recs])
    assert set(t.tolist()) <= {-1, *range(1, 9)}
    # partial labels (nulls) appear with partial=(0.5, 0.5)
    assert (t == -1).any() or (np.concatenate([r.diagnosis for r in recs]) == -1).any()
    # same seed -> same files
    again = make_phantoms(out.parent / "again", 6, seed=3, size=(128, 64), partial=(0.5, 0.5))
    assert again.read_text() == js.read_text()


def test_load_images_monai(phantoms):
    out, js = phantoms
    ds = load_dentex(js, out)
    items = load_images(ds, (64, 32))
    it = items[0]
    assert it["image"].shape == (1, 64, 32)  # [C, W, H], MONAI axis order
    assert it["labels"].shape == (len(ds.records[0].boxes), 3)
    # ZoomBoxd halves the boxes
    assert torch.allclose(it["boxes"], torch.as_tensor(ds.records[0].boxes) / 2, atol=1e-4)


def _write(tmp_path, d, gz=False):
    p = tmp_path / ("a.json.gz" if gz else "a.json")
    data = json.dumps(d).encode()
    p.write_bytes(gzip.compress(data) if gz else data)
    return p


def _minimal():
    return {"images": [{"id": 1, "file_name": "x.png", "width": 100, "height": 50}],
            "annotations": [{"id": 7, "image_id": 1, "bbox": [10, 10, 20, 20], "category_id": 0}],
            "categories": [{"id": 0, "name": "3"}]}


def test_bad_inputs_name_the_entry(tmp_path):
    ok = parse_dentex(_minimal())
    assert ok[0].quadrant.tolist() == [3]
    d = _minimal(); d["annotations"][0]["category_id"] = 5
    with pytest.raises(DentexError, match="id=7.*unknown category_id=5"):
        parse_dentex(d)
    d = _minimal(); d["annotations"][0]["bbox"] = [90, 10, 20, 20]
    with pytest.raises(DentexError, match="id=7.*outside image"):
        parse_dentex(d)
    d = _minimal(); d["annotations"][0]["image_id"] = 9
    with pytest.raises(DentexError, match="id=7.*unknown image_id=9"):
        parse_dentex(d)
    d = _minimal(); d["categories"] = [{"id": 0, "name": "9"}]
    with pytest.raises(DentexError, match="quadrant name must be 1..4"):
        parse_dentex(d)
    with pytest.raises(DentexError, match="x.png.*not found"):
        load_dentex(_write(tmp_path, _minimal(), gz=True), tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DentexError, match="not valid JSON"):
        load_dentex(bad)


def test_phantom_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        make_phantoms(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    with pytest.raises(ValueError):
        make_phantoms(tmp_path / "new", 0)
    assert not (tmp_path / "new").exists()
