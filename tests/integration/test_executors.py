"""The two executors agree: the same simulated rollout, run natively and as action
playbooks (`maasctl run --executor ansible`), gives the same per-host results, the same
recorded steps, and the same effect on the machines as the simulator recorded it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import patience
from tests.simfleet import FAST_RUN, run_args, running_sim

pytestmark = pytest.mark.slow

PLAYBOOKS = Path(__file__).resolve().parents[2] / "ansible_collections/maas_lib/fleet/playbooks"

#: No retries: a dead host fails at the same step with both executors, quickly. A BMC
#: timeout long enough that a healthy host answers even when each Ansible task's process
#: starts on a loaded machine (a dead host costs it once per batch).
RUN = {**FAST_RUN, "retries": 0, "timeout": patience(4.0)}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with running_sim(
        tmp_path_factory.mktemp("execsim"),
        ipmi=4,
        redfish=3,
        dead=1,
        bad_install=1,
        # Well above the reboot test's soft timeout (0.05 s) even when one BMC read of a
        # loaded machine takes a few hundred ms: the soft-off must time out every time.
        power_delay=0.8,
        install_time=0.8,
    ) as s:
        yield s


@pytest.fixture
def fleet(sim, monkeypatch):
    for key, value in sim.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MAAS_DB", str(sim.db))
    with sim.fleet() as f:
        yield f


def _mixed(sim):
    """One healthy, one failing-install and one dead host of each protocol (each Ansible
    task is a process: every host more costs seconds)."""
    hosts = []
    for kind in ("ipmi", "redfish"):
        hosts.append(sim.hosts(kind=kind)[0])
        hosts += sim.hosts(fault="bad_install", kind=kind) + sim.hosts(fault="dead", kind=kind)
    return hosts


def _rollout(sim, fleet, executor, action, hosts, **submit):
    """Run one request over `hosts`; what the store and the simulator recorded."""
    hosts = sorted(hosts)
    alive = [h for h in hosts if h not in sim.hosts(fault="dead", kind="ipmi")]
    alive = [h for h in alive if h not in sim.hosts(fault="dead", kind="redfish")]
    assert all(r.ok for r in fleet.bmc_power("on", alive))
    since = time.time()
    rid = fleet.submit(action, hosts, batch_size="3", max_failures="100%", **submit).id
    report = fleet.run(executor=executor, **RUN)
    assert report.errors == []
    status = fleet.status(rid)
    machines = sim.state()
    steps: dict[str, list[tuple]] = {}
    for s in fleet.steps(rid):
        steps.setdefault(s["host"], []).append((s["step"], s["outcome"], s["error_class"]))
        assert s["duration_s"] is not None and s["duration_s"] >= 0
    history = {h: [p for t, p in machines[h]["power_history"] if t >= since] for h in hosts}
    return {
        "id": rid,
        "state": status.state,
        # The step a host failed at, not the message: a native worker's abandoned BMC call
        # may still hold the endpoint when the next step starts ("BMC still busy"), while
        # each Ansible task is a process of its own.
        "hosts": {
            h.host: (h.state, h.error_class, (h.reason or "").split(":")[0], h.batch)
            for h in status.hosts
        },
        "steps": steps,
        "power": history,
        "image": {h: machines[h]["installed_image"] == submit.get("image") for h in hosts},
    }


def _compare(native, ansible):
    assert ansible["state"] == native["state"]
    assert ansible["hosts"] == native["hosts"]
    assert ansible["steps"] == native["steps"]
    assert ansible["power"] == native["power"]
    assert ansible["image"] == native["image"]


def _no_passwords_in_records(fleet, rid):
    secrets = [v for k, v in os.environ.items() if k.startswith("MAAS_CRED_") and v]
    passwords = [s.split(":", 1)[-1] for s in secrets] + secrets
    text = repr(fleet.steps(rid)) + repr(fleet.status(rid)) + repr(fleet.store.events(rid))
    assert passwords and not [p for p in passwords if len(p) > 3 and p in text]


def test_a_reimage_rollout_gives_the_same_results_with_both_executors(sim, fleet):
    hosts = _mixed(sim)
    native = _rollout(sim, fleet, "native", "reimage", hosts, image="ubuntu-24.04")
    ansible = _rollout(sim, fleet, "ansible", "reimage", hosts, image="debian-13")
    # The rollout had successes and both failure kinds; images per the simulator.
    classes = {h: v[1] for h, v in native["hosts"].items()}
    assert sorted(c for c in classes.values() if c) == [
        "install_failed",
        "install_failed",
        "unreachable",
        "unreachable",
    ]
    ok = [h for h, v in native["hosts"].items() if v[0] == "succeeded"]
    assert len(ok) == 2 and all(native["image"][h] for h in ok)
    assert native["steps"][ok[0]] == [
        (step, "succeeded", None)
        for step in (
            "set-install-target",
            "power-off",
            "boot-image",
            "power-on",
            "wait-install",
            "verify-image",
        )
    ]
    # The second rollout installed its own image (debian-13) on the same machines.
    _compare(native, ansible)
    # The Ansible executor keeps BMC passwords out of what it records, failures included.
    _no_passwords_in_records(fleet, ansible["id"])


def test_a_reboot_that_falls_back_to_hard_off_agrees_across_executors(sim, fleet):
    # The simulated OS needs 0.8 s to shut down: a 0.05 s soft timeout forces the
    # hard power-off (a step whose condition comes from the soft-off's result).
    RUN["soft_timeout"] = 0.05
    # A healthy host of each protocol, and a dead one (Redfish: refused at once; a dead
    # IPMI BMC costs seconds a step, and the reimage test has one).
    hosts = [sim.hosts(kind="ipmi")[0], sim.hosts(kind="redfish")[0]]
    hosts += sim.hosts(fault="dead", kind="redfish")
    try:
        native = _rollout(sim, fleet, "native", "reboot", hosts)
        ansible = _rollout(sim, fleet, "ansible", "reboot", hosts)
    finally:
        RUN.pop("soft_timeout")
    ok = [h for h, v in native["hosts"].items() if v[0] == "succeeded"]
    assert len(ok) == 2 and native["hosts"][hosts[2]][1] == "unreachable"
    assert native["steps"][ok[0]] == [
        ("soft-off", "timeout", "timeout"),
        ("power-off", "succeeded", None),
        ("power-on", "succeeded", None),
    ]
    assert native["power"][ok[0]] == ["off", "on"]
    _compare(native, ansible)


def test_a_sigkilled_ansible_worker_is_resumed_without_repeating_completed_steps(sim, fleet):
    """The playbook a killed worker started may outlive it; once another worker holds the
    request, its remaining steps are refused (`fenced`), so no completed step repeats."""
    hosts = sim.hosts(kind="ipmi")
    assert all(r.ok for r in fleet.bmc_power("on", hosts))
    since = time.time()
    rid = fleet.submit("power-cycle", hosts, batch_size="1").id
    args = [sys.executable, "-m", "maas_lib", "run", "--executor", "ansible", "--claim-ttl", "3"]
    args += run_args(timeout=RUN["timeout"])
    env = {**os.environ}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + patience(60)
        while fleet.status(rid).counts.get("succeeded", 0) < 1:
            assert time.monotonic() < deadline, "no host finished within 60 s"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    done_before = {h.host for h in fleet.status(rid).hosts if h.state == "succeeded"}
    assert 1 <= len(done_before) < len(hosts)

    resumed = subprocess.run(
        [*args, "--until-idle"], env=env, capture_output=True, text=True, timeout=patience(180)
    )
    assert resumed.returncode == 0, resumed.stderr
    st = fleet.status(rid)
    assert st.state == "succeeded", st.reason
    machines = sim.state()
    for h in hosts:
        offs = sum(1 for t, p in machines[h]["power_history"] if t >= since and p == "off")
        assert offs == 1 if h in done_before else offs >= 1, (h, offs)
    ok = [(s["host"], s["step"]) for s in fleet.steps(rid) if s["outcome"] == "succeeded"]
    assert sorted(ok) == sorted(set(ok)) and len(ok) == 2 * len(hosts)
    assert any(e.kind == "request_resumed" for e in fleet.events(rid))


def test_sigterm_cancels_the_batch_playbook_and_hands_the_request_over(sim, fleet):
    """SIGTERM kills the running playbook (its task workers too): the steps in flight are
    `interrupted`, the request is handed back at once, and the next worker finishes it
    without repeating a completed step."""
    hosts = sim.hosts(kind="ipmi")
    assert all(r.ok for r in fleet.bmc_power("on", hosts))
    rid = fleet.submit("power-cycle", hosts, batch_size="100%").id
    args = [sys.executable, "-m", "maas_lib", "run", "--executor", "ansible", "--claim-ttl", "300"]
    args += run_args(timeout=RUN["timeout"])
    proc = subprocess.Popen(
        args, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + patience(60)
    while not any(s["outcome"] == "succeeded" for s in fleet.steps(rid)):
        assert time.monotonic() < deadline, "no step finished within 60 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=patience(60))
    assert proc.returncode == 0, err
    assert f"request {rid}: left for another worker" in out
    st = fleet.status(rid)
    assert st.state == "running" and st.claimed_by is None
    assert not any(s["outcome"] == "running" for s in fleet.steps(rid))

    resumed = subprocess.run(
        [*args, "--until-idle"],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=patience(180),
    )
    assert resumed.returncode == 0, resumed.stderr
    assert fleet.status(rid).state == "succeeded"
    ok = [(s["host"], s["step"]) for s in fleet.steps(rid) if s["outcome"] == "succeeded"]
    assert sorted(ok) == sorted(set(ok)) and len(ok) == 2 * len(hosts)


def _ansible_processes() -> list[int]:
    """Our children that are the Ansible executor's long-lived ansible process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"maas_lib.scheduler.ansible_child" in cmdline:
            found.append(int(entry))
    return found


