#!/usr/bin/env bash
# Creates (or reuses) the virtual environment and installs fgvr-harness with every extra.
# Handles the torch / torchvision pairing: torch is installed first and then held at that
# version, and a torchvision build that cannot be imported (a CUDA build on a CPU-only
# machine) is removed so that transformers falls back to its PIL image processors.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
EXTRAS=${EXTRAS:-train,clip,leaderboard,postgres,dev}
HERE="$(cd "$(dirname "$0")" && pwd)"
CONSTRAINTS=${CONSTRAINTS:-$HERE/constraints.txt}  # the tested versions; CONSTRAINTS=none resolves freely

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: $PYTHON is $("$PYTHON" --version 2>&1); fgvr-harness needs Python >= 3.11 (set PYTHON=python3.11)" >&2
  exit 2
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "installing torch==$TORCH_VERSION"
  "${PIP[@]}" "torch==$TORCH_VERSION"
fi
installed_torch=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$installed_torch" >"$constraints"

pins=()
if [ "$CONSTRAINTS" != none ]; then
  pins=(-c "$CONSTRAINTS")
fi
echo "installing fgvr-harness[$EXTRAS] (torch held at $installed_torch${pins:+, tested versions from $CONSTRAINTS})"
"${PIP[@]}" -c "$constraints" "${pins[@]}" -e ".[${EXTRAS}]"

if "$PY" -m pip show torchvision >/dev/null 2>&1 && ! "$PY" -c 'import torchvision' 2>/dev/null; then
  echo "torchvision is installed but cannot be imported (a build for another torch/CUDA); removing it so transformers uses its PIL image processors"
  "$PY" -m pip uninstall -y -q torchvision
fi
"$PY" -c 'import transformers, lmms_eval, harness; print("environment ready: transformers", transformers.__version__)'
