"""Per-host pre/post hooks: one Ansible playbook run for one host through ansible-runner.

`run_hook` is safe to call from many threads at once; the runner plumbing (private dirs,
timeouts that kill task workers, cancel) lives in `maas_lib.scheduler.playbook`. Hooks
never see the BMC credentials in our environment.

The summary is one line built from the runner's job events: the failing task and its
message, never a dump of variables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maas_lib.errors import InputError
from maas_lib.scheduler.playbook import run_playbook

__all__ = ["HookResult", "run_hook"]

SUMMARY_MAX = 300

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
    ``ansible_connection``), every string in them and in `extravars` tagged ``!unsafe``
    (never templated: the scheduler's come from the store); `extravars` are passed as
    ``-e`` (the scheduler passes ``maas_request_id``, ``maas_action``, ``maas_image``).
    The run, task workers included, is killed once `timeout` seconds have passed
    (checked about once a second), giving status ``timeout``.

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

    run = run_playbook(
        path,
        {"all": {"hosts": {host: dict(host_vars)}}},
        limit=host,
        timeout=timeout,
        extravars=extravars,
        work_dir=work_dir,
        label=f"{label}-{host}",
        cancel=cancel,
    )
    summary = _summarize(
        status=run.status,
        rc=run.rc,
        events=run.events,
        host=host,
        what=f"{label} {path.name}",
        timeout=timeout,
        stdout_error=run.stdout_error,
    )
    return HookResult(
        ok=run.status == "successful",
        status=run.status,
        rc=run.rc,
        summary=summary,
        duration_s=run.duration_s,
    )


def _summarize(
    *,
    status: str,
    rc: int | None,
    events: list[dict[str, Any]],
    host: str,
    what: str,
    timeout: float,
    stdout_error: str,
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
    return _one_line(f"{what} {status} (rc={rc}): {stdout_error}")


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


def _one_line(text: str) -> str:
    text = _SECRETISH.sub(r"\1***", " ".join(_ANSI.sub("", text).split()))
    if len(text) > SUMMARY_MAX:
        text = text[: SUMMARY_MAX - 3] + "..."
    return text
