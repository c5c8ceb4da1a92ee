"""Store faults that may pass, and a store that waits them out for a bounded time.

Backends raise `StoreUnavailable` for faults that may clear by themselves: a full disk,
an I/O error, a write lock held past the busy timeout, a lost or restarted PostgreSQL
connection. A scheduler worker reaches its store through `RetryingStore`, which runs
such a call again with backoff until it succeeds, or until the store has been failing
for `retry_s` seconds; then that call and every later one raise `StoreFailing` at once,
so the worker stops without starting anything new.

Running a call again is safe because every store method is one transaction: a failed
one was rolled back. (A PostgreSQL connection lost during COMMIT leaves the outcome
unknown; the writes the scheduler retries are idempotent, or, for a step's start, leave
at most a second step row that the next resume marks interrupted.)
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from maas_lib.errors import StoreFailing, StoreUnavailable
from maas_lib.store.base import Store

log = logging.getLogger(__name__)

#: SQLite primary result codes that may pass: BUSY, LOCKED, IOERR, FULL, CANTOPEN.
_SQLITE_TRANSIENT_CODES = frozenset({5, 6, 10, 13, 14})
_SQLITE_TRANSIENT_TEXT = (
    "database or disk is full",
    "disk i/o error",
    "database is locked",
    "database table is locked",
    "unable to open database file",
)
#: Longest pause between two attempts of one call.
MAX_BACKOFF_S = 5.0


def sqlite_transient(exc: BaseException) -> bool:
    """True if `exc` is a SQLite fault that may pass (disk full, I/O, lock timeout)."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _SQLITE_TRANSIENT_CODES
    return str(exc).lower().startswith(_SQLITE_TRANSIENT_TEXT)


class RetryingStore:
    """`store`, with calls that fail with `StoreUnavailable` run again (see the module).

    `failing` is set while the store is failing, `spells` counts the failing spells begun,
    and `healthy` is set when none is going on (and `on_recover`, called as one ends, has
    returned). `on_give_up` is called once, with the error, when the bound runs out."""

    def __init__(
        self,
        store: Store,
        retry_s: float,
        *,
        on_give_up: Callable[[StoreFailing], None] | None = None,
        on_recover: Callable[[], None] | None = None,
    ):
        self.store = store
        self.retry_s = retry_s
        self.failing = threading.Event()
        self._on_give_up = on_give_up
        self._on_recover = on_recover
        self.spells = 0
        self.healthy = threading.Event()
        self.healthy.set()
        self._lock = threading.Lock()
        self._since: float | None = None  # when the current failing spell began
        self._cause: str | None = None  # set once the worker gave up

    def as_store(self) -> Store:
        return self  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name.startswith("_") or not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(attr, args, kwargs)

        return call

    @property
    def gave_up(self) -> str | None:
        """The cause, once the bound ran out; else None."""
        return self._cause

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        delay = 0.05
        failed = False
        while True:
            if self._cause is not None:
                raise StoreFailing(f"store failing: {self._cause}")
            try:
                result = fn(*args, **kwargs)
            except StoreUnavailable as exc:
                failed = True
                left = self._failed(exc)
                if left <= 0:
                    raise self._give_up(exc) from None
                time.sleep(min(delay, left))
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            # Only a call that failed and now works ends the spell: on a full disk, reads
            # go on working while every write fails.
            if failed:
                self._recovered()
            return result

    def _failed(self, exc: StoreUnavailable) -> float:
        """Note a failure; return the seconds left before giving up."""
        now = time.monotonic()
        with self._lock:
            if self._since is None:
                self._since = now
                self.spells += 1
                self.healthy.clear()
                self.failing.set()
                log.warning("store failing (%s); retrying for up to %gs", exc, self.retry_s)
            return self._since + self.retry_s - now

    def _recovered(self) -> None:
        with self._lock:
            if self._since is None:
                return
            log.warning("store back after %.1fs", time.monotonic() - self._since)
            self._since = None
            self.failing.clear()
        if self._on_recover is not None:
            self._on_recover()
        with self._lock:
            if self._since is None:  # no new spell began meanwhile
                self.healthy.set()

    def wait_healthy(self, stop: threading.Event) -> bool:
        """Wait until no failing spell is going on; False if `stop` is set first."""
        while not self.healthy.wait(0.05):
            if stop.is_set() or self._cause is not None:
                return False
        return True

    def _give_up(self, exc: StoreUnavailable) -> StoreFailing:
        with self._lock:
            first = self._cause is None
            if first:
                self._cause = f"{exc} (for {self.retry_s:g}s)"
            error = StoreFailing(f"store failing: {self._cause}")
        if first and self._on_give_up is not None:
            self._on_give_up(error)
        return error
