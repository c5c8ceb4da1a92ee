#!/usr/bin/env bash
# Set up ./.venv (if needed), lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
SOURCES=(maas_lib tests bench cli.py)
ruff check "${SOURCES[@]}"
ruff format --check --quiet "${SOURCES[@]}" ||
    { echo "ruff format: run 'ruff format ${SOURCES[*]}'" >&2; exit 1; }
# Most tests wait on simulated BMCs, subprocesses and timeouts rather than compute: two
# workers (each file on one, so module and session fixtures start once per worker) take
# about half the time. MAAS_TEST_WORKERS=0 runs in this process; `-n N` after it wins.
exec python -m pytest -n "${MAAS_TEST_WORKERS:-2}" --dist loadfile "$@"
