"""What reaches Ansible from the store is data, never code, and never a secret on disk.

An attacker with write access to the database plants host vars; hooks and action
playbooks that reference them must see the literal text (no Jinja evaluation, no
`ansible_*` connection/interpreter override unless the operator allow-lists it). A
worker running the Ansible executor, killed mid-play, leaves no BMC password on disk,
and the next worker removes the dead one's private directories.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import maas_lib
from tests.conftest import patience
from tests.simfleet import FAST_RUN, run_args, running_sim

pytestmark = pytest.mark.slow

RUN = {**FAST_RUN, "retries": 0}
COLLECTION_PLAYBOOKS = (
    Path(__file__).resolve().parents[2] / "ansible_collections/maas_lib/fleet/playbooks"
)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with running_sim(tmp_path_factory.mktemp("trustsim"), ipmi=2, power_delay=0.5) as s:
        yield s


@pytest.fixture
def db(sim, tmp_path, monkeypatch) -> Path:
    """A fresh database of the simulator's hosts, in a directory of its own."""
    for key, value in sim.env.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "db" / "fleet.db"
    path.parent.mkdir()
    with maas_lib.open_fleet(path) as fleet:
        fleet.import_hosts([sim.info["inventory"]])
    monkeypatch.setenv("MAAS_DB", str(path))
    return path


def plant(db: Path, host: str, planted: dict) -> None:
    """Write host vars straight into the database, as an attacker with DB access would."""
    con = sqlite3.connect(db)
    with con:
        (old,) = con.execute("SELECT vars FROM hosts WHERE name = ?", (host,)).fetchone()
        merged = {**json.loads(old or "{}"), **planted}
        con.execute("UPDATE hosts SET vars = ? WHERE name = ?", (json.dumps(merged), host))
    con.close()


def evil(marker: Path) -> str:
    return "{{ lookup('pipe', 'touch " + str(marker) + "') }}"


def interpreter(tmp_path: Path, marker: Path) -> str:
    """A python interpreter that leaves `marker` behind: proof that a store var chose it."""
    script = tmp_path / "interpreter.sh"
    script.write_text(f'#!/bin/sh\ntouch {marker}\nexec {sys.executable} "$@"\n')
    script.chmod(0o755)
    return str(script)


def hostile_vars(tmp_path: Path) -> tuple[dict, list[Path]]:
    markers = [tmp_path / f"pwned-{i}" for i in range(3)]
    planted = {
        "note": evil(markers[0]),
        "deep": {"list": [evil(markers[1])], evil(markers[1]): "key"},
        "ansible_python_interpreter": interpreter(tmp_path, markers[2]),
    }
    return planted, markers


WRITE_VARS = """
    - name: write what the play sees
      delegate_to: localhost
      copy:
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        content: "{{{{ {{'note': note, 'deep': deep}} | to_json }}}}"
"""


def test_planted_templates_in_host_vars_are_never_rendered_by_a_hook(db, sim, tmp_path):
    host = sim.hosts(kind="ipmi")[0]
    planted, markers = hostile_vars(tmp_path)
    plant(db, host, planted)
    out = tmp_path / "out"
    out.mkdir()
    hook = tmp_path / "pre.yml"
    hook.write_text(
        "- hosts: all\n  gather_facts: false\n  connection: local\n  tasks:\n"
        + WRITE_VARS.format(out=out)
    )
    with maas_lib.open_fleet(db) as fleet:
        rid = fleet.submit("power-on", [host], pre_hook=str(hook)).id
        fleet.run(**RUN)
        status = fleet.status(rid)
    assert status.state == "succeeded", [h.reason for h in status.hosts]
    assert [m for m in markers if m.exists()] == []
    seen = json.loads((out / f"{host}.json").read_text())
    assert seen == {"note": planted["note"], "deep": planted["deep"]}


def test_planted_templates_are_never_rendered_by_the_ansible_executor(db, sim, tmp_path):
    host = sim.hosts(kind="ipmi")[1]
    planted, markers = hostile_vars(tmp_path)
    plant(db, host, planted)
    out = tmp_path / "out"
    out.mkdir()
    books = tmp_path / "books"
    books.mkdir()
    playbook = (COLLECTION_PLAYBOOKS / "power_on.yml").read_text()
    (books / "power_on.yml").write_text(
        playbook.rstrip() + "\n" + WRITE_VARS.format(out=out).replace("\n    ", "\n        ")
    )
    with maas_lib.open_fleet(db) as fleet:
        rid = fleet.submit("power-on", [host]).id
        fleet.run(executor="ansible", action_playbooks=str(books), **RUN)
        status = fleet.status(rid)
    assert status.state == "succeeded", [h.reason for h in status.hosts]
    assert [m for m in markers if m.exists()] == []
    seen = json.loads((out / f"{host}.json").read_text())
    assert seen == {"note": planted["note"], "deep": planted["deep"]}


