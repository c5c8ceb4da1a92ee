"""BMC fan-out: power-cycle a simulated fleet with `maasctl bmc power cycle`, next to the
Ansible peer (`community.general.ipmi_power`, state: boot, forks=50) against the same
simulator in the same run. Prints one JSON line.

Figures:
- ours_ipmi_cycle_s: `maasctl bmc power cycle` of N IPMI hosts that are on (off, confirmed
  off, on, confirmed on — every host), wall time of the process;
- peer_ipmi_boot_s: `ansible-playbook` with ipmi_power state=boot on the same hosts, also on
  (pyghmi then sends a reset and does not wait), forks=50;
- speedup: peer / ours (target >= 20);
- ours_redfish_cycle_s: the same cycle for M Redfish hosts over HTTPS.

The peer needs community.general: it is extracted once from PyPI's `ansible` wheel into
bench/.cache/ (Ansible Galaxy is not reachable from every machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
ANSIBLE_WHEEL = "ansible==12.3.0"  # bundles community.general 11.x for ansible-core 2.19

PLAYBOOK = """\
- name: Boot every host through its BMC (the peer)
  hosts: all
  gather_facts: false
  connection: local
  tasks:
    - name: ipmi_power state=boot
      community.general.ipmi_power:
        name: 127.0.0.1
        port: "{{ bmc_port }}"
        user: "{{ lookup('env', 'MAAS_CRED_SIM_USERNAME') }}"
        password: "{{ lookup('env', 'MAAS_CRED_SIM_PASSWORD') }}"
        state: boot
"""


def community_general() -> Path:
    """A collections path holding community.general (downloaded once)."""
    target = CACHE / "collections"
    if (target / "ansible_collections" / "community" / "general").is_dir():
        return target
    CACHE.mkdir(exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            ANSIBLE_WHEEL,
            "-d",
            str(CACHE),
        ],
        check=True,
    )
    wheel = next(CACHE.glob("ansible-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        members = [
            m for m in zf.namelist() if m.startswith("ansible_collections/community/general/")
        ]
        zf.extractall(target, members)
    wheel.unlink()
    return target


def maasctl(env: dict[str, str], *args: str) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "maas_lib", *args, "--json"], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"maasctl {' '.join(args)} failed: {proc.stderr}")
    return elapsed, json.loads(proc.stdout)


def run_sim(tmp: Path, env: dict[str, str], name: str, *args: str) -> dict:
    d = tmp / name
    up = subprocess.run(
        [sys.executable, "-m", "maas_lib", "sim", "up", "--dir", str(d), "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(up.stdout)
    subprocess.run(
        [sys.executable, "-m", "maas_lib", "hosts", "import", info["inventory"]],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for line in Path(info["credentials_env"]).read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipmi", type=int, default=200)
    ap.add_argument("--redfish", type=int, default=500)
    ap.add_argument("--forks", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--power-delay", type=float, default=0.2)
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()

    result: dict[str, object] = {
        "bench": "fanout",
        "ipmi_hosts": args.ipmi,
        "redfish_hosts": args.redfish,
        "forks": args.forks,
        "concurrency": args.concurrency,
        "sim_power_delay_s": args.power_delay,
    }
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
        env["MAAS_DB"] = str(tmp / "fleet.db")
        conc = ["--concurrency", str(args.concurrency)]
        run_sim(
            tmp,
            env,
            "ipmi",
            "--ipmi",
            str(args.ipmi),
            "--power-delay",
            str(args.power_delay),
            "--ipmi-base-port",
            "26230",
        )
        try:
            _, rows = maasctl(env, "bmc", "power", "on", "sim-ipmi-*", *conc)
            assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]][:3]
            ours, rows = maasctl(env, "bmc", "power", "cycle", "sim-ipmi-*", *conc)
            result["ours_ipmi_cycle_s"] = round(ours, 2)
            result["ours_ipmi_failed"] = sum(not r["ok"] for r in rows)
            if not args.skip_peer:
                inventory = tmp / "peer.ini"
                with inventory.open("w") as fh:
                    fh.write("[sim]\n")
                    for i in range(args.ipmi):
                        fh.write(f"sim-ipmi-{i + 1:04d} bmc_port={26230 + i}\n")
                    fh.write(
                        "[all:vars]\nansible_python_interpreter={{ ansible_playbook_python }}\n"
                    )
                (tmp / "peer.yml").write_text(PLAYBOOK)
                peer_env = env | {
                    "ANSIBLE_COLLECTIONS_PATH": str(community_general()),
                    "ANSIBLE_HOST_KEY_CHECKING": "False",
                    "ANSIBLE_RETRY_FILES_ENABLED": "False",
                }
                playbook = Path(sys.executable).parent / "ansible-playbook"
                started = time.perf_counter()
                peer = subprocess.run(
                    [
                        str(playbook),
                        "-i",
                        str(inventory),
                        "-f",
                        str(args.forks),
                        str(tmp / "peer.yml"),
                    ],
                    env=peer_env,
                    capture_output=True,
                    text=True,
                )
                result["peer_ipmi_boot_s"] = round(time.perf_counter() - started, 2)
                result["peer_rc"] = peer.returncode
                result["peer_failed"] = peer.stdout.count("fatal:")
                result["speedup"] = round(result["peer_ipmi_boot_s"] / ours, 1)
                result["speedup_target"] = 20
        finally:
            subprocess.run(
                [sys.executable, "-m", "maas_lib", "sim", "down", "--dir", str(tmp / "ipmi")],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        if args.redfish:
            run_sim(
                tmp,
                env,
                "redfish",
                "--ipmi",
                "0",
                "--redfish",
                str(args.redfish),
                "--power-delay",
                str(args.power_delay),
            )
            try:
                maasctl(env, "bmc", "power", "on", "sim-rf-*", *conc)
                ours, rows = maasctl(env, "bmc", "power", "cycle", "sim-rf-*", *conc)
                result["ours_redfish_cycle_s"] = round(ours, 2)
                result["ours_redfish_failed"] = sum(not r["ok"] for r in rows)
            finally:
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "maas_lib",
                        "sim",
                        "down",
                        "--dir",
                        str(tmp / "redfish"),
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
