"""Each API call's store connection (docs/service.md, "HTTP API"): a call without a body is
checked and answered on one connection, which it gives back however it ends; a call with
a body is checked on a connection given back before its body is read. With one
connection for the whole server, any call that kept it would leave every later call
waiting: each ending is followed by calls that need it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apiserver import SeededFleet, Service, error_detail, running_service
from tests.conftest import patience


@pytest.fixture
def setup(store_url: str, inventory: Path) -> SeededFleet:
    return SeededFleet(store_url, inventory)


@pytest.fixture
def service(setup: SeededFleet, tmp_path: Path) -> Iterator[Service]:
    with running_service(setup.url, tmp_path, pool_size=1) as svc:
        yield svc


_JSON = {"Content-Type": "application/json"}
_REBOOT_WEB01 = {"action": "reboot", "patterns": ["web01"]}


def _answers(svc: Service, token: str) -> None:
    """A read and a submission still answer (the one connection is free)."""
    with svc.client(token) as c:
        assert c.get("/api/v1/requests").status_code == 200
        r = c.post("/api/v1/requests", json=_REBOOT_WEB01)
        assert r.status_code == 202, r.text


def test_every_ending_gives_the_connection_back(service: Service, setup: SeededFleet):
    ops, viewer = setup.tokens["ops"], setup.tokens["viewer"]
    with service.client(ops) as c, service.client(viewer) as v, service.client("maas_x" * 8) as bad:
        endings = [
            (lambda: bad.get("/api/v1/requests"), 401, "unauthenticated"),
            (lambda: v.get("/api/v1/audit"), 403, "forbidden"),
            (lambda: c.get("/api/v1/requests/999999"), 404, "not_found"),
            (lambda: c.get("/api/v1/requests", params={"limit": 0}), 422, "invalid"),
            (lambda: c.post("/api/v1/requests/999999/cancel"), 404, "not_found"),
            (lambda: c.post("/api/v1/requests", content=b"{"), 422, "invalid"),
            (lambda: v.post("/api/v1/requests", json={"action": "reboot"}), 422, "invalid"),
            (lambda: v.post("/api/v1/requests", json=_REBOOT_WEB01), 403, "forbidden"),
            (
                lambda: c.post("/api/v1/plan", json={"action": "reboot", "patterns": ["nosuch"]}),
                404,
                "not_found",
            ),
        ]
        for call, status, kind in endings * 2:  # more endings than connections, twice
            error_detail(call(), status, kind)
    _answers(service, ops)


def test_a_bad_credential_is_refused_before_the_query_is_checked(service: Service):
    # Still 401, not a 422 about its query: who calls is checked first.
    with service.client("maas_x" * 8) as bad:
        error_detail(bad.get("/api/v1/requests", params={"limit": 0}), 401, "unauthenticated")
        error_detail(bad.get("/api/v1/requests/0"), 401, "unauthenticated")


def test_a_slow_body_holds_no_connection(service: Service, setup: SeededFleet):
    """A caller sending its body slowly is checked first, then holds nothing while the
    body trickles in: other calls are answered meanwhile."""
    sent, done = threading.Event(), threading.Event()

    def trickle() -> Iterator[bytes]:
        yield b'{"action": "reboot", '
        sent.set()
        done.wait(patience(30))
        yield b'"patterns": ["web02"]}'

    results: list[int] = []

    def slow() -> None:
        with service.client(setup.tokens["ops"]) as c:
            r = c.post("/api/v1/requests", content=trickle(), headers=_JSON)
            results.append(r.status_code)

    thread = threading.Thread(target=slow, daemon=True)
    thread.start()
    try:
        assert sent.wait(patience(10))
        _answers(service, setup.tokens["ops"])
    finally:
        done.set()
        thread.join(patience(30))
    assert results == [202]
