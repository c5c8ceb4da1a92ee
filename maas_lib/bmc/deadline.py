"""Running a BMC call under a deadline: the caller stops waiting, the call runs on.

A hung BMC call cannot be interrupted (a socket read, pyghmi's loop), so each call runs in
a daemon thread of its own and the caller gives up on it after its deadline. Both the
controller and the fallback driver (one deadline per path) use it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from maas_lib.errors import BmcError

T = TypeVar("T")


class _Reusable:
    """Daemon threads for `run_with_deadline`, reused: starting a thread per BMC call cost
    more CPU than the call. A hung call keeps only its own thread; idle ones exit."""

    IDLE_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[Callable[[], None] | None]] = []

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._work, args=(inbox,), daemon=True, name="bmc-call").start()
        inbox.put(job)

    def _work(self, inbox: queue.SimpleQueue[Callable[[], None] | None]) -> None:
        while True:
            try:
                job = inbox.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # nobody handed us a job meanwhile: retire
                        self._idle.remove(inbox)
                        return
                continue
            if job is None:
                return
            job()
            with self._lock:
                self._idle.append(inbox)


_THREADS = _Reusable()


def run_with_deadline(fn: Callable[[], T], timeout: float, on_timeout: Callable[[], BmcError]) -> T:
    """Run `fn` in a daemon thread; give up (not wait) after `timeout` seconds."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def job() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    _THREADS.submit(job)
    if not done.wait(timeout):
        raise on_timeout()
    if "error" in box:
        raise box["error"]
    return box["value"]
