#!/usr/bin/env bash
# One command on a fresh machine: set up, then run the whole pipeline on the bundled sample mailbox.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pipeline demo "$@"
