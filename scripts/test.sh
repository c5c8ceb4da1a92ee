#!/usr/bin/env bash
# Set up ./.venv (if needed) and run the whole test suite plus the linter.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ruff check .
ruff format --check --quiet . || { echo "ruff format: run 'ruff format .'" >&2; exit 1; }
exec python -m pytest "$@"
