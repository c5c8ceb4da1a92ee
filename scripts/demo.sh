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
# Direct BMC work, synchronous: status, a confirmed power cycle, a one-time PXE boot.
# (Exit 1 means some host failed: the dead and wrong-password BMCs, each with its class.)
maasctl bmc status 'sim-*' || true
maasctl bmc power cycle 'sim-ipmi-000[1-4]' sim-rf-0001
maasctl bmc boot pxe sim-ipmi-0001
# The install-completion path: what a real installer's last step calls (the scheduler,
# coming next, waits for it after a PXE boot; the simulator's installer calls it itself).
maasctl provisioned sim-ipmi-0001 --image ubuntu-24.04
# Two overlapping submissions: both are accepted at once; the scheduler resolves
# the overlap later, in acceptance order.
maasctl submit reimage 'web*' --image ubuntu-24.04 --batch-size 25% --canary 1 --max-failures 1
maasctl submit reboot 'web0[1-4]' db01 --as deploy-bot --json
maasctl list
maasctl status 1
maasctl sim status --dir "$SIM"
