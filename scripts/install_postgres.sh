#!/usr/bin/env bash
# Installs what the PostgreSQL tests need besides the `postgres` extra (psycopg): the PostgreSQL server
# binaries (Debian's postgresql). The tests start a throwaway server from them on 127.0.0.1 (or use
# HARNESS_TEST_PG_URL). Quick and silent when they are there. Never fails the caller: without them
# the PostgreSQL tests skip and say why.
set -uo pipefail

if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/postgres" ]; then
  exit 0
fi
if compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_postgres: no apt-get here; install PostgreSQL yourself or the PostgreSQL tests will skip" >&2
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install_postgres: not root and no password-less sudo; run 'apt-get install -y postgresql' as root or the PostgreSQL tests will skip" >&2
    exit 0
  fi
fi
echo "install_postgres: installing Debian's postgresql (apt-get)"
export DEBIAN_FRONTEND=noninteractive
if "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends postgresql >/dev/null; then
  echo "install_postgres: $(ls -d /usr/lib/postgresql/*/bin | tail -1) installed"
else
  echo "install_postgres: apt-get could not install postgresql; the PostgreSQL tests will skip" >&2
fi
exit 0
