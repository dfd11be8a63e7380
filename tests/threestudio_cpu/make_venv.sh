#!/usr/bin/env bash
# A virtual environment with threestudio's pins, CPU torch and this package (editable, no deps).
#
#   bash tests/threestudio_cpu/make_venv.sh VENV            # pins only: run the core + contract tests in it
#   bash tests/threestudio_cpu/make_venv.sh VENV --full     # + what `import threestudio` needs on a CPU,
#                                                           #   for tests/test_threestudio_integration.py
#                                                           #   (and threestudio-3dgs's plyfile, pymeshlab)
#
# threestudio pins diffusers<0.20, transformers==4.28.1 (and, in practice, huggingface_hub<0.26, which
# diffusers 0.19 needs, and libigl 2.5 / setuptools<81 for its own imports). torch stays the CPU wheel
# 2.13.0 (a constraint keeps every other package from pulling a CUDA build). tinycudann, nvdiffrast and
# torchvision are not installed: threestudio_sdi/testing/cpu_harness/stubs stands in for them. --full also puts a real
# diffusers 0.42.1 into VENV/overlays/diffusers-0.42 (not on sys.path): tests/test_threestudio_install.py
# prepends it to PYTHONPATH to show what sdi-doctor says of a diffusers threestudio cannot use.
set -euo pipefail
VENV=${1:?usage: make_venv.sh VENV [--full]}
MODE=${2:-}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==2.13.0" >"$CONSTRAINTS"

python3 -m venv "$VENV"
PIP=("$VENV/bin/pip" install -q -c "$CONSTRAINTS")
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" diffusers==0.19.3 transformers==4.28.1 'huggingface_hub<0.26' safetensors accelerate \
  omegaconf==2.3.0 numpy tqdm matplotlib scikit-learn pytest hypothesis gsplat==1.5.3
# sdi-bench's tests (the `bench` extra) under the same pins: Lightning as threestudio pins it
"${PIP[@]}" 'setuptools>=77,<81' pytorch_lightning==2.0.0 torchmetrics submitit pyyaml pillow
if [[ "$MODE" == "--full" ]]; then
  "${PIP[@]}" 'setuptools>=77,<81' lightning==2.0.0 pytorch_lightning==2.0.0 libigl==2.5.1 nerfacc==0.5.3 \
    jaxtyping typeguard opencv-python-headless 'imageio[ffmpeg]' trimesh PyMCubes einops scipy IPython \
    wandb tensorboard networkx envlight==0.1.0 torchmetrics xatlas plyfile pymeshlab
  "$VENV/bin/pip" install -q --no-deps --target "$VENV/overlays/diffusers-0.42" diffusers==0.42.1
elif [[ -n "$MODE" ]]; then
  echo "unknown option $MODE (expected --full)" >&2
  exit 2
fi
"${PIP[@]}" --no-deps -e "$REPO"
"$VENV/bin/python" - <<'PY'
import diffusers, torch, transformers
print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}")
PY
