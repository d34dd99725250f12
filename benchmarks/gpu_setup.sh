#!/usr/bin/env bash
# Source this on a CUDA machine whose Python has torch but not this project's other packages
# (and no network), from the repository root:
#     bash benchmarks/gpu_wheels.sh             # here, with network: pinned wheels into ./.whl
#     source benchmarks/gpu_setup.sh            # there: installs them into /tmp/site
# It installs the carried wheels without an index, registers diffsuite's domain entry points
# (a dist-info folder; the package itself runs from the checkout through PYTHONPATH) and prints
# the GPU and the versions that matter.
SITE=${DIFFSUITE_SITE:-/tmp/site}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
  || { echo "gpu_setup: wheel install failed"; return 1 2>/dev/null || exit 1; }
DI="$SITE/diffsuite-0.1.0.dist-info"
mkdir -p "$DI"
printf 'Metadata-Version: 2.1\nName: diffsuite\nVersion: 0.1.0\n' > "$DI/METADATA"
python3 - "$DI/entry_points.txt" <<'PY'
import re, sys
text = open("pyproject.toml").read()
block = re.search(r'\[project\.entry-points\."diffsuite\.domains"\]\n(.*?)(?:\n\[|\Z)', text, re.S).group(1)
open(sys.argv[1], "w").write("[diffsuite.domains]\n" + block.replace('"', "").strip() + "\n")
PY
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python3 - <<'PY'
import importlib
from importlib import metadata as md
vers = []
for name in ("torch", "numpy", "pandas", "typing_extensions", "torch_geometric", "lightning", "rdkit", "gluonts",
             "monai", "diffusers", "pydantic", "huggingface_hub"):
    try:
        importlib.import_module(name)
        vers.append(f"{name} {md.version(name.replace('_', '-') if name != 'typing_extensions' else name)}")
    except Exception as e:  # report, do not stop: one missing package costs one domain
        vers.append(f"{name} FAILED ({type(e).__name__}: {e})")
print(" | ".join(vers))
from shared.registry import available_domains
print("domains:", {k: v.describe() if not v.ok else "ok" for k, v in available_domains().items()})
PY
