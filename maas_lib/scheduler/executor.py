"""How a batch's hosts are run: the `Executor` protocol, and the native executor.

A request run (`maas_lib.scheduler.request`) begins hosts in the store (their tasks
`running`, their leases held) and hands them to its worker's executor as a `Batch`. The
executor runs each host's steps and ends each host's task in the store, or leaves it
interrupted when the worker stops; it reports one `TaskOutcome` per host. Two implement
it: `NativeExecutor` (here: each host's steps in a thread of the worker's pool) and
`maas_lib.scheduler.ansible_executor.AnsibleExecutor` (the batch as one run of the
action's playbook). The request run never asks which one it has.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from maas_lib.classes import ErrorClass
from maas_lib.errors import StoreFailing
from maas_lib.models import Action, HostRecord, HostTaskState, RequestOptions
from maas_lib.scheduler.ansible_data import host_vars
from maas_lib.scheduler.host import TaskOutcome, run_task
from maas_lib.scheduler.installs import InstallWatcher
from maas_lib.scheduler.settings import SchedulerSettings
from maas_lib.scheduler.steps import HostContext
from maas_lib.store import Store

__all__ = ["Batch", "Executor", "ExecutorEnv", "NativeExecutor", "TaskOutcome"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """Hosts of one request, just begun in the store, for an executor to run."""

    request_id: int
    action: Action
    image: str | None
    options: RequestOptions
    #: Host name → its task's id (the task is `running`, its lease held).
    tasks: Mapping[str, int]
    #: Every host of the request, by name.
    records: Mapping[str, HostRecord]
    #: Resumed hosts → the steps earlier attempts completed (`completed_steps`): skipped.
    done: Mapping[str, Mapping[str, list[str]]]
    #: True once the worker stops: start no step, end in-flight ones as interrupted.
    stopping: Callable[[], bool]
    #: Asked before each step: True if the request was taken over while the store
    #: failed (the task is left interrupted, to the new holder).
    claim_lost: Callable[[], bool]


class Executor(Protocol):
    """Runs batches; one per worker, shared by every request it runs."""

    def submit(self, batch: Batch) -> list[Future[list[TaskOutcome]]]:
        """Start running `batch`; together the futures give one outcome per host, each
        host's task ended (or interrupted) in the store by the time its future is done.
        A host's future ends as soon as it can, so its lease frees at once."""
        ...


@dataclass(frozen=True)
class ExecutorEnv:
    """What an executor works with, shared by every request of one worker."""

    worker: str
    store: Store
    settings: SchedulerSettings
    #: Bounds hosts in flight across the worker (`max_hosts`).
    pool: ThreadPoolExecutor
    controller: object  # BmcController (kept loose: tests plug in their own transport)
    installs: InstallWatcher
    #: Bounds hook playbooks running at once across the worker.
    hook_slots: threading.Semaphore


def run_guarded(
    env: ExecutorEnv,
    batch: Batch,
    tasks: Mapping[str, int],
    what: str,
    body: Callable[[], list[TaskOutcome]],
    reason: Callable[[Exception], str],
) -> list[TaskOutcome]:
    """`body()`; if it crashes, `tasks` fail `internal` with `reason(exc)` (a bug must
    not leave a host's task running with nobody to end it)."""
    try:
        return body()
    except StoreFailing:
        raise  # the worker gave up on its store: nothing can be recorded; left to a resume
    except Exception as exc:
        log.exception("request %s: %s crashed", batch.request_id, what)
        why = reason(exc)
        for task_id in tasks.values():
            env.store.end_task(
                task_id,
                HostTaskState.FAILED,
                error_class=ErrorClass.INTERNAL,
                reason=why,
                holder=env.worker,
            )
        return [TaskOutcome(h, HostTaskState.FAILED, ErrorClass.INTERNAL, why) for h in tasks]


def host_context(env: ExecutorEnv, batch: Batch, host: str) -> HostContext:
    """What the steps of `host`'s task in `batch` work with."""
    record = batch.records[host]
    return HostContext(
        host=record,
        request_id=batch.request_id,
        action=batch.action,
        image=batch.image,
        options=batch.options,
        controller=env.controller,  # type: ignore[arg-type]
        settings=env.settings,
        installs=env.installs,
        store=env.store,
        stopping=batch.stopping,
        worker=env.worker,
        host_vars=host_vars(record, env.settings.allow_ansible_vars),
        hook_slots=env.hook_slots,
    )


class NativeExecutor:
    """Each host's steps in a thread of the worker's pool, with the worker's BMC
    controller (one session per BMC, calls in flight capped per endpoint)."""

    def __init__(self, env: ExecutorEnv):
        self.env = env

    def submit(self, batch: Batch) -> list[Future[list[TaskOutcome]]]:
        return [
            self.env.pool.submit(self._host, batch, host, task_id)
            for host, task_id in batch.tasks.items()
        ]

    def end_request(self, request_id: int) -> None:
        pass  # nothing is kept per request

    def close(self) -> None:
        pass

    def _host(self, batch: Batch, host: str, task_id: int) -> list[TaskOutcome]:
        env = self.env
        ctx = host_context(env, batch, host)
        return run_guarded(
            env,
            batch,
            {host: task_id},
            f"host {host}: task",
            lambda: [
                run_task(ctx, task_id, done=batch.done.get(host), claim_lost=batch.claim_lost)
            ],
            lambda exc: "task crashed",
        )
