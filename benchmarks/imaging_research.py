"""imaging research benchmark: diffusion classifier, diffusion-feature probe, DDIM inversion, editing,
PPAP expert guidance, conservativity and memorisation -> generalisation, on one trained model.

    python benchmarks/imaging_research.py [--quick] [--preset default|gpu] --json PATH [--cache DIR]
        [--model CKPT] [--threads 1] [--ppap-only]

One class-conditional model is used by every row: ``--model CKPT`` (e.g. ``<out>/latent_model``
written by ``benchmarks/imaging.py``), else the imaging ``latent`` preset (AutoencoderKL + UNet on
8x8x4 latents, ``train_steps`` UNet steps; ``tiny`` pixel model for ``--quick``) trained once and
cached under ``--cache``. For a latent model the tools work on the diffused variable (latents):
images are encoded before classification / inversion / editing and decoded before the CNN reads
them; PPAP experts classify noisy latents. Keys of the JSON (updated after every row, so a
partial run leaves its figures):

* ``diffusion_classifier_acc`` / ``diffusion_classifier_nfe_per_image`` — Li et al. 2023 with
  adaptive evaluation on held-out MNIST test images (``diffusion_classifier_vs_nfe``: accuracy of
  cheaper schedules on the same images); ``cnn_acc`` — the small classifier CNN of
  ``imaging/weights`` on the same images (the anchor; ``cnn_acc_autoencoded`` on their autoencoder
  reconstructions for a latent model).
* ``linear_probe_acc`` — softmax regression on pooled UNet features (null class, t = 0.1), on the
  whole test split.
* ``ddim_inversion_mse_50`` (and ``ddim_inversion_mse`` per step count) — DDIM invert + resample.
* ``sdedit_target_acc``, ``cycle_target_acc``, ``boundary_flip_rate`` — editing: fraction of edited
  images the CNN reads as the target class / attribute.
* ``ppap_cond_acc`` vs ``single_classifier_cond_acc``, ``cfg_cond_acc``, ``unguided_acc`` — class
  accuracy (CNN) of guided samples: 4 interval experts vs one classifier with the same training
  budget (both fine-tuned from one classifier of the clean input and distilled from its soft
  labels, PPAP's recipe; each arm at its most accurate guidance scale on validation seeds) vs
  classifier-free guidance. ``--ppap-only`` runs just this row.
* ``conservativity_asym_mid_noise`` — Jacobian asymmetry of the eps field at t = 0.5
  (``conservativity`` has every t, with loop integrals).
* ``generalization_similarity`` — cosine similarity of samples from two models trained on disjoint
  sets of the largest size, same noise; ``generalization_curve`` has every size + chance level
  (plot: ``<cache>/generalization.png``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/<domain>.py would shadow the domain packages: the repository root goes first and
# this folder leaves the import path (it is sys.path[0] when a script here is run directly)
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "benchmarks")]


def settings(quick: bool, preset: str) -> dict:
    if quick:
        return dict(preset="tiny", train_steps=30, batch=32, n_cls=20, schedule=((2, 3), (4, 1)), cls_curve=(((2, 1),),),
                    probe_train=256,
                    inv_n=4, inv_steps=(5, 10, 50), edit_n=6, edit_steps=10, ppap_steps=6, ppap_n=10, ppap_scale=4.0,
                    ppap_clean_steps=6, ppap_scales=(2.0, 8.0), ppap_select_n=10,
                    sample_steps=8, cons_n=2, cons_t=(0.1, 0.5, 0.9), cons_probes=2, gen_sizes=(4, 16),
                    gen_steps=10, gen_samples=4)
    if preset == "gpu":
        return dict(preset="gpu", train_steps=None, batch=None, n_cls=1000, schedule=((20, 5), (80, 2), (150, 1)),
                    cls_curve=(((5, 1),), ((10, 3), (30, 1)), ((20, 5), (80, 1))),
                    probe_train=8000, inv_n=64, inv_steps=(10, 20, 50, 100), edit_n=64, edit_steps=50,
                    ppap_steps=2000, ppap_n=1000, ppap_scale=4.0, ppap_clean_steps=4000,
                    ppap_scales=(2.0, 4.0, 8.0, 16.0, 32.0), ppap_select_n=500, sample_steps=50, cons_n=32,
                    cons_t=(0.05, 0.1, 0.25, 0.5, 0.75, 0.9), cons_probes=8, gen_sizes=(16, 128, 1024, 4000),
                    gen_steps=5000, gen_samples=64)
    return dict(preset="latent", train_steps=2500, vae_steps=300, batch=64, n_cls=300,
                schedule=((20, 5), (80, 1)), cls_curve=(((2, 1),), ((5, 1),), ((10, 3), (30, 1))), probe_train=2000,
                inv_n=16, inv_steps=(10, 20, 50), edit_n=20, edit_steps=20, ppap_steps=400, ppap_n=500,
                ppap_scale=4.0, ppap_clean_steps=1000, ppap_scales=(2.0, 4.0, 8.0, 16.0, 32.0), ppap_select_n=200,
                sample_steps=20, cons_n=4, cons_t=(0.05, 0.1, 0.25, 0.5, 0.75, 0.9), cons_probes=4,
                gen_sizes=(8, 64, 512), gen_steps=300, gen_samples=16)


from shared.checkpoint import atomic_write_text  # noqa: E402


def write_json(path: Path, res: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(res, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default="default", choices=["default", "gpu"])
    ap.add_argument("--json", required=True)
    ap.add_argument("--cache", default=str(ROOT / "bench_out" / "imaging_research"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None, help="use this trained checkpoint (e.g. <out>/latent_model of "
                                                   "benchmarks/imaging.py) instead of training / caching one")
    ap.add_argument("--ppap-scale", type=float, default=None,
                    help="one classifier guidance scale for both PPAP arms (default: each arm's most accurate scale of "
                         "the preset's grid on validation samples with other seeds)")
    ap.add_argument("--ppap-init", default="clean", choices=["clean", "scratch", "teacher", "base"],
                    help="PPAP/single classifiers: 'clean' (default, PPAP's recipe): both fine-tuned from one classifier "
                         "of the clean input and distilled from its soft labels; 'scratch': seeded random init with "
                         "labels; 'base': experts fine-tuned from one all-t classifier trained for half the budget "
                         "(same total budget as the single classifier); 'teacher': start from the shipped clean CNN "
                         "and distil it (pixel models only; that CNN is also the evaluator: optimistic)")
    ap.add_argument("--ppap-no-distill", action="store_true", help="with --ppap-init clean: labels, not soft labels")
    ap.add_argument("--ppap-widen", type=float, default=0.0, help="train the highest-noise PPAP expert on its interval "
                                                                  "widened toward lower noise by this many widths "
                                                                  "(0 = PPAP)")
    ap.add_argument("--ppap-only", action="store_true", help="run only the PPAP row (after the model)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from imaging import diagnostics as Dg
    from imaging import editing as E
    from imaging import ppap
    from imaging.diffusion_classifier import classify, linear_probe
    from imaging.metrics import load_classifier
    from imaging.task import ImagingTask
    from shared.training import Trainer

    s = settings(a.quick, a.preset)
    if a.ppap_scale is not None:
        s["ppap_scale"], s["ppap_scales"] = a.ppap_scale, None
    out = Path(a.json)
    cache = Path(a.cache)
    t_all = time.perf_counter()
    res: dict = {"quick": a.quick, "preset": s["preset"], "device": "cuda" if torch.cuda.is_available() else "cpu",
                 "machine": platform.processor() or platform.machine(), "threads": a.threads, "timings_s": {}}

    def stage(name, t0):
        res["timings_s"][name] = round(time.perf_counter() - t0, 1)
        write_json(out, res)
        print(f"[{name}] {res['timings_s'][name]} s", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ the model (cached)
    task = ImagingTask()
    cfg = task.config(s["preset"])
    if s["train_steps"]:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=s["train_steps"],
                                                                 batch_size=s["batch"], device="cpu"))
        if s.get("vae_steps"):
            cfg = dataclasses.replace(cfg, vae_train=dataclasses.replace(cfg.vae_train, steps=s["vae_steps"],
                                                                         batch_size=s["batch"], device="cpu"))
    kind = "latent" if cfg.latent else "pixel"
    tag = f"{kind}-{s['preset']}-{cfg.train.steps}"
    ckpt = Path(a.model) if a.model else cache / tag / "model"
    t0 = time.perf_counter()
    if a.model:
        model, cfg = task.load(ckpt)
        data = task.load_data(cfg)
        res["model_source"] = f"given {ckpt}"
    elif ckpt.is_dir() and any(ckpt.iterdir()):
        model, cfg = task.load(ckpt)
        data = task.load_data(cfg)
        res["model_source"] = f"cached {ckpt}"
    else:
        data = task.load_data(cfg)
        model = task.build(cfg)
        model = task.train(cfg, model, data, Trainer(cfg.train, None, progress=True))
        task.save(model, cfg, ckpt)
        res["model_source"] = f"trained {cfg.train.steps} steps -> {ckpt}"
    model.eval()
    res["train_steps"] = cfg.train.steps
    res["model_kind"] = "latent" if model.is_latent else "pixel"
    enc = lambda im: model.encode(im.to(model.device))  # noqa: E731  identity for pixel models
    dec = lambda z: model.decode(z)  # noqa: E731
    stage("model", t0)
    clf = load_classifier()
    te = data.test

    def cnn(images):
        with torch.no_grad():
            return clf(images.clamp(-1, 1)).argmax(1)

    def ppap_row():
        t0 = time.perf_counter()
        pres = ppap.compare(model, data.train.images, data.train.labels, n=s["ppap_n"], n_experts=4,
                            steps=s["ppap_steps"], scale=s["ppap_scale"], scales=s["ppap_scales"],
                            select_n=s["ppap_select_n"], cfg_scale=2.0, sample_steps=s["sample_steps"],
                            init=a.ppap_init, distill=not a.ppap_no_distill, clean_steps=s["ppap_clean_steps"],
                            widen=a.ppap_widen, val_images=data.val.images, val_labels=data.val.labels,
                            teacher=load_classifier() if a.ppap_init == "teacher" else None, progress=True)
        res.update({k: pres[k] for k in ("ppap_cond_acc", "single_classifier_cond_acc", "cfg_cond_acc",
                                         "unguided_acc")})
        res["ppap_settings"] = {k: v for k, v in pres.items() if not k.endswith("_acc")}
        stage("ppap", t0)

    if a.ppap_only:
        ppap_row()
        res["total_s"] = round(time.perf_counter() - t_all, 1)
        write_json(out, res)
        print_table(res)
        return 0

    # ------------------------------------------------------------------ diffusion classifier
    t0 = time.perf_counter()
    x, y = te.images[:s["n_cls"]], te.labels[:s["n_cls"]]
    res["cnn_acc"] = float((cnn(x) == y).float().mean())
    if model.is_latent:  # what the CNN reads after the autoencoder: a ceiling for a latent classifier
        with torch.no_grad():
            res["cnn_acc_autoencoded"] = float((cnn(dec(enc(x))) == y).float().mean())
    curve = []
    for sched in s.get("cls_curve", ()):  # accuracy vs NFE per image (same images, same seed)
        r = classify(model, x, schedule=sched, generator=torch.Generator().manual_seed(0), progress=True)
        curve.append({"schedule": [list(v) for v in sched], "nfe_per_image": r.nfe_per_image, "acc": r.accuracy(y)})
        print(f"[diffusion classifier] {sched}: acc {curve[-1]['acc']:.3f} at {r.nfe_per_image:.0f} NFE/image",
              file=sys.stderr, flush=True)
        res["diffusion_classifier_vs_nfe"] = curve
        write_json(out, res)
    r = classify(model, x, schedule=s["schedule"], generator=torch.Generator().manual_seed(0), progress=True)
    curve.append({"schedule": [list(v) for v in s["schedule"]], "nfe_per_image": r.nfe_per_image, "acc": r.accuracy(y)})
    res.update(diffusion_classifier_acc=r.accuracy(y), diffusion_classifier_nfe_per_image=r.nfe_per_image,
               diffusion_classifier_schedule=[list(v) for v in s["schedule"]], diffusion_classifier_n=len(y),
               diffusion_classifier_vs_nfe=curve)
    stage("diffusion_classifier", t0)

    t0 = time.perf_counter()
    tr = data.train
    m = min(s["probe_train"], len(tr))
    pr = linear_probe(model, tr.images[:m], tr.labels[:m], te.images, te.labels, t=0.1,
                      generator=torch.Generator().manual_seed(0), progress=True)
    res.update(linear_probe_acc=pr["accuracy"], linear_probe_train_images=m, linear_probe_feature_dim=pr["feature_dim"])
    stage("linear_probe", t0)

    # ------------------------------------------------------------------ inversion and editing
    t0 = time.perf_counter()
    xi = te.images[:s["inv_n"]]
    null = model.conditional(model.labels(None, len(xi)))
    with torch.no_grad():
        err = E.inversion_error(null, enc(xi), s["inv_steps"], progress=True)  # in latents for latent models
    res["ddim_inversion_mse"] = err
    res["ddim_inversion_mse_50"] = err.get(50)
    stage("ddim_inversion", t0)

    t0 = time.perf_counter()
    n, st = s["edit_n"], s["edit_steps"]
    src = te.images[te.labels == 1][:n]
    tgt_den = model.conditional(model.labels(7, len(src)))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sde = dec(E.sdedit(tgt_den, enc(src), strength=0.6, steps=st, generator=g))
    res["sdedit_target_acc"] = float((cnn(sde) == 7).float().mean())
    src_den = model.conditional(model.labels(1, len(src)))
    with torch.no_grad():
        cyc = dec(E.cycle_diffusion(src_den, tgt_den, enc(src), steps=st, generator=torch.Generator().manual_seed(0)))
    res["cycle_target_acc"] = float((cnn(cyc) == 7).float().mean())
    # BoundaryDiffusion: attribute "is a 1" vs "is a 0" in the unconditional (null-class) latent space
    pool = te.images[(te.labels == 0) | (te.labels == 1)][:4 * n]
    attr = te.labels[(te.labels == 0) | (te.labels == 1)][:4 * n] == 1
    den = model.conditional(model.labels(None, len(pool)))
    with torch.no_grad():
        pool_z = enc(pool)
        t_m, _ = E.mixing_step(den, pool_z, steps=st)
        z = E.ddim_invert(den, pool_z, steps=st, t_max=t_m)
    bd = E.fit_boundary(z, attr, t_m)
    zeros = pool_z[~attr][:n]
    with torch.no_grad():
        edited = dec(E.boundary_edit(model.conditional(model.labels(None, len(zeros))), zeros, bd, to=True, steps=st))
    res.update(boundary_mixing_t=t_m, boundary_train_acc=bd.accuracy,
               boundary_flip_rate=float((cnn(edited) == 1).float().mean()))
    stage("editing", t0)

    # ------------------------------------------------------------------ PPAP
    ppap_row()

    # ------------------------------------------------------------------ diagnostics
    t0 = time.perf_counter()
    cons = Dg.conservativity(model, te.images[:s["cons_n"]], s["cons_t"], n_probes=s["cons_probes"],
                             generator=torch.Generator().manual_seed(0), progress=True)
    res["conservativity"] = {str(k): v for k, v in cons.items()}
    mid = min(cons, key=lambda t: abs(t - 0.5))
    res["conservativity_asym_mid_noise"] = cons[mid]["asymmetry"]
    stage("conservativity", t0)

    t0 = time.perf_counter()
    gcfg = task.config("tiny") if s["preset"] != "gpu" else cfg
    gdata = task.load_data(dataclasses.replace(gcfg, data=dataclasses.replace(gcfg.data, train_size=0)))
    rows = Dg.generalization_curve(gcfg, gdata.train.images, s["gen_sizes"], steps=s["gen_steps"],
                                   n_samples=s["gen_samples"], progress=True)
    res["generalization_curve"] = rows
    res["generalization_similarity"] = rows[-1]["cosine"]
    res["generalization_model_preset"] = "tiny" if s["preset"] != "gpu" else s["preset"]
    cache.mkdir(parents=True, exist_ok=True)
    Dg.plot_curve(rows, cache / ("generalization_quick.png" if a.quick else "generalization.png"))
    stage("generalization", t0)

    res["total_s"] = round(time.perf_counter() - t_all, 1)
    write_json(out, res)
    print_table(res)
    return 0


def print_table(r: dict) -> None:
    f = lambda v: "—" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    rows = [
        ("diffusion_classifier_acc", r.get("diffusion_classifier_acc"), f"CNN anchor {f(r.get('cnn_acc'))}"),
        ("diffusion_classifier_nfe_per_image", r.get("diffusion_classifier_nfe_per_image"),
         f"schedule {r.get('diffusion_classifier_schedule')}"),
        ("linear_probe_acc", r.get("linear_probe_acc"), "pooled UNet features, t=0.1"),
        ("ddim_inversion_mse_50", r.get("ddim_inversion_mse_50"), f"all: {r.get('ddim_inversion_mse')}"),
        ("sdedit_target_acc", r.get("sdedit_target_acc"), "1 -> 7, strength 0.6"),
        ("cycle_target_acc", r.get("cycle_target_acc"), "1 -> 7, DPM-Encoder eta=1"),
        ("boundary_flip_rate", r.get("boundary_flip_rate"), f"0 -> 1 at t_m={f(r.get('boundary_mixing_t'))}"),
        ("ppap_cond_acc", r.get("ppap_cond_acc"), "4 interval experts, scale "
         f"{f((r.get('ppap_settings') or {}).get('ppap_guidance_scale'))}"),
        ("single_classifier_cond_acc", r.get("single_classifier_cond_acc"), "same training budget, scale "
         f"{f((r.get('ppap_settings') or {}).get('single_guidance_scale'))}"),
        ("cfg_cond_acc", r.get("cfg_cond_acc"), f"unguided {f(r.get('unguided_acc'))}"),
        ("conservativity_asym_mid_noise", r.get("conservativity_asym_mid_noise"), "0 = gradient field"),
        ("generalization_similarity", r.get("generalization_similarity"),
         f"chance {f((r.get('generalization_curve') or [{}])[-1].get('cosine_unpaired'))}"),
    ]
    print("| metric | value | note |\n|---|---|---|")
    for k, v, note in rows:
        print(f"| {k} | {f(v)} | {note} |")
    print(f"\ntotal {r.get('total_s')} s; timings {r.get('timings_s')}")


if __name__ == "__main__":
    raise SystemExit(main())
