#!/usr/bin/env bash
# GPU check (one H200, no network, at most 9 minutes), in sections ordered by
# value, each under its own timeout so that a failure costs one section:
#   sync            a few vqgan steps with CUDA's sync debug mode "error" between log lines
#   train-vqgan     paper-size vqgan, eager then compiled: img/s, MFU, GiB per image
#   train-semhitok  both stages, eager then compiled
#   train-vilau     eager
#   bench           `tokzoo bench` of the trained vqgan on 10k images
#   ar              the AR probe's GPT-B in bf16: train steps/s and MFU, samples/s eager and compiled
#   searches        nearest-code searches (SGHC's semantic, flat 16,384) against their matmul bound, peak memory
#   agree           one tiny tokenizer benched on the CPU and the GPU (fp32; and bf16): differences vs their bounds
# Each writes OUT/SECTION.json and .log; OUT/summary.md gathers them (commit
# it under benchmarks/results/gpu/). OUT: $OUT (the device runner's), else
# benchmarks/results/gpu. The measuring code is benchmarks/gpu.py.
#
# PyTorch, torchvision, timm, torchmetrics, rich, pluggy, safetensors, scipy and
# scikit-image are expected on the machine; the rest travels as wheels in .whl/
# (fetch them once, where pip works, with `bash benchmarks/gpu_wheels.sh`).
# tokzoo and its plugins are installed from this checkout into a private
# folder, so nothing on the machine is modified.
#
#   bash benchmarks/gpu.sh [gpu.py options]     e.g. --steps 100
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
ROOT=$PWD
case " $* " in
  *" --smoke "*) OUT=${OUT:-/tmp/tokzoo-gpu-smoke} ;;  # a CPU check of the script: nothing to commit
  *) OUT=${OUT:-$ROOT/benchmarks/results/gpu} ;;
esac
mkdir -p "$OUT"
cd /tmp  # import tokzoo from $SITE, not from the checkout
$PY -c "import tokzoo, open_clip, omegaconf, lpips, torch_fidelity, torch; print('tokzoo', tokzoo.__version__, 'torch', torch.__version__)"
section() {  # section NAME SECONDS [gpu.py options]
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit} s)"
  set +e
  timeout --kill-after=10 "$limit" $PY "$ROOT/benchmarks/gpu.py" --section "$name" --out "$OUT/$name.json" "$@" \
    > "$OUT/$name.log" 2>&1
  local rc=$?
  set -e
  grep -v '^\s*$' "$OUT/$name.log" | grep -Ev '━|it/s|img/s \|' | tail -n 12 || true
  [ $rc -eq 0 ] || echo "== $name: exit $rc (124: timed out); the other sections go on"
}
section sync 40 "$@"
section train-vqgan 120 "$@"
section train-semhitok 120 "$@"
section train-vilau 50 "$@"
section bench 65 "$@"
section ar 75 "$@"
section searches 20 "$@"
section agree 45 "$@"
$PY "$ROOT/benchmarks/gpu.py" --summarise "$OUT"