def test_one_ansible_process_runs_every_batch_of_a_request_each_step_recorded_once(
    sim, fleet, caplog
):
    hosts = sorted(sim.hosts())  # the healthy ones: two IPMI, one Redfish
    assert len(hosts) == 3 and all(r.ok for r in fleet.bmc_power("on", hosts))
    since = time.time()
    rid = fleet.submit("power-cycle", hosts, batch_size="1").id
    with caplog.at_level(logging.INFO, logger="maas_lib.scheduler.ansible_executor"):
        report = fleet.run(executor="ansible", **RUN)
    assert report.errors == []
    st = fleet.status(rid)
    assert st.state == "succeeded"
    assert sorted(h.batch for h in st.hosts) == [0, 1, 2]
    runs = [m for r in caplog.records if "in ansible process" in (m := r.getMessage())]
    assert len(runs) == 3 and len({m.rsplit(" ", 1)[1] for m in runs}) == 1, runs
    steps = [(s["host"], s["step"], s["outcome"]) for s in fleet.steps(rid)]
    assert sorted(steps) == sorted(
        (h, step, "succeeded") for h in hosts for step in ("power-off", "power-on")
    )
    machines = sim.state()
    for h in hosts:
        assert [p for t, p in machines[h]["power_history"] if t >= since] == ["off", "on"]
    # The process ended with the request.
    assert _ansible_processes() == []


