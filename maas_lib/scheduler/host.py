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


def _abandon(ctx: HostContext, name: str, timeout: float) -> StepError:
    ctx.abort.set()  # the step's thread may end its call in flight, but start no other
    return StepError("timeout", f"no result within {timeout:g}s")


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


def _completed_steps(ctx: HostContext) -> dict[str, list[str]]:
    """Steps earlier attempts of this host's task finished, by name, in order, with their
    outcome: a resumed task skips them (only steps in flight at a crash are retried)."""
    done: dict[str, list[str]] = {}
    optional = {s.name for s in steps_for(ctx.action) if s.optional}
    for rec in ctx.store.steps(ctx.request_id, ctx.host.name):
        ok = rec["outcome"] == "succeeded"
        finished_optional = rec["step"] in optional and rec["outcome"] in ("failed", "timeout")
        if ok or finished_optional:
            done.setdefault(rec["step"], []).append(rec["outcome"])
    return done


def run_task(ctx: HostContext, task_id: int, *, resume: bool = False) -> TaskOutcome:
    """Run every step of `ctx.action` for one host and end its task in the store.

    `resume`: earlier attempts exist (a crash or a stop); steps they completed are skipped.
    """
    store = ctx.store
    host = ctx.host.name
    completed = _completed_steps(ctx) if resume else {}
    seen: dict[str, int] = {}
    for step in steps_for(ctx.action):
        if step.when is not None and not step.when(ctx):
            continue
        nth = seen[step.name] = seen.get(step.name, 0) + 1
        earlier = completed.get(step.name, [])
        if nth <= len(earlier):
            log.info("%s: %s already done before the restart; skipped", host, step.name)
            if step.on_skip is not None:
                step.on_skip(ctx, earlier[nth - 1])
            continue
        if ctx.stopping():
            store.interrupt_task(task_id)
            return TaskOutcome(host, None, reason="worker stopping")
        step_id = store.start_step(task_id, step.name)
        started = time.monotonic()
        via = (lambda: ctx.via) if step.bmc else (lambda: None)
        timeout = step.timeout(ctx)
        step_ctx = ctx.for_step()
        try:
            run_with_deadline(
                lambda s=step, c=step_ctx: s.run(c),
                timeout,
                lambda s=step, t=timeout, c=step_ctx: _abandon(c, s.name, t),
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
                holder=ctx.worker,
            )
            log.info("%s: %s failed at %s (%s)", host, ctx.action, step.name, error_class)
            return TaskOutcome(host, HostTaskState.FAILED, error_class, reason)
        store.end_step(step_id, "succeeded", time.monotonic() - started, via=via())
    status = HostStatus.DECOMMISSIONED if ctx.action is Action.DECOMMISSION else None
    store.end_task(
        task_id, HostTaskState.SUCCEEDED, via=ctx.via, host_status=status, holder=ctx.worker
    )
    return TaskOutcome(host, HostTaskState.SUCCEEDED)
