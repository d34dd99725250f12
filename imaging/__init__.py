"""imaging domain of diffsuite: class-conditional pixel and latent diffusion on real images
(MNIST digits shipped), classifier-free guidance, and classifier-feature image metrics.

Light to import: diffusers is imported only when a model is built.

Public API::

    from imaging import ImagingTask, ImagingModel, configs
    task = ImagingTask(); cfg = task.config("default"); data = task.load_data(cfg)
    model = task.build(cfg)          # ImagingModel: .denoiser, .process, .space, .null_class, .sample(...)
"""

from . import configs
from .configs import ImagingConfig
from .data import (ImageSet, from_numpy, load_image_folder, load_mnist, load_sklearn_digits, mnist_splits,
                   read_idx, save_grid)
from .metrics import class_accuracy, frechet_distance, image_metrics, precision_recall
from .model import ImagingModel, per_sample_generators
from .task import ImageSamples, ImagingTask

__all__ = [
    "configs", "ImagingConfig", "ImagingTask", "ImagingModel", "ImageSamples", "per_sample_generators",
    "ImageSet", "load_mnist", "mnist_splits", "load_sklearn_digits", "load_image_folder", "from_numpy",
    "read_idx", "save_grid", "frechet_distance", "precision_recall", "class_accuracy", "image_metrics",
]