def test_a_cancel_between_batches_stops_the_next_batch(sim, fleet):
    hosts = sorted(sim.hosts())
    assert all(r.ok for r in fleet.bmc_power("on", hosts))
    since = time.time()
    rid = fleet.submit("power-cycle", hosts, batch_size="1").id
    worker = fleet.worker(executor="ansible", **RUN)
    t = threading.Thread(target=worker.run, kwargs={"until_idle": True})
    t.start()
    try:
        deadline = time.monotonic() + patience(60)
        while not fleet.steps(rid):  # batch 0's first step has started
            assert time.monotonic() < deadline, "no step started within 60 s"
            time.sleep(0.05)
        assert fleet.cancel(rid) == "running"
    finally:
        t.join(patience(120))
    assert not t.is_alive()
    st = fleet.status(rid)
    assert st.state == "cancelled"
    first = [h.host for h in st.hosts if h.batch == 0]
    assert len(first) == 1 and {h.host: h.state for h in st.hosts} == {
        h: "succeeded" if h in first else "cancelled" for h in hosts
    }
    assert {s["host"] for s in fleet.steps(rid)} == set(first)
    machines = sim.state()
    for h in hosts:
        offs = [p for t, p in machines[h]["power_history"] if t >= since and p == "off"]
        assert len(offs) == (1 if h in first else 0), h


def test_hooks_run_as_steps_under_the_ansible_executor(sim, fleet, tmp_path):
    """Hooks asked for are not left out of the run (the hook tasks are skipped by tag only
    when no host needs them), and run from the step service like any step."""
    hook = tmp_path / "hook.yml"
    hook.write_text(
        "- hosts: all\n  gather_facts: false\n  connection: local\n  tasks:\n"
        "    - name: note the host\n      ansible.builtin.debug:\n"
        '        msg: "{{ maas_hook }} for {{ inventory_hostname }}"\n'
    )
    hosts = sorted(sim.hosts())[:2]
    assert all(r.ok for r in fleet.bmc_power("on", hosts))
    rid = fleet.submit(
        "power-cycle", hosts, batch_size="1", pre_hook=str(hook), post_hook=str(hook)
    ).id
    report = fleet.run(executor="ansible", **RUN)
    assert report.errors == []
    assert fleet.status(rid).state == "succeeded"
    steps: dict[str, list[tuple[str, str]]] = {}
    for s in fleet.steps(rid):
        steps.setdefault(s["host"], []).append((s["step"], s["outcome"]))
    order = ["pre-hook", "power-off", "power-on", "post-hook"]
    assert steps == {h: [(step, "succeeded") for step in order] for h in hosts}


def test_a_no_log_task_of_an_action_playbook_records_its_failure_but_not_its_output(
    sim, fleet, tmp_path
):
    """A task of the operator's own around the steps is recorded like a step; with
    no_log, what it returned (here a secret in its failure message) reaches neither the
    store nor the request's status."""
    secret = "drain-token-" + os.urandom(6).hex()
    book = (PLAYBOOKS / "power_on.yml").read_text()
    check = (
        "    - name: drain check\n"
        "      delegate_to: localhost\n"
        "      no_log: true\n"
        "      ansible.builtin.fail:\n"
        f'        msg: "token {secret} refused"\n'
    )
    book = book.replace("  tasks:\n", "  tasks:\n" + check, 1)
    (tmp_path / "power_on.yml").write_text(book)
    host = sorted(sim.hosts())[0]
    rid = fleet.submit("power-on", [host]).id
    report = fleet.run(executor="ansible", action_playbooks=str(tmp_path), **RUN)
    assert report.errors == []
    st = fleet.status(rid)
    assert (st.hosts[0].state, st.hosts[0].error_class) == ("failed", "task_failed")
    steps = fleet.steps(rid)
    assert [(s["step"], s["outcome"]) for s in steps] == [("drain check", "failed")]
    text = repr(steps) + repr(st) + repr(fleet.store.events(rid))
    assert secret not in text
