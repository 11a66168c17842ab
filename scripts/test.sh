#!/usr/bin/env bash
# Sets up (Dovecot, .venv) and runs the whole test suite against a real Dovecot, SQLite and PostgreSQL.
# PostgreSQL: the local server on 127.0.0.1:5432 (trust auth, database `test`); started here when it is down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "== starting PostgreSQL"
    for version in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
  fi
fi
exec .venv/bin/python -m pytest "$@"
