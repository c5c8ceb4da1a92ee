"""One host's task: its action's steps in order, each recorded as it happens.

Crash safety rests on the order of writes here: a step's start is in the store before the
BMC is touched, and its end right after. A worker killed mid-step leaves that one step
`running`; the next worker marks it interrupted and retries the host from the start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from maas_lib.bmc.control import run_with_deadline
from maas_lib.errors import BmcError, CredentialError
from maas_lib.models import Action, HostStatus, HostTaskState
from maas_lib.scheduler.installs import Interrupted
from maas_lib.scheduler.steps import HostContext, StepError, StepInterrupted, steps_for

log = logging.getLogger(__name__)

#: A failed wipe leaves data on the disk: the host must not rejoin its pool unchecked.
QUARANTINE_ON_FAILURE = frozenset({Action.WIPE, Action.DECOMMISSION})


@dataclass(frozen=True)
class TaskOutcome:
    host: str
    state: HostTaskState | None  # None: interrupted (the worker is stopping)
    error_class: str | None = None
    reason: str | None = None


def _error(exc: BaseException) -> tuple[str, str, str | None]:
    """(outcome, error_class, message) for a failed step; outcome is failed or timeout."""
    if isinstance(exc, BmcError):
        outcome = "timeout" if exc.error_class == "timeout" else "failed"
        return outcome, exc.error_class, str(exc)
    if isinstance(exc, StepError):
        outcome = "timeout" if exc.error_class.endswith("timeout") else "failed"
        return outcome, exc.error_class, str(exc)
    if isinstance(exc, CredentialError):
        return "failed", "credential", str(exc)
    # A bug, not a BMC problem: fail the host with the type so it is visible, not hidden.
    log.exception("step crashed")
    return "failed", "internal", f"{type(exc).__name__}: {exc}"


def run_task(ctx: HostContext, task_id: int) -> TaskOutcome:
    """Run every step of `ctx.action` for one host and end its task in the store."""
    store = ctx.store
    host = ctx.host.name
    for step in steps_for(ctx.action):
        if step.when is not None and not step.when(ctx):
            continue
        if ctx.stopping():
            store.interrupt_task(task_id)
            return TaskOutcome(host, None, reason="worker stopping")
        step_id = store.start_step(task_id, step.name)
        started = time.monotonic()
        via = (lambda: ctx.via) if step.bmc else (lambda: None)
        timeout = step.timeout(ctx)
        try:
            run_with_deadline(
                lambda s=step: s.run(ctx),
                timeout,
                lambda s=step, t=timeout: StepError(
                    "timeout", f"{s.name}: no result within {t:g}s"
                ),
            )
        except (StepInterrupted, Interrupted):
            store.end_step(step_id, "interrupted", time.monotonic() - started, via=via())
            store.interrupt_task(task_id)
            return TaskOutcome(host, None, reason="worker stopping")
        except Exception as exc:
            outcome, error_class, message = _error(exc)
            where = getattr(exc, "via", None) or via()
            store.end_step(
                step_id,
                outcome,
                time.monotonic() - started,
                error_class=error_class,
                error=message,
                via=where,
            )
            if step.optional:
                log.info("%s: optional step %s %s: %s", host, step.name, outcome, message)
                continue
            reason = f"{step.name}: {message}"
            status = HostStatus.QUARANTINED if ctx.action in QUARANTINE_ON_FAILURE else None
            store.end_task(
                task_id,
                HostTaskState.FAILED,
                error_class=error_class,
                reason=reason,
                via=where,
                host_status=status,
            )
            log.info("%s: %s failed at %s (%s)", host, ctx.action, step.name, error_class)
            return TaskOutcome(host, HostTaskState.FAILED, error_class, reason)
        store.end_step(step_id, "succeeded", time.monotonic() - started, via=via())
    status = HostStatus.DECOMMISSIONED if ctx.action is Action.DECOMMISSION else None
    store.end_task(task_id, HostTaskState.SUCCEEDED, via=ctx.via, host_status=status)
    return TaskOutcome(host, HostTaskState.SUCCEEDED)
