"""The scheduler worker behind `maasctl run`: claims requests and runs them side by side.

Several workers (processes, machines) may share one store: claims are atomic, each
request is run by one worker at a time, and a worker that stops heartbeating loses its
claims after `claim_ttl`, so another resumes its requests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from maas_lib.bmc import BmcController
from maas_lib.bmc.base import BmcDriver, BmcEndpoint
from maas_lib.bmc.control import BmcSettings
from maas_lib.bmc.sessions import IdleSessionCloser, close_all_sessions
from maas_lib.credentials import Credential, resolve_credential
from maas_lib.errors import StoreError, StoreFailing
from maas_lib.models import IN_FLIGHT_REQUEST_STATES, RequestState
from maas_lib.scheduler.executor import Executor, ExecutorEnv, NativeExecutor
from maas_lib.scheduler.installs import InstallWatcher
from maas_lib.scheduler.playbook import remove_stale_private_dirs
from maas_lib.scheduler.request import RequestRun, Shared
from maas_lib.scheduler.settings import SchedulerSettings
from maas_lib.store import Store
from maas_lib.store.faults import RetryingStore
from maas_lib.telemetry.alerts import AlertSender
from maas_lib.telemetry.alerts import alert_settings as resolve_alerts

if TYPE_CHECKING:
    from maas_lib.telemetry.alerts import AlertSettings

log = logging.getLogger(__name__)

DriverFactory = Callable[[BmcEndpoint, Credential, BmcSettings], BmcDriver]


def executor_for(env: ExecutorEnv) -> Executor:
    """The executor `env.settings.executor` names."""
    if env.settings.executor == "ansible":
        # Imports ansible-runner (~0.1 s): only a worker that runs playbooks pays for it.
        from maas_lib.scheduler.ansible_executor import AnsibleExecutor

        return AnsibleExecutor(env)
    return NativeExecutor(env)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class RunReport:
    """What one `run` did: requests it finished and the state each ended in."""

    worker: str
    finished: dict[int, str] = field(default_factory=dict)
    let_go: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _Credentials:
    """Credentials resolved once per name (env or file), shared by every host task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, Credential] = {}

    def __call__(self, name: str) -> Credential:
        with self._lock:
            if name not in self._cache:
                self._cache[name] = resolve_credential(name)
            return self._cache[name]


