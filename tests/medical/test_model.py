"""Backbone without torchvision, RoI sampling, matching and partial-label losses, sampling
hooks, and a tiny end-to-end train / detect / evaluate / save / load / plot."""

import json
import sys
from dataclasses import replace

import pytest
import torch

from shared import grid as G
from shared import solvers
from shared.process import DiscreteVP
from shared.sample import StepContext
from shared.spaces import Euclidean


def test_resnet_fpn_without_torchvision():
    from medical.backbones import ResNetFPN

    fe = ResNetFPN(layers=(1, 1, 1, 1), block_inplanes=(8, 16, 16, 16), fpn_channels=8)
    out = fe(torch.randn(2, 1, 64, 32))
    assert [tuple(v.shape) for v in out.values()] == [(2, 8, 16, 8), (2, 8, 8, 4), (2, 8, 4, 2), (2, 8, 2, 1)]
    assert "torchvision" not in sys.modules


def test_roi_sample_reads_the_right_pixels():
    from medical.backbones import roi_sample

    W, H = 32, 16
    fx = torch.arange(W, dtype=torch.float32)[:, None].expand(W, H)  # value = x index
    fy = torch.arange(H, dtype=torch.float32)[None, :].expand(W, H)  # value = y index
    feat = torch.stack([fx, fy])[None]  # [1, 2, W, H]
    box = torch.tensor([[[4.0, 2.0, 12.0, 10.0]]])
    r = roi_sample(feat, box, (W, H), 2)[0, 0]  # [C, P, P]
    # bin centres at x = 6, 10 and y = 4, 8; pixel i has centre i + 0.5
    assert torch.allclose(r[0], torch.tensor([[5.5, 5.5], [9.5, 9.5]]))
    assert torch.allclose(r[1], torch.tensor([[3.5, 7.5], [3.5, 7.5]]))


def test_signal_roundtrip():
    from medical.backbones import boxes_to_signal, signal_to_boxes

    b = torch.tensor([[10.0, 5.0, 50.0, 25.0]])
    x = boxes_to_signal(b, (100, 50), 2.0)
    assert (x.abs() <= 2).all()
    assert torch.allclose(signal_to_boxes(x, (100, 50), 2.0), b, atol=1e-5)


def test_hungarian_and_partial_label_mask():
    from medical.configs import LossConfig
    from medical.detection import hungarian_match, set_loss

    gt = torch.tensor([[10.0, 10.0, 30.0, 30.0], [50.0, 10.0, 70.0, 40.0]])
    labels = torch.tensor([[0, 3, -1], [1, -1, 2]])
    boxes = torch.tensor([[49.0, 11.0, 71.0, 39.0], [0.0, 0.0, 5.0, 5.0], [11.0, 10.0, 29.0, 31.0]])
    logits = [torch.zeros(3, 4, requires_grad=True), torch.zeros(3, 8, requires_grad=True),
              torch.zeros(3, 4, requires_grad=True)]
    r, c = hungarian_match(boxes, logits, gt, labels, (100, 50), LossConfig())
    assert dict(zip(r.tolist(), c.tolist())) == {0: 1, 2: 0}
    loss = set_loss([(boxes[None], [lg[None] for lg in logits])], [gt], [labels], (100, 50), LossConfig())
    loss.sum().backward()
    # tooth unknown for gt 1 (matched to proposal 0): no tooth-level gradient there
    assert logits[1].grad[0].abs().sum() == 0 and logits[1].grad[2].abs().sum() > 0
    # diagnosis unknown for gt 0 (proposal 2); unmatched proposal 1 is background at every level
    assert logits[2].grad[2].abs().sum() == 0 and logits[2].grad[0].abs().sum() > 0
    assert all(lg.grad[1].abs().sum() > 0 for lg in logits)


