import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from imaging.data import (ImageSet, from_numpy, load_image_folder, load_mnist, load_sklearn_digits, make_grid,
                          mnist_splits, read_idx, save_grid)

# label counts of the MNIST t10k set (LeCun et al.)
T10K_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_idx_shapes_and_label_counts():
    raw = load_mnist(size=None)
    assert raw.images.shape == (10000, 1, 28, 28)
    assert raw.labels.bincount().tolist() == T10K_COUNTS
    assert raw.images.min() == -1 and raw.images.max() == 1
    padded = load_mnist()
    assert padded.images.shape == (10000, 1, 32, 32)
    # padding adds background only; the digit is unchanged in the centre
    assert torch.equal(padded.images[:, :, 2:30, 2:30], raw.images)
    assert (padded.images[:, :, :2] == -1).all()


def test_split_is_fixed_disjoint_and_complete():
    tr, va, te = mnist_splits()
    assert (len(tr), len(va), len(te)) == (8000, 1000, 1000)
    tr2, va2, te2 = mnist_splits()
    assert torch.equal(te.images, te2.images) and torch.equal(tr.labels, tr2.labels)
    # the held-out parts do not depend on the train size
    _, va3, te3 = mnist_splits(train=100)
    assert torch.equal(te3.images, te.images) and torch.equal(va3.images, va.images)
    flat = lambda s: {bytes(x.numpy().tobytes()) for x in ((s.images + 1) * 127.5).round().to(torch.uint8)}
    assert not (flat(te) & flat(va))


def test_read_idx_errors(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(bad)
    trunc = tmp_path / "trunc"
    trunc.write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match="body has 2 bytes"):
        read_idx(trunc)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


def test_sklearn_digits():
    d = load_sklearn_digits(size=16)
    assert d.images.shape == (1797, 1, 16, 16) and d.labels.max() == 9
    assert -1 <= d.images.min() and d.images.max() <= 1


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_classes_resize_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for i in range(3):
            _png(tmp_path / "ok" / cls / f"{i}.png", rng.integers(0, 256, (12, 12), dtype=np.uint8))
    s = load_image_folder(tmp_path / "ok")
    assert s.images.shape == (6, 1, 12, 12) and s.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert s.class_names == ("cat", "dog")
    assert load_image_folder(tmp_path / "ok", size=8).images.shape == (6, 1, 8, 8)
    rgb = load_image_folder(tmp_path / "ok", color="RGB")
    assert rgb.images.shape == (6, 3, 12, 12)

    # mixed sizes without a resize option
    _png(tmp_path / "mixed" / "a.png", np.zeros((10, 10), np.uint8))
    _png(tmp_path / "mixed" / "b.png", np.zeros((12, 10), np.uint8))
    with pytest.raises(ValueError, match="different sizes.*size="):
        load_image_folder(tmp_path / "mixed")
    assert load_image_folder(tmp_path / "mixed", size=10).images.shape == (2, 1, 10, 10)
    assert load_image_folder(tmp_path / "mixed", size=10).labels is None

    # corrupt file is named
    (tmp_path / "corrupt").mkdir()
    _png(tmp_path / "corrupt" / "good.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "corrupt" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="broken.png"):
        load_image_folder(tmp_path / "corrupt")

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "nope")


def test_from_numpy_layouts_and_errors():
    a = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    s = from_numpy(a, np.array([0, 1]))
    assert s.images.shape == (2, 1, 4, 4)
    assert s.images[0, 0, 0, 0] == -1
    assert from_numpy(np.zeros((3, 5, 5, 3), np.uint8)).images.shape == (3, 3, 5, 5)
    assert from_numpy(np.zeros((3, 5, 5), np.float32), value_range=(0, 1)).images.min() == -1
    with pytest.raises(ValueError, match="value_range"):
        from_numpy(np.zeros((3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="outside value_range"):
        from_numpy(np.full((3, 5, 5), 2.0), value_range=(0, 1))
    with pytest.raises(ValueError, match="shape"):
        from_numpy(np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="labels"):
        from_numpy(a, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="empty"):
        ImageSet(torch.zeros(0, 1, 4, 4))


def test_grid_png(tmp_path):
    imgs = torch.linspace(-1, 1, 5 * 16).reshape(5, 1, 4, 4)
    g = make_grid(imgs, nrow=3, pad=1)
    assert g.shape == (2 * 5 + 1, 3 * 5 + 1) and g.dtype == np.uint8
    p = save_grid(imgs, tmp_path / "g.png", scale=1)
    assert Image.open(p).size == (3 * 6 + 2, 2 * 6 + 2)  # default pad 2
    with pytest.raises(ValueError, match="png"):
        save_grid(imgs, tmp_path / "g.jpg")
    assert not (tmp_path / "g.jpg").exists()
