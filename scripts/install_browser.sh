#!/usr/bin/env bash
# Installs what the browser test needs besides the `dev` extra (which brings the Playwright Python
# package and its driver): Debian's Chromium at /usr/bin/chromium. Quick and silent when it is
# already there. Never fails the caller: without Chromium the browser test skips and says why.
set -uo pipefail
CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: no apt-get here; install Chromium at $CHROMIUM yourself or the browser test will skip" >&2
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install_browser: not root and no password-less sudo; run 'apt-get install -y chromium' as root or the browser test will skip" >&2
    exit 0
  fi
fi
echo "install_browser: installing Debian's chromium (apt-get)"
export DEBIAN_FRONTEND=noninteractive
if "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
  echo "install_browser: $("$CHROMIUM" --version 2>/dev/null || echo chromium) installed"
else
  echo "install_browser: apt-get could not install chromium; the browser test will skip" >&2
fi
exit 0
