# Shared by the install scripts (sourced, not run).

# apt_install WHAT PACKAGE...: installs Debian packages for an optional part of the test suite.
# Never fails the caller: without root, sudo or apt-get it says what to do and returns 0.
apt_install() {
  local what=$1
  shift
  local sudo=()
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_$what: no apt-get here; install $* yourself or the $what tests will skip" >&2
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "install_$what: not root and no password-less sudo; run 'apt-get install -y $*' as root or the $what tests will skip" >&2
      return 0
    fi
  fi
  echo "install_$what: installing Debian's $* (apt-get)"
  if DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
    echo "install_$what: $* installed"
  else
    echo "install_$what: apt-get could not install $*; the $what tests will skip" >&2
  fi
  return 0
}

# venv_with_torch VENV PYTHON TORCH_VERSION: creates (or reuses) VENV with torch installed, and sets
# PY (its python), PIP (a quiet pip install) and HELD_TORCH (a constraints file holding that torch).
venv_with_torch() {
  local venv=$1 python=$2 torch_version=$3
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: $python is $("$python" --version 2>&1); fgvr-harness needs Python >= 3.11 (set PYTHON=python3.11)" >&2
    exit 2
  fi
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  PY="$venv/bin/python"
  PIP=("$PY" -m pip install --disable-pip-version-check -q)
  if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "installing torch==$torch_version"
    "${PIP[@]}" "torch==$torch_version"
  fi
  HELD_TORCH=$(mktemp)
  echo "torch==$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')" >"$HELD_TORCH"
}

# drop_broken_torchvision: removes a torchvision that cannot be imported (the registry's CUDA build
# beside a CPU torch), so that transformers uses its PIL image processors.
drop_broken_torchvision() {
  if "$PY" -m pip show torchvision >/dev/null 2>&1 && ! "$PY" -c 'import torchvision' 2>/dev/null; then
    echo "torchvision is installed but cannot be imported (a build for another torch/CUDA); removing it so transformers uses its PIL image processors"
    "$PY" -m pip uninstall -y -q torchvision
  fi
}