def test_an_ansible_var_from_the_store_is_honoured_only_when_allow_listed(
    db, sim, tmp_path, monkeypatch
):
    host = sim.hosts(kind="ipmi")[0]
    # The operator's interpreter (Ansible configuration, below any host var in precedence).
    monkeypatch.setenv("ANSIBLE_PYTHON_INTERPRETER", sys.executable)
    marker = tmp_path / "interpreter-ran"
    plant(db, host, {"ansible_python_interpreter": interpreter(tmp_path, marker)})
    hook = tmp_path / "pre.yml"
    hook.write_text(
        "- hosts: all\n  gather_facts: false\n  connection: local\n  tasks:\n    - ping:\n"
    )
    with maas_lib.open_fleet(db) as fleet:
        first = fleet.submit("power-on", [host], pre_hook=str(hook)).id
        fleet.run(**RUN)
        assert fleet.status(first).state == "succeeded", fleet.status(first).hosts[0].reason
        assert not marker.exists()
        second = fleet.submit("power-on", [host], pre_hook=str(hook)).id
        fleet.run(allow_ansible_vars=["ansible_python_interpreter"], **RUN)
        assert fleet.status(second).state == "succeeded", fleet.status(second).hosts[0].reason
    assert marker.exists()


def _hits(secrets: list[str], roots: list[Path]) -> list[str]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{path}: {s[:2]}…" for s in secrets if s.encode() in data]
    return found


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_killed_ansible_worker_leaves_no_password_on_disk_and_is_cleaned_up(
    db, sim, tmp_path, backend, request
):
    secrets = [v for k, v in sim.env.items() if k.endswith("_PASSWORD") and len(v) > 3]
    assert secrets
    url = str(db)
    if backend == "postgresql":
        # The test server trusts local connections: the password is there only to be kept.
        db_password = "pg-" + os.urandom(8).hex()
        url = request.getfixturevalue("pg_url")
        url = url.replace("://postgres@", f"://postgres:{db_password}@", 1)
        assert db_password in url
        secrets.append(db_password)
        with maas_lib.open_fleet(url) as fleet:
            fleet.import_hosts([sim.info["inventory"]])
    host = sim.hosts(kind="ipmi")[0]
    temp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    temp.mkdir()
    cwd.mkdir()
    env = {**os.environ, **sim.env, "MAAS_DB": url, "TMPDIR": str(temp)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    with maas_lib.open_fleet(url) as fleet:
        assert all(r.ok for r in fleet.bmc_power("on", [host]))
        rid = fleet.submit("power-cycle", [host]).id
        args = [sys.executable, "-m", "maas_lib", "run", "--executor", "ansible"]
        # Each Ansible task is a process of its own: a BMC timeout a loaded machine meets.
        args += ["--claim-ttl", "3", *run_args(timeout=patience(4))]
        proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + patience(90)
            while not any(s["outcome"] == "succeeded" for s in fleet.steps(rid)):
                assert time.monotonic() < deadline, "no step finished within 90 s"
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        stale = [p for p in temp.iterdir() if p.is_dir()]
        assert stale, "the killed worker left no private directory"
        assert _hits(secrets, [temp, db.parent, cwd]) == []

        resumed = subprocess.run(
            [*args, "--until-idle"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=patience(180),
        )
        assert resumed.returncode == 0, resumed.stderr
    # Read through a new connection: `_hits` opened and closed the database's files in
    # this process, which drops this process's SQLite (POSIX) locks, so a connection
    # opened before it may go on reading a write-ahead log another process has reset.
    with maas_lib.open_fleet(url) as fleet:
        assert fleet.status(rid).state == "succeeded"
    assert [p for p in stale if p.exists()] == []
    assert _hits(secrets, [temp, db.parent, cwd]) == []


@pytest.mark.parametrize("allowed", [False, True])
def test_the_inventory_plugin_sets_store_ansible_vars_only_when_allow_listed(
    db, sim, tmp_path, allowed
):
    from maas_lib.scheduler.ansible_executor import collections_path

    host = sim.hosts(kind="ipmi")[0]
    plant(db, host, {"ansible_python_interpreter": "/tmp/evil", "rack_note": "r1"})
    config = tmp_path / "fleet.maas.yml"
    allow = "allow_ansible_vars: [ansible_python_interpreter]\n" if allowed else ""
    config.write_text(f"plugin: maas_lib.fleet.hosts\ndb: {db}\ninclude_vars: true\n{allow}")
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections_path() or ""}
    bindir = Path(sys.executable).parent
    r = subprocess.run(
        [str(bindir / "ansible-inventory"), "-i", str(config), "--list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=patience(120),
    )
    assert r.returncode == 0, r.stderr
    hostvars = json.loads(r.stdout)["_meta"]["hostvars"][host]
    assert ("ansible_python_interpreter" in hostvars) is allowed
    assert "rack_note" in hostvars
