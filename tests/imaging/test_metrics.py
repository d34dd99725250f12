import pytest
import torch

from imaging.metrics import (class_accuracy, classifier_features, classifier_info, frechet_distance,
                             image_metrics, precision_recall)


def test_frechet_exact_cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=g, dtype=torch.float64)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    c = torch.arange(8, dtype=torch.float64)
    # a shift changes only the mean term: FD = |c|^2 exactly
    assert frechet_distance(x, x + c) == pytest.approx(float((c**2).sum()), rel=1e-9)
    # a scaling by s: FD = |mu - s mu|^2 + (1 - s)^2 tr(S)
    s = 3.0
    cov = torch.cov(x.T)
    expect = float(((x.mean(0) * (1 - s)) ** 2).sum() + (1 - s) ** 2 * torch.trace(cov))
    assert frechet_distance(x, s * x) == pytest.approx(expect, rel=1e-7)
    with pytest.raises(ValueError):
        frechet_distance(x, x[:, :3])


def test_precision_recall_sanity():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 4, generator=g)
    assert precision_recall(real, real) == (1.0, 1.0)
    far = real + 100
    assert precision_recall(real, far) == (0.0, 0.0)
    # a collapsed generator: precise but no recall
    p, r = precision_recall(real, real[:10].repeat(30, 1) + 1e-3)
    assert p == 1.0 and r < 0.3


def test_classifier_shipped_and_accurate(tiny_data):
    info = classifier_info()
    assert info["test_accuracy"] >= 0.97 and info["produced_by"].startswith("python -m imaging.train_classifier")
    from imaging.data import mnist_splits

    _, _, te = mnist_splits()
    f, logits = classifier_features(te.images[:500])
    assert f.shape == (500, 64) and logits.shape == (500, 10)
    assert class_accuracy(logits, te.labels[:500]) >= 0.97


def test_heldout_vs_itself_and_vs_noise():
    from imaging.data import mnist_splits

    _, va, te = mnist_splits()
    va, te = va.subset(range(500)), te.subset(range(500))
    same = image_metrics(te.images, te.images, te.labels)
    assert same["fd"] == pytest.approx(0.0, abs=1e-6)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["class_accuracy"] >= 0.97
    other = image_metrics(va.images, te.images)
    noise = image_metrics(torch.rand(500, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1, te.images)
    blank = image_metrics(torch.full((500, 1, 32, 32), -1.0) + 0.01 * torch.randn(500, 1, 32, 32), te.images)
    assert other["fd"] < 0.05 * noise["fd"] and other["fd"] < 0.05 * blank["fd"]
    assert other["precision"] > 0.6 and other["recall"] > 0.6
    assert noise["precision"] < 0.05 and noise["recall"] < 0.05
    with pytest.raises(ValueError, match="NaN"):
        image_metrics(torch.full((10, 1, 32, 32), float("nan")), te.images)
