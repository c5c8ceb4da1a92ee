"""The Ansible executor: a batch of hosts runs as one action playbook, in an ansible
process kept for the request.

`maasctl run --executor ansible` hands each batch the native executor would run host by
host to ansible instead: the action's playbook (the collection's
`maas_lib.fleet.<action>`, or `<action>.yml` from `--action-playbooks DIR`) with
``--limit`` set to the batch. The request's batches run one after another in one
long-lived ansible process (`maas_lib.scheduler.ansible_session`), so ansible's start-up
is paid once per request, not once per batch — and not at all by a running worker's
next request, which takes the spare process started for it. The step tasks run in that
process's step service (the collection's plugin_utils/step_service.py: one database
connection, BMC sessions kept); a step whose condition holds for no host of the run
(no hooks, no virtual media) is left out with ``--skip-tags``.

Every task of the playbook is one step (task name = step name); ansible's events drive
the same store writes the native executor makes:

- ``runner_on_start``: the step's start, written before the task's module runs (a crash
  leaves it `running`, so the next worker retries it, as after a native crash);
- ``runner_on_ok`` / ``runner_on_failed`` / ``runner_on_unreachable``: its end, with the
  outcome, error class and BMC path the `maas_lib.fleet.step` module returned;
- ``runner_on_skipped``: the step did not apply (no hook, no virtual media): its start
  is taken back, as the native executor never records a step whose condition fails;
- a host's first failed task fails its task (quarantining a failed wipe), which frees
  its lease at once; hosts that end the play without a failure succeed.

Everything else is the scheduler's as with the native executor: claims, batches (and
between them cancel, pause and the failure threshold), budgets, leases, resume. A worker
that stops kills the ansible process (task workers included): steps in flight become
`interrupted` and their hosts are resumed later, their completed steps skipped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from maas_lib.bmc.base import BmcTarget
from maas_lib.classes import ErrorClass, StepOutcome
from maas_lib.errors import InputError
from maas_lib.models import Action, HostSpec, HostTaskState
from maas_lib.scheduler.ansible_data import host_vars
from maas_lib.scheduler.ansible_session import AnsibleSession
from maas_lib.scheduler.executor import Batch, ExecutorEnv, host_context, run_guarded
from maas_lib.scheduler.host import TaskOutcome, final_standing
from maas_lib.scheduler.playbook import PlaybookRun
from maas_lib.scheduler.resume import Resume
from maas_lib.scheduler.settings import SchedulerSettings
from maas_lib.scheduler.steps import steps_for

log = logging.getLogger(__name__)

#: Tasks that are not steps: they emit no host result of their own worth recording.
_NOT_STEPS = {"meta", "include_tasks", "include_role", "import_tasks", "import_role"}

#: Seconds after a request ends before the next spare ansible process starts.
_SPARE_DELAY_S = 2.0

#: Per task, on top of the step's own timeout: ansible's fork, module transfer, import.
_TASK_OVERHEAD_S = 30.0


def playbook_for(action: Action, directory: Path | None) -> str:
    """The playbook that runs `action`: DIR/<action>.yml if given, else the collection's."""
    name = str(action).replace("-", "_")
    if directory is None:
        return f"maas_lib.fleet.{name}"
    path = Path(directory).expanduser().resolve() / f"{name}.yml"
    if not path.is_file():
        raise InputError(f"--action-playbooks {directory}: no {name}.yml for {action}")
    return str(path)


def collections_path() -> str | None:
    """ANSIBLE_COLLECTIONS_PATH with this checkout's collection first, when maas-lib runs
    from a checkout (an installed maas-lib finds an installed collection as usual)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "ansible_collections" / "maas_lib" / "fleet" / "galaxy.yml").is_file():
        return None
    configured = os.environ.get("ANSIBLE_COLLECTIONS_PATH") or os.environ.get(
        "ANSIBLE_COLLECTIONS_PATHS"
    )
    default = os.pathsep.join(
        [str(Path.home() / ".ansible" / "collections"), "/usr/share/ansible/collections"]
    )
    return os.pathsep.join([str(root), configured or default])


def run_timeout(action: Action, settings: SchedulerSettings) -> float:
    """Seconds the playbook may take: every step's own timeout, plus task overhead."""
    ctx = SimpleNamespace(settings=settings)
    return sum(s.timeout(ctx) + _TASK_OVERHEAD_S for s in steps_for(action))  # type: ignore[arg-type]


