#!/usr/bin/env bash
# Set up ./.venv (if needed) and run the demo on a fresh SQLite database and a simulated
# fleet (IPMI and Redfish BMCs), all in ./demo/; then the same fleet through the HTTPS API
# (`maasctl serve` on loopback TLS, stopped at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
export MAAS_DB="$PWD/demo/maas.db"
SIM="$PWD/demo/sim"
[ -d demo ] && maasctl sim down --dir "$SIM" >/dev/null 2>&1 || true
rm -rf demo && mkdir -p demo
SERVE_PID=
stop_all() {
    # The API server (if it runs): SIGTERM lets calls in flight finish, then it exits 0.
    if [ -n "$SERVE_PID" ] && kill -0 "$SERVE_PID" 2>/dev/null; then
        kill -TERM "$SERVE_PID" && wait "$SERVE_PID" || echo "maasctl serve exited $?" >&2
    fi
    maasctl sim down --dir "$SIM" >/dev/null
}
trap stop_all EXIT
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

# The HTTPS API: `maasctl serve` on loopback TLS with a CA and certificate made here
# (demo/pki/ca.pem, cert.pem, key.pem), an operator token for a team owning the Redfish pool.
python -c 'import sys, pathlib, maas_lib.sim.pki as p; p.make_pki(pathlib.Path(sys.argv[1]))' demo/pki
PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
maasctl pools grant demo-team sim_redfish
# The token's secret goes to a file of its own (mode 0600), never to this log.
(umask 077 && maasctl tokens create demo-ops --role operator --team demo-team --expires 1d >demo/api-token)
maasctl tokens list
maasctl serve --listen "127.0.0.1:$PORT" --tls-cert demo/pki/cert.pem --tls-key demo/pki/key.pem \
    2>demo/serve.log &
SERVE_PID=$!
set +x
for _ in $(seq 300); do
    grep -q '^serving ' demo/serve.log && break
    kill -0 "$SERVE_PID" 2>/dev/null || { cat demo/serve.log >&2; exit 1; }
    sleep 0.1
done
grep '^serving ' demo/serve.log || { cat demo/serve.log >&2; exit 1; }
export MAAS_API_TOKEN="$(cat demo/api-token)"  # not echoed: it is a secret
set -x
API=(maasctl --api "https://127.0.0.1:$PORT" --ca-bundle demo/pki/ca.pem)
# A submission through the API, recorded as the token's principal (token:demo-ops).
SUBMITTED=$("${API[@]}" submit power-cycle 'sim-rf-000[1-2]' --batch-size 1 --json)
ID=$(python -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "$SUBMITTED")
# Hosts outside the team's pools are refused as a whole (exit 3, 403 naming the pool).
"${API[@]}" submit reboot sim-ipmi-0001 || echo "refused: exit $?"
"${API[@]}" list --limit 3
# The scheduler runs it (it is not part of the API server), then its status through the API.
maasctl run --until-idle --timeout 2
"${API[@]}" status "$ID"
maasctl audit --limit 4
set +x
echo "web page: https://127.0.0.1:$PORT/ (trust demo/pki/ca.pem; sign in with the token in"
echo "  demo/api-token, mode $(stat -c %a demo/api-token)). The server stops when the demo ends; to serve again:"
echo "  maasctl --db demo/maas.db serve --listen 127.0.0.1:$PORT --tls-cert demo/pki/cert.pem --tls-key demo/pki/key.pem"
