"""molecules domain of diffsuite: QM9 graph diffusion, a forward property model, and the seed
paper's property-conditioned SMILES diffusion (Luu & Buehler 2023), scored with RDKit.

Heavy dependencies (RDKit, torch-geometric) are imported where used; ``import molecules`` is light.
"""

from .configs import MoleculesConfig, default, gpu, tiny  # noqa: F401

__all__ = ["MoleculesConfig", "tiny", "default", "gpu", "MoleculesTask", "MoleculeModel", "MoleculeSamples",
           "PropertyGuidance", "sample_graphs", "sample_smiles", "predict_properties"]

_LAZY = {"MoleculesTask", "MoleculeModel", "MoleculeSamples", "PropertyGuidance", "sample_graphs",
         "sample_smiles", "predict_properties"}


def __getattr__(name):
    if name in _LAZY:
        from . import task

        return getattr(task, name)
    raise AttributeError(f"module 'molecules' has no attribute {name!r}")