def test_box_renewal_hook_redraws_only_low_scores():
    from medical.detection import BoxRenewal

    proc = DiscreteVP.from_betas("cosine", 1000)
    aux = {"logits": [torch.tensor([[[5.0, -9, -9, -9], [-9.0, -9, -9, -9]]])]}
    hook = BoxRenewal(aux, threshold=0.5)
    x = torch.full((1, 2, 4), 0.25)
    ctx = StepContext(0, 2, torch.tensor([1.0]), torch.tensor([0.5]), None, proc, Euclidean(),
                      torch.Generator().manual_seed(0))
    y = hook(x, ctx)
    assert torch.equal(y[0, 0], x[0, 0]) and not torch.equal(y[0, 1], x[0, 1])
    last = StepContext(1, 2, torch.tensor([0.5]), torch.tensor([0.0]), None, proc, Euclidean(), None)
    assert torch.equal(hook(x, last), x)  # never on the last step


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medical.task import MedicalTask
    from shared.training import Trainer

    task = MedicalTask()
    cfg = task.config("tiny")
    cfg = replace(cfg, data=replace(cfg.data, cache_dir=str(tmp_path_factory.mktemp("cache"))))
    data = task.load_data(cfg)
    model = task.build(cfg)
    trainer = Trainer(cfg.train, None, progress=False)
    model = task.train(cfg, model, data, trainer)
    return task, cfg, data, model, trainer


