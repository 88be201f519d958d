#!/usr/bin/env bash
# GPU throughput check (one H200, no network, under 10 minutes):
# paper-size semhitok / vqgan / vilau, a few hundred steps each at 256x256 with
# bf16 + torch.compile on synthetic data, then `tokzoo bench` on 10k images;
# prints images/s and model FLOP utilisation, then the AR probe's GPT-B
# training steps/s and KV-cache samples/s (benchmarks/gpu.py).
#
# PyTorch, torchvision, timm, torchmetrics, rich, pluggy, safetensors, scipy and
# scikit-image are expected on the machine; the rest travels as wheels in .whl/
# (fetch them once, where pip works, with `bash benchmarks/gpu_wheels.sh`).
# tokzoo and its plugins are installed from this checkout into a private
# folder, so nothing on the machine is modified.
#
#   bash benchmarks/gpu.sh [gpu.py options]     e.g. --steps 100 --presets vqgan
#   bash benchmarks/gpu.sh --smoke              the same path on a CPU, tiny presets
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${TOKZOO_GPU_SITE:-/tmp/tokzoo-site}
rm -rf "$SITE"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
# built with the setuptools of .whl/ when the machine's is older than 77 (the SPDX license string)
PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" \
$PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade --target "$SITE" \
  . plugins/semhitok plugins/baselines
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
cd /tmp  # import tokzoo from $SITE, not from the checkout
$PY -c "import tokzoo, open_clip, omegaconf, lpips, torch_fidelity, torch; print('tokzoo', tokzoo.__version__, 'torch', torch.__version__)"
exec $PY "$OLDPWD/benchmarks/gpu.py" "$@"
