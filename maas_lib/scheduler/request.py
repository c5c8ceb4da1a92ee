"""One claimed request, run batch by batch until it ends, is cancelled, or the worker stops.

Batches are cut as the request goes (the next N pending hosts that nothing blocks), so a
resumed request simply goes on: finished hosts are never repeated, hosts whose task was
in flight at a crash are retried first, and hosts waiting for an older request join a
later batch once it lets go of them.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maas_lib.models import HostTaskState, RequestState, RequestStatus
from maas_lib.planner import failures_exceeded, next_batch, pool_limits_for
from maas_lib.scheduler.executor import Batch, Executor
from maas_lib.scheduler.host import QUARANTINE_ON_FAILURE
from maas_lib.scheduler.resume import completed_steps
from maas_lib.scheduler.settings import SchedulerSettings
from maas_lib.store import Store
from maas_lib.store.faults import RetryingStore
from maas_lib.telemetry.alerts import request_event

if TYPE_CHECKING:
    from maas_lib.telemetry.alerts import AlertSender

log = logging.getLogger(__name__)


@dataclass
class Shared:
    """What every request run of one worker shares."""

    worker: str
    store: Store
    settings: SchedulerSettings
    #: Runs the hosts of each batch (native, or ansible-runner).
    executor: Executor
    stop: threading.Event
    alerts: AlertSender | None = None
    #: The worker's view of its store's health (None: calls are not retried).
    guard: RetryingStore | None = None


def final_state(st: RequestStatus) -> tuple[RequestState, str | None]:
    """The state a request ends in, from its hosts' states."""
    counts = st.counts
    succeeded = counts.get(HostTaskState.SUCCEEDED, 0)
    failed = counts.get(HostTaskState.FAILED, 0)
    dropped = counts.get(HostTaskState.DROPPED, 0)
    cancelled = counts.get(HostTaskState.CANCELLED, 0)
    total = st.host_count
    summary = f"{succeeded} of {total} hosts succeeded" + "".join(
        f", {n} {what}"
        for n, what in ((failed, "failed"), (dropped, "dropped"), (cancelled, "cancelled"))
        if n
    )
    if st.cancel_requested:
        return RequestState.CANCELLED, summary
    if succeeded == total:
        return RequestState.SUCCEEDED, summary
    if succeeded == 0:
        return RequestState.FAILED, summary
    return RequestState.PARTIAL, summary


