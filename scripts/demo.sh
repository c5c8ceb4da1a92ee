#!/usr/bin/env bash
# Set up ./.venv (if needed) and run the demo on a fresh SQLite database in ./demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
export MAAS_DB="$PWD/demo/maas.db"
rm -rf demo && mkdir -p demo
set -x
maasctl hosts import inventory/example.yml
maasctl hosts list
# Two overlapping submissions: both are accepted at once; the scheduler resolves
# the overlap later, in acceptance order.
maasctl submit reimage 'web*' --image ubuntu-24.04 --batch-size 25% --canary 1 --max-failures 1
maasctl submit reboot 'web0[1-4]' db01 --as deploy-bot --json
maasctl list
maasctl status 1