def test_tiny_end_to_end(trained, tmp_path):
    task, cfg, data, model, trainer = trained
    assert len(trainer.history) == cfg.train.steps and all(h["loss"] > 0 for h in trainer.history)
    name, direction = task.headline_metric
    assert (name, direction) == ("ap_aggregate", "max")
    for sname, gname, steps in [("ddim", "uniform", 1), ("ddim", "trailing", 4), ("dpmpp_2m", "karras", 3),
                                ("heun", "log_snr", 2), ("euler_ancestral", "uniform", 2)]:
        g = G.make(gname, steps, process=model.process)
        s = task.generate(model, 3, solver=solvers.make(sname), grid=g,
                          generator=torch.Generator().manual_seed(1), data=data)
        assert len(s) == 3 and all(d["boxes"].shape[1] == 4 and d["labels"].shape[1] == 3 for d in s)
        m = task.evaluate(s, data)
        assert name in m and 0.0 <= m[name] <= 1.0
    # save / load: identical detections
    g = G.make("uniform", 2, process=model.process)
    a = task.generate(model, 2, solver=solvers.make("ddim"), grid=g, generator=torch.Generator().manual_seed(0), data=data)
    task.save(model, cfg, tmp_path / "ck")
    m2, cfg2 = task.load(tmp_path / "ck")
    assert cfg2 == cfg
    b = task.generate(m2, 2, solver=solvers.make("ddim"), grid=g, generator=torch.Generator().manual_seed(0), data=data)
    for x, y in zip(a, b):
        assert torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["scores"], y["scores"])
    # an image's detections do not depend on how many images were drawn with it
    c = task.generate(model, 4, solver=solvers.make("ddim"), grid=g, generator=torch.Generator().manual_seed(0), data=data)
    assert torch.allclose(c[1]["boxes"], a[1]["boxes"], atol=1e-5)
    task.plot(a, data, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_output_formats_and_hierarchical_init(trained):
    from medical.task import detect, to_dentex_json, to_monai_dicts

    task, cfg, data, model, _ = trained
    imgs = torch.stack([data.test[0]["image"]])
    g = G.make("uniform", 4, process=model.process)[2:]  # start at t = 0.5 from earlier boxes
    init = [data.test[0]["boxes"]]
    s = detect(model, imgs, solver=solvers.make("ddim"), grid=g, generator=torch.Generator().manual_seed(0),
               init_boxes=init)
    md = to_monai_dicts(s)
    assert set(md[0]) >= {"boxes", "labels", "scores"}
    js = to_dentex_json(s, sizes=[(256, 128)], image_size=cfg.data.image_size)
    json.dumps(js)
    if js["boxes"]:
        bx = js["boxes"][0]
        q, n, d = (int(v) for v in bx["name"].split("-"))
        assert 1 <= q <= 4 and 1 <= n <= 8 and 0 <= d <= 3
        assert len(bx["corners"]) == 4 and 0 <= bx["probability"] <= 1
    with pytest.raises(ValueError, match="init_boxes"):
        detect(model, imgs, solver=solvers.make("ddim"), grid=g, init_boxes=init * 2)


def test_generate_needs_data(trained):
    task, cfg, data, model, _ = trained
    g = G.make("uniform", 1, process=model.process)
    with pytest.raises(ValueError, match="needs data"):
        task.generate(model, 1, solver=solvers.make("ddim"), grid=g, data=None)


def test_one_to_many_matching_and_config_checks():
    from medical.configs import LossConfig, MedicalConfig, DataConfig
    from medical.detection import hungarian_match

    gt = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    boxes = torch.tensor([[10.0, 10.0, 30.0, 31.0], [0.0, 0.0, 5.0, 5.0], [11.0, 10.0, 30.0, 30.0]])
    logits = [torch.zeros(3, 4), torch.zeros(3, 8), torch.zeros(3, 4)]
    labels = torch.tensor([[0, 0, 0]])
    r, c = hungarian_match(boxes, logits, gt, labels, (100, 50), LossConfig(match_k=2))
    assert sorted(r.tolist()) == [0, 2] and c.tolist() == [0, 0]
    with pytest.raises(ValueError, match="curriculum"):
        LossConfig(curriculum=(0.6, 0.2))
    with pytest.raises(ValueError, match="image_size"):
        DataConfig(image_size=(256,))
    from shared.config import from_dict, to_dict

    assert from_dict(MedicalConfig, to_dict(MedicalConfig())) == MedicalConfig()


def test_import_is_light():
    import subprocess

    code = "import sys, medical; assert 'monai' not in sys.modules and 'scipy' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_curriculum_masks_later_levels(trained):
    from medical.task import collate

    task, cfg, data, model, _ = trained
    batch = collate([data.train[i] for i in range(2)])
    masked = {**batch, "labels": [lab.clone() for lab in batch["labels"]]}
    for lab in masked["labels"]:
        lab[:, 1:] = -1
    cur = replace(cfg, loss=replace(cfg.loss, curriculum=(0.5, 1.0)))
    early = task.loss_fn(cur, step_fn=lambda: 0)(model, batch, torch.Generator().manual_seed(0))
    by_hand = task.loss_fn(cfg)(model, masked, torch.Generator().manual_seed(0))
    late = task.loss_fn(cur, step_fn=lambda: cfg.train.steps)(model, batch, torch.Generator().manual_seed(0))
    full = task.loss_fn(cfg)(model, batch, torch.Generator().manual_seed(0))
    assert torch.allclose(early, by_hand) and torch.allclose(late, full) and not torch.allclose(early, full)


def test_denoise_from_ground_truth_oracle():
    """The input-box diagnostic on an oracle head that returns its input boxes and gives the
    ground-truth proposals (placed first by the padding) their true labels: near-perfect AP from
    lightly noised ground truth, near zero from pure noise."""
    from torch import nn

    from medical.configs import SampleConfig
    from medical.data import NUM_CLASSES, LEVELS
    from medical.task import denoise_from_ground_truth

    W, H, N = 128, 64, 10
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(4):
        x0 = torch.tensor([[10.0, 8.0, 22.0, 40.0], [60.0, 20.0, 75.0, 55.0], [90.0, 5.0, 100.0, 30.0]])
        lab = torch.tensor([[0, 1, 2], [1, 3, 0], [3, 7, 1]])
        items.append({"image": torch.zeros(1, W, H), "boxes": x0 + i, "labels": lab})

    class Oracle(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))
            self.num_proposals, self.signal_scale, self.image_size = N, 2.0, (W, H)
            self.process, self.space = DiscreteVP.from_betas("cosine", 1000), Euclidean()
            self.sample_cfg = SampleConfig()
            object.__setattr__(self, "net", self)  # not a registered submodule
            self.denoiser = self.denoise

        def encode(self, images):
            return None

        def denoise(self, x, t, cond, aux):
            logits = []
            for k, lv in enumerate(LEVELS):
                lg = torch.full((x.shape[0], N, NUM_CLASSES[lv]), -9.0)
                for b, it in enumerate(items[: x.shape[0]]):
                    lg[b, torch.arange(3), it["labels"][:, k]] = 9.0
                logits.append(lg)
            aux["logits"] = logits
            return x

    m = Oracle()
    near = denoise_from_ground_truth(m, items, 0.005, generator=gen, batch_size=4)
    far = denoise_from_ground_truth(m, items, 1.0, generator=gen, batch_size=4)
    assert near["ap_aggregate"] > 0.8 and near["ar_aggregate"] > 0.8
    assert far["ap_aggregate"] < 0.2
    with pytest.raises(ValueError, match="t must be"):
        denoise_from_ground_truth(m, items, 0.0)


