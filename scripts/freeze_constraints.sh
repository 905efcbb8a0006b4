#!/usr/bin/env bash
# Rewrites scripts/constraints.txt from the current .venv (run after a green `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
out=scripts/constraints.txt
{
  sed -n '1,/^# .make test. on newer releases/p' "$out"
  "$VENV/bin/python" -m pip freeze --disable-pip-version-check \
    | grep -v -E '^(-e |fgvr-harness|torch==|torchvision==|nvidia-|triton==)' | grep -v '@ file'
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") pins)"
