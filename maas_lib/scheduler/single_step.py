"""One step of one host's action, run on its own: what an action playbook's task does.

The Ansible executor runs an action as a playbook whose tasks are the action's steps,
each a `maas_lib.fleet.step` module call in its own process. That module calls
`run_single_step`, which runs the very `Step` the native executor runs, within the same
timeout and with the same failure classes. It records nothing: the executor records each
task from ansible-runner's events, as the native executor records each step.

What the native executor keeps in memory between one host's steps (`HostContext.notes`)
is rebuilt the way a resumed task rebuilds it (each earlier step's `on_skip`), with two
inputs the playbook passes: the install-report mark taken before the batch began, and
the steps an earlier attempt completed (skipped here, as a resumed native task does).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from maas_lib.bmc import BmcController
from maas_lib.classes import ErrorClass, StepOutcome
from maas_lib.errors import InputError, MaasError
from maas_lib.scheduler.ansible_data import host_vars
from maas_lib.scheduler.host import execute_step
from maas_lib.scheduler.installs import InstallWatcher
from maas_lib.scheduler.resume import Resume
from maas_lib.scheduler.settings import SchedulerSettings
from maas_lib.scheduler.steps import HostContext, Step, steps_for
from maas_lib.store import Store

__all__ = ["SingleStepResult", "StepFenced", "run_single_step"]


class StepFenced(MaasError):
    """The worker that runs this playbook no longer holds the request."""

    error_class = ErrorClass.FENCED


class SingleStepResult(BaseModel, defer_build=True):
    step: str
    nth: int
    #: succeeded | failed | timeout | skipped (its condition did not hold);
    #: `resumed`: an earlier attempt completed it, with this outcome
    outcome: str
    resumed: bool = False
    #: A failure is recorded but the host's task goes on (a reboot's soft-off).
    optional: bool = False
    duration_s: float = 0.0
    error_class: str | None = None
    message: str | None = None
    via: str | None = None
    #: What later steps of the playbook decide on (a reboot's hard power-off runs only
    #: when `powered_off` is false). Not `off`: YAML 1.1 reads that key as a boolean.
    powered_off: bool | None = None


def _pick(steps: list[Step], name: str, nth: int) -> int:
    """Index of the `nth` step called `name`."""
    hits = [i for i, s in enumerate(steps) if s.name == name]
    if not hits:
        known = ", ".join(dict.fromkeys(s.name for s in steps))
        raise InputError(f"step {name!r}: not a step of this action (steps: {known})")
    if not 1 <= nth <= len(hits):
        raise InputError(f"step {name!r}: nth {nth} out of range 1..{len(hits)}")
    return hits[nth - 1]


def run_single_step(
    store: Store,
    host: str,
    request_id: int,
    step: str,
    *,
    nth: int = 1,
    settings: SchedulerSettings | None = None,
    install_mark: int | None = None,
    done: Mapping[str, list[str]] | None = None,
    notes: Mapping[str, Any] | None = None,
    worker: str | None = None,
    controller: Any = None,
) -> SingleStepResult:
    """Run the `nth` step named `step` of request `request_id`'s action for `host`.

    `install_mark`: install reports newer than this id belong to this attempt (taken
    before its install target was set); None: look for this request's report first, as
    a resumed task does. `done`: steps an earlier attempt completed, by name, with their
    outcomes in order; a step found there is not run again. `notes`: what earlier tasks
    returned that this step's condition reads (`powered_off` from a reboot's soft-off).
    `worker`: the worker whose executor runs the playbook; if another worker holds the
    request now (this one was presumed dead and its requests resumed), the step is
    refused, so a playbook that outlived its worker cannot act on a host twice.
    """
    settings = settings or SchedulerSettings()
    if worker is not None:
        holder = store.claim_state(request_id).claimed_by
        if holder != worker:
            raise StepFenced(f"request {request_id} is held by {holder}, not {worker}")
    request = store.get_request(request_id)
    if host not in {h.host for h in request.hosts}:
        raise InputError(f"host {host!r} is not part of request {request_id}")
    steps = steps_for(request.action)
    idx = _pick(steps, step, nth)
    installs = InstallWatcher(store, poll=settings.poll)
    try:
        ctx = HostContext(
            host=store.get_host(host),
            request_id=request_id,
            action=request.action,
            image=request.image,
            options=request.options,
            controller=controller or BmcController(settings.bmc),
            settings=settings,
            installs=installs,
            store=store,
            stopping=lambda: False,
            hook_slots=threading.Semaphore(1),
        )
        ctx.host_vars = host_vars(ctx.host, settings.allow_ansible_vars)
        for earlier in steps[:idx]:
            Resume.restore(earlier, ctx, StepOutcome.SUCCEEDED)
        if install_mark is not None:
            ctx.notes["install_mark"] = install_mark
        if notes and "powered_off" in notes:
            # Ansible may template a boolean into a string
            flag = str(notes["powered_off"]).strip().lower()
            ctx.notes["off"] = flag in ("true", "1", "yes", "on")
        chosen = steps[idx]
        base = {"step": step, "nth": nth, "optional": chosen.optional}
        if chosen.when is not None and not chosen.when(ctx):
            return SingleStepResult(**base, outcome=StepOutcome.SKIPPED)
        outcome = Resume(done).earlier(step, nth)
        if outcome is not None:
            Resume.restore(chosen, ctx, outcome)
            return SingleStepResult(
                **base, outcome=outcome, resumed=True, powered_off=ctx.notes.get("off")
            )
        res = execute_step(chosen, ctx)
        return SingleStepResult(
            **base,
            outcome=res.outcome,
            duration_s=round(res.duration_s, 3),
            error_class=res.error_class,
            message=res.message,
            via=res.via,
            powered_off=ctx.notes.get("off"),
        )
    finally:
        installs.close()
