"""molecules domain of diffsuite: QM9 graph diffusion, a forward property model, and the seed
paper's property-conditioned SMILES diffusion (Luu & Buehler 2023), scored with RDKit; and the
paper's second part in its smallest form, mole fractions of binary deep eutectic solvents for a
target melting point (``molecules.des``).

Heavy dependencies (RDKit, torch-geometric) are imported where used; ``import molecules`` is light.
"""

from .configs import MoleculesConfig, default, gpu, tiny  # noqa: F401

__all__ = ["MoleculesConfig", "tiny", "default", "gpu", "MoleculesTask", "MoleculeModel", "MoleculeSamples",
           "PropertyGuidance", "sample_graphs", "sample_smiles", "predict_properties", "run_des_benchmark"]

_LAZY = {"MoleculesTask", "MoleculeModel", "MoleculeSamples", "PropertyGuidance", "sample_graphs",
         "sample_smiles", "predict_properties"}


def __getattr__(name):
    if name in _LAZY:
        from . import task

        return getattr(task, name)
    if name == "run_des_benchmark":
        from . import des

        return des.run_des_benchmark
    raise AttributeError(f"module 'molecules' has no attribute {name!r}")
