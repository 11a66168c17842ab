#!/usr/bin/env bash
# Sets up a checkout: Dovecot (for the demo and the tests) from Debian's packages, and a .venv with pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

found() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]; }
if ! found dovecot || ! found doveadm; then
  echo "== installing dovecot-imapd (throwaway IMAP server for the demo and the tests)"
  as_root apt-get update -qq
  # the package's own service is not wanted: our scripts start private servers on free ports
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq dovecot-imapd openssl >/dev/null
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "pipeline needs Python >= 3.11 ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "== installing pipeline and its dependencies into .venv"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,postgres]'
echo "== ready: .venv/bin/pipeline --help"
