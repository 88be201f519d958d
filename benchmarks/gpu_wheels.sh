#!/usr/bin/env bash
# Fetch, where pip can reach PyPI, the wheels benchmarks/gpu.sh needs on a GPU
# machine that has PyTorch (and the usual scientific stack) but no network.
# They land in .whl/ (git-ignored); carry that folder with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  open_clip_torch==3.3.0 ftfy wcwidth omegaconf==2.3.0 lpips==0.1.4 torch-fidelity==0.4.0 \
  transformers tokenizers huggingface_hub safetensors regex  # vilau: the SigLIP text tokenizer (a local stand-in)
# building tokzoo needs setuptools >= 77 (the SPDX license string); gpu.sh builds with this one
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "setuptools>=77"
# omegaconf's parser runtime is published as an sdist only: build its (pure-Python) wheel here
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -l .whl
