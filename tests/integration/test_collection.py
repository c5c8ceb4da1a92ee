"""The maas_lib.fleet Ansible collection end to end: built and installed with ansible-galaxy,
then real ansible-playbook and ansible-inventory runs against the fleet simulator.

Few playbook runs, each checking much with `assert` tasks: a run costs a few seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import maas_lib
from tests.conftest import REPO, patience
from tests.integration.conftest import FAST as FAST_BMC

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
COLLECTION = REPO / "ansible_collections" / "maas_lib" / "fleet"
MODULES = ("bmc_info", "boot_device", "cancel", "power", "request_info", "submit")
#: Requests this file submits are recorded as submitted by this name (and cleaned up).
SUBMITTER = "ansible-collection-test"
FAST = "timeout: 3\n      power_timeout: 20\n      retries: 5"


@dataclass
class Ansible:
    """The installed collection and how to run Ansible against the simulator with it."""

    directory: Path
    env: dict[str, str]
    inventory: Path

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            cwd=self.directory,
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=patience(300),
        )

    def playbook(
        self, name: str, text: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        path = self.directory / name
        path.write_text(text)
        return self.run("ansible-playbook", "-i", str(self.inventory), str(path), *args, env=env)


def unsafe(value):
    """A value as ansible-inventory --list prints it, without its unsafe marker (2.19+)."""
    if isinstance(value, dict) and set(value) == {"__ansible_unsafe"}:
        return value["__ansible_unsafe"]
    return value


def tail(proc: subprocess.CompletedProcess, chars: int = 6000) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-chars:]}\n--- stderr\n{proc.stderr}"


@pytest.fixture(scope="module")
def ansible(simfleet, tmp_path_factory) -> Ansible:
    tmp = tmp_path_factory.mktemp("collection")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAAS_", "ANSIBLE_"))}
    env |= simfleet.env | {
        "ANSIBLE_COLLECTIONS_PATH": str(tmp / "collections"),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_PIPELINING": "true",
    }
    inventory = tmp / "localhost.ini"
    inventory.write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    a = Ansible(tmp, env, inventory)
    build = a.run(
        "ansible-galaxy", "collection", "build", str(COLLECTION), "--output-path", str(tmp)
    )
    assert build.returncode == 0, tail(build)
    (tarball,) = tmp.glob("maas_lib-fleet-*.tar.gz")
    install = a.run(
        "ansible-galaxy", "collection", "install", str(tarball), "-p", str(tmp / "collections")
    )
    assert install.returncode == 0, tail(install)
    return a


@pytest.fixture
def cleanup(simfleet):
    """Cancel whatever this file submitted that is still in flight, pass or fail."""
    yield
    with simfleet.fleet() as fleet:
        for r in fleet.requests(["accepted", "running"]):
            if r.submitted_by == SUBMITTER:
                fleet.cancel(r.id, actor=SUBMITTER)


def test_collection_builds_installs_and_documents_every_plugin(ansible):
    installed = ansible.directory / "collections/ansible_collections/maas_lib/fleet"
    manifest = json.loads((installed / "MANIFEST.json").read_text())["collection_info"]
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == (
        "maas_lib",
        "fleet",
        "0.1.0",
    )
    assert (installed / "README.md").is_file() and (installed / "meta/runtime.yml").is_file()
    # Fails on any plugin whose DOCUMENTATION, EXAMPLES or RETURN does not parse.
    r = ansible.run("ansible-doc", "--metadata-dump", "maas_lib.fleet")
    assert r.returncode == 0, tail(r)
    dump = json.loads(r.stdout)["all"]
    for name in MODULES:
        entry = dump["module"][f"maas_lib.fleet.{name}"]
        assert entry["doc"]["options"] and entry["return"] and entry["examples"], name
    power = dump["module"]["maas_lib.fleet.power"]["doc"]["options"]
    assert power["state"]["choices"] == ["on", "off", "soft", "cycle", "reset"]
    assert {"name", "bmc_address", "credential", "username", "password", "db"} <= set(power)
    inventory = dump["inventory"]["maas_lib.fleet.hosts"]
    assert {"db", "compose", "keyed_groups", "groups", "strict"} <= set(inventory["doc"]["options"])


def test_bmc_modules_power_idempotently_honour_check_mode_and_hide_passwords(
    ansible, simfleet, sim_env
):
    host = simfleet.hosts(kind="ipmi")[0]
    rf_host = simfleet.hosts(kind="redfish")[0]
    rows = {h["name"]: h for h in json.loads((simfleet.directory / "hosts.json").read_text())}
    with simfleet.fleet() as fleet:
        (record,) = fleet.resolve_hosts([host])
        (off,) = fleet.bmc_power("off", [host], settings=FAST_BMC)
        assert off.ok, off
    password = simfleet.env["MAAS_CRED_SIM_PASSWORD"]
    wrong = secrets.token_urlsafe(18)
    before = simfleet.state()[host]
    text = (
        BMC_PLAYBOOK.replace("@HOST@", host)
        .replace("@RF_HOST@", rf_host)
        .replace("@PORT@", str(record.bmc_port))
        .replace("@USER@", simfleet.env["MAAS_CRED_SIM_USERNAME"])
        .replace("@PASSWORD@", password)
        .replace("@WRONG@", wrong)
        .replace("@RF_URL@", simfleet.info["redfish_url"])
        .replace("@RF_SYSTEM@", f"/redfish/v1/Systems/{rows[rf_host]['system_id']}")
        .replace("@FAST@", FAST)
    )
    r = ansible.playbook("bmc.yml", text, "-vvv", env={"MAAS_DB": str(simfleet.db)})
    assert r.returncode == 0, tail(r)
    assert "failed=0" in r.stdout and "ignored=3" in r.stdout, tail(r)
    # The passwords were module parameters: Ansible never shows them, even with -vvv.
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in r.stdout
    # The tasks ran in Ansible's worker on the controller: no module was sent or started.
    assert "AnsiballZ_" not in r.stdout, tail(r)
    assert password not in r.stdout + r.stderr
    assert wrong not in r.stdout + r.stderr
    # Powered on once; the check-mode power-off never reached the BMC.
    after = simfleet.state()[host]
    assert before["power"] == "off" and after["power"] == "on"
    assert after["power_ons"] == before["power_ons"] + 1
    assert after["power_offs"] == before["power_offs"]
    assert after["boot_target"] == "disk"


BMC_PLAYBOOK = """
- name: BMC modules against the simulator
  hosts: localhost
  gather_facts: false
  module_defaults:
    maas_lib.fleet.power:
      @FAST@
    maas_lib.fleet.bmc_info:
      @FAST@
    maas_lib.fleet.boot_device:
      @FAST@
  tasks:
    - name: Status of a registered Redfish host, credential from the environment
      maas_lib.fleet.bmc_info: {name: "@RF_HOST@"}
      register: rf_info

    - name: Power on a registered IPMI host that is off
      maas_lib.fleet.power: {name: "@HOST@", state: "on"}
      register: on1

    - name: Power on again, its BMC given by parameters, password as a module parameter
      maas_lib.fleet.power:
        bmc_address: 127.0.0.1
        bmc_port: @PORT@
        bmc_protocol: ipmi
        username: "@USER@"
        password: "@PASSWORD@"
        state: on
      register: on2

    - name: Power off, in check mode
      maas_lib.fleet.power: {name: "@HOST@", state: "off"}
      check_mode: true
      register: off_check

    - name: A bad state
      maas_lib.fleet.power: {name: "@HOST@", state: explode}
      register: bad_state
      ignore_errors: true

    - name: An unknown host
      maas_lib.fleet.power: {name: no-such-host, state: "on"}
      register: unknown
      ignore_errors: true

    - name: A Redfish BMC given by parameters, TLS verification off, a wrong password
      maas_lib.fleet.bmc_info:
        name: rf-inline
        bmc_address: "@RF_URL@"
        bmc_system: "@RF_SYSTEM@"
        bmc_tls_verify: false
        username: "@USER@"
        password: "@WRONG@"
      register: wrong
      ignore_errors: true

    - name: Boot from disk next time
      maas_lib.fleet.boot_device: {name: "@HOST@", device: disk}
      register: boot

    - name: Check the results
      ansible.builtin.assert:
        that:
          - rf_info is not changed and rf_info.power in ['on', 'off']
          - rf_info.via.startswith('https://127.0.0.1:') and rf_info.protocol == 'redfish'
          - rf_info.registered.pool == 'sim_redfish' and rf_info.credential == 'sim'
          - rf_info.credential_source == 'environment'
          - on1 is changed and on1.power == 'on' and on1.previous_power == 'off'
          - on1.via.startswith('ipmi://127.0.0.1:') and on1.action == 'on'
          - on2 is not changed and on2.power == 'on' and on2.host == '127.0.0.1'
          - on2.credential_source == 'module parameters'
          - off_check is changed and off_check.power == 'on' and off_check.action == 'off'
          - bad_state is failed and 'explode' in bad_state.msg
          - "'\\n' not in bad_state.msg"
          - unknown is failed and unknown.msg == 'unknown host no-such-host'
          - wrong is failed and wrong.error_class == 'auth' and wrong.host == 'rf-inline'
          - "'\\n' not in wrong.msg and wrong.msg.startswith('rf-inline: auth: ')"
          - wrong.warnings | select('search', 'TLS verification is off') | length == 1
          - boot is changed and boot.device == 'disk' and not boot.persistent
