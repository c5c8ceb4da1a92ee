"""Connections spread evenly over `serve --workers` processes: least connections first.

The workers share one listening socket, and a new connection wakes every one of them;
whichever calls accept() first gets it. Clients keep their connections (HTTP keep-alive),
so that race decides, once, which process serves a client from then on. In bench/api.py's
32 clients it split them 20/12, 19/13, 17/15: the busier process was the bottleneck (its
clients waited on one interpreter) while the other had time to spare (282-328
submissions/s, the lower the more uneven).

So each worker publishes how many connections it holds in a shared slot (an anonymous
shared memory map made before the fork), and one that holds more than the least-loaded
worker lets a new connection go by once: it stops watching the socket for `DEFER_S`,
so an idle worker, woken by the same connection, takes it. If none has by then (every
worker is busy), it takes the connection itself: a connection waits at most `DEFER_S`
longer, and is never refused for balance.

`BalancedServer` stands in for the asyncio `Server` uvicorn makes on the shared socket
(what uvicorn uses of it: `close`, `wait_closed`, `sockets`); each accepted connection
goes to the event loop through `loop.connect_accepted_socket`, with the same protocol,
TLS context and TLS timeouts as asyncio's own server would give it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import mmap
import socket
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger("maas_lib.service")

#: How long a worker holding more connections than another lets a new one wait for it.
DEFER_S = 0.02
#: Connections taken per wake-up at most (as asyncio's server takes up to its backlog).
ACCEPT_BATCH = 100
#: After running out of file descriptors, how long before accepting again (as asyncio).
RETRY_S = 1.0
_SLOT = 8  # bytes per worker's count


class Slots:
    """Every worker's count of open connections, shared by the processes forked after
    it is made (each writes its own slot only)."""

    def __init__(self, workers: int):
        self._mem = mmap.mmap(-1, _SLOT * workers)  # MAP_SHARED, anonymous
        self._counts = memoryview(self._mem).cast("q")

    def __len__(self) -> int:
        return len(self._counts)

    def publish(self, index: int, count: int) -> None:
        self._counts[index] = count

    def least(self) -> int:
        return min(self._counts)


class BalancedServer:
    """Accepts connections on `sock` for this worker (slot `index` of `slots`), letting
    a new one go by once while this worker holds more than the least loaded; `open_count`
    says how many this worker holds now."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
        *,
        slots: Slots,
        index: int,
        open_count: Callable[[], int],
        ssl_context: ssl.SSLContext | None,
        ssl_shutdown_timeout: float | None,
    ):
        self._loop = loop
        self._factory = protocol_factory
        self._sock = sock
        self._slots = slots
        self._index = index
        self._open_count = open_count
        self._ssl = ssl_context
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._deferred = False
        self._watching = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._starting: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)
        self._watch()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed else (self._sock,)

    def _watch(self) -> None:
        if not self._closed and not self._watching:
            self._loop.add_reader(self._sock.fileno(), self._readable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False

    def _pause(self, seconds: float) -> None:
        self._unwatch()
        self._timer = self._loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        self._timer = None
        self._watch()

    def _held(self) -> int:
        """Connections this worker holds: serving, or still in their TLS handshake."""
        return self._open_count() + len(self._starting)

    def _readable(self) -> None:
        mine = self._held()
        self._slots.publish(self._index, mine)
        if not self._deferred and mine > self._slots.least():
            self._deferred = True  # once: if nobody takes it meanwhile, this worker will
            self._pause(DEFER_S)
            return
        self._deferred = False
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # taken by another worker, or gone
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accepting connections: %s; retrying in %gs", exc, RETRY_S)
                    self._pause(RETRY_S)
                    return
                raise
            conn.setblocking(False)
            task = self._loop.create_task(self._start(conn))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)
            mine = self._held()
            self._slots.publish(self._index, mine)
            if mine > self._slots.least():
                return  # the rest (if any) for a less loaded worker first

    async def _start(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory,
                conn,
                ssl=self._ssl,
                ssl_shutdown_timeout=self._ssl_shutdown_timeout if self._ssl else None,
            )
        except (OSError, ssl.SSLError) as exc:  # TimeoutError is an OSError
            # A failed TLS handshake or a client gone: asyncio's server drops these too.
            log.debug("connection dropped before it started: %s", exc)
            conn.close()

    def close(self) -> None:
        """Stop accepting (connections already taken go on until they end)."""
        if self._closed:
            return
        self._unwatch()
        if self._timer is not None:
            self._timer.cancel()
        self._closed = True
        self._sock.close()

    async def wait_closed(self) -> None:
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)
