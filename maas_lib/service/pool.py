"""Store connections for the app's calls: one `Fleet` (one store connection) per call at a
time, reused from a small idle pool. SQLite and PostgreSQL alike: a connection is never
shared by two calls at once, and one that failed is closed rather than reused.

At most `size` calls hold a connection at once; the others wait their turn here. Under
load (32 clients submitting at once, on 2 cores) that keeps the store's own waits short:
SQLite writers otherwise back off in its busy handler, and PostgreSQL submissions queue on
the intake lock, each of them holding a thread that competes for the interpreter, so the
slowest calls took seconds (bench/api.py: p99 of 10-host submissions 0.9-1.1 s without
the bound, 0.34-0.43 s with it, on a loaded machine)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from maas_lib.errors import StoreError, StoreUnavailable, StoreUnusable
from maas_lib.fleet import Fleet, open_fleet


class FleetPool:
    def __init__(self, url: str | None, size: int):
        self.url = url
        self.size = size
        self._idle: list[Fleet] = []
        self._lock = threading.Lock()
        self._closed = False
        self._slots = threading.BoundedSemaphore(size)

    def check(self) -> None:
        """Open the store once now: an unusable database is an error at start-up
        (`StoreUnusable`, bad input)."""
        self._put(open_fleet(self.url, create=False))

    def warm(self) -> None:
        """Open every connection the pool holds now, before the first calls: otherwise
        the first burst of calls each waits for a connection of its own (bench/api.py,
        32 clients at once on PostgreSQL: their first submissions took 238-372 ms against
        a median of 108; they made the p99 251 ms, 189 without them)."""
        with self._lock:
            missing = self.size - len(self._idle)  # `check` may have opened one
        opened: list[Fleet] = []
        try:
            while len(opened) < missing:
                opened.append(open_fleet(self.url, create=False))
        finally:
            for fleet in opened:
                self._put(fleet)

    @contextmanager
    def fleet(self) -> Iterator[Fleet]:
        """A fleet for one call (blocking: run it in the threadpool)."""
        with self._slots:
            yield from self._held()

    def _held(self) -> Iterator[Fleet]:
        with self._lock:
            fleet = self._idle.pop() if self._idle else None
        if fleet is None:
            try:
                fleet = open_fleet(self.url, create=False)
            except StoreUnusable as exc:
                # Gone or broken since start-up (a file moved away): the caller's input
                # is not at fault, and the database's path is not its business.
                raise StoreUnavailable(str(exc)) from None
        try:
            yield fleet
        except StoreError:
            fleet.close()  # a lost connection is not handed to the next call
            raise
        except BaseException:
            self._put(fleet)
            raise
        else:
            self._put(fleet)

    def _put(self, fleet: Fleet) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.size:
                self._idle.append(fleet)
                return
        fleet.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for fleet in idle:
            fleet.close()
