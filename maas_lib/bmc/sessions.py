"""One reused client session per BMC per process, with one lock so calls never interleave.

pyghmi keeps an internal session table keyed by credentials; built with `str` credentials
a second `Command` for the same BMC never matches it and hangs (pyghmi 1.6.19). So this
module builds each session once, with `bytes` credentials, and hands the same one out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from maas_lib.errors import BmcUnreachable


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: Any = None


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
            entry.lock.release()

    def client(self, entry: _Entry, factory: Callable[[], Any]) -> Any:
        """The entry's client, created by `factory` on first use. Call with `entry.lock` held."""
        if entry.client is None:
            entry.client = factory()
        return entry.client

    def discard(self, key: Hashable) -> None:
        with self._guard:
            entry = self._entries.get(key)
        if entry is not None:
            entry.client = None

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.client is not None)


IPMI_SESSIONS = SessionPool()
REDFISH_SESSIONS = SessionPool()
