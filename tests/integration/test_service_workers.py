"""`maasctl serve --workers N` (maas_lib.service.workers): real server processes over TLS
on loopback, sharing one listening socket, over real SQLite and PostgreSQL stores. Which
process answered a call is read from the access log (`maasctl[PID]:` per worker); the
workers are the server's children in /proc."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.apiserver import SeededFleet, Service, service_process
from tests.conftest import patience
from tests.integration.test_service import _lock, _wait_for


@pytest.fixture
def setup(store_url: str, inventory: Path) -> SeededFleet:
    return SeededFleet(store_url, inventory)


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def _answered_by(svc: Service) -> set[int]:
    logged = svc.logged()
    return {
        int(m.group(1))
        for m in re.finditer(r"maasctl\[(\d+)\]: INFO: [\d.:]+ - \"GET /api/v1/whoami", logged)
    }


def test_two_workers_answer_and_sigterm_lets_calls_in_flight_finish(
    setup: SeededFleet, tmp_path: Path
):
    with service_process(setup.url, tmp_path, "--workers", "2", verbose="-vv") as svc:
        assert svc.proc is not None
        workers = _children(svc.proc.pid)
        assert len(workers) == 2, svc.logged()
        # Each call on a connection of its own: the kernel hands each to a worker waiting
        # on the socket; both take some.
        for _ in range(200):
            with svc.client(setup.tokens["viewer"]) as viewer:
                assert viewer.get("/api/v1/whoami").status_code == 200
            if _answered_by(svc) == workers:
                break
        assert _answered_by(svc) == workers, svc.logged()

        # A submission waiting on the store when the stop comes still gets its answer.
        ops = svc.client(setup.tokens["ops"])
        assert ops.get("/api/v1/whoami").status_code == 200  # the token's first use is written
        release = _lock(setup.url)
        submit = {"action": "reboot", "patterns": ["web01"]}
        calls = ThreadPoolExecutor(1)
        answer = calls.submit(ops.post, "/api/v1/requests", json=submit)
        try:
            _wait_for(svc, "POST /api/v1/requests by token:ops")
            svc.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + patience(20)
            while svc.logged().count("Shutting down") < 2:
                assert time.monotonic() < deadline, svc.logged()
                time.sleep(0.02)
            with pytest.raises(httpx.ConnectError):  # no worker takes a new connection
                svc.client(setup.tokens["viewer"]).get("/api/v1/whoami")
        finally:
            release()
        submitted = answer.result(patience(30))
        calls.shutdown()
        assert submitted.status_code == 202, submitted.text
        assert svc.proc.wait(patience(30)) == 0, svc.logged()
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        assert "Traceback" not in svc.logged()
    with setup.fleet() as fleet:
        assert [r.id for r in fleet.requests()] == [submitted.json()["id"]]


def _connections_by_worker(svc: Service, ports: list[int]) -> dict[int, int]:
    """How many of the clients' connections (by local port) each worker served."""
    served: dict[int, int] = {}
    for m in re.finditer(r"maasctl\[(\d+)\]: INFO: 127\.0\.0\.1:(\d+) - ", svc.logged()):
        if int(m.group(2)) in ports:
            served[int(m.group(1))] = served.get(int(m.group(1)), 0) + 1
    return served


def test_keep_alive_clients_are_spread_evenly_over_the_workers(setup: SeededFleet, tmp_path: Path):
    # Clients keep their connections, so the worker that accepts one serves that client
    # from then on: 32 clients connecting one after another get 16 each (a worker holding
    # more lets a new connection go by for the other), not whichever wins the race.
    with service_process(setup.url, tmp_path, "--workers", "2", verbose="-vv") as svc:
        assert svc.proc is not None
        workers = _children(svc.proc.pid)
        clients = [svc.client(setup.tokens["viewer"]) for _ in range(32)]
        try:
            ports = []
            for c in clients:
                answer = c.get("/api/v1/whoami")
                assert answer.status_code == 200
                ports.append(answer.extensions["network_stream"].get_extra_info("client_addr")[1])
            deadline = time.monotonic() + patience(10)
            while sum(_connections_by_worker(svc, ports).values()) < 32:
                assert time.monotonic() < deadline, svc.logged()
                time.sleep(0.02)
            served = _connections_by_worker(svc, ports)
            assert set(served) == workers, served
            assert max(served.values()) - min(served.values()) <= 2, served
        finally:
            for c in clients:
                c.close()


@pytest.mark.parametrize("workers", ["0", str(2 * (os.cpu_count() or 1) + 1)])
def test_workers_out_of_range_is_bad_input(tmp_path: Path, workers: str):
    done = subprocess.run(
        [
            *(sys.executable, "-m", "maas_lib", "--db", str(tmp_path / "x.db"), "serve"),
            *("--listen", "127.0.0.1:0", "--insecure-http", "--workers", workers),
        ],
        capture_output=True,
        text=True,
        timeout=patience(60),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"maasctl: error: --workers {workers}: must be 1 to {2 * (os.cpu_count() or 1)} "
        f"(twice this machine's {os.cpu_count() or 1} cores)"
    )
    assert not (tmp_path / "x.db").exists()


def test_a_worker_killed_stops_the_others_and_serve_exits_1(tmp_path: Path, inventory: Path):
    setup = SeededFleet(str(tmp_path / "api.db"), inventory)
    with service_process(setup.url, tmp_path, "--workers", "2") as svc:
        assert svc.proc is not None
        workers = sorted(_children(svc.proc.pid))
        os.kill(workers[0], signal.SIGKILL)
        assert svc.proc.wait(patience(30)) == 1, svc.logged()
        assert f"worker {workers[0]} ended (exit -9): stopping the others" in svc.logged()
        assert not Path(f"/proc/{workers[1]}").exists()


def test_sigterm_as_soon_as_it_serves_ends_every_worker_with_exit_0(
    tmp_path: Path, inventory: Path
):
    setup = SeededFleet(str(tmp_path / "api.db"), inventory)
    with service_process(setup.url, tmp_path, "--workers", "2") as svc:
        assert svc.proc is not None
        workers = _children(svc.proc.pid)
        svc.proc.send_signal(signal.SIGTERM)  # the workers may not listen yet
        assert svc.proc.wait(patience(30)) == 0, svc.logged()
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_opens_its_store_connections_before_the_first_call(
    pg_url: str, inventory: Path, tmp_path: Path, workers: str
):
    # The first burst of calls does not each wait for a connection of its own: every
    # worker holds its pool's 8 connections once serve says it serves, before any call.
    import psycopg

    from maas_lib.service.settings import ServiceSettings

    name = f"maas-warm-{os.getpid()}-{time.monotonic_ns()}"
    url = f"{pg_url}&application_name={name}"
    SeededFleet(url, inventory)
    size = ServiceSettings.model_validate({"db": url}).pool_size
    with (
        service_process(url, tmp_path, "--workers", workers) as svc,
        psycopg.connect(pg_url.split("?")[0], autocommit=True) as conn,
    ):
        # Once it says it serves, every worker serves (and holds its connections).
        (held,) = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
        assert held == size * int(workers), svc.logged()
        assert ' - "' not in svc.logged()  # no call was made (no access log line)