def test_centre_prior_and_dynamic_k_matching():
    """Centre prior: a far-away proposal is not taken as an extra positive; dynamic k: a box
    with one well-overlapping proposal gets one positive, one with several gets more."""
    from medical.configs import LossConfig
    from medical.detection import hungarian_match

    gt = torch.tensor([[10.0, 10.0, 30.0, 30.0], [60.0, 10.0, 80.0, 40.0]])
    labels = torch.tensor([[0, 0, 0], [1, 1, 1]])
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [90.0, 40.0, 99.0, 49.0],  # near gt 0; far from both
                          [60.0, 10.0, 80.0, 40.0], [60.0, 11.0, 80.0, 40.0], [61.0, 10.0, 80.0, 40.0],
                          [60.0, 10.0, 79.0, 39.0]])  # four near-copies of gt 1
    logits = [torch.zeros(6, 4), torch.zeros(6, 8), torch.zeros(6, 4)]
    r, c = hungarian_match(boxes, logits, gt, labels, (100, 50), LossConfig(match_k=3))
    assert 1 in r.tolist()  # static k: the far box is forced onto a ground truth
    r, c = hungarian_match(boxes, logits, gt, labels, (100, 50),
                           LossConfig(match_k=3, match_dynamic=True, match_center=2.5))
    pairs = dict(zip(r.tolist(), c.tolist()))
    assert 1 not in pairs and pairs[0] == 0
    pos1 = [k for k, v in pairs.items() if v == 1]
    # k = floor(sum of the top-3 IoUs 1 + 0.97 + 0.95) = 2 near-copies for gt 1, 1 for gt 0
    assert len(pos1) == 2 and 2 in pos1 and set(pos1) <= {2, 3, 4, 5} and len(pairs) == 3
    with pytest.raises(ValueError, match="pad_repeat"):
        LossConfig(pad_repeat=1.5)
    with pytest.raises(ValueError, match="time_sampler"):
        LossConfig(time_sampler="nope")


def test_box_prior_signal_and_repeat_padding():
    from medical.backbones import boxes_to_signal, signal_to_boxes
    from medical.configs import ModelConfig
    from medical.detection import pad_boxes

    prior = (0.5, 0.45, 0.07, 0.3, 0.5, 0.35, 0.08, 0.2)
    b = torch.tensor([[10.0, 5.0, 30.0, 45.0]])
    x = boxes_to_signal(b, (256, 128), 2.0, prior)
    assert torch.allclose(signal_to_boxes(x, (256, 128), 2.0, prior), b, atol=1e-4)
    # the default prior is DiffusionDet's (2 b - 1) * scale
    assert torch.allclose(boxes_to_signal(b, (256, 128), 2.0, None),
                          boxes_to_signal(b, (256, 128), 2.0, (0.5,) * 8))
    # pure noise decodes to tooth-sized boxes under the prior
    z = signal_to_boxes(torch.randn(2000, 4, generator=torch.Generator().manual_seed(0)), (256, 128), 2.0, prior)
    wh = (z[:, 2:] - z[:, :2]) / torch.tensor([256.0, 128.0])
    assert abs(float(wh[:, 0].median()) - 0.07) < 0.01 and abs(float(wh[:, 1].median()) - 0.3) < 0.03
    with pytest.raises(ValueError, match="box_prior"):
        ModelConfig(box_prior=(0.5, 0.5))
    gt = boxes_to_signal(torch.tensor([[10.0, 5.0, 30.0, 45.0], [50.0, 5.0, 70.0, 45.0]]), (256, 128), 2.0)
    g = torch.Generator().manual_seed(0)
    out = pad_boxes(gt, 12, 2.0, g, repeat=0.5)
    assert out.shape == (12, 4) and torch.equal(out[:2], gt)
    assert torch.equal(out[2:7], gt[torch.arange(5) % 2])  # 5 of the 10 filler slots repeat the ground truth
    assert not any(torch.equal(out[i], gt[j]) for i in range(7, 12) for j in range(2))


