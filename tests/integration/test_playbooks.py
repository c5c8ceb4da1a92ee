"""The playbooks in playbooks/ and the example inventory in inventory/: real ansible-playbook
runs against a simulated fleet, with the collection found in this checkout
(ANSIBLE_COLLECTIONS_PATH=<repo root>), as playbooks/README.md documents.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, patience
from tests.simfleet import running_sim

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PLAYBOOKS = sorted((REPO / "playbooks").glob("*.yml"))
VAULT_PASS = REPO / "inventory" / ".vault-pass.example"


def tail(proc: subprocess.CompletedProcess, chars: int = 6000) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-chars:]}\n--- stderr\n{proc.stderr}"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("playbooks")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MAAS_", "ANSIBLE_"))}
    return clean | {
        "ANSIBLE_COLLECTIONS_PATH": str(REPO),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "MAAS_DB": str(tmp / "unused.db"),
    }


def run(env: dict[str, str], *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=patience(300),
    )


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A small fleet of its own: two healthy IPMI and one healthy Redfish machine, each
    protocol with a dead BMC the demo must leave alone."""
    with running_sim(
        tmp_path_factory.mktemp("playbook-sim"), ipmi=3, redfish=2, dead=1, power_delay=0.1
    ) as s:
        yield s


def test_every_playbook_passes_syntax_check(env):
    r = run(env, "ansible-playbook", "-i", "inventory/", "--syntax-check", *map(str, PLAYBOOKS))
    assert r.returncode == 0, tail(r)
    assert {p.name for p in PLAYBOOKS} >= {
        "demo.yml",
        "power_cycle.yml",
        "rolling_reimage.yml",
        "decommission.yml",
    }


def test_demo_power_cycles_the_simulated_machines(env, sim):
    healthy = sim.hosts()
    dead = sim.hosts("dead")
    assert len(healthy) == 3 and len(dead) == 2
    before = sim.state()
    r = run(
        env,
        "ansible-playbook",
        "-i",
        "inventory/",
        "playbooks/demo.yml",
        "-e",
        f"demo_sim_dir={sim.directory}",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
    )
    assert r.returncode == 0, tail(r)
    assert "failed=0" in r.stdout, tail(r)
    after = sim.state()
    for host in healthy:
        assert after[host]["power"] == "on", (host, after[host])
        assert after[host]["power_offs"] == before[host]["power_offs"] + 1, host
        assert f"{host} cycled (" in r.stdout, tail(r)
    for host in dead:
        assert after[host]["power_offs"] == before[host]["power_offs"], host
    # The BMC password was a module parameter: no_log keeps it out of the output.
    password = sim.env["MAAS_CRED_SIM_PASSWORD"]
    assert password not in r.stdout + r.stderr


def test_power_cycle_runs_in_serial_batches_on_registered_hosts(env, sim):
    hosts = [h for h in sim.hosts() if h.startswith("sim-ipmi-")]
    before = sim.state()
    r = run(
        env | sim.env | {"MAAS_DB": str(sim.db)},
        "ansible-playbook",
        "-i",
        str(sim.directory / "inventory.yml"),
        "playbooks/power_cycle.yml",
        "-e",
        f"power_cycle_hosts={','.join(hosts)}",
        "-e",
        "power_cycle_serial=1",
    )
    assert r.returncode == 0, tail(r)
    # serial: 1 -> one play run per host.
    assert r.stdout.count("PLAY [Power-cycle hosts through their BMCs") == len(hosts), tail(r)
    after = sim.state()
    for host in hosts:
        assert after[host]["power_offs"] == before[host]["power_offs"] + 1, host

    # Without a host pattern the playbook refuses, naming what is missing.
    r = run(env, "ansible-playbook", "-i", "inventory/", "playbooks/power_cycle.yml")
    assert r.returncode != 0 and "power_cycle_hosts" in r.stdout, tail(r)


def test_example_inventory_imports_and_its_vault_example_decrypts(env, tmp_path):
    db = tmp_path / "maas.db"
    for source in ("inventory/", "inventory/example.yml"):
        r = run(env | {"MAAS_DB": str(db)}, "maasctl", "hosts", "import", source)
        assert r.returncode == 0, tail(r)
        assert "imported 15 hosts" in r.stdout, tail(r)
    with sqlite3.connect(db) as conn:
        pools = dict(conn.execute("select name, max_unavailable from pools"))
        (gpu_vars,) = conn.execute("select vars from hosts where name='gpu01'").fetchone()
    gpu_vars = json.loads(gpu_vars)
    assert pools["gpu"] == "1" and pools["web"] == "25%"
    assert gpu_vars.get("bmc_login") == "admin"
    assert not any("password" in key for key in gpu_vars)

    # The vaulted password decrypts with the example vault password, and only with it.
    args = ("ansible", "-i", "inventory/", "gpu01", "-m", "ansible.builtin.debug")
    r = run(env, *args, "-a", "var=bmc_login_password", "--vault-password-file", str(VAULT_PASS))
    assert r.returncode == 0, tail(r)
    assert '"bmc_login_password": "example-not-a-real-password"' in r.stdout, tail(r)
    r = run(env, *args, "-a", "var=bmc_login")
    assert r.returncode == 0 and '"bmc_login": "admin"' in r.stdout, tail(r)


def test_ansible_lint_passes_on_the_playbooks(env, tmp_path):
    """Our playbooks, and the action playbooks the Ansible executor runs (one run: most of
    ansible-lint's time is its start)."""
    lint = BIN / "ansible-lint"
    if not lint.exists() and shutil.which("ansible-lint") is None:
        pytest.skip("ansible-lint is not installed (pip install -e '.[test]')")
    # A copy: ansible-lint keeps a cache (.ansible/) in the project it lints.
    project = tmp_path / "playbooks"
    shutil.copytree(REPO / "playbooks", project / "ours")
    shutil.copytree(REPO / "ansible_collections/maas_lib/fleet/playbooks", project / "actions")
    shutil.copy(REPO / "playbooks" / ".ansible-lint", project / ".ansible-lint")
    linted = {p.relative_to(project).as_posix() for p in project.rglob("*.yml")}
    assert {"ours/demo.yml", "actions/reimage.yml"} <= linted
    r = run(
        env,
        "ansible-lint" if lint.exists() else shutil.which("ansible-lint"),
        "--nocolor",
        "--project-dir",
        str(project),
        cwd=project,
    )
    assert r.returncode == 0, tail(r)
    assert "Profile 'production' was required, and it passed" in r.stdout + r.stderr, tail(r)
