"""Hands BMC credentials to the Ansible executor's modules without writing them anywhere.

ansible-runner records the whole environment of the ansible-playbook it starts in the
run's ``artifacts/*/command`` file, so secrets must not travel in the environment (and a
file, even a short-lived one, is on disk until it is removed — a killed worker never
removes it). Instead, for the length of one playbook run, the worker listens on a Unix
socket (Linux: an abstract one, which has no file; elsewhere: in the run's 0700 private
directory) and answers "credential NAME?" for the names that run needs, and only to
processes of its own user that descend from the worker. Only the socket's address is
in the child's environment (``MAAS_CREDENTIALS_SOCKET``); it is useless once the run ends.
The client side is `maas_lib.credentials`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import struct
import sys
import threading
from collections.abc import Callable, Collection
from contextlib import suppress
from pathlib import Path

from maas_lib.credentials import Credential, resolve_credential
from maas_lib.errors import CredentialError

__all__ = ["CredentialBroker"]

log = logging.getLogger(__name__)

_MAX_REQUEST = 4096
_CLIENT_TIMEOUT_S = 10.0


class CredentialBroker:
    """Serves `names` (resolved with `resolve` in this process) and `database_url` (the
    store's URL, which may hold a password) until closed."""

    def __init__(
        self,
        names: Collection[str],
        directory: Path,
        resolve: Callable[[str], Credential] = resolve_credential,
        database_url: str | None = None,
    ):
        self.names = frozenset(names)
        self.database_url = database_url
        self.resolve = resolve
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if sys.platform.startswith("linux"):
            name = "maas-cred-" + secrets.token_hex(16)
            self._sock.bind("\0" + name)
            #: What the child's environment holds ("@" stands for the leading NUL).
            self.address = "@" + name
        else:
            path = directory / "cred.sock"
            self._sock.bind(str(path))
            os.chmod(path, 0o600)
            self.address = str(path)
        self._sock.listen(16)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="cred-broker", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        with suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)

    def __enter__(self) -> CredentialBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._answer, args=(conn,), name="cred-broker-conn", daemon=True
            ).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(_CLIENT_TIMEOUT_S)
            try:
                if not _trusted_peer(conn):
                    log.warning("credential broker: refused a process that is not ours")
                    return
                request = _read_line(conn)
                asked = json.loads(request)
                if asked.get("database") == "url" and self.database_url:
                    reply = {"url": self.database_url}
                else:
                    reply = self._reply(asked.get("name"))
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except (OSError, ValueError, AttributeError):
                return

    def _reply(self, name: object) -> dict[str, str]:
        if not isinstance(name, str) or name not in self.names:
            return {"error": f"credential {name!r}: not one this playbook run may use"}
        try:
            cred = self.resolve(name)
        except CredentialError as e:
            return {"error": str(e)}  # names what is missing, never a value
        return {"username": cred.username, "password": cred.password, "source": cred.source}


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < _MAX_REQUEST:
        chunk = conn.recv(_MAX_REQUEST)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _trusted_peer(conn: socket.socket) -> bool:
    """Our user, and (where /proc tells) a descendant of this process."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True  # the socket file is in a 0700 directory of ours
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    if uid != os.geteuid():
        return False
    return _descends_from(pid, os.getpid())


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
            pid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False
