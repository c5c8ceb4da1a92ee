# Copyright: maas-lib maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The step service: under maas-lib's Ansible executor, step tasks run in its long-lived
ansible process, not each in its own task worker.

`maasctl run --executor ansible` keeps one ansible process per request and sets
``MAAS_STEP_SERVICE=1`` in its environment. There, the step action plugin, loaded in
ansible's main process before any task worker forks, starts this service: a thread
listening on a Unix socket (Linux: abstract, with a random name) that runs each step a
task worker hands over and answers with the task's result. The steps then share one
database connection and one session per BMC (kept across steps and batches, logged out
once idle for a minute or when the process ends), as the native executor's steps do,
instead of each worker opening the database and logging in to (and out of) the BMC for
one step. The task worker does what it did before — validates the arguments, returns
the result — and the executor records the task from ansible's events as before.

Only processes of this user that descend from this process are answered. The executor
kills the process (its timeout, a stopping worker) with the steps in flight, as it
killed their task workers before. Without the variable, or off Linux, nothing changes:
each task worker runs its step itself.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

#: Set (to "1") by maas-lib's Ansible executor in its ansible process's environment.
ENV = "MAAS_STEP_SERVICE"

#: Seconds a BMC session may sit unused before the service logs out of it.
_SESSION_IDLE_S = 60.0
_ACCEPT_WAKE_S = 5.0
_MAX_REQUEST = 1 << 20


def wanted() -> bool:
    return os.environ.get(ENV) == "1" and sys.platform.startswith("linux")


class StepService:
    """Answers step requests from this process's descendants, each in a thread of its
    own, with `run(params) -> result`."""

    def __init__(self, run: Callable[[dict[str, Any]], dict[str, Any]]):
        self.run = run
        self.pid = os.getpid()
        self.address = "maas-step-" + secrets.token_hex(16)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind("\0" + self.address)
        self._sock.listen(64)
        self._sock.settimeout(_ACCEPT_WAKE_S)
        thread = threading.Thread(target=self._serve, name="maas-step-service", daemon=True)
        thread.start()

    def _serve(self) -> None:
        from maas_lib.bmc.sessions import close_idle_sessions

        while True:
            try:
                conn = self._sock.accept()[0]
            except TimeoutError:
                with suppress(Exception):  # logging out is best effort
                    close_idle_sessions(_SESSION_IDLE_S)
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(
                target=self._answer, args=(conn,), name="maas-step", daemon=True
            ).start()

    def _answer(self, conn: socket.socket) -> None:
        from maas_lib.scheduler.credential_broker import _trusted_peer

        with conn:
            try:
                if not _trusted_peer(conn):
                    return
                params = json.loads(_read_line(conn))
                result = self.run(params)
                conn.sendall(json.dumps(result, default=str).encode() + b"\n")
            except (OSError, ValueError):
                return


def ask(address: str, params: dict[str, Any]) -> dict[str, Any]:
    """The result of the step task `params` describes, run by the service at `address`
    (a failed result if it cannot be reached)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect("\0" + address)
            sock.sendall(json.dumps(params).encode() + b"\n")
            reply = json.loads(_read_line(sock))
    except (OSError, ValueError) as exc:
        return {"failed": True, "msg": f"step service did not answer: {exc}"}
    if not isinstance(reply, dict):
        return {"failed": True, "msg": "step service: unexpected answer"}
    return reply


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < _MAX_REQUEST:
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


class SharedFleets:
    """`fleet(db)` for the step tasks, each database opened once and kept open."""

    def __init__(self, open_fleet: Callable[[str | None], Any], url_of: Callable[[Any], str]):
        self._open_fleet = open_fleet
        self._url_of = url_of
        self._lock = threading.Lock()
        self._fleets: dict[str, Any] = {}
        atexit.register(self.close)

    @contextmanager
    def __call__(self, db: str | None) -> Iterator[Any]:
        url = self._url_of(db)
        with self._lock:
            entry = self._fleets.get(url)
            if entry is None:
                context = self._open_fleet(db)
                entry = self._fleets[url] = (context, context.__enter__())
        yield entry[1]

    def close(self) -> None:
        from maas_lib.bmc.sessions import close_all_sessions

        with self._lock:
            fleets, self._fleets = self._fleets, {}
        for context, _fleet in fleets.values():
            with suppress(Exception):
                context.__exit__(None, None, None)
        with suppress(Exception):
            close_all_sessions()
