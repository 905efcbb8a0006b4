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
# shellcheck source=scripts/lib.sh
source "$HERE/scripts/lib.sh"

venv_with_torch "$VENV" "$PYTHON" "$TORCH_VERSION"
trap 'rm -f "$HELD_TORCH"' EXIT
echo "installing transformers 4.40.2, lmms-eval and the harness's run-time dependencies"
"${PIP[@]}" -c "$HELD_TORCH" -c "$HERE/models/remote-code-constraints.txt" \
  "transformers==4.40.2" "lmms_eval==0.7.3" accelerate peft datasets pandas pillow numpy pyyaml tqdm scipy \
  filelock packaging SQLAlchemy tiktoken einops transformers_stream_generator timm pytest
echo "installing fgvr-harness itself (--no-deps: it would ask for transformers 5)"
"${PIP[@]}" --no-deps -e "$HERE"
drop_broken_torchvision
"$PY" -c 'import transformers, lmms_eval, harness; print("remote-code environment ready: transformers", transformers.__version__)'
