"""medical: hierarchical box-diffusion detection on dental panoramic X-rays (DENTEX), with MONAI.

DiffusionDet / HierarchicalDet style: ground-truth boxes padded to N proposals, scaled to
``[-2, 2]``, noised by the kernel's cosine DDPM process and denoised by a detection head
(x0 prediction) on MONAI ResNet-FPN features; three label levels (FDI quadrant, tooth,
diagnosis) with partial-label masks; box renewal and step ensembling as sampling hooks.

Heavy imports (MONAI, scipy, matplotlib) happen inside the submodules where they are used.
"""

from .configs import DataConfig, LossConfig, MedicalConfig, ModelConfig, SampleConfig, default, gpu, tiny
from .data import (DIAGNOSES, LEVELS, DentexDataset, DentexError, DentexRecord, flip_horizontal, load_dentex,
                   load_images, make_phantoms, parse_dentex, swap_quadrants, vendored_json)

__all__ = [
    "DIAGNOSES", "LEVELS", "DentexDataset", "DentexError", "DentexRecord", "flip_horizontal", "load_dentex",
    "load_images", "make_phantoms", "parse_dentex", "swap_quadrants", "vendored_json",
    "DataConfig", "LossConfig", "MedicalConfig", "ModelConfig", "SampleConfig", "tiny", "default", "gpu",
    "MedicalTask", "MedicalModel", "detect", "denoise_from_ground_truth", "to_dentex_json", "to_monai_dicts",
    "dentex_scores",
]


def __getattr__(name):  # lazy: the task pulls in the kernel sampler and MONAI
    if name in ("MedicalTask", "MedicalModel", "detect", "denoise_from_ground_truth", "to_dentex_json", "to_monai_dicts"):
        from . import task

        return getattr(task, name)
    if name == "dentex_scores":
        from .metrics import dentex_scores

        return dentex_scores
    raise AttributeError(f"module 'medical' has no attribute {name!r}")
