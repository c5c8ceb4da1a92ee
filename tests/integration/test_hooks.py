"""Per-host hooks through the real ansible-runner and ansible-playbook (local connection)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from maas_lib.errors import InputError
from maas_lib.scheduler.hooks import HookResult, run_hook
from tests.conftest import patience

#: No system python needed: modules run with the interpreter running the tests.
LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}


def pid_gone(pid: int) -> bool:
    """Dead, or a zombie nobody has reaped yet (PID 1 in a container may not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_passing_hook_gets_host_vars_and_extravars(
    write_file: Callable[..., Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
):
    out = tmp_path / "out" / "note.txt"
    out.parent.mkdir()
    playbook = write_file(
        "drain.yml",
        """
        - hosts: all
          gather_facts: false
          tasks:
            - name: write the drain note
              ansible.builtin.copy:
                content: "{{ inventory_hostname }} {{ drain_note }} {{ maas_request_id }}"
                dest: "{{ note_path }}"
            - name: say hello
              ansible.builtin.debug:
                msg: hello
        """,
    )
    sigint_before = signal.getsignal(signal.SIGINT)

    r = run_hook(
        playbook,
        "node01",
        {**LOCAL, "drain_note": "draining", "note_path": str(out), "bmc_password": "hunter2"},
        timeout=patience(60),
        extravars={"maas_request_id": "req-42", "maas_action": "reboot"},
    )

    assert r == HookResult(True, "successful", 0, "ok=2 changed=1", r.duration_s)
    assert 0 < r.duration_s < 60
    assert out.read_text() == "node01 draining req-42"
    # Nothing on our stdout (it is the scheduler's JSON), no signal handlers taken over.
    assert capfd.readouterr().out == ""
    assert signal.getsignal(signal.SIGINT) is sigint_before


def test_failing_hook_names_the_task_and_message(write_file: Callable[..., Path], tmp_path: Path):
    playbook = write_file(
        "drain.yml",
        """
        - hosts: all
          gather_facts: false
          tasks:
            - name: check health
              ansible.builtin.fail:
                msg: "node not drained\\n  (3 VMs left)"
            - name: never reached
              ansible.builtin.file:
                path: "{{ marker }}"
                state: touch
        """,
    )
    marker = tmp_path / "reached"

    r = run_hook(playbook, "node01", {**LOCAL, "marker": str(marker)}, timeout=60, label="pre-hook")

    assert not r.ok
    assert r.status == "failed" and r.rc not in (0, None)
    assert (
        r.summary
        == "pre-hook drain.yml failed on task 'check health': node not drained (3 VMs left)"
    )
    assert not marker.exists()


def test_failure_summary_is_one_bounded_line_without_secrets(write_file: Callable[..., Path]):
    playbook = write_file(
        "noisy.yml",
        """
        - hosts: all
          gather_facts: false
          tasks:
            - name: noisy
              ansible.builtin.fail:
                msg: "login failed password={{ bmc_password }}\\n{{ 'x' * 1000 }}"
        """,
    )

    r = run_hook(playbook, "node01", {**LOCAL, "bmc_password": "hunter2"}, timeout=patience(60))

    assert r.status == "failed"
    assert "hunter2" not in r.summary and "password=***" in r.summary
    assert "\n" not in r.summary and len(r.summary) == 300 and r.summary.endswith("...")


def test_broken_playbook_reports_ansibles_error(write_file: Callable[..., Path]):
    playbook = write_file("broken.yml", "- hosts: all\n  tasks: [\n")

    r = run_hook(playbook, "node01", LOCAL, timeout=patience(60))

    assert (r.ok, r.status) == (False, "failed")
    assert r.summary.startswith("hook broken.yml failed (rc=")
    assert "YAML" in r.summary


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs an ssh client")
def test_unreachable_host(write_file: Callable[..., Path]):
    playbook = write_file(
        "ping.yml",
        """
        - hosts: all
          gather_facts: false
          tasks:
            - name: ping it
              ansible.builtin.ping:
        """,
    )
    # Port 1 on loopback: connection refused at once.
    host_vars = {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_user": "nobody"}

    r = run_hook(playbook, "node01", host_vars, timeout=patience(60))

    assert (r.ok, r.status) == (False, "failed")
    assert r.summary.startswith("hook ping.yml: node01 unreachable on task 'ping it': ")


@pytest.mark.slow
def test_timeout_kills_the_whole_run(write_file: Callable[..., Path], tmp_path: Path):
    pidfile = tmp_path / "sleep.pid"
    playbook = write_file(
        "slow.yml",
        """
        - hosts: all
          gather_facts: false
          tasks:
            - name: wait for the drain
              ansible.builtin.shell: echo $$ > {{ pidfile }}; exec sleep 30
        """,
    )

    start = time.monotonic()
    # Long enough for ansible-playbook to reach the task on a loaded machine.
    limit = patience(3)
    r = run_hook(playbook, "node01", {**LOCAL, "pidfile": str(pidfile)}, timeout=limit)
    elapsed = time.monotonic() - start

    assert (r.ok, r.status) == (False, "timeout")
    assert r.summary == f"hook slow.yml timed out after {limit:g}s in task 'wait for the drain'"
    assert limit <= elapsed < limit + 12
    # ansible's task worker setsid()s; it and the task's command must not outlive the hook.
    sleep_pid = int(pidfile.read_text())
    deadline = time.monotonic() + patience(5)
    while not pid_gone(sleep_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not pid_gone(sleep_pid):
        os.kill(sleep_pid, signal.SIGKILL)
        pytest.fail(f"the timed-out task's process {sleep_pid} was still running")


def test_missing_playbook_is_an_input_error(tmp_path: Path):
    with pytest.raises(InputError, match=r"hook playbook .*nope\.yml: not found"):
        run_hook(tmp_path / "nope.yml", "node01", LOCAL, timeout=10)


def test_concurrent_hooks_for_two_hosts(write_file: Callable[..., Path], tmp_path: Path):
    playbook = write_file(
        "note.yml",
        """
        - hosts: all
          gather_facts: false
          tasks:
            - name: write the note
              ansible.builtin.copy:
                content: "{{ inventory_hostname }} {{ rack }} {{ maas_action }}"
                dest: "{{ note_dir }}/{{ inventory_hostname }}.txt"
        """,
    )
    note_dir = tmp_path / "notes"
    note_dir.mkdir()
    work_dir = tmp_path / "work"

    def hook(host: str, rack: str) -> HookResult:
        return run_hook(
            playbook,
            host,
            {**LOCAL, "rack": rack, "note_dir": str(note_dir)},
            timeout=patience(60),
            extravars={"maas_action": "power-cycle"},
            work_dir=work_dir,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.map(hook, ["node-a", "node-b"], ["r1", "r2"])

    assert (a.ok, a.summary) == (True, "ok=1 changed=1"), a
    assert (b.ok, b.summary) == (True, "ok=1 changed=1"), b
    assert (note_dir / "node-a.txt").read_text() == "node-a r1 power-cycle"
    assert (note_dir / "node-b.txt").read_text() == "node-b r2 power-cycle"
    # With work_dir, each run keeps its own private_data_dir there.
    assert len(list(work_dir.iterdir())) == 2