"""


def test_submit_plans_in_check_mode_submits_reports_and_cancels(ansible, simfleet, cleanup):
    with simfleet.fleet() as fleet:
        before = len(fleet.requests())
    text = QUEUE_PLAYBOOK.replace("@DB@", f"sqlite:///{simfleet.db}").replace("@AS@", SUBMITTER)
    r = ansible.playbook("queue.yml", text)
    assert r.returncode == 0, tail(r)
    assert "failed=0" in r.stdout and "ignored=1" in r.stdout, tail(r)
    with simfleet.fleet() as fleet:
        requests = fleet.requests()
        # The dry run and the rejected submission wrote nothing; the one request is over.
        assert len(requests) == before + 1
        (last,) = requests[:1]
        assert last.submitted_by == SUBMITTER and last.state == "cancelled"
        assert last.counts == {"cancelled": 7}


QUEUE_PLAYBOOK = """
- name: The job queue
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/maas_lib.fleet.maas:
      db: "@DB@"
  tasks:
    - name: Dry run
      maas_lib.fleet.submit:
        action: power-cycle
        hosts: ["sim-ipmi-000[1-2]", sim-rf-0001]
        batch_size: 1
        canary: 1
        submitted_by: "@AS@"
      check_mode: true
      register: plan

    - name: Submit
      maas_lib.fleet.submit:
        action: reboot
        hosts: [sim-ipmi-0001, "sim-rf-*"]
        batch_size: 50%
        max_failures: 2
        submitted_by: "@AS@"
      register: sub

    - name: The request, accepted
      maas_lib.fleet.request_info: {id: "{{ sub.id }}"}
      register: accepted

    - name: Cancel
      maas_lib.fleet.cancel: {id: "{{ sub.id }}", cancelled_by: "@AS@"}
      register: cancelled

    - name: Cancel again
      maas_lib.fleet.cancel: {id: "{{ sub.id }}"}
      register: cancelled_again

    - name: A bad batch size
      maas_lib.fleet.submit:
        action: reboot
        hosts: [sim-ipmi-0001]
        batch_size: 150%
        submitted_by: "@AS@"
      register: bad_policy
      ignore_errors: true

    - name: Check the results
      ansible.builtin.assert:
        that:
          - plan is changed and plan.plan.dry_run and plan.hosts == 3
          - plan.id is not defined
          - plan.plan.batches | length == 3
          - plan.plan.batches[0].canary and plan.plan.batches[0].hosts == ['sim-ipmi-0001']
          - sub is changed and sub.id > 0 and sub.state == 'accepted' and sub.hosts == 7
          - accepted is not changed and accepted.state == 'accepted' and accepted.id == sub.id
          - accepted.request.submitted_by == '@AS@' and accepted.request.action == 'reboot'
          - accepted.request.hosts | map(attribute='state') | unique == ['pending']
          - accepted.request.policy.batch_size == '50%'
          - accepted.summary.host_count == 7
          - cancelled is changed and cancelled.state == 'cancelled'
          - cancelled.cancel_requested
          - cancelled_again is not changed and cancelled_again.state == 'cancelled'
          - bad_policy is failed
          - "bad_policy.msg == 'batch_size: batch size cannot exceed 100% (got 150%)'"