def waves(records: Mapping[str, HostSpec], hosts: list[str], limit: int) -> list[list[str]]:
    """`hosts` in playbook runs made one after another, in order, so that no run has more
    than `limit` hosts behind one BMC endpoint (address and port, primary or fallback).

    The native executor caps calls in flight per endpoint in-process; ansible's forks
    are processes of their own that cannot share that cap, so a batch of many hosts
    behind one chassis manager or Redfish aggregator is split instead."""
    runs: list[list[str]] = []
    loads: list[Counter[tuple[str, int | None]]] = []
    for host in hosts:
        target = BmcTarget.from_host(records[host])
        ends = [target.primary] + ([target.fallback] if target.fallback else [])
        keys = {(e.address, e.port) for e in ends}
        fits = [i for i, load in enumerate(loads) if all(load[k] < limit for k in keys)]
        if fits:
            i = fits[0]
        else:
            i = len(runs)
            runs.append([])
            loads.append(Counter())
        runs[i].append(host)
        loads[i].update(keys)
    return runs


def skipped_steps(env: ExecutorEnv, batch: Batch, wave: list[str]) -> list[str]:
    """Steps whose condition (decided before any step runs: `Step.static`) holds for no
    host of `wave`: a run leaves their tasks out (``--skip-tags``; the collection's
    playbooks tag those tasks with the step's name), saving a task worker per host for
    a step the native executor would not run either (no hooks, no virtual media)."""
    skipped = []
    for step in steps_for(batch.action):
        if step.when is None or not step.static:
            continue
        contexts = [host_context(env, batch, name) for name in wave]
        if not any(step.when(ctx) for ctx in contexts):
            skipped.append(step.name)
    return skipped


@dataclass
class _Open:
    step_id: int
    started: float


@dataclass
class _Host:
    task_id: int
    resume: Resume
    open: dict[str, _Open] = field(default_factory=dict)  # task uuid → open step
    outcome: TaskOutcome | None = None
    via: str | None = None


class AnsibleExecutor:
    """Each batch as runs of the action's playbook, in a thread of the worker's pool, in
    an ansible process kept for the request (`AnsibleSession`): ansible's start-up is
    paid once per request, not once per batch."""

    def __init__(self, env: ExecutorEnv):
        self.env = env
        self._lock = threading.Lock()
        #: Request id -> its sessions not running a batch now (a request whose hosts
        #: were blocked may run a second part of a batch while the first still runs).
        self._idle: dict[int, list[AnsibleSession]] = {}
        self._closing: list[threading.Thread] = []
        self._spare: AnsibleSession | None = None
        self._spare_timer: threading.Timer | None = None
        self._closed = False
        self._start_spare()

    def submit(self, batch: Batch) -> list[Future[list[TaskOutcome]]]:
        return [self.env.pool.submit(self._run, batch)]

    def end_request(self, request_id: int) -> None:
        """The request run is over: its ansible processes end (in the background: the
        request's thread is not held while they log out of their BMC sessions)."""
        with self._lock:
            sessions = self._idle.pop(request_id, [])
        closing = [c for s in sessions if (c := s.close(wait=False)) is not None]
        with self._lock:
            self._closing = [c for c in self._closing if c.is_alive()] + closing
            # A moment later: a worker that stops once its requests are done (`maasctl
            # run --until-idle`) starts no process only to kill it.
            if self._spare is None and self._spare_timer is None and not self._closed:
                self._spare_timer = threading.Timer(_SPARE_DELAY_S, self._start_spare)
                self._spare_timer.daemon = True
                self._spare_timer.start()

    def close(self) -> None:
        """The worker stops: every request's ansible processes end."""
        with self._lock:
            self._closed = True
            if self._spare_timer is not None:
                self._spare_timer.cancel()
            sessions = [s for idle in self._idle.values() for s in idle]
            spare, self._spare = self._spare, None
            self._idle.clear()
            closing, self._closing = self._closing, []
        if spare is not None:
            spare.discard()
        for session in sessions:
            session.close()
        for thread in closing:
            thread.join()

    def _new_session(self, label: str) -> AnsibleSession:
        path = collections_path()
        # The tasks ask the worker for the store's URL: it may hold a password. The steps
        # run in the process's step service (the collection's plugin_utils/step_service).
        env = {"MAAS_DB": "", "MAAS_STEP_SERVICE": "1"}
        if path:
            env["ANSIBLE_COLLECTIONS_PATH"] = path
        return AnsibleSession(label=label, envvars=env)

    def _start_spare(self) -> None:
        """An ansible process started ahead of the next request, so that request does not
        wait for ansible's start-up (~1 s): one per worker, taken by the next request
        that needs one, replaced once that request ends."""
        with self._lock:
            self._spare_timer = None
            if self._spare is not None or self._closed:
                return
            try:
                spare = self._new_session("spare")
                spare.start()
            except Exception:  # e.g. no temporary directory: the next request starts one
                log.exception("could not start a spare ansible process")
                return
            self._spare = spare

    def _acquire(self, batch: Batch) -> AnsibleSession:
        with self._lock:
            idle = self._idle.get(batch.request_id)
            if idle:
                return idle.pop()
            session, self._spare = self._spare, None
        if session is None:
            session = self._new_session(f"request-{batch.request_id}")
        session.grant(
            {r.bmc_credential for r in batch.records.values()}, self.env.store.child_url()
        )
        return session

    def _release(self, batch: Batch, session: AnsibleSession) -> None:
        with self._lock:
            self._idle.setdefault(batch.request_id, []).append(session)

    def _run(self, batch: Batch) -> list[TaskOutcome]:
        session = self._acquire(batch)
        try:
            return run_guarded(
                self.env,
                batch,
                batch.tasks,
                "the Ansible executor",
                AnsibleBatch(self.env, batch, session).execute,
                lambda exc: f"ansible executor: {type(exc).__name__}: {exc}",
            )
        finally:
            self._release(batch, session)


