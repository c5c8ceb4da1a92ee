"""`maasctl serve --workers N`: N server processes taking turns on one listening socket
(a new connection goes to the worker holding the fewest: `balance`).

The parent binds the socket, forks the workers (each builds its own app, store
connections and rate-limit counters after the fork), closes its own copy of the socket,
and then only supervises: SIGTERM or SIGINT to it is passed on as one SIGTERM to each
worker, which stops accepting and lets its calls in flight finish (`server.serve`). The
parent exits 0 once every worker has exited 0. A worker that ends on its own (a crash) is
not replaced: the others are stopped and the parent exits 1, for the service manager to
restart the whole. A worker whose parent is gone (SIGKILL) stops by itself.

Log lines of a worker start `maasctl[PID]:`, so its access log tells the workers apart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from maas_lib.errors import InputError
from maas_lib.service.balance import Slots
from maas_lib.service.server import Listen, serve

log = logging.getLogger("maas_lib.service")

_STOPS = {signal.SIGTERM, signal.SIGINT}
#: Seconds between a worker's checks that its parent is still there.
PARENT_CHECK_S = 1.0


def most_workers() -> int:
    return 2 * (os.cpu_count() or 1)


def check_workers(workers: int) -> None:
    top = most_workers()
    if not 1 <= workers <= top:
        raise InputError(
            f"--workers {workers}: must be 1 to {top} (twice this machine's "
            f"{os.cpu_count() or 1} cores)"
        )


def bind(listen: Listen) -> socket.socket:
    """The listening socket the workers share (as uvicorn binds its own)."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        where = f"{listen.host}:{listen.port}"
        raise InputError(f"--listen {where}: cannot listen: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class _Tagged(logging.Formatter):
    """The handler's own format, its `maasctl:` prefix naming the worker's PID."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        if text.startswith("maasctl:"):
            return f"maasctl[{os.getpid()}]:{text[len('maasctl:') :]}"
        return f"[{os.getpid()}] {text}"


def _worker(
    build: Callable[[threading.Event], Any],
    listen: Listen,
    sock: socket.socket,
    parent: int,
    balance: tuple[Slots, int],
    ready: int,
) -> int:
    """A forked worker's life: its exit status. Stop signals are blocked on entry."""
    # Not the parent's handlers: until the server listens for it, SIGTERM just ends this
    # worker (it has no call yet). SIGINT is the parent's to pass on (a terminal's ^C
    # reaches every process of the group).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_Tagged(handler.formatter))
    stop = threading.Event()

    def watch_parent() -> None:
        while not stop.wait(PARENT_CHECK_S):
            if os.getppid() != parent:
                log.warning("the serve process %d is gone: stopping", parent)
                stop.set()

    threading.Thread(target=watch_parent, daemon=True, name="serve-parent").start()

    def serving(_port: int) -> None:
        os.write(ready, b".")  # this worker takes connections now
        os.close(ready)

    try:
        app = build(stop)
        app.state.pool.warm()
        try:
            serve(
                app,
                listen,
                stopping=stop,
                on_ready=serving,
                sockets=[sock],
                signals=(signal.SIGTERM,),
                balance=balance,
            )
        finally:
            app.state.pool.close()
    except BaseException:
        log.exception("worker %d failed", os.getpid())
        return 1
    return 0


def _all_serving(ready: int, workers: int) -> bool:
    """Wait until every worker says it serves (its store connections open, its listener
    up), or one has ended without saying so (its end of the pipe closed: False)."""
    said = 0
    try:
        while said < workers:
            got = os.read(ready, workers - said)
            if not got:
                return False
            said += len(got)
        return True
    finally:
        os.close(ready)


def serve_workers(
    build: Callable[[threading.Event], Any],
    listen: Listen,
    workers: int,
    *,
    stopping: threading.Event,
    on_ready: Callable[[int], None] | None = None,
) -> int:
    """Serve with `workers` processes, each serving `build(stopping)`; blocks until they
    have all exited. The exit status: 0 after a stop asked for, else 1."""
    sock = bind(listen)
    slots = Slots(workers)  # each worker's open connections, shared across the fork
    ready_r, ready_w = os.pipe()  # a byte from each worker once it serves
    port = int(sock.getsockname()[1])
    parent = os.getpid()
    children: set[int] = set()
    stopped = threading.Event()  # a stop was asked for (signal or `stopping`)

    def stop_all() -> None:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):  # exited already
                os.kill(pid, signal.SIGTERM)

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        if not stopped.is_set():
            stopped.set()
            stop_all()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(workers):
            # Blocked across the fork, so a stop never runs the parent's handler in a
            # worker; a stop that came meanwhile is handled once they are unblocked.
            signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
            pid = os.fork()
            if pid == 0:  # the worker: never returns into the parent's code
                code = 1
                try:
                    os.close(ready_r)
                    code = _worker(build, listen, sock, parent, (slots, index), ready_w)
                finally:
                    logging.shutdown()
                    os._exit(code)
            children.add(pid)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
        sock.close()  # the workers hold it; a stopped server then refuses connections
        os.close(ready_w)
        log.info("%d workers: %s", workers, " ".join(str(p) for p in sorted(children)))
        if _all_serving(ready_r, workers) and on_ready is not None:
            on_ready(port)  # else a worker ended first: the loop below stops the others

        def watch_stopping() -> None:
            stopping.wait()
            on_signal(signal.SIGTERM, None)

        threading.Thread(target=watch_stopping, daemon=True, name="serve-stop").start()
        failed = False
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if not stopped.is_set() or code not in (0, -signal.SIGTERM):
                failed = True
                log.error("worker %d ended (exit %d): stopping the others", pid, code)
                on_signal(signal.SIGTERM, None)
        return 1 if failed else 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stopping.set()
