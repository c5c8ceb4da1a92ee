"""TLS verification, IPMI→Redfish fallback, and the `maasctl bmc`/`sim` shell, against the
simulator."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import maasctl_in_process, patience
from tests.integration.conftest import FAST


def _dead_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def path_hosts(simfleet, tmp_path_factory):
    """Extra hosts reaching simulated machines through other paths."""
    hosts = {h["name"]: h for h in json.loads((simfleet.directory / "hosts.json").read_text())}
    url = simfleet.info["redfish_url"]
    ca = str(simfleet.directory / "pki" / "ca.pem")
    rf1 = f"/redfish/v1/Systems/{hosts['sim-rf-0001']['system_id']}"
    dual = f"/redfish/v1/Systems/{hosts['sim-dual-0001']['system_id']}"
    inv = {
        "all": {
            "children": {
                "paths": {
                    "vars": {"bmc_credential": "sim"},
                    "hosts": {
                        "path-noca": {"bmc_address": url, "bmc_system": rf1},
                        "path-nosystem": {"bmc_address": url, "bmc_tls_ca": ca},
                        "path-insecure": {
                            "bmc_address": url,
                            "bmc_system": rf1,
                            "bmc_tls_verify": False,
                        },
                        "path-fallback": {
                            "bmc_address": "127.0.0.1",
                            "bmc_port": _dead_udp_port(),
                            "bmc_fallback_address": url,
                            "bmc_system": dual,
                            "bmc_tls_ca": ca,
                        },
                        "path-fallback-auth": {
                            "bmc_address": "127.0.0.1",
                            "bmc_port": hosts["sim-ipmi-0005"]["ipmi_port"],
                            "bmc_credential": "sim-wrong",
                            "bmc_fallback_address": url,
                            "bmc_system": dual,
                            "bmc_tls_ca": ca,
                        },
                    },
                }
            }
        }
    }
    path = tmp_path_factory.mktemp("paths") / "paths.yml"
    path.write_text(yaml.safe_dump(inv))
    with simfleet.fleet() as f:
        f.import_hosts([str(path)])
    return path


def test_tls_is_verified_against_the_inventory_ca(simfleet_api, path_hosts):
    (ok,) = simfleet_api.bmc_status(["sim-rf-0001"], settings=FAST)
    assert ok.ok and ok.via.startswith("https://")
    (r,) = simfleet_api.bmc_status(["path-noca"], settings=FAST)
    assert r.error_class == "tls" and "certificate verify failed" in r.error, r


def test_redfish_without_bmc_system_needs_the_only_system(simfleet_api, path_hosts):
    (r,) = simfleet_api.bmc_status(["path-nosystem"], settings=FAST)
    assert r.error_class == "bmc_error" and "14 systems" not in r.error, r
    assert "systems at" in r.error and "set bmc_system" in r.error


def test_tls_verification_off_only_when_the_inventory_says_so(simfleet_api, path_hosts, caplog):
    with caplog.at_level(logging.WARNING):
        (r,) = simfleet_api.bmc_status(["path-insecure"], settings=FAST)
    assert r.ok, r
    assert "TLS verification is off" in caplog.text


def test_unreachable_primary_falls_back_and_says_which_path_acted(simfleet_api, path_hosts):
    # The dead primary costs its whole deadline: a short one (no retries; nothing is flaky).
    quick = FAST.model_copy(update={"timeout": 1.0, "retries": 0})
    (r,) = simfleet_api.bmc_power("cycle", ["path-fallback"], settings=quick)
    assert r.ok and r.power == "on", r
    assert r.via.startswith("https://") and r.via.endswith(r.via.rsplit("/", 1)[-1])
    # The same machine answers through its primary (IPMI) path as sim-dual-0001.
    (dual,) = simfleet_api.bmc_status(["sim-dual-0001"], settings=FAST)
    assert dual.ok and dual.power == "on" and dual.via.startswith("ipmi://")


def test_auth_failure_on_the_primary_does_not_fall_back(simfleet_api, path_hosts):
    (r,) = simfleet_api.bmc_status(["path-fallback-auth"], settings=FAST)
    assert r.error_class == "auth" and r.via.startswith("ipmi://"), r


def _maasctl(simfleet, *args, env=None, in_process=False):
    full = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
    full |= {"MAAS_DB": str(simfleet.db)} | (env if env is not None else simfleet.env)
    if in_process:
        r = maasctl_in_process(args, full, simfleet.directory)
        return subprocess.CompletedProcess(args, r.code, r.out, r.err)
    return subprocess.run(
        [sys.executable, "-m", "maas_lib", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=patience(120),
    )


def test_cli_bmc_status_json_and_exit_codes(simfleet):
    ok = _maasctl(simfleet, "bmc", "status", "sim-ipmi-000[1-2]", "sim-rf-0001", "--json")
    assert ok.returncode == 0, ok.stderr
    rows = json.loads(ok.stdout)
    assert [r["host"] for r in rows] == ["sim-ipmi-0001", "sim-ipmi-0002", "sim-rf-0001"]
    assert all(r.keys() >= {"host", "power", "error_class", "error", "via"} for r in rows)
    # A short deadline: the dead BMC costs it, not the default 13 s.
    bad = _maasctl(
        simfleet, "bmc", "status", "sim-ipmi-*", "--json", "--timeout", "1", "--deadline", "3"
    )
    assert bad.returncode == 1
    classes = {r["host"]: r["error_class"] for r in json.loads(bad.stdout)}
    assert classes["sim-ipmi-0005"] == "auth" and classes["sim-ipmi-0006"] == "unreachable"


def test_cli_power_and_boot(simfleet):
    r = _maasctl(simfleet, "bmc", "power", "on", "sim-ipmi-0002", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["power"] == "on", r.stderr
    r = _maasctl(simfleet, "bmc", "boot", "cd", "sim-ipmi-0002")
    assert r.returncode == 0 and "1 ok, 0 failed" in r.stderr, r.stderr
    assert simfleet.state()["sim-ipmi-0002"]["boot_target"] == "cd"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bmc", "power", "explode", "sim-ipmi-0001"], "'explode' is not one of"),
        (["bmc", "status", "nosuch"], "unknown host nosuch"),
        (["bmc", "status", "sim-*", "--concurrency", "0"], "--concurrency"),
        (["bmc", "status", "sim-*", "--timeout", "-1"], "--timeout"),
        (["bmc", "boot", "floppy", "sim-ipmi-0001"], "'floppy' is not one of"),
        (["bmc", "status"], "no hosts given"),
    ],
)
def test_cli_bmc_bad_input(simfleet, args, words):
    r = _maasctl(simfleet, *args, in_process=args[:2] != ["bmc", "power"])
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_cli_unresolvable_credential_is_bad_input_before_any_bmc_is_touched(simfleet):
    env = {k: v for k, v in simfleet.env.items() if "WRONG" not in k}
    r = _maasctl(simfleet, "bmc", "status", "sim-*", env=env)
    assert r.returncode == 2
    assert "credential sim-wrong: set MAAS_CRED_SIM_WRONG_USERNAME" in r.stderr


def test_bmc_passwords_never_appear_in_output_logs_or_database(simfleet):
    secrets = [v for k, v in simfleet.env.items() if k.endswith("_PASSWORD")]
    outputs = []
    for args in (
        # Every fault once (auth, dead, slow, flaky); then the quick ones, as a table.
        ["-vv", "bmc", "status", "sim-*", "--json", "--timeout", "1", "--deadline", "3"],
        ["-vv", "bmc", "status", "sim-*-000[1235]", "sim-dual-*"],
        ["-vv", "bmc", "power", "on", "sim-rf-0003", "sim-ipmi-0005"],
        ["-vv", "hosts", "list", "--json"],
    ):
        r = _maasctl(simfleet, *args)
        outputs.append(r.stdout + r.stderr)
    text = "\n".join(outputs)
    assert "auth" in text
    for secret in secrets:
        assert secret not in text
        for f in simfleet.db.parent.glob(simfleet.db.name + "*"):
            assert secret.encode() not in f.read_bytes()


def test_sim_up_status_down_from_the_cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
    env |= {"MAAS_DB": str(tmp_path / "f.db"), "HOME": str(tmp_path)}
    from tests.simfleet import free_udp_base, read_env

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "maas_lib", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=patience(120),
        )

    d = str(tmp_path / "sim")
    up = run(
        "sim",
        "up",
        "--dir",
        d,
        "--ipmi",
        "2",
        "--redfish",
        "1",
        "--json",
        "--install-time",
        "0.3",
        "--install-failure-rate",
        "1",
        "--ipmi-base-port",
        str(free_udp_base(4)),
    )
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    try:
        assert (tmp_path / "sim" / "credentials.env").stat().st_mode & 0o077 == 0
        assert run("hosts", "import", info["inventory"]).returncode == 0
        # A Redfish host named without bmc_system: the emulator's only system is used.
        only = tmp_path / "only.yml"
        only.write_text(
            yaml.safe_dump(
                {
                    "all": {
                        "hosts": {
                            "only-system": {
                                "bmc_address": info["redfish_url"],
                                "bmc_credential": "sim",
                                "bmc_tls_ca": str(tmp_path / "sim" / "pki" / "ca.pem"),
                            }
                        }
                    }
                }
            )
        )
        assert run("hosts", "import", str(only)).returncode == 0
        env.update(read_env(Path(info["credentials_env"])))
        st = run("bmc", "status", "sim-*", "only-system", "--json")
        assert st.returncode == 0, st.stderr
        assert [r["power"] for r in json.loads(st.stdout)] == ["off"] * 4
        status = run("sim", "status", "--dir", d, "--json")
        assert {m["host"] for m in json.loads(status.stdout)} == {
            "sim-ipmi-0001",
            "sim-ipmi-0002",
            "sim-rf-0001",
        }
        # The installer fails every install here, and says so through the completion path.
        import maas_lib

        with maas_lib.open_fleet(tmp_path / "f.db") as fleet:
            fleet.expect_install("sim-ipmi-0001", "debian-13")
        assert run("bmc", "boot", "pxe", "sim-ipmi-0001").returncode == 0
        assert run("bmc", "power", "on", "sim-ipmi-0001").returncode == 0
        with maas_lib.open_fleet(tmp_path / "f.db") as fleet:
            for _ in range(50):
                if reports := fleet.install_reports("sim-ipmi-0001"):
                    break
                time.sleep(0.1)
        assert [(x.image, x.outcome, x.reason) for x in reports] == [
            ("debian-13", "failed", "simulated installer failure")
        ]
        again = run("sim", "up", "--dir", d)
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        down = run("sim", "down", "--dir", d)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert run("sim", "status", "--dir", d).returncode == 0  # state stays readable


def test_provisioned_is_the_install_completion_path(simfleet):
    r = _maasctl(simfleet, "provisioned", "sim-ipmi-0003", "--image", "rocky-9", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["host"], report["image"], report["outcome"]) == (
        "sim-ipmi-0003",
        "rocky-9",
        "succeeded",
    )
    r = _maasctl(
        simfleet, "provisioned", "sim-ipmi-0003", "--image", "rocky-9", "--failed", "disk 2 missing"
    )
    assert r.returncode == 0 and "failed" in r.stdout
    for args, words in (
        (["nosuch", "--image", "x"], "unknown host nosuch"),
        (["sim-ipmi-0003", "--image", "bad image"], "--image"),
        (["sim-ipmi-0003"], "Missing option '--image'"),
    ):
        bad = _maasctl(simfleet, "provisioned", *args)
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr
