#!/usr/bin/env bash
# Set up ./.venv (if needed), lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
SOURCES=(maas_lib tests bench cli.py)
ruff check "${SOURCES[@]}"
ruff format --check --quiet "${SOURCES[@]}" ||
    { echo "ruff format: run 'ruff format ${SOURCES[*]}'" >&2; exit 1; }
exec python -m pytest "$@"
