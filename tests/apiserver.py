"""A real maas-lib API server for tests: uvicorn over TLS on loopback, with a CA and
certificates generated for the test, and httpx clients that verify that CA; and a fleet
seeded with tokens and a pool grant to call it with (`SeededFleet`).

`running_service` serves in a thread of this process (settings such as the poll interval
may be set); `service_process` runs `maasctl serve` itself, as a user would (signals,
exit codes, what it logs)."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import maas_lib
from maas_lib.access.models import PoolGrant
from maas_lib.access.tokens import create_token
from maas_lib.sim.pki import make_pki
from tests.conftest import patience


class SeededFleet:
    """A fleet imported from `inventory` (conftest.FLEET_YAML: web01-08 in pool web, db01-02
    in db, gpu01 in gpu) with tokens: `admin`,
    `ops` (operator of team web-team, which owns pool web) and `viewer`."""

    def __init__(self, url: str, inventory: Path):
        self.url = url
        with maas_lib.open_fleet(url) as fleet:
            fleet.import_hosts([str(inventory)])
            fleet.store.grant_pool(PoolGrant(team="web-team", pool="web"), actor="test")
            self.tokens = {
                name: create_token(fleet.store, name, role, teams=teams, actor="test").secret
                for name, role, teams in [
                    ("admin", "admin", []),
                    ("ops", "operator", ["web-team"]),
                    ("viewer", "viewer", []),
                ]
            }

    def fleet(self) -> maas_lib.Fleet:
        return maas_lib.open_fleet(self.url, create=False)


def error_detail(response: httpx.Response, status: int, kind: str) -> str:
    """The detail of an answer in the API's one error shape: exactly {error, detail}, with
    `status` and `kind`, the detail one printable line; no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == kind, body
    assert body["detail"].isprintable() and "Traceback" not in response.text, body
    return str(body["detail"])


def pki(directory: Path, clients: tuple[str, ...] = ("alice",)) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost, and client certificates."""
    return make_pki(directory, hosts=("localhost",), ips=("127.0.0.1", "::1"), clients=clients)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    url: str
    certs: dict[str, Path]
    log: Path | None = None
    proc: subprocess.Popen[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def context(self, client_cert: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.certs["ca"]))
        if client_cert is not None:
            ctx.load_cert_chain(self.certs[client_cert], self.certs[f"{client_cert}-key"])
        return ctx

    def client(
        self, token: str | None = None, *, client_cert: str | None = None, **kw: Any
    ) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url,
            verify=self.context(client_cert),
            headers=headers,
            timeout=patience(30),
            **kw,
        )

    def logged(self) -> str:
        return self.log.read_text() if self.log else ""


@contextmanager
def running_service(
    db: str | Path, directory: Path, *, client_ca: bool = False, **settings: Any
) -> Iterator[Service]:
    """`create_app` served by uvicorn over TLS on 127.0.0.1 (a free port) in a thread."""
    from maas_lib.service.app import create_app
    from maas_lib.service.server import Listen, serve
    from maas_lib.service.settings import ServiceSettings

    certs = pki(directory / "pki")
    stopping = threading.Event()
    app = create_app(ServiceSettings(db=str(db), **settings), stopping=stopping)
    listen = Listen(
        host="127.0.0.1",
        port=0,
        tls_cert=certs["cert"],
        tls_key=certs["key"],
        client_ca=certs["ca"] if client_ca else None,
    )
    ready: dict[str, int] = {}
    got = threading.Event()

    def on_ready(port: int) -> None:
        ready["port"] = port
        got.set()

    errors: list[BaseException] = []

    def target() -> None:
        try:
            serve(app, listen, stopping=stopping, on_ready=on_ready)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
            got.set()

    thread = threading.Thread(target=target, daemon=True, name="api-server")
    thread.start()
    assert got.wait(patience(30)) and not errors, errors
    try:
        yield Service(url=f"https://127.0.0.1:{ready['port']}", certs=certs, extra={"app": app})
    finally:
        stopping.set()
        thread.join(patience(30))
        app.state.pool.close()


@contextmanager
def service_process(
    db: str | Path,
    directory: Path,
    *args: str,
    env: dict[str, str] | None = None,
    tls: bool = True,
    verbose: str = "-v",
) -> Iterator[Service]:
    """`maasctl --db DB serve --listen 127.0.0.1:PORT --tls-cert … ARGS` in a child process
    (its stderr in `log`), once it says it is serving; terminated afterwards."""
    certs = pki(directory / "pki")
    log = directory / f"serve-{time.monotonic_ns()}.log"
    tls_args = ["--tls-cert", str(certs["cert"]), "--tls-key", str(certs["key"])] if tls else []
    command = [
        sys.executable,
        "-m",
        "maas_lib",
        *([verbose] if verbose else []),
        "--db",
        str(db),
        "serve",
        "--listen",
        "127.0.0.1:0",  # the port it took is in the line it prints
        *tls_args,
        *args,
    ]
    with open(log, "w") as err:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            env={**os.environ, **(env or {})},
        )
    service = Service(url="", certs=certs, log=log, proc=proc)
    try:
        deadline = time.monotonic() + patience(60)
        while time.monotonic() < deadline:
            m = re.search(r"serving (\S+)/api/v1", service.logged())
            if m:
                service.url = m.group(1)
                break
            if proc.poll() is not None:
                raise AssertionError(f"maasctl serve exited {proc.returncode}: {service.logged()}")
            time.sleep(0.05)
        else:
            raise AssertionError(f"maasctl serve did not start: {service.logged()}")
        yield service
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(patience(40))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
