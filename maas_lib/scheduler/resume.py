"""Resuming a host's task: steps an earlier attempt completed are skipped, not repeated.

The request run reads them once per resumed host (`completed_steps`) and hands them to
its executor with the batch.

One rule, whichever executor runs the task: the `nth` time the task reaches a step named
`name` (its condition held), that step is skipped if earlier attempts completed at least
`nth` steps of that name, and what later steps need from it is restored (`Step.on_skip`).
The native host task (`run_task`), the Ansible executor's event handlers and a
playbook's step task (`run_single_step`) all apply it through `Resume`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from maas_lib.classes import StepOutcome
from maas_lib.models import Action
from maas_lib.scheduler.steps import steps_for

if TYPE_CHECKING:
    from maas_lib.scheduler.steps import HostContext, Step
    from maas_lib.store import Store

__all__ = ["Resume", "completed_steps"]


def completed_steps(
    store: Store, request_id: int, host: str, action: Action
) -> dict[str, list[str]]:
    """Steps earlier attempts of this host's task finished, by name, in order, with their
    outcome: a resumed task skips them (only steps in flight at a crash are retried)."""
    done: dict[str, list[str]] = {}
    optional = {s.name for s in steps_for(action) if s.optional}
    for rec in store.steps(request_id, host):
        ok = rec["outcome"] == StepOutcome.SUCCEEDED
        finished_optional = rec["step"] in optional and rec["outcome"] in (
            StepOutcome.FAILED,
            StepOutcome.TIMEOUT,
        )
        if ok or finished_optional:
            done.setdefault(rec["step"], []).append(rec["outcome"])
    return done


class Resume:
    """The steps earlier attempts of one host's task completed (by name, their outcomes
    in order), and how far this attempt has got through them."""

    def __init__(self, done: Mapping[str, Sequence[str]] | None = None):
        self.done = {name: list(outcomes) for name, outcomes in (done or {}).items()}
        self._reached: dict[str, int] = {}

    def earlier(self, name: str, nth: int) -> str | None:
        """The outcome of the `nth` step called `name` if an earlier attempt completed
        it (skip it), else None (run it)."""
        outcomes = self.done.get(name, [])
        return outcomes[nth - 1] if 1 <= nth <= len(outcomes) else None

    def reach(self, name: str) -> str | None:
        """The task reaches its next step called `name`: `earlier` for that occurrence."""
        nth = self._reached[name] = self._reached.get(name, 0) + 1
        return self.earlier(name, nth)

    def retract(self, name: str) -> None:
        """The step just reached did not apply after all (its condition failed): it does
        not count as an occurrence."""
        self._reached[name] = max(0, self._reached.get(name, 0) - 1)

    @staticmethod
    def restore(step: Step, ctx: HostContext, outcome: str) -> None:
        """A skipped step's effect on what later steps read (`ctx.notes`)."""
        if step.on_skip is not None:
            step.on_skip(ctx, outcome)
