"""imaging domain of diffsuite: class-conditional pixel and latent diffusion on real images
(MNIST digits shipped), classifier-free guidance, and classifier-feature image metrics.

Light to import: diffusers is imported only when a model is built.

Public API::

    from imaging import ImagingTask, ImagingModel, configs
    task = ImagingTask(); cfg = task.config("default"); data = task.load_data(cfg)
    model = task.build(cfg)          # ImagingModel: .denoiser, .process, .space, .null_class, .sample(...)

Research tools on a trained model (each also ``python -m imaging.<module>``):
``diffusion_classifier`` (zero-shot classification, diffusion-feature probe), ``editing`` (DDIM
inversion, SDEdit, CycleDiffusion, BoundaryDiffusion), ``ppap`` (noise-interval expert guidance),
``diagnostics`` (conservativity, memorisation -> generalisation).
"""

from . import configs
from .configs import ImagingConfig
from .data import (ImageSet, from_numpy, load_image_folder, load_mnist, load_sklearn_digits, mnist_splits,
                   read_idx, save_grid)
from .metrics import class_accuracy, frechet_distance, image_metrics, precision_recall
from .model import ImagingModel, per_sample_generators
from .task import ImageSamples, ImagingTask
from .diffusion_classifier import classify, diffusion_features, linear_probe
from .editing import (boundary_edit, cycle_diffusion, ddim_invert, dpm_decode, dpm_encode, fit_boundary,
                      inversion_error, mixing_step, reconstruct, sdedit)
from .ppap import guided_sample, train_experts
from .diagnostics import conservativity, generalization_curve

__all__ = [
    "configs", "ImagingConfig", "ImagingTask", "ImagingModel", "ImageSamples", "per_sample_generators",
    "ImageSet", "load_mnist", "mnist_splits", "load_sklearn_digits", "load_image_folder", "from_numpy",
    "read_idx", "save_grid", "frechet_distance", "precision_recall", "class_accuracy", "image_metrics",
    "classify", "diffusion_features", "linear_probe", "ddim_invert", "reconstruct", "inversion_error",
    "sdedit", "dpm_encode", "dpm_decode", "cycle_diffusion", "mixing_step", "fit_boundary",
    "boundary_edit", "train_experts", "guided_sample", "conservativity", "generalization_curve",
]