class Worker:
    def __init__(
        self,
        store: Store,
        settings: SchedulerSettings | None = None,
        *,
        worker: str | None = None,
        driver_factory: DriverFactory | None = None,
        alerts: AlertSettings | Iterable[str] | None = None,
    ):
        """`alerts`: webhook URLs (or `AlertSettings`) for requests that end failed or
        partial; none at all turns alerts off; None reads ``MAAS_ALERT_WEBHOOK`` at `run`."""
        self.store = store
        self.alerts = alerts
        self.settings = settings or SchedulerSettings()
        self.id = worker or worker_id()
        self.stop_event = threading.Event()
        #: The store as the worker's threads see it: failing calls retried (bounded);
        #: giving up stops the worker.
        self.guard = RetryingStore(
            store,
            self.settings.store_retry_s,
            on_give_up=lambda _: self.stop_event.set(),
            on_recover=self._renew_claims,
        )
        self.controller = BmcController(
            self.settings.bmc, resolve=_Credentials(), driver_factory=driver_factory
        )

    def stop(self) -> None:
        """Finish the steps in flight, then let go of every request (SIGTERM, SIGINT)."""
        self.stop_event.set()

    def _idle(self) -> bool:
        store = self.guard.as_store()
        return not store.list_requests(sorted(IN_FLIGHT_REQUEST_STATES), limit=1)

    def run(self, *, until_idle: bool = False) -> RunReport:
        """Claim and run requests until stopped (or, with `until_idle`, until none is left
        accepted or running anywhere — including requests other workers hold).

        Raises `StoreFailing` if the store kept failing past `store_retry_s`: the steps in
        flight ended (or were interrupted), nothing new started, claims left to expire."""
        s = self.settings
        store = self.guard.as_store()
        report = RunReport(self.id)
        alert_settings = resolve_alerts(self.alerts)  # bad input (exit 2) before anything runs
        # The first write: a store failing past `store_retry_s` stops us before any thread.
        store.heartbeat(self.id, ttl=s.claim_ttl)
        alerts = AlertSender(alert_settings) if alert_settings else None
        # A SIGKILLed worker's playbook dirs (inventories, artifacts) outlive it.
        for path in remove_stale_private_dirs():
            log.info("removed %s, left by a worker that no longer runs", path)
        installs = InstallWatcher(store, poll=min(s.poll, 0.5))
        pool = ThreadPoolExecutor(max_workers=s.max_hosts, thread_name_prefix="host")
        executor = executor_for(
            ExecutorEnv(
                worker=self.id,
                store=store,
                settings=s,
                pool=pool,
                controller=self.controller,
                installs=installs,
                hook_slots=threading.Semaphore(s.hook_concurrency),
            )
        )
        shared = Shared(
            worker=self.id,
            store=store,
            settings=s,
            executor=executor,
            stop=self.stop_event,
            alerts=alerts,
            guard=self.guard,
        )
        active: dict[int, threading.Thread] = {}
        results: dict[int, RequestState | None] = {}
        # Heartbeats go on until every request thread (and so every step) has ended: a
        # stopping worker must not lose its claims while its steps still touch BMCs.
        beating = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(beating,), name="heartbeat", daemon=True
        )
        beat.start()
        log.info("worker %s started", self.id)

        def run_one(request_id: int) -> None:
            try:
                results[request_id] = RequestRun(shared, request_id).run()
            except StoreFailing:
                results[request_id] = None  # the claim expires: another worker resumes it
            except Exception as exc:
                log.exception("request %s: scheduler error", request_id)
                report.errors.append(f"request {request_id}: {type(exc).__name__}: {exc}")
                results[request_id] = None
                # Our heartbeats would keep the claim alive forever: let another worker try.
                store.release_claim(request_id, self.id)

        def start(rid: int) -> None:
            log.info("request %s claimed", rid)
            t = threading.Thread(target=run_one, args=(rid,), name=f"request-{rid}")
            active[rid] = t
            t.start()

        idle_sessions = IdleSessionCloser(s.session_idle_s)
        spells_seen = self.guard.spells
        try:
            while not self.stop_event.is_set():
                idle_sessions.tick()
                for rid in [r for r, t in active.items() if not t.is_alive()]:
                    active.pop(rid).join()
                    state = results.pop(rid, None)
                    if state is None:
                        report.let_go.append(rid)
                    else:
                        report.finished[rid] = str(state)
                if self.guard.spells != spells_seen and self.guard.healthy.is_set():
                    spells_seen = self.guard.spells
                    # A claim whose COMMIT the fault cut off may have been written after
                    # all: run every request we hold that nothing runs.
                    for rid in self._held(store):
                        if rid not in active:
                            start(rid)
                # At capacity, still resume requests whose worker died: the requests we
                # run may be waiting for exactly those (their leases, their hosts).
                full = len(active) >= s.max_requests
                rid = store.claim_request(self.id, ttl=s.claim_ttl, resume_only=full)
                if rid is not None and rid not in active:
                    start(rid)
                    continue
                if until_idle and not active and self._idle():
                    break
                self.stop_event.wait(s.poll)
        except StoreFailing:
            pass  # raised below, once every thread has ended
        finally:
            self.stop_event.set()
            for rid, t in active.items():
                t.join()
                state = results.pop(rid, None)
                if state is None:
                    report.let_go.append(rid)
                else:
                    report.finished[rid] = str(state)
            pool.shutdown(wait=True)
            executor.close()
            installs.close()
            close_all_sessions()
            beating.set()
            beat.join(timeout=5)
            if alerts is not None:
                alerts.close(timeout=10)
            if self.guard.gave_up is None:
                with contextlib.suppress(StoreFailing):
                    store.retire_worker(self.id)
        if self.guard.gave_up is not None:
            raise StoreFailing(f"store failing: {self.guard.gave_up}")
        log.info("worker %s stopped", self.id)
        return report

    def _held(self, store: Store) -> list[int]:
        """The running requests this worker has claimed."""
        mine = [w for w in store.list_workers(self.settings.claim_ttl) if w.id == self.id]
        return mine[0].requests if mine else []

    def _renew_claims(self) -> None:
        """The store works again after failing: extend our claims at once (if still ours)
        before any step goes on (see `RequestRun._claim_lost_in_spell`)."""
        with contextlib.suppress(StoreError):
            self.store.heartbeat(self.id, ttl=self.settings.claim_ttl)

    def _heartbeat(self, done: threading.Event) -> None:
        store = self.guard.as_store()
        while not done.wait(self.settings.heartbeat_interval):
            try:
                store.heartbeat(self.id, ttl=self.settings.claim_ttl)
            except StoreFailing:
                return  # the worker gave up on its store and is stopping
            except Exception:
                log.exception("heartbeat failed")
