"""Waiting for install-completion reports: one poller per worker, many waiting hosts.

Hosts being reimaged wait minutes for their installer's report. Rather than each host
thread polling the store, one thread reads new reports and hands each to the host task
waiting for that (host, request) pair.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from maas_lib.errors import Interrupted, StoreFailing
from maas_lib.models import InstallReport
from maas_lib.store import Store

log = logging.getLogger(__name__)


@dataclass
class _Waiter:
    host: str
    request_id: int
    after: int
    done: threading.Event = field(default_factory=threading.Event)
    report: InstallReport | None = None


class InstallWatcher:
    def __init__(self, store: Store, poll: float = 0.5):
        self.store = store
        self.poll = poll
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, int], _Waiter] = {}
        self._cursor: int | None = None
        #: Bumped whenever a waiter moves the cursor back, so a poll in progress does not
        #: move it past reports that waiter still needs.
        self._generation = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="install-watcher", daemon=True)
        self._thread.start()

    def mark(self) -> int:
        """Reports after this id are new; take it before an install can start."""
        return self.store.last_install_report_id()

    def wait(
        self,
        host: str,
        request_id: int,
        *,
        after: int,
        timeout: float,
        stopping: Callable[[], bool] = lambda: False,
    ) -> InstallReport | None:
        """The first report for `host` within `request_id` newer than `after`, or None."""
        waiter = _Waiter(host, request_id, after)
        with self._lock:
            self._waiters[(host, request_id)] = waiter
            if self._cursor is None or after < self._cursor:
                self._cursor = after
                self._generation += 1
        self._wake.set()
        deadline = time.monotonic() + timeout
        try:
            while not waiter.done.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
                if stopping():
                    raise Interrupted(f"stopped waiting for {host}'s install report")
                if time.monotonic() >= deadline:
                    return None
            return waiter.report
        finally:
            with self._lock:
                self._waiters.pop((host, request_id), None)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                cursor = self._cursor if self._waiters else None
                generation = self._generation
            if cursor is None:
                self._wake.wait(self.poll)
                self._wake.clear()
                continue
            try:
                reports = self.store.install_reports(after_id=cursor)
            except StoreFailing:
                return  # the worker is stopping: it gave up on its store
            except Exception:
                # A busy or briefly unavailable database must not end the watching.
                log.exception("reading install reports failed; retrying")
                self._stop.wait(self.poll)
                continue
            for report in reports:
                with self._lock:
                    if self._generation == generation:
                        self._cursor = max(self._cursor or 0, report.id)
                    if report.request_id is None:
                        continue
                    waiter = self._waiters.get((report.host, report.request_id))
                    if waiter is not None and report.id > waiter.after:
                        waiter.report = report
                        waiter.done.set()
            self._stop.wait(self.poll)
