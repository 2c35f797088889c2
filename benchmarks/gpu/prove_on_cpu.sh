#!/usr/bin/env bash
# A faithful CPU proof of the device command, on a machine without a GPU:
# 1. a throwaway venv that stands in for the GPU image: Python 3.12 with only jax, jaxlib,
#    optax, safetensors, scikit-learn, grpcio, protobuf, numpy (and pytest, which the image
#    has) at the versions of constraints.txt; no Ray, no tensorflow-datasets;
# 2. the bundle (.offline/, built if missing) and a copy of the files that the device tool
#    sends (tracked, and untracked but not ignored: git ls-files --cached --others
#    --exclude-standard) in a temporary folder, as the device receives them;
# 3. run_device.sh there with the CPU platform and the small size, inside a network namespace
#    with loopback only (unshare -n), so that nothing can be fetched.
#
#   bash benchmarks/gpu/prove_on_cpu.sh [OUT_DIR]       # default: /tmp/star-gpu-proof
#
# PYTHON312: the Python 3.12 interpreter for the stand-in venv (default: pyenv's, else
# python3.12). STAR_PROOF_ARGS: more arguments of measure.py (default: --budget 1800, the time
# that two cores shared with other work needed; add --logical-gpus 1 for the GPU placement).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-/tmp/star-gpu-proof}
pyenv312=(/root/.pyenv/versions/3.12*/bin/python)
if [[ -z ${PYTHON312:-} && -x ${pyenv312[-1]} ]]; then PYTHON312=${pyenv312[-1]}; fi
python312=${PYTHON312:-python3.12}
work=$(mktemp -d /tmp/star-gpu-proof.XXXXXX)
echo "prove_on_cpu.sh: working in $work, results in $out"

"$python312" -m venv "$work/image"
"$work/image/bin/pip" install -q -c "$repo/constraints.txt" \
  jax jaxlib optax safetensors scikit-learn grpcio protobuf numpy pytest pytest-timeout

if [[ ! -f $repo/.offline/requirements.txt ]]; then
  "$work/image/bin/python" "$repo/benchmarks/gpu/build_bundle.py"
fi
mkdir -p "$work/tree"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/tree" && cp -r .offline "$work/tree/")
du -sh "$work/tree"

rm -rf "$out"
mkdir -p "$out"
start=$(date +%s)
unshare -n bash -c "ip link set lo up && cd '$work/tree' && \
  STAR_IMAGE_PYTHON='$work/image/bin/python' \
  bash benchmarks/gpu/run_device.sh --platform cpu --size small --out '$out' ${STAR_PROOF_ARGS:---budget 1800}"
echo "prove_on_cpu.sh: the device command took $(($(date +%s) - start)) s; results in $out"
rm -rf "$work"
