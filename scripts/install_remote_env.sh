#!/usr/bin/env bash
# Creates (or reuses) the environment for the remote-code models: transformers 4.40.2 (the release
# their published modelling code was written for) with lmms-eval and the harness itself, installed
# with --no-deps because the harness's own requirement is transformers 5. Same torch / torchvision
# handling as scripts/install.sh. See models/README-remote-code.md.
set -euo pipefail
VENV=${VENV:-.venv-remote}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
HERE="$(cd "$(dirname "$0")/.." && pwd)"

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "error: $PYTHON is $("$PYTHON" --version 2>&1); fgvr-harness needs Python >= 3.11 (set PYTHON=python3.11)" >&2
  exit 2
}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "installing torch==$TORCH_VERSION"
  "${PIP[@]}" "torch==$TORCH_VERSION"
fi
held=$(mktemp)
trap 'rm -f "$held"' EXIT
echo "torch==$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')" >"$held"

echo "installing transformers 4.40.2, lmms-eval and the harness's run-time dependencies"
"${PIP[@]}" -c "$held" -c "$HERE/models/remote-code-constraints.txt" \
  "transformers==4.40.2" "lmms_eval==0.7.3" accelerate peft datasets pandas pillow numpy pyyaml tqdm scipy \
  filelock packaging SQLAlchemy tiktoken einops transformers_stream_generator timm pytest
echo "installing fgvr-harness itself (--no-deps: it would ask for transformers 5)"
"${PIP[@]}" --no-deps -e "$HERE"

if "$PY" -m pip show torchvision >/dev/null 2>&1 && ! "$PY" -c 'import torchvision' 2>/dev/null; then
  echo "torchvision is installed but cannot be imported (a build for another torch/CUDA); removing it"
  "$PY" -m pip uninstall -y -q torchvision
fi
"$PY" -c 'import transformers, lmms_eval, harness; print("remote-code environment ready: transformers", transformers.__version__)'
