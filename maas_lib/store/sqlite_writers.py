"""Who writes a SQLite database next: one writer at a time, across threads and processes.

SQLite's own arbitration between writers is its busy handler, which *polls*: a writer
that finds the database locked sleeps 1, 2, 5, 10, ... up to 100 ms and tries again.
Under load that is unfair as well as slow. Two `maasctl serve --workers 2` processes
under 32 concurrent submissions: each process hands the lock from one of its threads to
the next the moment it commits, while the other process sleeps through every hand-over,
so its callers wait hundreds of ms (bench/api.py: p99 208-542 ms, max 914 ms; with this
module 124-140 ms, max 136-204 ms).

So a writer first takes, in order:
  * this process's lock for the file (a thread waiting for another of its threads
    sleeps on it and starts the moment that one commits);
  * an exclusive `flock` on a lock file beside the database (`<db>-writer`), which the
    kernel grants to a waiting process the moment the holder lets go — no polling.
Only then does it `BEGIN IMMEDIATE`; SQLite's busy handler still arbitrates with writers
that don't take the file lock (the sqlite3 shell, another tool).

Both waits share one deadline. `flock` itself cannot time out, so a writer that must wait
for the file blocks in a helper thread, on a file descriptor of its own; if the deadline
passes first, the helper lets the lock go as soon as it gets it. A process holding the
lock releases it by closing its descriptor, and the kernel releases it if the process
dies. Where the lock file cannot be opened (a read-only directory, a file owned by
another user), writers fall back to SQLite's busy handler alone.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

#: The suffix of the lock file beside a database (as SQLite's `-wal` and `-shm`).
SUFFIX = "-writer"


class _Writers:
    """This process's writers of one database: the lock they queue on, and how deeply
    the thread holding it has entered (only that thread reads or changes `depth`)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.depth = 0


_LOCKS: dict[str, _Writers] = {}
_LOCKS_LOCK = threading.Lock()
#: Descriptors holding a file lock now (this process's), closed in a forked child: a
#: child sharing its parent's descriptor would share the lock, and hold it for as long as
#: it lives.
_HELD: set[int] = set()


def _writers(key: str) -> _Writers:
    with _LOCKS_LOCK:
        writers = _LOCKS.get(key)
        if writers is None:
            writers = _LOCKS[key] = _Writers()
        return writers


def _after_fork_in_child() -> None:
    # A forked child has none of its parent's threads: a lock one of them held would
    # never be released, and a descriptor it holds would keep the parent's file lock.
    global _LOCKS_LOCK
    _LOCKS_LOCK = threading.Lock()
    _LOCKS.clear()
    for fd in list(_HELD):
        with suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _open_lock_file(path: str, mode: int) -> int | None:
    """A descriptor on the lock file (created with `mode`), or None if it can't be had."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, mode)
    except OSError:
        return None


def _flock_by(fd: int, deadline: float) -> bool:
    """Take the exclusive lock on `fd` before `deadline` (time.monotonic()); False if the
    deadline passed (the descriptor is then closed by the helper, not by the caller)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    got = threading.Event()
    guard = threading.Lock()
    abandoned = False

    def wait() -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # the caller gives up at its deadline, as if the holder never let go
        else:
            with guard:
                if not abandoned:
                    got.set()
                    return
        os.close(fd)  # given up on: let the lock (if it was had) go to the next writer

    threading.Thread(target=wait, name="sqlite-writer-wait", daemon=True).start()
    if got.wait(max(0.0, deadline - time.monotonic())):
        return True
    with guard:
        if got.is_set():
            return True
        abandoned = True
    return False


@contextmanager
def exclusive(key: str, timeout: float) -> Iterator[None]:
    """Hold the writer locks (this process's, then the file's) of the database whose real
    path is `key` for the block; if they can't be had within `timeout` seconds,
    "database is locked", as SQLite's own timeout says it."""
    deadline = time.monotonic() + timeout
    writers = _writers(key)
    if not writers.lock.acquire(timeout=timeout):
        raise _locked()
    writers.depth += 1
    try:
        if writers.depth > 1:
            # A write inside a write on another connection: this thread holds the file
            # already, and waits for SQLite's lock (and its timeout) as before.
            yield
            return
        fd = _open_lock_file(key + SUFFIX, _mode_of(key))
        if fd is None:
            yield  # no lock file: SQLite's busy handler alone, as before
            return
        if not _flock_by(fd, deadline):
            raise _locked()
        _HELD.add(fd)
        try:
            yield
        finally:
            _HELD.discard(fd)
            os.close(fd)  # releases the file lock
    finally:
        writers.depth -= 1
        writers.lock.release()


def _locked() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("database is locked")


def _mode_of(path: str) -> int:
    """The lock file's mode: the database's read/write bits (whoever may write the
    database may take its writer lock), 0600 if it can't be read."""
    try:
        return os.stat(path).st_mode & 0o666
    except OSError:
        return 0o600