class RequestRun:
    def __init__(self, shared: Shared, request_id: int):
        self.s = shared
        self.store = shared.store
        self.id = request_id
        self.cancelled_by: str | None = None
        self.threshold_exceeded = False
        self.resumed: set[str] = set()
        self.noted_waits: dict[str, int] = {}
        self._spells_seen = shared.guard.spells if shared.guard is not None else 0
        self._spell_lock = threading.Lock()
        self._lost = False

    # -- control --------------------------------------------------------------------------

    def _stopping(self) -> bool:
        return self.s.stop.is_set()

    def _claim_lost_in_spell(self) -> bool:
        """A host task's check before each step: did the store fail since the last check
        while another worker took the request over?"""
        guard = self.s.guard
        if guard is None or guard.spells == self._spells_seen:
            return self._lost
        with self._spell_lock:
            # No step starts while the store fails; once it is back (our claims renewed
            # if they were still ours), the claim is read again.
            if not guard.wait_healthy(self.s.stop):
                return True
            if guard.spells != self._spells_seen:
                self._spells_seen = guard.spells
                claimed_by = self.store.claim_state(self.id).claimed_by
                if claimed_by != self.s.worker:
                    log.warning(
                        "request %s: claim lost to %s while the store was failing",
                        self.id,
                        claimed_by,
                    )
                    self._lost = True
            return self._lost

    def _still_ours(self) -> bool:
        """False if the request was cancelled, or another worker took it over."""
        cs = self.store.claim_state(self.id)
        if cs.claimed_by != self.s.worker:
            log.warning("request %s: claim lost to %s; letting go", self.id, cs.claimed_by)
            return False
        return not cs.cancel_requested

    def _sleep(self, seconds: float) -> None:
        self.s.stop.wait(seconds)

    # -- the run --------------------------------------------------------------------------

    def run(self) -> RequestState | None:
        """Run to the end; returns the final state, or None if the worker let go of it."""
        try:
            return self._run()
        finally:
            # The Ansible executor's process for this request ends here, not per batch.
            self.s.executor.end_request(self.id)

    def _run(self) -> RequestState | None:
        store = self.store
        interrupted = store.interrupt_open_steps(self.id)
        if interrupted:
            log.info("request %s: resuming; %d steps were in flight", self.id, len(interrupted))
        st = store.get_request(self.id)
        if st.policy.stored_problem is not None:
            return self._refuse(f"stored policy is invalid: {st.policy.stored_problem}")
        self.policy = st.policy
        self.action = st.action
        self.image = st.image
        self.options = st.options
        self.total = sum(1 for h in st.hosts if h.state != HostTaskState.DROPPED)
        names = [h.host for h in st.hosts]
        self.records = {h.name: h for h in store.get_hosts(names)}
        self.limits = self._limits()

        # Hosts whose task was in flight when the last worker died (or stopped) go first.
        retry: dict[int, list[str]] = {}
        for h in st.hosts:
            if h.state == HostTaskState.RUNNING:
                retry.setdefault(h.batch or 0, []).append(h.host)
        self.resumed = {h for hosts in retry.values() for h in hosts}
        for idx, hosts in sorted(retry.items()):
            if not self._run_batch(idx, hosts):
                return None
        batches = [h.batch for h in st.hosts if h.batch is not None]
        idx = max(batches) + 1 if batches else 0

        while True:
            if self._stopping():
                return self._let_go()
            if not self._still_ours():
                break
            failed = store.host_counts(self.id).get(HostTaskState.FAILED, 0)
            if failures_exceeded(failed, self.total, self.policy):
                self.threshold_exceeded = True
                allowed = self.policy.max_failures.floor_of(self.total)
                store.cancel_pending(
                    self.id,
                    f"max failures exceeded: {failed} failed > {allowed} allowed "
                    f"(--max-failures {self.policy.max_failures})",
                )
                break
            if self.policy.canary and idx > 0 and failed and self._canary_failed():
                store.cancel_pending(self.id, "canary batch failed")
                break
            pending = store.pending_hosts(self.id)
            if not pending:
                break
            blocked = store.blockers(pending, self.id)
            # Note each waiting host's holder when it changes (not on every poll).
            changed = {h: r for h, r in blocked.items() if self.noted_waits.get(h) != r}
            if changed:
                store.set_waiting(self.id, changed)
                self.noted_waits.update(changed)
            eligible = [h for h in pending if h not in blocked]
            if not eligible:
                self._sleep(self.s.settings.poll)
                continue
            if not self._run_batch(idx, next_batch(eligible, self.policy, idx, self.total)):
                return None
            idx += 1
            if self.policy.pause and store.host_counts(self.id).get(HostTaskState.PENDING):
                self._sleep(self.policy.pause)

        cs = store.claim_state(self.id)
        if cs.claimed_by != self.s.worker:
            return None
        if cs.cancel_requested:
            store.cancel_pending(self.id, "request cancelled")
        st = store.get_request(self.id)
        state, reason = final_state(st)
        # A wipe cut short (a cancel after a crash mid-wipe) may have left data behind.
        unfinished_wipe = self.action in QUARANTINE_ON_FAILURE
        store.finish_request(
            self.id, self.s.worker, state, reason, quarantine_running=unfinished_wipe
        )
        log.info("request %s %s: %s", self.id, state, reason)
        if self.s.alerts is not None:
            self._alert(store.get_request(self.id))
        return state

    def _alert(self, st: RequestStatus) -> None:
        assert self.s.alerts is not None
        if self.threshold_exceeded:
            self.s.alerts.send(request_event("failure_threshold_exceeded", st))
        if st.state in (RequestState.FAILED, RequestState.PARTIAL):
            self.s.alerts.send(request_event(f"request_{st.state}", st))

    def _refuse(self, reason: str) -> RequestState:
        """Fail a request that cannot be run as stored (an older version's row, a hand
        edit): its pending hosts are cancelled, none is touched, the worker goes on."""
        log.warning("request %s: %s", self.id, reason)
        self.store.cancel_pending(self.id, reason)
        self.store.finish_request(self.id, self.s.worker, RequestState.FAILED, reason)
        return RequestState.FAILED

    def _let_go(self) -> None:
        """The worker is stopping: leave the request (and its leases) for the next one."""
        self.store.release_claim(self.id, self.s.worker)
        log.info("request %s: left for another worker to resume", self.id)
        return None

    def _canary_failed(self) -> bool:
        return bool(self.store.host_counts(self.id, batch=0).get(HostTaskState.FAILED))

    def _limits(self) -> dict[str, int]:
        pool_of = {h.name: h.pool for h in self.store.list_hosts()}
        pools = self.store.list_pools()
        return pool_limits_for(pool_of, pools, self.policy.max_unavailable).limits

    # -- one batch ------------------------------------------------------------------------

    def _run_batch(self, idx: int, hosts: list[str]) -> bool:
        """Run one batch to its end; False if the worker stopped or lost the request."""
        store = self.store
        store.record_batch(self.id, idx, len(hosts), "running")
        log.info("request %s: batch %d of %d hosts", self.id, idx, len(hosts))
        remaining = list(hosts)
        running: set[Future[Any]] = set()
        # Completed tasks arrive here; one queue.get per completion (not futures.wait,
        # whose cost grows with every pending future on every call).
        finished: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        try:
            self._drive(idx, remaining, running, finished)
        except BaseException:
            # Never leave host tasks running unowned: the caller may give up the claim.
            for fut in list(running):
                fut.exception()
            raise
        stopped = self._stopping()
        store.record_batch(self.id, idx, len(hosts), "stopped" if stopped else "done")
        if stopped:
            self._let_go()
            return False
        return True

    def _drive(
        self,
        idx: int,
        remaining: list[str],
        running: set[Future[Any]],
        finished: queue.SimpleQueue[Future[Any]],
    ) -> None:
        store = self.store
        while remaining or running:
            if remaining and not self._stopping():
                ours = self._still_ours()
                if not ours:
                    # Cancelled (or taken over): start nothing more; let in-flight steps end.
                    remaining = []
                    continue
                result = store.begin_hosts(
                    self.id,
                    remaining,
                    batch=idx,
                    action=str(self.action),
                    holder=self.s.worker,
                    limits=self.limits,
                )
                if result.started:
                    for fut in self.s.executor.submit(self._batch(result.started)):
                        running.add(fut)
                        fut.add_done_callback(finished.put)
                remaining = [h for h in remaining if h in result.blocked]
            elif remaining:
                remaining = []  # stopping: they stay pending for the next worker
            if not running:
                if remaining:
                    self._sleep(self.s.settings.poll)
                continue
            try:
                fut = finished.get(timeout=self.s.settings.poll)
            except queue.Empty:
                continue
            while True:
                running.remove(fut)
                fut.result()
                try:
                    fut = finished.get_nowait()
                except queue.Empty:
                    break

    def _batch(self, started: dict[str, int]) -> Batch:
        """The hosts just begun, for the executor; a resumed host's completed steps are
        read here, once, for either executor to skip."""
        return Batch(
            request_id=self.id,
            action=self.action,
            image=self.image,
            options=self.options,
            tasks=started,
            records=self.records,
            done={
                h: completed_steps(self.store, self.id, h, self.action)
                for h in started
                if h in self.resumed
            },
            stopping=self._stopping,
            claim_lost=self._claim_lost_in_spell,
        )
