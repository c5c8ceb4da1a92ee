"""Work-arounds for pyghmi 1.6.19 bugs that bite many threads in one process.

Both the IPMI driver (clients) and the simulator (servers) apply them before creating any
session. Each fix is a behaviour pyghmi intends; neither changes what goes on the wire.

1. ABBA deadlock: `awaitresponse()` holds WAITING_SESSIONS and, on a timeout, sends a
   payload that takes KEEPALIVE_SESSIONS, while another thread's `send_payload()` holds
   KEEPALIVE_SESSIONS and wants WAITING_SESSIONS. Hit by ~50 threads powering BMCs on.
   Fix: one re-entrant lock for both.
2. `_io_sendto()` switches the shared UDP socket to blocking in the sender's thread while
   the IO thread switches it to non-blocking and reads: interleaved, the IO thread blocks
   in recvfrom() and every BMC of the process stalls. Fix: never block; wait for the
   socket to be writable instead.
3. A login that fails (e.g. a wrong password) is marked broken by `_mark_broken()`, which
   calls `logout()` — setting `broken` — *before* it records `errormsg`; a thread waiting
   on the same session sees `broken` and reads the missing `errormsg`: AttributeError
   instead of "Incorrect password provided". Fix: record the error first.
"""

from __future__ import annotations

import select
from typing import Any

_applied = False


def _io_sendto(sock: Any, packet: bytes, sockaddr: Any) -> None:
    sock = getattr(sock, "fd", sock)
    sock.setblocking(False)
    for _ in range(200):
        try:
            sock.sendto(packet, sockaddr)
            return
        except BlockingIOError:
            select.select((), (sock,), (), 0.01)
        except OSError:
            return  # as pyghmi does: the retransmit logic covers a lost datagram


def apply() -> None:
    """Patch pyghmi's session module once per process."""
    global _applied
    if _applied:
        return
    from pyghmi.ipmi.private import session

    session.KEEPALIVE_SESSIONS = session.WAITING_SESSIONS
    session._io_sendto = _io_sendto
    mark_broken = session.Session._mark_broken

    def _mark_broken(self: Any, error: Any = None) -> None:
        self.errormsg = error
        mark_broken(self, error)

    session.Session._mark_broken = _mark_broken
    # A session closed by a plain logout has no error of its own.
    session.Session.errormsg = "IPMI session closed"
    _applied = True
