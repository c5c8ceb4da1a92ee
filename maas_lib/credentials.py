"""Credential names → secrets, resolved at the moment of use and never stored.

Lookup order for a name such as ``rack-a``:
0. in a process the Ansible executor started (``MAAS_CREDENTIALS_SOCKET`` set): only the
   worker that started it, over that socket (`maas_lib.scheduler.credential_broker`);
1. environment ``MAAS_CRED_RACK_A_USERNAME`` and ``MAAS_CRED_RACK_A_PASSWORD``;
2. the TOML file named by ``MAAS_CREDENTIALS_FILE`` (refused unless only its owner can
   read it), with one table per name::

       [rack-a]
       username = "admin"
       password = "..."
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from maas_lib.errors import CredentialError

ENV_PREFIX = "MAAS_CRED_"
FILE_ENV = "MAAS_CREDENTIALS_FILE"
SOCKET_ENV = "MAAS_CREDENTIALS_SOCKET"
_SOCKET_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Credential:
    """A resolved BMC login. `repr` and `str` never show the password."""

    name: str
    username: str
    password: str = field(repr=False)
    source: str = ""

    @property
    def fingerprint(self) -> str:
        """Tells credentials apart (session cache keys) without holding the password."""
        return hashlib.sha256(f"{self.username}\0{self.password}".encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return f"credential {self.name} (user {self.username}, from {self.source})"


def env_names(name: str) -> tuple[str, str]:
    key = ENV_PREFIX + name.upper().replace("-", "_")
    return key + "_USERNAME", key + "_PASSWORD"


def _from_env(name: str) -> Credential | None:
    user_var, pass_var = env_names(name)
    user, password = os.environ.get(user_var), os.environ.get(pass_var)
    if user is None and password is None:
        return None
    if user is None or password is None:
        missing = user_var if user is None else pass_var
        raise CredentialError(f"credential {name}: {missing} is not set")
    return Credential(name=name, username=user, password=password, source="environment")


def _read_file(path: Path) -> dict:
    try:
        st = path.stat()
    except OSError as exc:
        raise CredentialError(f"{FILE_ENV}={path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialError(
            f"{FILE_ENV}={path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; "
            "chmod 600 it"
        )
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        # The decoder's message quotes no values, so it is safe to show.
        raise CredentialError(f"{FILE_ENV}={path}: not valid TOML ({exc})") from None


def _from_file(name: str) -> Credential | None:
    file_name = os.environ.get(FILE_ENV)
    if not file_name:
        return None
    data = _read_file(Path(file_name))
    entry = data.get(name)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise CredentialError(f"{FILE_ENV}={file_name}: [{name}] must be a table")
    user, password = entry.get("username"), entry.get("password")
    if not isinstance(user, str) or not isinstance(password, str):
        raise CredentialError(
            f"{FILE_ENV}={file_name}: [{name}] needs string username and password"
        )
    return Credential(name=name, username=user, password=password, source=file_name)


def _ask_broker(address: str, request: dict[str, str], what: str) -> dict:
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(_SOCKET_TIMEOUT_S)
            sock.connect(target)
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
    except (OSError, ValueError) as exc:
        raise CredentialError(
            f"{what}: the worker's credential socket did not answer ({exc})"
        ) from None
    if not isinstance(reply, dict) or "error" in reply:
        raise CredentialError(str(reply.get("error") if isinstance(reply, dict) else reply))
    return reply


def database_url_from_worker() -> str | None:
    """The database URL (password included) of the worker that started this process,
    if one did (`SOCKET_ENV`): the Ansible executor's modules open the store with it.
    Asked once per socket: the Ansible executor's process asks before it forks its
    task workers, which then need not ask again."""
    address = os.environ.get(SOCKET_ENV)
    if not address:
        return None
    if address not in _worker_urls:
        _worker_urls[address] = str(
            _ask_broker(address, {"database": "url"}, "database URL")["url"]
        )
    return _worker_urls[address]


#: Socket address -> the database URL its worker gave (`database_url_from_worker`).
_worker_urls: dict[str, str] = {}


def _from_broker(name: str) -> Credential | None:
    """Ask the worker that started this process (see `SOCKET_ENV`), if one did."""
    address = os.environ.get(SOCKET_ENV)
    if not address:
        return None
    reply = _ask_broker(address, {"name": name}, f"credential {name}")
    return Credential(
        name=name,
        username=str(reply["username"]),
        password=str(reply["password"]),
        source=f"worker ({reply.get('source') or '?'})",
    )


def resolve_credential(name: str) -> Credential:
    """Resolve a credential name to its secret, or raise `CredentialError` naming what's missing."""
    cred = _from_broker(name) or _from_env(name) or _from_file(name)
    if cred is None:
        user_var, pass_var = env_names(name)
        where = (
            f" or a [{name}] table in {os.environ[FILE_ENV]}"
            if os.environ.get(FILE_ENV)
            else (f" or {FILE_ENV}")
        )
        raise CredentialError(f"credential {name}: set {user_var} and {pass_var}{where}")
    return cred
