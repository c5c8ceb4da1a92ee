#!/usr/bin/env bash
# Set up ./.venv (if needed) and run the demo on a fresh SQLite database and a simulated
# fleet (IPMI and Redfish BMCs), all in ./demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
export MAAS_DB="$PWD/demo/maas.db"
SIM="$PWD/demo/sim"
[ -d demo ] && maasctl sim down --dir "$SIM" >/dev/null 2>&1 || true
rm -rf demo && mkdir -p demo
trap 'maasctl sim down --dir "$SIM" >/dev/null' EXIT
set -x
# A simulated fleet: 8 IPMI hosts, 4 Redfish hosts (HTTPS), 1 dead BMC and 1 wrong password each.
maasctl sim up --dir "$SIM" --ipmi 8 --redfish 4 --dead 1 --wrong-creds 1 --install-time 2
set +x; source "$SIM/credentials.env"; set -x
maasctl hosts import "$SIM/inventory.yml" inventory/example.yml
maasctl hosts list --pool sim_redfish
# Direct BMC work, synchronous: status and a confirmed power cycle.
# (Exit 1 means some host failed: the dead and wrong-password BMCs, each with its class.)
maasctl bmc status 'sim-*' || true
maasctl bmc power cycle 'sim-ipmi-000[1-4]' sim-rf-0001
# A rolling reimage, submitted and accepted at once: a canary host first, then batches of
# 25%, at most 3 hosts of the pool down at once, stopping if more than 2 hosts fail (the
# dead and wrong-password BMCs will, each with its error class).
maasctl submit reimage 'sim-ipmi-*' --image ubuntu-24.04 \
    --batch-size 25% --canary 1 --max-failures 2 --max-unavailable 3
# An overlapping request: its two shared hosts are dropped, naming request 1.
maasctl submit reboot 'sim-ipmi-000[1-2]' sim-rf-0001 sim-rf-0002 --as deploy-bot --json
maasctl list
# The scheduler: claims both, resolves the overlap, and runs every batch to the end.
maasctl run --until-idle --timeout 2 --install-timeout 60
maasctl list
maasctl status 1
maasctl status 2 --steps
maasctl sim status --dir "$SIM"
# Telemetry: rates, failure classes and step runtimes; Prometheus text; an HTML report.
maasctl stats --action reimage
maasctl metrics | grep '^maas_host_outcomes_total'
maasctl report --html demo/report.html --request 1