"""


def test_submit_with_wait_returns_every_hosts_result(ansible, simfleet, cleanup):
    ok = simfleet.hosts(kind="ipmi")[0]
    (wrong,) = simfleet.hosts("wrong_creds", "ipmi")
    with simfleet.fleet() as fleet:
        if fleet.requests(["accepted", "running"]):
            pytest.skip("another request is in flight on the shared simulator database")
    env = ansible.env | {"MAAS_DB": str(simfleet.db)}
    log = ansible.directory / "scheduler.log"
    with log.open("w") as out:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "maas_lib", "run", "--poll", "0.2", "--timeout", "3"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        text = (
            WAIT_PLAYBOOK.replace("@OK@", ok)
            .replace("@WRONG@", wrong)
            .replace("@AS@", SUBMITTER)
            .replace("@DB@", str(simfleet.db))
        )
        r = ansible.playbook("wait.yml", text)
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=patience(60))
    assert r.returncode == 0, tail(r) + "\n--- scheduler\n" + log.read_text()
    assert "failed=0" in r.stdout and "ignored=1" in r.stdout, tail(r)


WAIT_PLAYBOOK = """
- name: Submit and wait, with a scheduler running
  hosts: localhost
  gather_facts: false
  module_defaults:
    maas_lib.fleet.submit:
      db: "@DB@"
      submitted_by: "@AS@"
      wait: true
      wait_timeout: 60
  tasks:
    - name: Every host succeeds
      maas_lib.fleet.submit: {action: power-on, hosts: ["@OK@"]}
      register: good

    - name: One host's BMC refuses the credentials
      maas_lib.fleet.submit:
        action: power-on
        hosts: ["@OK@", "@WRONG@"]
        batch_size: 2
        max_failures: 1
      register: partial
      ignore_errors: true

    - name: Check the results
      vars:
        by_host: "{{ partial.results | items2dict(key_name='host', value_name='state') }}"
        failed: "{{ partial.results | selectattr('host', '==', '@WRONG@') | first }}"
        tally: "1 of 2 hosts did not succeed (auth: 1)"
      ansible.builtin.assert:
        that:
          - good is changed and good is not failed and good.state == 'succeeded'
          - good.results | length == 1 and good.results[0].state == 'succeeded'
          - good.request.counts.succeeded == 1
          - partial is failed and partial.state == 'partial' and partial.id > good.id
          - "by_host == {'@OK@': 'succeeded', '@WRONG@': 'failed'}"
          - failed.error_class == 'auth'
          - "partial.msg == 'request ' ~ partial.id ~ ' ended partial: ' ~ tally"
