"""Running one Ansible playbook through ansible-runner, safely, from any thread.

Each run gets its own private_data_dir (inventory, extravars, artifacts and
ANSIBLE_LOCAL_TEMP live there), never changes the process's cwd or environment, never
prints to our stdout (the scheduler's stdout is JSON) and never installs signal handlers.
ansible-runner does install SIGINT/SIGTERM handlers when it is called from the main
thread without a ``cancel_callback``, so one is always passed.

Timeouts are enforced here, not by ansible-runner's ``timeout=``: that only SIGKILLs
ansible-playbook's process group, but ansible's task workers ``setsid()`` into process
groups of their own, so they (and the task's commands) would be orphaned and keep running
against the host after the run "timed out". Our cancel callback kills each worker's
group first (Linux: found through /proc), then lets ansible-runner kill the rest.

Inventory and extravars are written by us as YAML with every string tagged ``!unsafe``
(`maas_lib.scheduler.ansible_data`): what comes from the store is never templated. BMC
credentials never enter the child's environment (ansible-runner records that in the
``command`` artifact): a `CredentialBroker` hands them to the executor's modules over a
socket. A temporary private_data_dir is named after its worker process
(``maas-<pid>.<start>-...``), so the next worker removes those of a dead one
(`remove_stale_private_dirs`).

Used by the pre/post hooks (one host, `maas_lib.scheduler.hooks`); the Ansible executor's
long-lived process (`maas_lib.scheduler.ansible_session`) shares its private directories,
environment and kill of task workers.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ansible_runner

from maas_lib.credentials import SOCKET_ENV as CREDENTIALS_SOCKET_ENV
from maas_lib.errors import InputError
from maas_lib.scheduler.ansible_data import write_unsafe_yaml
from maas_lib.scheduler.credential_broker import CredentialBroker

__all__ = ["PlaybookRun", "remove_stale_private_dirs", "run_playbook"]

#: How often (s) ansible-runner's pexpect loop wakes to check the job timeout and the
#: cancel callback. Its default of 5 s would let a 3 s timeout run for up to 8 s.
_POLL_SECONDS = 1

#: ansible-runner's own job timeout, this long after ours, in case the watchdog fails.
_BACKSTOP_SECONDS = 30

#: Environment variables of ours that hold secrets: always blanked in the ansible-playbook
#: child's environment (ansible-runner writes that environment to disk); the executor's
#: BMC modules get credentials from a `CredentialBroker` instead.
_CRED_ENV_PREFIX = "MAAS_CRED_"

#: A URL or conninfo that carries a password.
_SECRET_URL = re.compile(r"(?i)://[^/@\s]*:[^/@\s]*@|password\s*=")

#: A temporary private_data_dir: maas-<pid>.<process start time>-<label>-<random>.
_PRIVATE_DIR = re.compile(r"maas-(\d+)\.(\d+)-.*")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class PlaybookRun:
    """How one ansible-playbook run ended."""

    #: ansible-runner status: successful | failed | timeout | canceled
    status: str
    #: ansible-playbook's exit code (254 when ansible-runner killed it: timeout, cancel).
    rc: int | None
    #: The job events, in order (ansible-runner's event dicts).
    events: list[dict[str, Any]]
    #: The first error line of the run's output (for failures no task explains).
    stdout_error: str
    duration_s: float


def run_playbook(
    playbook: str | Path,
    inventory: Mapping[str, Any],
    *,
    limit: str,
    timeout: float,
    extravars: Mapping[str, Any] | None = None,
    work_dir: str | Path | None = None,
    label: str = "run",
    cancel: Callable[[], bool] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    forks: int | None = None,
    envvars: Mapping[str, str] | None = None,
    credentials: Collection[str] = (),
    database_url: str | None = None,
) -> PlaybookRun:
    """Run `playbook` (a path or a collection playbook's FQCN) on the `limit` hosts.

    The run, task workers included, is killed once `timeout` seconds have passed (checked
    about once a second), giving status ``timeout``; `cancel` is polled as often and, when
    it returns True, kills the run with status ``canceled``. `on_event` sees each job event
    as it arrives. `work_dir` is the parent of the run's private_data_dir, which is then
    kept for inspection (its `command` artifact with secrets masked); by default a
    temporary directory is used and removed. `credentials`: the credential names the
    run's BMC modules may ask this process for (hooks get none); `database_url`: the
    store URL they may ask for (it may hold a password, so it is never in `envvars`).
    """
    if not timeout > 0:
        raise InputError(f"{label} timeout {timeout!r}: must be positive")
    inv = _plain(inventory, "inventory")
    extra = _plain(extravars or {}, "extravars")
    start = time.monotonic()
    watchdog = _Watchdog(start + timeout, cancel, on_event)
    with _private_dir(label, work_dir) as private_dir:
        local_tmp = private_dir / "tmp"
        local_tmp.mkdir(mode=0o700)
        env = _child_env(local_tmp)
        env.update(envvars or {})
        inventory_path = write_unsafe_yaml(private_dir / "inventory" / "hosts.yml", inv)
        # ansible-runner passes env/extravars as `-e @file` (a dict would go on the command
        # line as JSON, and be templated).
        write_unsafe_yaml(private_dir / "env" / "extravars", extra)
        broker = None
        if credentials or database_url:
            broker = CredentialBroker(credentials, private_dir, database_url=database_url)
        if broker is not None:
            env[CREDENTIALS_SOCKET_ENV] = broker.address
        try:
            runner = _run(
                private_dir, playbook, inventory_path, limit, env, forks, timeout, watchdog
            )
        finally:
            if broker is not None:
                broker.close()
        status = watchdog.fired or str(runner.status)
        artifact_dir = Path(runner.config.artifact_dir)
        events = list(_read_events(artifact_dir / "job_events"))
        error = "" if status == "successful" else _stdout_error(artifact_dir / "stdout")
        if work_dir is not None:
            _redact_command_artifact(artifact_dir / "command")
    return PlaybookRun(
        status=status,
        rc=runner.rc,
        events=events,
        stdout_error=error,
        duration_s=round(time.monotonic() - start, 3),
    )


def _run(
    private_dir: Path,
    playbook: str | Path,
    inventory: Path,
    limit: str,
    env: dict[str, str],
    forks: int | None,
    timeout: float,
    watchdog: _Watchdog,
) -> Any:
    return ansible_runner.run(
        private_data_dir=str(private_dir),
        host_cwd=str(private_dir),  # or RunnerConfig calls os.getcwd(), which may be gone
        playbook=str(playbook),
        inventory=str(inventory),
        limit=limit,
        envvars=env,
        forks=forks,
        settings={"pexpect_timeout": _POLL_SECONDS},
        # Only a backstop: the watchdog enforces `timeout` (see the module docstring).
        # ansible-runner int()s this, so 0.5 would mean "no timeout".
        timeout=math.ceil(timeout) + _BACKSTOP_SECONDS,
        cancel_callback=watchdog,
        event_handler=watchdog.on_event,
        quiet=True,
        ignore_logging=True,
        suppress_env_files=True,
    )


class _Watchdog:
    """ansible-runner's cancel callback: enforces the deadline and the caller's `cancel`.

    Polled by the runner thread about once a second while ansible-playbook runs. When it
    fires it SIGKILLs the process group of every task worker (the direct children of
    ansible-playbook that setsid()), then returns True so ansible-runner kills
    ansible-playbook's own group.
    """

    def __init__(
        self,
        deadline: float,
        cancel: Callable[[], bool] | None,
        forward: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.deadline = deadline
        self.cancel = cancel
        self.forward = forward
        self.playbook_pid: int | None = None
        self.fired: str | None = None  # "timeout" | "canceled"

    def on_event(self, event: dict[str, Any]) -> bool:
        """Event handler: learns ansible-playbook's pid (every event carries it)."""
        pid = event.get("pid")
        if self.playbook_pid is None and isinstance(pid, int) and pid > 1:
            self.playbook_pid = pid
        if self.forward is not None:
            self.forward(event)
        return True  # write the event to the artifacts as usual

    def __call__(self) -> bool:
        if self.fired:
            return True
        try:
            canceled = bool(self.cancel and self.cancel())
        except Exception:
            canceled = True  # a broken cancel callback must not leave a hook running
        if canceled:
            self.fired = "canceled"
        elif time.monotonic() >= self.deadline:
            self.fired = "timeout"
        else:
            return False
        if self.playbook_pid is not None:
            _kill_worker_groups(self.playbook_pid)
        return True


def _kill_worker_groups(parent: int) -> None:
    """SIGKILL the process group of each child of `parent` that leads its own group."""
    ours = os.getpgrp()
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return  # no /proc (not Linux): ansible-runner's kill of the main group is all we get
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
            # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses
            fields = stat[stat.rindex(")") + 2 :].split()
            ppid, pgrp = int(fields[1]), int(fields[2])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and pgrp == int(entry) and pgrp not in (ours, parent):
            with suppress(OSError):  # already gone
                os.killpg(pgrp, signal.SIGKILL)


def _plain(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A JSON-safe copy (ansible-runner json.dumps these); Paths and dates become strings."""
    try:
        return json.loads(json.dumps(dict(value), default=str))
    except (TypeError, ValueError) as e:
        raise InputError(f"playbook {what}: not serializable: {e}") from e


@contextmanager
def _private_dir(label: str, work_dir: str | Path | None) -> Iterator[Path]:
    prefix = "maas-" + re.sub(r"[^\w.-]", "_", label)[:40] + "-"
    if work_dir is None:
        prefix = f"maas-{os.getpid()}.{_start_time(os.getpid())}-{prefix[5:]}"
        with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as d:
            yield Path(d)
    else:
        parent = Path(work_dir).expanduser().resolve()
        parent.mkdir(parents=True, exist_ok=True)
        yield Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def _start_time(pid: int) -> int:
    """The process's start time (clock ticks since boot; 0 where /proc does not tell)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def remove_stale_private_dirs(parent: str | Path | None = None) -> list[Path]:
    """Remove temporary private_data_dirs left by worker processes that no longer run
    (a SIGKILLed worker's): they hold inventories and artifacts. Returns those removed."""
    root = Path(parent or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _PRIVATE_DIR.fullmatch(path.name)
        if not match or path.is_symlink() or not path.is_dir():
            continue
        with suppress(OSError):
            if path.stat().st_uid != os.geteuid():
                continue
        pid, started = int(match[1]), int(match[2])
        if _alive(pid) and _start_time(pid) == started:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _child_env(local_tmp: Path) -> dict[str, str]:
    """Overrides for ansible-playbook's environment (ansible-runner starts from os.environ)."""
    env = {
        "ANSIBLE_LOCAL_TEMP": str(local_tmp),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    # ansible-runner spawns a bare `ansible-playbook` looked up on PATH; a venv's bin is
    # often not on PATH (e.g. `.venv/bin/python -m ...`), so put ours first.
    bindir = Path(sys.executable).parent
    if (bindir / "ansible-playbook").exists():
        env["PATH"] = os.pathsep.join(filter(None, [str(bindir), os.environ.get("PATH")]))
    for name in os.environ:
        if name.startswith(_CRED_ENV_PREFIX):
            env[name] = ""
    # A hook started from an executor's module must not reach that run's broker, nor
    # start a step service of its own (see the collection's plugin_utils/step_service.py).
    env[CREDENTIALS_SOCKET_ENV] = ""
    env["MAAS_STEP_SERVICE"] = ""
    # A database URL with a password, and alert webhook URLs (tokens), stay out too.
    if _SECRET_URL.search(os.environ.get("MAAS_DB", "")):
        env["MAAS_DB"] = ""
    if os.environ.get("MAAS_ALERT_WEBHOOK"):
        env["MAAS_ALERT_WEBHOOK"] = ""
    return env


def _read_events(event_dir: Path) -> Iterator[dict[str, Any]]:
    """Job events in order, without `Runner.events`, which waits up to 60 s for the dir."""
    try:
        names = [n for n in os.listdir(event_dir) if re.fullmatch(r"\d+-.+\.json", n)]
    except OSError:
        return
    for name in sorted(names, key=lambda n: int(n.split("-", 1)[0])):
        if "-partial" in name:
            continue
        try:
            with open(event_dir / name, encoding="utf-8") as f:
                event = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(event, dict):
            yield event


def _stdout_error(stdout_path: Path) -> str:
    try:
        lines = stdout_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "no output"
    lines = [_ANSI.sub("", line).strip() for line in lines]
    lines = [line for line in lines if line]
    for line in lines:
        if line.startswith(("ERROR!", "[ERROR]", "fatal:")):
            return line
    return lines[-1] if lines else "no output"


def _redact_command_artifact(path: Path) -> None:
    """The kept `command` artifact records the child's whole environment: mask secrets."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        env = data.get("env") or {}
        for name in env:
            if re.search(r"(?i)password|passwd|secret|token|_cred_|api_?key", name):
                env[name] = "***"
        path.write_text(json.dumps(data), encoding="utf-8")
    except (OSError, ValueError, AttributeError):
        pass
