#!/usr/bin/env bash
# Installs what the PostgreSQL tests need besides the `postgres` extra (psycopg): the PostgreSQL
# server binaries (Debian's postgresql). The tests start a throwaway server from them on 127.0.0.1
# (or use HARNESS_TEST_PG_URL). Quick and silent when they are there. Never fails the caller:
# without them the PostgreSQL tests skip and say why.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null &&
  ! { command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/postgres" ]; }; then
  apt_install postgres postgresql
fi
exit 0
