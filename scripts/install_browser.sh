#!/usr/bin/env bash
# Installs what the browser test needs besides the `dev` extra (which brings the Playwright Python
# package and its driver): Debian's Chromium at /usr/bin/chromium. Quick and silent when it is
# already there. Never fails the caller: without Chromium the browser test skips and says why.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
[ -x /usr/bin/chromium ] || apt_install browser chromium
exit 0