"""


BAD_WAIT_PLAYBOOK = """
- name: A wait_timeout out of range is refused before anything is written
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Submit with an unusable wait
      maas_lib.fleet.submit:
        db: "@DB@"
        action: power-on
        hosts: ["@OK@"]
        wait: true
        wait_timeout: "{{ item }}"
      loop: [.nan, .inf, 1e20, 0, -5]
      register: bad
      ignore_errors: true

    - name: Every one failed naming the option
      ansible.builtin.assert:
        that:
          - bad.results | rejectattr('failed') | list | length == 0
          - "bad.results | rejectattr('msg', 'search', '^wait_timeout: ') | list | length == 0"
"""


def test_submit_refuses_an_unusable_wait_timeout_writing_nothing(ansible, simfleet):
    ok = simfleet.hosts(kind="ipmi")[0]
    with simfleet.fleet() as fleet:
        before = len(fleet.requests(None, 10_000))
    text = BAD_WAIT_PLAYBOOK.replace("@OK@", ok).replace("@DB@", str(simfleet.db))
    r = ansible.playbook("bad_wait.yml", text)
    assert r.returncode == 0 and "failed=0" in r.stdout, tail(r)
    with simfleet.fleet() as fleet:
        assert len(fleet.requests(None, 10_000)) == before


def test_inventory_plugin_lists_hosts_by_pool_and_rack_without_secrets(ansible, simfleet):
    (ansible.directory / "fleet.maas.yml").write_text(
        f"""
plugin: maas_lib.fleet.hosts
db: {simfleet.db}
include_vars: true
keyed_groups:
  - key: bmc_protocol
    prefix: bmc
compose:
  bmc_url: bmc_protocol ~ '://' ~ bmc_address
groups:
  faulty: sim_fault is defined