def test_class_topk_hypotheses():
    """With ``class_topk`` a box also carries its runner-up classes per level (DiffusionDet /
    RetinaNet style); a box whose tooth class is second-best is then found at the tooth level."""
    from medical.backbones import boxes_to_signal
    from medical.detection import postprocess
    from medical.metrics import dentex_scores

    gt = torch.tensor([[10.0, 10.0, 30.0, 50.0], [60.0, 10.0, 80.0, 50.0]])
    labels = torch.tensor([[0, 2, 1], [1, 5, 3]])
    sig = boxes_to_signal(gt, (128, 64), 2.0)[None]
    lg = [torch.full((1, 2, k), -6.0) for k in (4, 8, 4)]
    for i in range(2):
        lg[0][0, i, labels[i, 0]] = 4.0
        lg[2][0, i, labels[i, 2]] = 4.0
    lg[1][0, 0, 2], lg[1][0, 0, 3] = 1.0, 2.0  # box 0: true tooth class only second best
    lg[1][0, 1, 5] = 4.0
    one = postprocess([sig], [lg], (128, 64), 2.0)
    two = postprocess([sig], [lg], (128, 64), 2.0, class_topk=2)
    assert "level_dets" not in one[0] and len(two[0]["level_dets"][1]["boxes"]) == 4
    g = [{"boxes": gt, "labels": labels}]
    s1, s2 = dentex_scores(one, g), dentex_scores(two, g)
    assert s1["ap_tooth"] < 0.6 and s2["ap_tooth"] > 0.99
    assert s2["ap_quadrant"] == pytest.approx(s1["ap_quadrant"]) and s2["ap_diagnosis"] == pytest.approx(1.0)


def test_geometry_features_and_geometry_class_path():
    """``geo_rbf``: soft one-hot bins of cx and cy (the bump of a box's own bin is the largest);
    ``geo_cls``: a geometry MLP on each stage's output box added to the class logits, last layer
    zero-initialised, so a fresh net with it gives the same outputs as one without, and its
    weights get gradients."""
    from medical.backbones import DiffusionDetNet

    kw = dict(image_size=(64, 32), layers=(1, 1, 1, 1), block_inplanes=(8, 8, 8, 8), fpn_channels=8, d_model=16,
              num_heads=2, pool=2, num_stages=2, geo_fourier=2)
    torch.manual_seed(0)
    plain = DiffusionDetNet(**kw)
    torch.manual_seed(0)
    geo = DiffusionDetNet(**kw, geo_rbf=8, geo_cls=True)
    torch.manual_seed(0)
    net = DiffusionDetNet(**kw, geo_cls=True)  # same input features as `plain`, plus the zero-init path
    boxes = torch.tensor([[[4.0, 2.0, 14.0, 30.0], [40.0, 8.0, 60.0, 20.0]]])
    f = geo._geo(boxes)
    assert f.shape == (1, 2, 4 + 8 * 2 + 2 * 8)
    rbf = f[..., 4 + 16:].reshape(1, 2, 2, 8)  # [B, N, (cx, cy), bins]
    cx = torch.tensor([9.0, 50.0]) / 64
    assert rbf[0, :, 0].argmax(-1).tolist() == (cx * 8).floor().long().tolist()
    x = torch.randn(1, 2, 4).clamp(-1.5, 1.5)
    t = torch.tensor([0.5])
    img = torch.randn(1, 1, 64, 32)
    a1, a2 = {}, {}
    out1 = plain(x, t, plain.encode(img), aux=a1)
    out2 = net(x, t, net.encode(img), aux=a2)
    assert torch.allclose(out1, out2, atol=1e-6)
    for l1, l2 in zip(a1["logits"], a2["logits"]):
        assert torch.allclose(l1, l2, atol=1e-6)
    sum(lg.sum() for lg in a2["logits"]).backward()
    assert net.geo_heads[-1][1][-1].weight.grad.abs().sum() > 0
