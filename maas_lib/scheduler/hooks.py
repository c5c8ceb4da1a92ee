"""Per-host pre/post hooks: one Ansible playbook run for one host through ansible-runner.

`run_hook` is safe to call from many threads at once. Each call gets its own
private_data_dir (inventory, extravars, artifacts, ANSIBLE_LOCAL_TEMP all live there),
never changes the process's cwd or environment, never prints to our stdout (the
scheduler's stdout is JSON) and never installs signal handlers. ansible-runner does
install SIGINT/SIGTERM handlers when it is called from the main thread without a
``cancel_callback``, so one is always passed.

Timeouts are enforced here, not by ansible-runner's ``timeout=``: that only SIGKILLs
ansible-playbook's process group, but ansible's task workers ``setsid()`` into process
groups of their own, so they (and the task's commands) would be orphaned and keep running
against the host after the hook "timed out". Our cancel callback kills each worker's
group first (Linux: found through /proc), then lets ansible-runner kill the rest.

The summary is one line built from the runner's job events: the failing task and its
message, never a dump of variables.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ansible_runner

from maas_lib.errors import InputError

__all__ = ["HookResult", "run_hook"]

SUMMARY_MAX = 300

#: How often (s) ansible-runner's pexpect loop wakes to check the job timeout and the
#: cancel callback. Its default of 5 s would let a 3 s timeout run for up to 8 s.
_POLL_SECONDS = 1

#: ansible-runner's own job timeout, this long after ours, in case the watchdog fails.
_BACKSTOP_SECONDS = 30

#: Environment variables of ours that hold secrets: blanked in the ansible-playbook
#: child's environment (and so in the artifacts' copy of that environment).
_CRED_ENV_PREFIX = "MAAS_CRED_"

_SECRETISH = re.compile(
    r"""(?ix)
    ( [\w.-]* (?:password|passwd|secret|token) [\w.-]* "? \s* [=:] \s* ["']? )
    ( [^\s,;"'}\]]+ )
    """
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_FAILURE_EVENTS = ("runner_on_failed", "runner_on_unreachable")


@dataclass(frozen=True)
class HookResult:
    """The outcome of one hook run for one host."""

    ok: bool
    #: ansible-runner status: successful | failed | timeout | canceled
    status: str
    #: ansible-playbook's exit code (254 when ansible-runner killed it: timeout, cancel).
    rc: int | None
    #: One line, at most 300 characters: "ok=3 changed=1", or what failed and why.
    summary: str
    duration_s: float


def run_hook(
    playbook: str | Path,
    host: str,
    host_vars: Mapping[str, Any],
    *,
    timeout: float,
    extravars: Mapping[str, Any] | None = None,
    work_dir: str | Path | None = None,
    label: str = "hook",
    cancel: Callable[[], bool] | None = None,
) -> HookResult:
    """Run `playbook` against `host` alone and report how it went.

    `host_vars` become the host's inventory vars (e.g. ``ansible_host``,
    ``ansible_connection``); `extravars` are passed as ``-e`` (the scheduler passes
    ``maas_request_id``, ``maas_action``, ``maas_image``). The run, task workers
    included, is killed once `timeout` seconds have passed (checked about once a second),
    giving status ``timeout``.

    `work_dir` is the parent of the run's private_data_dir, which is then kept (with the
    artifacts, inventory and extravars) for inspection; by default a temporary directory
    is used and removed afterwards. `label` (e.g. ``"pre-hook"``) prefixes failure
    summaries. `cancel` is polled about once a second; when it returns True the run is
    killed with status ``canceled``.

    Raises `InputError` when the playbook does not exist or the arguments are unusable.
    """
    path = Path(playbook).expanduser().resolve()
    if not path.is_file():
        raise InputError(f"hook playbook {path}: not found")
    if not host:
        raise InputError("hook host: must not be empty")
    if not timeout > 0:
        raise InputError(f"hook timeout {timeout!r}: must be positive")

    inventory = {"all": {"hosts": {host: _plain(host_vars, "host_vars")}}}
    extra = _plain(extravars or {}, "extravars")
    start = time.monotonic()
    watchdog = _Watchdog(start + timeout, cancel)
    with _private_dir(host, work_dir) as private_dir:
        local_tmp = private_dir / "tmp"
        local_tmp.mkdir(mode=0o700)
        runner = ansible_runner.run(
            private_data_dir=str(private_dir),
            host_cwd=str(private_dir),  # or RunnerConfig calls os.getcwd(), which may be gone
            playbook=str(path),
            inventory=inventory,
            limit=host,
            extravars=extra,
            envvars=_child_env(local_tmp),
            settings={"pexpect_timeout": _POLL_SECONDS},
            # Only a backstop: the watchdog enforces `timeout` (see the module docstring).
            # ansible-runner int()s this, so 0.5 would mean "no timeout".
            timeout=math.ceil(timeout) + _BACKSTOP_SECONDS,
            cancel_callback=watchdog,
            event_handler=watchdog.on_event,
            quiet=True,
            ignore_logging=True,
        )
        status = watchdog.fired or str(runner.status)
        rc = runner.rc
        artifact_dir = Path(runner.config.artifact_dir)
        events = list(_read_events(artifact_dir / "job_events"))
        summary = _summarize(
            status=status,
            rc=rc,
            events=events,
            host=host,
            what=f"{label} {path.name}",
            timeout=timeout,
            stdout_path=artifact_dir / "stdout",
        )
        if work_dir is not None:
            _redact_command_artifact(artifact_dir / "command")
    return HookResult(
        ok=status == "successful",
        status=status,
        rc=rc,
        summary=summary,
        duration_s=round(time.monotonic() - start, 3),
    )


class _Watchdog:
    """ansible-runner's cancel callback: enforces the deadline and the caller's `cancel`.

    Polled by the runner thread about once a second while ansible-playbook runs. When it
    fires it SIGKILLs the process group of every task worker (the direct children of
    ansible-playbook that setsid()), then returns True so ansible-runner kills
    ansible-playbook's own group.
    """

    def __init__(self, deadline: float, cancel: Callable[[], bool] | None):
        self.deadline = deadline
        self.cancel = cancel
        self.playbook_pid: int | None = None
        self.fired: str | None = None  # "timeout" | "canceled"

    def on_event(self, event: dict[str, Any]) -> bool:
        """Event handler: learns ansible-playbook's pid (every event carries it)."""
        pid = event.get("pid")
        if self.playbook_pid is None and isinstance(pid, int) and pid > 1:
            self.playbook_pid = pid
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
        raise InputError(f"hook {what}: not serializable: {e}") from e


@contextmanager
def _private_dir(host: str, work_dir: str | Path | None) -> Iterator[Path]:
    prefix = "maas-hook-" + re.sub(r"[^\w.-]", "_", host)[:40] + "-"
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as d:
            yield Path(d)
    else:
        parent = Path(work_dir).expanduser().resolve()
        parent.mkdir(parents=True, exist_ok=True)
        yield Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


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


def _summarize(
    *,
    status: str,
    rc: int | None,
    events: list[dict[str, Any]],
    host: str,
    what: str,
    timeout: float,
    stdout_path: Path,
) -> str:
    last_task = None
    failure = None
    stats = None
    for event in events:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "playbook_on_task_start":
            last_task = data.get("task") or data.get("name")
        elif kind in _FAILURE_EVENTS and not data.get("ignore_errors"):
            failure = event
        elif kind == "playbook_on_stats":
            stats = data
    in_task = f" in task '{last_task}'" if last_task else ""

    if status == "successful":
        return _one_line(_stats_line(stats, host))
    if status == "timeout":
        return _one_line(f"{what} timed out after {timeout:g}s{in_task}")
    if status == "canceled":
        return _one_line(f"{what} canceled{in_task}")
    if failure is not None:
        data = failure.get("event_data") or {}
        task = data.get("task") or last_task or "?"
        msg = _result_message(data.get("res") or {})
        if failure.get("event") == "runner_on_unreachable":
            return _one_line(f"{what}: {host} unreachable on task '{task}': {msg}")
        return _one_line(f"{what} failed on task '{task}': {msg}")
    # No failed task: a syntax error, a bad inventory, ansible-playbook missing...
    return _one_line(f"{what} {status} (rc={rc}): {_stdout_error(stdout_path)}")


def _stats_line(stats: Mapping[str, Any] | None, host: str) -> str:
    if not stats:
        return "ok=0 changed=0 (no play stats)"
    counts = {
        key: int((stats.get(key) or {}).get(host, 0))
        for key in ("ok", "changed", "skipped", "rescued", "ignored")
    }
    line = " ".join(f"{k}={v}" for k, v in counts.items() if k in ("ok", "changed") or v)
    if host not in (stats.get("processed") or {}):
        line += f" (nothing ran on {host}: check the play's hosts pattern)"
    return line


def _result_message(res: Mapping[str, Any]) -> str:
    msg = res.get("msg") or res.get("stderr") or res.get("reason")
    if not msg:
        for item in res.get("results") or []:
            if isinstance(item, Mapping) and item.get("failed"):
                msg = item.get("msg") or item.get("stderr")
                if msg:
                    break
    if not msg and res.get("rc") is not None:
        msg = f"rc={res['rc']}"
    return str(msg or "no message")


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


def _one_line(text: str) -> str:
    text = _SECRETISH.sub(r"\1***", " ".join(_ANSI.sub("", text).split()))
    if len(text) > SUMMARY_MAX:
        text = text[: SUMMARY_MAX - 3] + "..."
    return text


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
