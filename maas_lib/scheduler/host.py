"""One host's task: its action's steps in order, each recorded as it happens.

Crash safety rests on the order of writes here: a step's start is in the store before the
BMC is touched, and its end right after. A worker killed mid-step leaves that one step
`running`; the next worker marks it interrupted and retries the host from the start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from maas_lib.bmc.deadline import run_with_deadline
from maas_lib.classes import ErrorClass, StepOutcome, outcome_of
from maas_lib.errors import Interrupted, StepError, error_class_of
from maas_lib.models import Action, HostStatus, HostTaskState
from maas_lib.scheduler.resume import Resume
from maas_lib.scheduler.steps import HostContext, Step, steps_for

log = logging.getLogger(__name__)

#: A failed wipe leaves data on the disk: the host must not rejoin its pool unchecked.
QUARANTINE_ON_FAILURE = frozenset({Action.WIPE, Action.DECOMMISSION})


@dataclass(frozen=True)
class TaskOutcome:
    host: str
    state: HostTaskState | None  # None: interrupted (the worker is stopping)
    error_class: ErrorClass | None = None
    reason: str | None = None


def _abandon(ctx: HostContext, name: str, timeout: float) -> StepError:
    ctx.abort.set()  # the step's thread may end its call in flight, but start no other
    return StepError(ErrorClass.TIMEOUT, f"no result within {timeout:g}s")


def _error(exc: BaseException) -> tuple[StepOutcome, ErrorClass, str]:
    """(outcome, error_class, message) for a failed step; outcome is failed or timeout."""
    error_class = error_class_of(exc)
    if error_class is ErrorClass.INTERNAL:
        # A bug, not a BMC problem: fail the host with the type so it is visible, not hidden.
        log.exception("step crashed")
        return StepOutcome.FAILED, error_class, f"{type(exc).__name__}: {exc}"
    return outcome_of(error_class), error_class, str(exc)


@dataclass(frozen=True)
class StepEnd:
    """How one step ended: succeeded, failed, timeout, or interrupted (worker stopping)."""

    outcome: StepOutcome
    duration_s: float
    error_class: ErrorClass | None = None
    message: str | None = None
    via: str | None = None


def execute_step(step: Step, ctx: HostContext) -> StepEnd:
    """Run one step within its timeout and classify how it ended; records nothing."""
    started = time.monotonic()
    via = (lambda: ctx.via) if step.bmc else (lambda: None)
    timeout = step.timeout(ctx)
    step_ctx = ctx.for_step()
    try:
        run_with_deadline(
            lambda: step.run(step_ctx),
            timeout,
            lambda: _abandon(step_ctx, step.name, timeout),
        )
    except Interrupted:
        return StepEnd(StepOutcome.INTERRUPTED, time.monotonic() - started, via=via())
    except Exception as exc:
        outcome, error_class, message = _error(exc)
        return StepEnd(
            outcome,
            time.monotonic() - started,
            error_class,
            message,
            getattr(exc, "via", None) or via(),
        )
    return StepEnd(StepOutcome.SUCCEEDED, time.monotonic() - started, via=via())


def final_standing(action: Action, ok: bool) -> HostStatus | None:
    """The standing a host's task leaves it in, if it changes: decommissioned after a
    decommission, quarantined after a failed wipe (data may be left on the disk)."""
    if ok:
        return HostStatus.DECOMMISSIONED if action is Action.DECOMMISSION else None
    return HostStatus.QUARANTINED if action in QUARANTINE_ON_FAILURE else None


def run_task(
    ctx: HostContext,
    task_id: int,
    *,
    done: Mapping[str, list[str]] | None = None,
    claim_lost: Callable[[], bool] = lambda: False,
) -> TaskOutcome:
    """Run every step of `ctx.action` for one host and end its task in the store.

    `done`: the steps earlier attempts completed (a crash or a stop; `completed_steps`),
    skipped (see `maas_lib.scheduler.resume`).
    `claim_lost`: asked before each step; True leaves the task interrupted, to the
    request's new holder.
    """
    store = ctx.store
    host = ctx.host.name
    resume = Resume(done)
    for step in steps_for(ctx.action):
        if step.when is not None and not step.when(ctx):
            continue
        earlier = resume.reach(step.name)
        if earlier is not None:
            log.info("%s: %s already done before the restart; skipped", host, step.name)
            resume.restore(step, ctx, earlier)
            continue
        if ctx.stopping() or claim_lost():
            store.interrupt_task(task_id)
            return TaskOutcome(host, None, reason="worker stopping")
        step_id = store.start_step(task_id, step.name)
        res = execute_step(step, ctx)
        store.end_step(
            step_id,
            res.outcome,
            res.duration_s,
            error_class=res.error_class,
            error=res.message,
            via=res.via,
        )
        if res.outcome is StepOutcome.INTERRUPTED:
            store.interrupt_task(task_id)
            return TaskOutcome(host, None, reason="worker stopping")
        if res.outcome is StepOutcome.SUCCEEDED:
            continue
        if step.optional:
            log.info("%s: optional step %s %s: %s", host, step.name, res.outcome, res.message)
            continue
        reason = f"{step.name}: {res.message}"
        store.end_task(
            task_id,
            HostTaskState.FAILED,
            error_class=res.error_class,
            reason=reason,
            via=res.via,
            host_status=final_standing(ctx.action, ok=False),
            holder=ctx.worker,
        )
        log.info("%s: %s failed at %s (%s)", host, ctx.action, step.name, res.error_class)
        return TaskOutcome(host, HostTaskState.FAILED, res.error_class, reason)
    store.end_task(
        task_id,
        HostTaskState.SUCCEEDED,
        via=ctx.via,
        host_status=final_standing(ctx.action, ok=True),
        holder=ctx.worker,
    )
    return TaskOutcome(host, HostTaskState.SUCCEEDED)