class AnsibleBatch:
    """One batch's hosts (already begun in the store) run through the action playbook."""

    def __init__(self, env: ExecutorEnv, batch: Batch, session: AnsibleSession):
        self.env = env
        self.batch = batch
        self.session = session
        self.store = env.store
        self.hosts = {
            h: _Host(task_id, Resume(batch.done.get(h))) for h, task_id in batch.tasks.items()
        }

    # -- the run --------------------------------------------------------------------------

    def execute(self) -> list[TaskOutcome]:
        """Run the batch's hosts, in as many playbook runs (waves) as the per-endpoint
        BMC limit needs; hosts left when the worker stops are handed over."""
        batch = self.batch
        outcomes: list[TaskOutcome] = []
        limit = self.env.settings.bmc.endpoint_concurrency
        for wave in waves({h: batch.records[h] for h in self.hosts}, list(self.hosts), limit):
            if batch.stopping():
                for name in wave:
                    self.store.interrupt_task(self.hosts[name].task_id)
                    outcomes.append(TaskOutcome(name, None, reason="worker stopping"))
                continue
            outcomes += self._finish(self._run(wave), wave)
        return outcomes

    def _run(self, wave: list[str]) -> PlaybookRun:
        batch = self.batch
        settings = self.env.settings
        playbook = playbook_for(batch.action, settings.action_playbooks)
        mark = self.store.last_install_report_id()
        inventory_hosts: dict[str, Any] = {}
        for name in wave:
            h = self.hosts[name]
            hv = host_vars(batch.records[name], settings.allow_ansible_vars)
            hv["maas_task_id"] = h.task_id
            step_args: dict[str, Any] = {"name": name, "done": h.resume.done}
            if h.resume.done:
                hv["maas_done_steps"] = h.resume.done
            else:
                hv["maas_install_mark"] = step_args["install_mark"] = mark
            # The step task's host arguments as one value (the request's are in
            # maas_step_args): one template a task, not one an argument (each is
            # compiled anew in every task worker).
            hv["maas_host_step_args"] = step_args
            inventory_hosts[name] = hv
        dumped = settings.model_dump(mode="json", exclude={"action_playbooks"})
        self.session.start()
        log.info(
            "request %s: %d hosts in ansible process %s",
            batch.request_id,
            len(wave),
            self.session.pid,
        )
        return self.session.run(
            playbook,
            {"all": {"hosts": inventory_hosts}},
            limit=",".join(wave),
            timeout=run_timeout(batch.action, settings),
            extravars={
                "maas_request_id": batch.request_id,
                "maas_worker": self.env.worker,
                "maas_action": str(batch.action),
                "maas_settings": dumped,
                "maas_step_args": {
                    "request_id": batch.request_id,
                    "settings": dumped,
                    "worker": self.env.worker,
                },
            },
            cancel=batch.stopping,
            on_event=self._on_event,
            forks=min(settings.forks, len(wave)),
            skip_tags=skipped_steps(self.env, batch, wave),
        )

    def _finish(self, result: PlaybookRun, wave: list[str]) -> list[TaskOutcome]:
        """Hosts the play did not fail: succeeded, or (worker stopping) left to resume.

        A host ran the whole play if the run succeeded, or if it failed only because some
        hosts failed (rc 2/4: the linear strategy takes the others to the end) and this
        one is in the play's stats without failures."""
        status = result.status
        stopped = status == "canceled"
        ends = [e for e in result.events if e.get("event") == "playbook_on_stats"]
        stats = (ends[-1].get("event_data") or {}) if ends else {}
        clean = status == "failed" and result.rc in (2, 4)
        outcomes: list[TaskOutcome] = []
        for name in wave:
            h = self.hosts[name]
            if h.outcome is not None:
                outcomes.append(h.outcome)
                continue
            now = time.monotonic()
            for opened in h.open.values():
                outcome = StepOutcome.INTERRUPTED if stopped else StepOutcome.FAILED
                self.store.end_step(
                    opened.step_id,
                    outcome,
                    now - opened.started,
                    error_class=None if stopped else ErrorClass.EXECUTOR,
                    error=None if stopped else f"playbook {status}",
                )
            if stopped:
                self.store.interrupt_task(h.task_id)
                outcomes.append(TaskOutcome(name, None, reason="worker stopping"))
            elif status == "successful" or (clean and _finished(stats, name)):
                outcomes.append(self._end(name, h, HostTaskState.SUCCEEDED))
            else:
                error = result.stdout_error or "the host did not finish the play"
                reason = f"action playbook {status} (rc={result.rc}): {error}"
                outcomes.append(
                    self._end(name, h, HostTaskState.FAILED, ErrorClass.EXECUTOR, reason)
                )
        return outcomes

    def _end(
        self,
        name: str,
        h: _Host,
        state: HostTaskState,
        error_class: str | None = None,
        reason: str | None = None,
    ) -> TaskOutcome:
        ok = state is HostTaskState.SUCCEEDED
        self.store.end_task(
            h.task_id,
            state,
            error_class=error_class,
            reason=reason,
            via=h.via,
            host_status=final_standing(self.batch.action, ok=ok),
            holder=self.env.worker,
        )
        h.outcome = TaskOutcome(name, state, error_class, reason)
        return h.outcome

    # -- events ---------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        data = event.get("event_data") or {}
        h = self.hosts.get(data.get("host") or "")
        if h is None or h.outcome is not None:
            return
        action = str(data.get("resolved_action") or data.get("task_action") or "")
        if action.rsplit(".", 1)[-1] in _NOT_STEPS:
            return
        uuid = str(data.get("task_uuid") or "")
        name = str(data.get("task") or action)
        try:
            if kind == "runner_on_start":
                self._started(h, uuid, name)
            elif kind == "runner_on_skipped":
                self._skipped(h, uuid, name)
            elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
                self._ended(data["host"], h, uuid, name, kind, data)
        except Exception:
            # A store error must not kill the run's event loop; the step stays running
            # and is retried as after a crash.
            log.exception(
                "request %s: recording %s of %s failed", self.batch.request_id, name, kind
            )

    def _started(self, h: _Host, uuid: str, name: str) -> None:
        if h.resume.reach(name) is not None:
            return  # an earlier attempt completed it; the module skips it too
        h.open[uuid] = _Open(self.store.start_step(h.task_id, name), time.monotonic())

    def _skipped(self, h: _Host, uuid: str, name: str) -> None:
        h.resume.retract(name)
        opened = h.open.pop(uuid, None)
        if opened is not None:
            self.store.discard_step(opened.step_id)

    def _ended(
        self, host: str, h: _Host, uuid: str, name: str, kind: str, data: dict[str, Any]
    ) -> None:
        opened = h.open.pop(uuid, None)
        res = data.get("res") or {}
        if res.get("skipped"):  # the module said its step did not apply
            h.resume.retract(name)
            if opened is not None:
                self.store.discard_step(opened.step_id)
            return
        if opened is None:
            return  # resumed: an earlier attempt's record stands
        failed = kind != "runner_on_ok"
        said = res.get("outcome") or (StepOutcome.FAILED if failed else StepOutcome.SUCCEEDED)
        ended = (StepOutcome.SUCCEEDED, StepOutcome.FAILED, StepOutcome.TIMEOUT)
        outcome = StepOutcome(said) if said in ended else StepOutcome.FAILED
        error_class = res.get("error_class")
        if outcome is not StepOutcome.SUCCEEDED and not error_class:
            error_class = (
                ErrorClass.UNREACHABLE
                if kind == "runner_on_unreachable"
                else ErrorClass.TASK_FAILED
            )
        message = res.get("message") or res.get("msg")
        duration = data.get("duration")
        if not isinstance(duration, int | float):
            duration = time.monotonic() - opened.started
        via = res.get("via")
        if via:
            h.via = via
        self.store.end_step(
            opened.step_id,
            outcome,
            float(duration),
            error_class=None if outcome is StepOutcome.SUCCEEDED else error_class,
            error=None if outcome is StepOutcome.SUCCEEDED else _one_line(message),
            via=via,
        )
        if failed and not data.get("ignore_errors"):
            reason = f"{name}: {_one_line(message)}"
            self._end(host, h, HostTaskState.FAILED, error_class, reason)


def _finished(stats: dict[str, Any], host: str) -> bool:
    """The play's stats show `host` processed without failures or unreachability."""
    return (
        host in (stats.get("processed") or {})
        and not (stats.get("failures") or {}).get(host)
        and not (stats.get("dark") or {}).get(host)
    )


def _one_line(text: object) -> str:
    return " ".join(str(text or "failed").split())[:500]
