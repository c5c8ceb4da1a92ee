"""One reused client session per BMC per process: handed out one call at a time, and
closed (logged out) when a CLI/API call ends or, in the scheduler, once idle too long.

pyghmi keeps an internal session table keyed by credentials; built with `str` credentials
a second `Command` for the same BMC never matches it and hangs (pyghmi 1.6.19). So this
module builds each session once, with `bytes` credentials, and hands the same one out.

BMCs have few session slots (often 4 to 16, shared by every client) and keep an abandoned
session until their own idle timeout, so a client that may hold one defines `close()`
(IPMI: Close Session; Redfish: DELETE of the session resource), which `close_idle` and
`close_all` call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from maas_lib.errors import BmcUnreachable

log = logging.getLogger(__name__)

#: Sessions closed side by side (a Redfish logout is one HTTP request each).
CLOSE_CONCURRENCY = 32


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: Any = None
    #: time.monotonic() when the last call with this entry ended.
    last_used: float = field(default_factory=time.monotonic)


def close_client(client: Any) -> None:
    """`client.close()` if it has one; a failure to log out is logged, never raised: the
    BMC ends the session at its own idle timeout anyway."""
    close = getattr(client, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:  # closing is best effort
        log.debug("closing a BMC session failed: %s: %s", type(exc).__name__, exc)


class SessionPool:
    """Client objects keyed by endpoint and user; `discard` forgets a broken one."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}
        self._guard = threading.Lock()

    def entry(self, key: Hashable) -> _Entry:
        with self._guard:
            return self._entries.setdefault(key, _Entry())

    @contextmanager
    def hold(self, key: Hashable, timeout: float, via: str) -> Iterator[_Entry]:
        """The entry for `key`, locked: one call at a time per BMC."""
        entry = self.entry(key)
        if not entry.lock.acquire(timeout=timeout):
            raise BmcUnreachable(f"BMC still busy with an earlier call after {timeout:g}s", via=via)
        try:
            yield entry
        finally:
            entry.last_used = time.monotonic()
            entry.lock.release()

    def client(self, entry: _Entry, factory: Callable[[], Any]) -> Any:
        """The entry's client, created by `factory` on first use. Call with `entry.lock` held."""
        if entry.client is None:
            entry.client = factory()
        return entry.client

    def drop(self, entry: _Entry) -> None:
        """Close and forget the entry's client (after a failed call). Call with the lock held."""
        client, entry.client = entry.client, None
        if client is not None:
            close_client(client)

    def has_client(self, key: Hashable) -> bool:
        with self._guard:
            entry = self._entries.get(key)
        return entry is not None and entry.client is not None

    def discard(self, key: Hashable) -> None:
        with self._guard:
            entry = self._entries.get(key)
        if entry is not None:
            entry.client = None

    def _close(self, idle_before: float | None) -> int:
        """Close the clients of entries not in use (and, with `idle_before`, last used
        before it). An entry in use is skipped: its call may still need the session, and a
        call abandoned after its deadline keeps its entry until it ends."""
        with self._guard:
            entries = list(self._entries.values())
        taken: list[_Entry] = []
        for entry in entries:
            if entry.client is None or (idle_before is not None and entry.last_used > idle_before):
                continue
            if entry.lock.acquire(blocking=False):
                if entry.client is None:
                    entry.lock.release()
                else:
                    taken.append(entry)

        def close(entry: _Entry) -> None:
            try:
                self.drop(entry)
            finally:
                entry.lock.release()

        if len(taken) == 1:
            close(taken[0])
        elif taken:
            workers = min(CLOSE_CONCURRENCY, len(taken))
            from concurrent.futures import ThreadPoolExecutor  # most calls close one or none

            with ThreadPoolExecutor(workers, thread_name_prefix="bmc-logout") as pool:
                list(pool.map(close, taken))
        return len(taken)

    def close_idle(self, max_idle_s: float) -> int:
        """Close sessions unused for more than `max_idle_s` seconds; returns how many."""
        return self._close(time.monotonic() - max_idle_s)

    def close_all(self) -> int:
        """Close every session not in use right now; returns how many."""
        return self._close(None)

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.client is not None)


IPMI_SESSIONS = SessionPool()
REDFISH_SESSIONS = SessionPool()
POOLS = (IPMI_SESSIONS, REDFISH_SESSIONS)


def close_all_sessions() -> int:
    """Log out of every BMC session this process holds (the end of a CLI/API call)."""
    return sum(pool.close_all() for pool in POOLS)


def close_idle_sessions(max_idle_s: float) -> int:
    """Log out of BMC sessions unused for more than `max_idle_s` seconds."""
    return sum(pool.close_idle(max_idle_s) for pool in POOLS)


class IdleSessionCloser:
    """For a long-running loop (the scheduler): `tick()` often; at most every
    `max_idle_s / 4` seconds it closes the sessions idle longer than `max_idle_s`."""

    def __init__(self, max_idle_s: float) -> None:
        self.max_idle_s = max_idle_s
        self._every = max(0.5, max_idle_s / 4)
        self._next = time.monotonic() + self._every

    def tick(self) -> int:
        now = time.monotonic()
        if now < self._next:
            return 0
        self._next = now + self._every
        return close_idle_sessions(self.max_idle_s)
