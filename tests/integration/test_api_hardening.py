"""The HTTPS API attacked as a hostile caller and as a member of another team would: each
test is a finding of the security review (docs/service.md, "Hardening"), against real
stores (SQLite, PostgreSQL) and a real uvicorn over TLS on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maas_lib.access.guard import GuardedFleet
from maas_lib.access.models import Role
from maas_lib.access.principal import Principal
from maas_lib.errors import AccessDenied
from tests.apiserver import SeededFleet, Service, running_service

#: web01 moved from pool web into pool db (an admin's `maasctl hosts import`).
MOVED = """
all:
  vars:
    bmc_credential: lab
  children:
    db:
      hosts:
        web01: {rack: r1, bmc_address: 10.20.1.1}
"""
OPS = Principal("token:ops", Role.OPERATOR, ("web-team",))


@pytest.fixture
def setup(store_url: str, inventory: Path) -> SeededFleet:
    return SeededFleet(store_url, inventory)


@pytest.fixture
def service(setup: SeededFleet, tmp_path: Path) -> Iterator[Service]:
    with running_service(setup.url, tmp_path, rate_limit=10_000) as svc:
        yield svc


def _error(response: httpx.Response, status: int, kind: str) -> str:
    """The one error shape: exactly {error, detail}, one printable line."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == kind, body
    assert body["detail"].isprintable(), body
    return str(body["detail"])


# -- authorization --------------------------------------------------------------------------


def test_a_host_moved_to_another_pool_after_the_check_is_refused(
    setup: SeededFleet, tmp_path: Path
):
    """TOCTOU: the operator's check passes (web01 in web, which its team owns), then an
    admin's import moves web01 into pool db before the request is written. The
    submission must be refused (403 naming db), nothing queued, the refusal audited."""
    moved = tmp_path / "moved.yml"
    moved.write_text(MOVED)
    with setup.fleet() as fleet:
        real = fleet.pool_owners
        calls = []

        def then_moved(pools=None):
            grants = real(pools)
            if not calls:  # once, between the first check and the write
                with setup.fleet() as admin:  # another connection, as another process
                    admin.import_hosts([str(moved)])
            calls.append(pools)
            return grants

        fleet.pool_owners = then_moved  # type: ignore[method-assign]
        with pytest.raises(AccessDenied) as refused:
            GuardedFleet(fleet, OPS).submit("reboot", ["web01"])
        assert refused.value.pools == ("db",)
        assert fleet.requests() == []
        record = fleet.audit(decision="refused")[0]
        assert (record.principal, record.verb, record.detail["pools"]) == (
            "token:ops",
            "submit",
            ["db"],
        )
