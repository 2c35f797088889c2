#!/usr/bin/env bash
# The "GPU workers" measurement (benchmarks/README.md) on a machine with no network: installs
# the offline bundle (.offline/, made by build_bundle.py here and carried along) into a venv
# layered on the machine's own Python, then runs measure.py with the arguments given.
#
#   bash benchmarks/gpu/run_device.sh --platform gpu --out "$OUT"                  # the device
#   STAR_IMAGE_PYTHON=/path/to/python bash benchmarks/gpu/run_device.sh \
#       --platform cpu --size small --out /tmp/gpu-proof                             # a CPU proof
#
# STAR_IMAGE_PYTHON: the interpreter whose packages (JAX, optax, ...) are used (default python3).
# Everything is written under --out: run.log (this script's output), summary.json, summary.md,
# pytest.log. HOME points at a fresh folder, so nothing lands in the real one.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --out ]]; then out=${args[i + 1]:-}; fi
done
if [[ -z $out ]]; then
  echo "run_device.sh: --out DIR is required" >&2
  exit 2
fi
if [[ ! -f .offline/requirements.txt ]]; then
  echo "run_device.sh: no .offline/ bundle here (make it with benchmarks/gpu/build_bundle.py and carry it)" >&2
  exit 2
fi
mkdir -p "$out"
exec > >(tee -a "$out/run.log") 2>&1

work=$(mktemp -d /tmp/star-gpu.XXXXXX)
export HOME="$work/home"
mkdir -p "$HOME"
start=$(date +%s)
echo "run_device.sh: $(date -u +%FT%TZ) on $(hostname), $(nproc) cores"
"${STAR_IMAGE_PYTHON:-python3}" benchmarks/gpu/install_bundle.py --bundle .offline --venv "$work/venv"
"$work/venv/bin/python" benchmarks/gpu/measure.py "$@"
echo "run_device.sh: done in $(($(date +%s) - start)) s"
