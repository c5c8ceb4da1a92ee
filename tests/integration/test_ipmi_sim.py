"""BMC control against a second IPMI peer: OpenIPMI's `ipmi_sim` (C), several instances on
loopback, with `ipmitool` as the reference client. Power and boot state live in the
instances' chassis-control hook (`maas_lib.sim.ipmisim`), so every check reads what the
BMC itself holds, not what our client believes."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from maas_lib.bmc import BmcSettings
from maas_lib.sim.ipmisim import IpmiSimFleet, IpmiSimOptions, running_ipmi_sims
from tests.simfleet import run_maasctl

pytestmark = [
    pytest.mark.skipif(
        shutil.which("ipmi_sim") is None, reason="ipmi_sim not installed (Debian: openipmi)"
    ),
    pytest.mark.skipif(
        shutil.which("ipmitool") is None, reason="ipmitool not installed (Debian: ipmitool)"
    ),
]

#: ipmi_sim answers in milliseconds; generous bounds for a loaded 2-core machine.
TIMEOUT = ["--timeout", "3", "--wait-timeout", "30"]
SETTINGS = BmcSettings(timeout=3, power_timeout=30, poll_interval=0.1, retries=2)
HEALTHY = ["ok-1", "ok-2", "ok-3"]


@dataclass
class Peer:
    sims: IpmiSimFleet
    db: Path
    env: dict[str, str]

    def maasctl(self, *args: str) -> tuple[int, Any, str]:
        proc = run_maasctl(self.env, *args, "--json")
        return proc.returncode, json.loads(proc.stdout or "null"), proc.stderr

    def rows(self, *args: str) -> dict[str, dict[str, Any]]:
        _code, rows, err = self.maasctl(*args)
        assert rows is not None, err
        return {r["host"]: r for r in rows}

    def ipmitool_power(self, name: str) -> str:
        r = self.sims[name].ipmitool("chassis", "power", "status")
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().rsplit(" ", 1)[-1]  # "Chassis Power is on"


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    tmp = tmp_path_factory.mktemp("ipmisim")
    ok = IpmiSimOptions(power_delay=0.3)
    specs = [
        ok,
        ok,
        ok,
        IpmiSimOptions(wrong_password=True),
        IpmiSimOptions(wrong_user=True),
        ok,
    ]
    names = [*HEALTHY, "wrong-pass", "wrong-user", "dead"]
    with running_ipmi_sims(specs, names=names, directory=tmp / "bmcs") as sims:
        sims["dead"].stop()  # its port stays in the inventory, nothing answers there
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
        env |= {"MAAS_DB": str(tmp / "fleet.db"), "HOME": str(tmp)} | sims.env()
        p = Peer(sims, tmp / "fleet.db", env)
        inventory = sims.write_inventory(tmp / "inventory.yml")
        code, _, err = p.maasctl("hosts", "import", str(inventory))
        assert code == 0, err
        yield p


def test_every_instance_is_a_bmc_ipmitool_can_drive(peer: Peer) -> None:
    for name in [*HEALTHY, "wrong-pass", "wrong-user"]:
        assert peer.sims[name].alive
    for name in HEALTHY:
        assert peer.ipmitool_power(name) == peer.sims[name].state()["power"]
    # The wrong-credential BMCs refuse the credentials every client is given.
    for name in ("wrong-pass", "wrong-user"):
        r = peer.sims[name].ipmitool("chassis", "power", "status")
        assert r.returncode != 0 and "Unable to establish" in r.stderr, r


def test_status_matches_ipmitool_and_classifies_every_failure(peer: Peer) -> None:
    code, rows, err = peer.maasctl("bmc", "status", "*", *TIMEOUT[:2])
    assert code == 1, err  # some hosts failed
    by_host = {r["host"]: r for r in rows}
    assert set(by_host) == {*HEALTHY, "wrong-pass", "wrong-user", "dead"}
    for name in HEALTHY:
        r = by_host[name]
        assert r["ok"] and r["power"] == peer.ipmitool_power(name), r
        assert r["via"] == f"ipmi://127.0.0.1:{peer.sims[name].port}", r
    assert by_host["wrong-pass"]["error_class"] == "auth", by_host["wrong-pass"]
    assert by_host["wrong-user"]["error_class"] == "auth", by_host["wrong-user"]
    assert by_host["dead"]["error_class"] == "unreachable", by_host["dead"]
    password = peer.sims.env()["MAAS_CRED_IPMISIM_PASSWORD"]
    assert password not in json.dumps(rows) and password not in err


def test_power_on_off_and_cycle_reach_the_bmc(peer: Peer) -> None:
    name = "ok-1"
    sim = peer.sims[name]
    r = peer.rows("bmc", "power", "on", name, *TIMEOUT)[name]
    assert r["ok"] and r["power"] == "on", r
    assert peer.ipmitool_power(name) == "on"
    r = peer.rows("bmc", "power", "off", name, *TIMEOUT)[name]
    assert r["ok"] and r["power"] == "off", r
    assert peer.ipmitool_power(name) == "off"
    peer.rows("bmc", "power", "on", name, *TIMEOUT)
    before = sim.state()
    r = peer.rows("bmc", "power", "cycle", name, *TIMEOUT)[name]
    assert r["ok"] and r["power"] == "on", r
    after = sim.state()
    # It really went off and came back (the BMC counted both), and is on now.
    assert after["power_offs"] == before["power_offs"] + 1, (before, after)
    assert after["power_ons"] == before["power_ons"] + 1, (before, after)
    assert peer.ipmitool_power(name) == "on"


def test_boot_pxe_is_set_on_the_bmc(peer: Peer) -> None:
    name = "ok-2"
    r = peer.rows("bmc", "boot", "pxe", name, *TIMEOUT[:2])[name]
    assert r["ok"], r
    assert peer.sims[name].state()["boot"] == "pxe"
    # And the reference client reads it back from the BMC.
    out = peer.sims[name].ipmitool("chassis", "bootparam", "get", "5")
    assert out.returncode == 0 and "Force PXE" in out.stdout, out


def test_two_consecutive_operations_on_one_bmc_in_one_process(
    peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maas_lib

    for key, value in peer.sims.env().items():
        monkeypatch.setenv(key, value)
    name = "ok-3"
    with maas_lib.open_fleet(peer.db) as fleet:
        (first,) = fleet.bmc_power("on", [name], settings=SETTINGS)
        (second,) = fleet.bmc_status([name], settings=SETTINGS)
        (third,) = fleet.bmc_power("off", [name], settings=SETTINGS)
    assert first.ok and first.power == "on", first
    assert second.ok and second.power == "on", second
    assert third.ok and third.power == "off", third
    assert peer.ipmitool_power(name) == "off"


def test_ipmi15_only_and_session_limit_options_behave_as_real_bmcs() -> None:
    specs = [IpmiSimOptions(ipmi15_only=True), IpmiSimOptions(session_limit=1)]
    with running_ipmi_sims(specs) as sims:
        old, busy = sims[0], sims[1]
        # An IPMI-1.5-only BMC: RMCP+ (lanplus) refused, 1.5 (lan) works.
        r = old.ipmitool("chassis", "power", "status")
        assert r.returncode != 0 and "RMCP+" in r.stderr, r
        r = old.ipmitool("chassis", "power", "status", lanplus=False)
        assert r.returncode == 0 and "Chassis Power is off" in r.stdout, r
        # One free slot: a client that holds it leaves none for the next.
        with busy.hold_sessions(1):
            r = busy.ipmitool("chassis", "power", "status")
            assert r.returncode != 0 and "insufficient resources" in r.stderr, r
        processes = [s.process for s in sims]
        directory = sims.directory
    # Teardown: every instance (and any hook child) ended and reaped, the directory gone.
    assert all(p is not None and p.poll() is not None for p in processes)
    assert not directory.exists()
    assert not processes_mentioning(str(directory))


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found
