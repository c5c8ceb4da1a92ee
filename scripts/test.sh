#!/usr/bin/env bash
# Set up ./.venv (if needed) and run the whole test suite plus the linter.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ruff check maas_lib tests bench cli.py
XX
exec python -m pytest "$@"
