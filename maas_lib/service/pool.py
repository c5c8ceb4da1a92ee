"""Store connections for the app's calls: one `Fleet` (one store connection) per call at a
time, reused from a small idle pool. SQLite and PostgreSQL alike: a connection is never
shared by two calls at once, and one that failed is closed rather than reused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from maas_lib.errors import StoreError
from maas_lib.fleet import Fleet, open_fleet


class FleetPool:
    def __init__(self, url: str | None, size: int):
        self.url = url
        self.size = size
        self._idle: list[Fleet] = []
        self._lock = threading.Lock()
        self._closed = False

    def check(self) -> None:
        """Open the store once now: an unusable database is an error at start-up."""
        with self.fleet():
            pass

    @contextmanager
    def fleet(self) -> Iterator[Fleet]:
        """A fleet for one call (blocking: run it in the threadpool)."""
        with self._lock:
            fleet = self._idle.pop() if self._idle else None
        if fleet is None:
            fleet = open_fleet(self.url, create=False)
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