"""
    )
    r = ansible.run("ansible-inventory", "-i", "fleet.maas.yml", "--list")
    assert r.returncode == 0, tail(r)
    assert "WARNING" not in r.stderr, r.stderr
    inv = json.loads(r.stdout)
    # Values from the database are data, never templates: Ansible marks them unsafe.
    hostvars = {
        name: {k: unsafe(v) for k, v in hv.items()} for name, hv in inv["_meta"]["hostvars"].items()
    }
    ipmi = simfleet.hosts(kind="ipmi")
    rows = json.loads((simfleet.directory / "hosts.json").read_text())
    assert {row["name"] for row in rows} <= set(hostvars)

    def members(group: str) -> set[str]:
        return set(inv.get(group, {}).get("hosts", []))

    ipmi_all = {row["name"] for row in rows if row["kind"] == "ipmi"}
    assert ipmi_all <= members("pool_sim_ipmi") and ipmi_all <= members("rack_sim_ipmi_r01")
    assert ipmi_all <= members("bmc_ipmi")
    assert {row["name"] for row in rows if row["kind"] == "redfish"} <= members("bmc_redfish")
    assert {row["name"] for row in rows if row["fault"]} == members("faulty")
    assert "pool_sim_ipmi" in inv["all"]["children"]

    v = hostvars[ipmi[0]]
    assert v["bmc_address"] == "127.0.0.1" and isinstance(v["bmc_port"], int)
    assert v["bmc_protocol"] == "ipmi" and v["bmc_credential"] == "sim"
    assert v["pool"] == "sim_ipmi" and v["rack"] == "sim-ipmi-r01"
    assert v["maas_status"] == "active" and v["bmc_url"] == "ipmi://127.0.0.1"
    assert v["hw_model"] == "sim-1u"
    for key, value in simfleet.env.items():
        if key.endswith("_PASSWORD"):
            assert value not in r.stdout
    assert not any("password" in k.lower() for h in hostvars.values() for k in h)

    # A database that does not exist is an error, not an empty inventory.
    (ansible.directory / "missing.maas.yml").write_text(
        f"plugin: maas_lib.fleet.hosts\ndb: {ansible.directory / 'nope.db'}\n"
    )
    r = ansible.run("ansible-inventory", "-i", "missing.maas.yml", "--list")
    assert "nope.db does not exist" in r.stderr, tail(r)
    assert not (ansible.directory / "nope.db").exists()


def test_bmc_tasks_take_the_inventory_before_a_stale_database_and_fan_out_fleet_wide(
    ansible, simfleet, sim_env, tmp_path
):
    """Hosts whose inventory gives their BMC are reached there, never at the address a stale
    database has for them; `names` reaches many hosts in one task, per-host results back."""
    b, a = simfleet.hosts(kind="ipmi")
    registered = simfleet.hosts(kind="redfish")[1]
    (dead,) = simfleet.hosts("dead", kind="ipmi")
    with simfleet.fleet() as fleet:
        port = {h.name: h.bmc_port for h in fleet.resolve_hosts([a, b, dead])}
        assert all(r.ok for r in fleet.bmc_power("on", [a, b, registered], settings=FAST_BMC))
    # The database: the simulator's hosts, and the inventory hosts at a stale BMC address.
    db = tmp_path / "stale.db"
    stale = tmp_path / "stale.ini"
    stale.write_text(
        f"inv-a bmc_address=127.0.0.1 bmc_port={port[dead]} bmc_credential=sim\n"
        f"inv-b bmc_address=127.0.0.1 bmc_port={port[dead]} bmc_credential=sim\n"
    )
    with maas_lib.open_fleet(db) as fleet:
        fleet.import_hosts([simfleet.info["inventory"], str(stale)])
    inventory = tmp_path / "play.ini"
    inventory.write_text(
        "[bmcs]\n"
        f"inv-a bmc_address=127.0.0.1 bmc_port={port[a]} bmc_protocol=ipmi bmc_credential=sim\n"
        f"inv-b bmc_address=127.0.0.1 bmc_port={port[b]} bmc_protocol=ipmi bmc_credential=sim\n"
        f"[bmcs:vars]\nansible_connection=local\nansible_python_interpreter={sys.executable}\n"
    )
    before = simfleet.state()
    text = (
        FLEET_PLAYBOOK.replace("@REGISTERED@", registered)
        .replace("@DEAD@", dead)
        .replace("@FAST@", FAST)
        .replace("@USER@", simfleet.env["MAAS_CRED_SIM_USERNAME"])
        .replace("@DB@", str(db))
    )
    (ansible.directory / "fleet.yml").write_text(text)
    # The database is named by the play's `environment:`, as for a module process.
    nowhere = {"MAAS_DB": str(tmp_path / "nowhere.db")}
    r = ansible.run("ansible-playbook", "-i", str(inventory), "fleet.yml", env=nowhere)
    assert r.returncode == 0, tail(r)
    assert "failed=0" in r.stdout and "ignored=0" in r.stdout, tail(r)
    assert simfleet.env["MAAS_CRED_SIM_PASSWORD"] not in r.stdout + r.stderr
    after = simfleet.state()
    # One cycle each (the fleet-wide task); the check-mode power-off touched nothing.
    for host in (a, b, registered):
        assert after[host]["power_offs"] == before[host]["power_offs"] + 1, host
        assert after[host]["power"] == "on", host


FLEET_PLAYBOOK = """
- name: Inventory hosts and the fleet-wide form
  hosts: bmcs
  gather_facts: false
  environment:
    MAAS_DB: "@DB@"
  module_defaults:
    maas_lib.fleet.power:
      @FAST@
    maas_lib.fleet.bmc_info:
      @FAST@
  tasks:
    - name: Each host on its own, its BMC from the inventory (the database's is stale)
      maas_lib.fleet.bmc_info: {name: "{{ inventory_hostname }}"}
      register: one

    - name: Every host in one task, with a registered host the inventory does not know
      maas_lib.fleet.power:
        names: "{{ ansible_play_hosts + ['@REGISTERED@'] }}"
        state: cycle
      run_once: true
      register: cycled

    - name: Would they be powered off? (check mode, credentials as parameters)
      maas_lib.fleet.power:
        names: "{{ ansible_play_hosts + ['@REGISTERED@'] }}"
        state: "off"
        username: "@USER@"
        password: "{{ lookup('env', 'MAAS_CRED_SIM_PASSWORD') }}"
      run_once: true
      check_mode: true
      register: would

    - name: A survey with a dead BMC in it
      maas_lib.fleet.bmc_info:
        names: "{{ ansible_play_hosts + ['@DEAD@'] }}"
        timeout: 1
        retries: 0
      run_once: true
      register: survey
      failed_when: false

    - name: Later tasks read each host's result
      ansible.builtin.assert:
        that:
          - one.bmc_from == 'inventory' and one.power == 'on'
          - one.via == 'ipmi://127.0.0.1:' ~ bmc_port
          - cycled is changed and cycled.failed_hosts == []
          - cycled.hosts[inventory_hostname].bmc_from == 'inventory'
          - cycled.hosts[inventory_hostname].via == 'ipmi://127.0.0.1:' ~ bmc_port
          - cycled.hosts[inventory_hostname].power == 'on'
          - cycled.hosts['@REGISTERED@'].bmc_from == 'database'
          - cycled.hosts | length == 3
          - would is changed and would.hosts[inventory_hostname].action == 'off'
          - would.hosts[inventory_hostname].power == 'on'
          - survey.failed_hosts == ['@DEAD@'] and survey.msg.startswith('1 of 3 hosts failed')
          - survey.hosts['@DEAD@'].error_class in ['unreachable', 'timeout']
          - survey.hosts[inventory_hostname].power == 'on'
"""


def test_the_bmc_module_still_runs_as_a_module_process(simfleet, sim_env, tmp_path):
    """Delegated off the controller, a BMC task runs its module (the action plugin's
    fallback): the same body, with the database as the source of the host's BMC."""
    host = simfleet.hosts(kind="ipmi")[0]
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"name": host, "db": str(simfleet.db)}}))
    proc = subprocess.run(
        [sys.executable, str(COLLECTION / "plugins/modules/bmc_info.py"), str(args)],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        timeout=patience(60),
    )
    result = json.loads(proc.stdout)
    assert proc.returncode == 0 and not result.get("failed"), result
    assert result["host"] == host and result["power"] in ("on", "off")
    assert result["bmc_from"] == "database" and result["registered"]["host"] == host
    assert result["via"].startswith("ipmi://127.0.0.1:") and result["changed"] is False
