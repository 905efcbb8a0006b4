#!/usr/bin/env bash
# Creates (or reuses) the virtual environment and installs fgvr-harness with every extra.
# Handles the torch / torchvision pairing: torch is installed first and then held at that
# version, and a torchvision build that cannot be imported (a CUDA build on a CPU-only
# machine) is removed so that transformers falls back to its PIL image processors.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
EXTRAS=${EXTRAS:-train,clip,probes,leaderboard,postgres,dev}
HERE="$(cd "$(dirname "$0")" && pwd)"
CONSTRAINTS=${CONSTRAINTS:-$HERE/constraints.txt}  # the tested versions; CONSTRAINTS=none resolves freely
# shellcheck source=scripts/lib.sh
source "$HERE/lib.sh"

venv_with_torch "$VENV" "$PYTHON" "$TORCH_VERSION"
trap 'rm -f "$HELD_TORCH"' EXIT
pins=()
if [ "$CONSTRAINTS" != none ]; then
  pins=(-c "$CONSTRAINTS")
fi
echo "installing fgvr-harness[$EXTRAS] (torch held at $(cut -d= -f3 "$HELD_TORCH")${pins:+, tested versions from $CONSTRAINTS})"
"${PIP[@]}" -c "$HELD_TORCH" "${pins[@]}" -e ".[${EXTRAS}]"
drop_broken_torchvision
"$PY" -c 'import transformers, lmms_eval, harness; print("environment ready: transformers", transformers.__version__)'
