"""Active-active: two `maasctl serve` processes on one PostgreSQL, client threads spread
over both with `ApiFleet` (a failover list of URLs, an idempotency key per submission),
and one server killed with SIGKILL while submissions to it are in flight. Every
acknowledged submission is in the queue exactly once; one never acknowledged is there at
most once. (test_service.py's test_two_servers_share_one_database is the simple case: one
retried submission through the other server.)"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from maas_lib.access.guard import stored_key
from maas_lib.access.tokens import create_token
from maas_lib.errors import MaasError
from maas_lib.service.client import ApiFleet, ApiSettings
from tests.apiserver import SeededFleet, Service, service_process
from tests.conftest import patience
from tests.integration.test_service import _lock

CLIENTS = 6
HOSTS = [f"web0{i}" for i in range(1, 9)]


@dataclass
class Client:
    """One client thread's submissions: each key, and the request id if acknowledged."""

    name: str
    secret: str
    urls: tuple[str, ...]
    sent: list[tuple[str, int | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def acked(self) -> int:
        return sum(1 for _, rid in self.sent if rid is not None)


def _submit_until(client: Client, ca: Path, stop: threading.Event) -> None:
    settings = ApiSettings(urls=client.urls, token=client.secret, ca=str(ca), deadline=patience(60))
    with ApiFleet(settings) as api:
        i = 0
        while not stop.is_set():
            key = f"{client.name}-{i}-{uuid.uuid4().hex[:8]}"
            hosts = [HOSTS[(i + n) % len(HOSTS)] for n in range(1 + i % 3)]
            try:
                rid: int | None = api.submit("reboot", hosts, idempotency_key=key).id
            except MaasError as exc:  # not acknowledged: it may or may not exist
                rid = None
                client.errors.append(str(exc))
            client.sent.append((key, rid))
            i += 1


def _in_flight(svc: Service) -> int:
    """Submissions `svc` has authenticated (-vv) but not answered (its access log)."""
    log = svc.logged()
    return log.count("POST /api/v1/requests by ") - log.count('"POST /api/v1/requests HTTP/1.1"')


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + patience(60)
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_server_killed_mid_stream_loses_and_doubles_nothing(
    pg_url: str, inventory: Path, tmp_path: Path
):
    setup = SeededFleet(pg_url, inventory)
    with setup.fleet() as fleet:
        secrets = [
            create_token(
                fleet.store, f"ops{i}", "operator", teams=["web-team"], actor="test"
            ).secret
            for i in range(CLIENTS)
        ]
    with (
        service_process(setup.url, tmp_path / "a", verbose="-vv") as a,
        service_process(setup.url, tmp_path / "b", verbose="-vv") as b,
    ):
        # Each server has a CA of its own: the clients trust both.
        bundle = tmp_path / "ca-bundle.pem"
        bundle.write_text(a.certs["ca"].read_text() + b.certs["ca"].read_text())
        clients = [
            Client(f"ops{i}", secrets[i], (a.url, b.url) if i % 2 == 0 else (b.url, a.url))
            for i in range(CLIENTS)
        ]
        stop = threading.Event()
        threads = [
            threading.Thread(target=_submit_until, args=(c, bundle, stop), daemon=True)
            for c in clients
        ]
        for t in threads:
            t.start()
        try:
            _wait(lambda: all(c.acked() >= 3 for c in clients), "submissions through both")
            # Hold new requests back (a slow writer), so that submissions to `a` are in
            # flight, authenticated and waiting in the store, when it is killed.
            release = _lock(setup.url)
            try:
                _wait(lambda: _in_flight(a) >= 2, "submissions in flight on a")
                assert a.proc is not None
                a.proc.kill()
                assert a.proc.wait(patience(10)) == -9
            finally:
                release()
            after = [c.acked() for c in clients]
            _wait(
                lambda: all(c.acked() >= n + 3 for c, n in zip(clients, after, strict=True)),
                "submissions after the kill",
            )
        finally:
            stop.set()
            for t in threads:
                t.join(patience(90))
        assert not any(t.is_alive() for t in threads)
        assert b.proc is not None and b.proc.poll() is None

    with setup.fleet() as fleet:
        requests = {r.id: r for r in fleet.requests()}
        found: dict[str, int | None] = {}
        for c in clients:
            for key, _ in c.sent:
                row = fleet.idempotent_request(f"token:{c.name}", stored_key(key))
                found[key] = None if row is None else row[0]
    acked = {key: rid for c in clients for key, rid in c.sent if rid is not None}
    # Every acknowledged submission is the request it was acknowledged as, once.
    assert all(found[key] == rid for key, rid in acked.items())
    assert len(set(acked.values())) == len(acked)
    # Every request in the queue is one submission's, and none is there twice: a
    # submission never acknowledged is there once or not at all.
    made = [rid for rid in found.values() if rid is not None]
    assert sorted(made) == sorted(requests) and len(set(made)) == len(made)
    assert all(r.submitted_by.startswith("token:ops") for r in requests.values())
    # The kill was felt: calls to `a` failed over to `b`, and every client went on.
    assert sum(c.acked() for c in clients) == len(acked) > 6 * CLIENTS
    assert all(c.errors == [] for c in clients), [c.errors for c in clients]
