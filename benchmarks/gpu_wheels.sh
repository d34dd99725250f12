#!/usr/bin/env bash
# Run HERE (a machine with network), from the repository root: downloads into ./.whl (git-ignored)
# the Python 3.12 / x86-64 wheels that a CUDA image with torch lacks, pinned to the versions this
# project is tested with (the image's pandas 3 is too new for gluonts 0.17, which needs < 3; pandas 2
# needs pytz and tzdata, which the image lacks).
# About 55 MB: with the checkout (~7 MB) it stays under a 64 MiB transfer limit.
# On the GPU machine:  source benchmarks/gpu_setup.sh   (or: bash benchmarks/gpu_all.sh OUT)
set -euo pipefail
mkdir -p .whl
PKGS=(rdkit==2026.9.1 gluonts==0.17.0 monai==1.6.1 diffusers==0.42.1 pandas==2.3.3 pydantic==2.14.4
      pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
      importlib-metadata==10.2.0 toolz==0.12.1 pytz==2026.6 tzdata==2026.6)
for p in "${PKGS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "$p"
done
du -sh .whl
