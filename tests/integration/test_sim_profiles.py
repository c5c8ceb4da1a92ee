"""`maasctl sim up --redfish-profile`: hosts behind Redfish profile services (real BMC
behaviours, maas_lib.sim.redfish_profile_server) served by the simulator, driven through the
real CLI as a user would: up, import, status, power cycle, down."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import patience
from tests.simfleet import read_env, run_maasctl


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
        self.env |= {"MAAS_DB": str(tmp_path / "f.db"), "HOME": str(tmp_path)}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_maasctl(self.env, *args)

    def rows(self, *args: str) -> list[dict[str, Any]]:
        r = self(*args, "--json")
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return json.loads(r.stdout)


def _state_written_after(path: Path, moment: float) -> None:
    # Refreshed each second; generous on a loaded machine.
    deadline = time.monotonic() + patience(15)
    while path.stat().st_mtime <= moment and time.monotonic() < deadline:
        time.sleep(0.05)


def test_sim_up_serves_redfish_profile_hosts_users_can_import_and_drive(tmp_path):
    run, d = Cli(tmp_path), str(tmp_path / "sim")
    up = run(
        "sim",
        "up",
        "--dir",
        d,
        "--ipmi",
        "0",
        "--power-delay",
        "0.3",
        "--redfish-profile",
        "ilo5",
        "--redfish-profile",
        "openbmc",
        "--redfish-profile",
        "power-absent",
        "--redfish-profile",
        "cray-ex=2",
        "--json",
    )
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    try:
        groups = yaml.safe_load(Path(info["inventory"]).read_text())["all"]["children"]
        assert sorted(groups) == ["sim_cray_ex", "sim_ilo5", "sim_openbmc", "sim_power_absent"]
        hosts = {name: hv for g in groups.values() for name, hv in g["hosts"].items()}
        for hv in hosts.values():
            # The profile services speak plain HTTP: no TLS options in the inventory.
            assert hv["bmc_protocol"] == "redfish" and hv["bmc_credential"] == "sim", hv
            assert hv["bmc_address"].startswith("http://127.0.0.1:"), hv
            assert not any(k.startswith("bmc_tls") for k in hv), hv
        assert hosts["sim-openbmc-0001"]["bmc_system"] == "/redfish/v1/Systems/system"
        # A two-node blade: both hosts behind one BMC, one system each.
        blade = [hosts[f"sim-cray-ex-000{i}"] for i in (1, 2)]
        assert blade[0]["bmc_address"] == blade[1]["bmc_address"]
        assert [hv["bmc_system"] for hv in blade] == [
            "/redfish/v1/Systems/Node0",
            "/redfish/v1/Systems/Node1",
        ]

        assert run("hosts", "import", info["inventory"]).returncode == 0
        run.env |= read_env(Path(info["credentials_env"]))
        status = run.rows("bmc", "status", "sim-ilo5-*", "sim-openbmc-*", "sim-cray-ex-*")
        assert {(r["host"], r["ok"], r["power"]) for r in status} == {
            ("sim-ilo5-0001", True, "off"),
            ("sim-openbmc-0001", True, "off"),
            ("sim-cray-ex-0001", True, "off"),
            ("sim-cray-ex-0002", True, "off"),
        }, status
        cycled = run.rows("bmc", "power", "cycle", "sim-ilo5-*", "sim-openbmc-*")
        assert {(r["host"], r["ok"], r["power"]) for r in cycled} == {
            ("sim-ilo5-0001", True, "on"),
            ("sim-openbmc-0001", True, "on"),
        }, cycled
        # The simulator's machines really changed (and only those cycled), as state.json
        # says once rewritten (each second) after the cycle.
        _state_written_after(Path(d) / "state.json", time.time())
        power = {m["host"]: m["power"] for m in run.rows("sim", "status", "--dir", d)}
        assert power == {
            "sim-ilo5-0001": "on",
            "sim-openbmc-0001": "on",
            "sim-power-absent-0001": "off",
            "sim-cray-ex-0001": "off",
            "sim-cray-ex-0002": "off",
        }, power
        # No PowerState in the BMC's answer: unknown, never off.
        (absent,) = run.rows("bmc", "status", "sim-power-absent-*")
        assert (absent["ok"], absent["power"], absent["power_raw"]) == (True, "unknown", "absent")
    finally:
        down = run("sim", "down", "--dir", d)
    assert down.returncode == 0 and "stopped" in down.stdout
    # `sim down` stopped the profile services too.
    gone = run("bmc", "status", "sim-ilo5-0001", "--json", "--timeout", "2")
    assert gone.returncode == 1
    assert json.loads(gone.stdout)[0]["error_class"] == "unreachable", gone.stdout


def test_unknown_redfish_profile_is_refused_naming_the_choices_and_nothing_starts(tmp_path):
    run, d = Cli(tmp_path), tmp_path / "sim"
    bad = run(
        "sim", "up", "--dir", str(d), "--redfish-profile", "ilo5", "--redfish-profile", "ilo6"
    )
    assert bad.returncode == 2, bad
    (line,) = bad.stderr.splitlines()
    assert "--redfish-profile" in line and "'ilo6'" in line, line
    for name in ("dmtf", "ilo5", "openbmc", "cray-ex", "power-absent"):
        assert name in line, line
    zero = run("sim", "up", "--dir", str(d), "--redfish-profile", "ilo5=0")
    assert zero.returncode == 2 and "COUNT" in zero.stderr, zero.stderr
    assert not d.exists()  # nothing started, nothing written
