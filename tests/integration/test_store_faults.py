"""The scheduler against a failing store: a SQLite file on a full disk, a PostgreSQL backend
terminated under it. The store is real (a small tmpfs, a real server); the BMCs are the
in-process simulator, whose machines keep their own power history.

Judged by what a user sees: every request ends once the fault clears, no host was power
cycled twice, no completed step ran again, and a worker that gives up says why in one line.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import maas_lib
from maas_lib.models import HostSpec
from maas_lib.sim.inproc import InProcessFleet
from tests.conftest import patience

HOSTS_PER_REQUEST = 3


def _hosts(n: int) -> list[HostSpec]:
    return [
        HostSpec(
            name=f"node{i}",
            pool="rack",
            bmc_address="127.0.0.1",
            bmc_port=6230,
            bmc_system=f"node-{i}",
            bmc_credential="lab",
        )
        for i in range(n)
    ]


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_CRED_LAB_USERNAME", "admin")
    monkeypatch.setenv("MAAS_CRED_LAB_PASSWORD", "secret")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (root only: mounting needs it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _on_first_power_off(machine: Any, fault: Callable[[], None]) -> None:
    """Run `fault` once, inside the BMC call that starts `machine`'s power-off: the store
    fails while that host's power cycle is in flight."""
    original = machine.request_power
    fired = threading.Event()

    def request_power(state: str) -> None:
        if state == "off" and not fired.is_set():
            fired.set()
            fault()
        original(state)

    machine.request_power = request_power


def _setup(fleet: maas_lib.Fleet, sim: InProcessFleet, requests: int) -> list[int]:
    hosts = _hosts(HOSTS_PER_REQUEST * requests)
    fleet.store.upsert_hosts(hosts, [], actor="test")
    for h in hosts:
        sim.add_host(h, power="on")
    names = [h.name for h in hosts]
    return [
        fleet.submit(
            "power-cycle",
            names[i * HOSTS_PER_REQUEST : (i + 1) * HOSTS_PER_REQUEST],
            batch_size=1,
        ).id
        for i in range(requests)
    ]


def _run_in_thread(worker: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["report"] = worker.run(until_idle=True)
        except BaseException as exc:  # judged by the test, not lost in a thread
            out["error"] = exc

    t = threading.Thread(target=target, name="worker", daemon=True)
    t.start()
    return t, out


def _assert_done_once(fleet: maas_lib.Fleet, sim: InProcessFleet, rids: list[int]) -> None:
    """Every request succeeded; every machine went off and on exactly once; no step that
    succeeded ran again."""
    for rid in rids:
        st = fleet.status(rid)
        assert st.state == "succeeded", (rid, st.state, [(h.host, h.state) for h in st.hosts])
        for h in st.hosts:
            succeeded = [
                s["step"] for s in fleet.store.steps(rid, h.host) if s["outcome"] == "succeeded"
            ]
            assert sorted(succeeded) == sorted(set(succeeded)), (h.host, succeeded)
    for name, machine in sim.by_name().items():
        assert [state for _, state in machine.history] == ["off", "on"], name


def test_a_full_disk_mid_power_cycle_pauses_the_worker_until_it_clears(
    small_disk: Path, creds: None
) -> None:
    sim = InProcessFleet()
    with maas_lib.open_fleet(small_disk / "f.db") as fleet:
        rids = _setup(fleet, sim, requests=2)
        fault: dict[str, Any] = {}

        def fill() -> None:
            fault["filler"] = _fill(small_disk)
            fault["at"] = time.time()
            # Hosts whose task has a step on record: only their steps may be in flight.
            fault["started"] = {s["host"] for rid in rids for s in fleet.store.steps(rid)}

        # node1 is the second host of the first request: one host is done by then.
        _on_first_power_off(sim.by_name()["node1"], fill)
        worker = fleet.worker(driver_factory=sim.driver_factory, poll=0.05)
        thread, out = _run_in_thread(worker)
        _wait_for(lambda: "started" in fault)
        # The fault holds until the worker reports the store failing (or, on a worker
        # that does not notice, until it has ended).
        guard = getattr(worker, "guard", None)
        _wait_for(lambda: not thread.is_alive() or (guard is not None and guard.failing.is_set()))
        time.sleep(1.0)  # a window in which a worker that ignored the fault would go on
        cleared = time.time()
        fault["filler"].unlink()
        thread.join(timeout=patience(120))
        assert not thread.is_alive()
        # No host was started while the store was failing.
        for name, machine in sim.by_name().items():
            if name not in fault["started"]:
                assert not [t for t, _ in machine.history if fault["at"] <= t <= cleared], name
        assert "error" not in out, out.get("error")
        assert out["report"].errors == []
        assert sorted(out["report"].finished) == rids
        _assert_done_once(fleet, sim, rids)


def test_a_worker_that_gives_up_stops_cleanly_and_the_next_one_resumes(
    small_disk: Path, creds: None
) -> None:
    from maas_lib.errors import StoreFailing

    sim = InProcessFleet()
    with maas_lib.open_fleet(small_disk / "f.db") as fleet:
        rids = _setup(fleet, sim, requests=2)
        fillers: list[Path] = []
        _on_first_power_off(sim.by_name()["node1"], lambda: fillers.append(_fill(small_disk)))
        worker = fleet.worker(
            driver_factory=sim.driver_factory, poll=0.05, store_retry_s=1, claim_ttl=1
        )
        with pytest.raises(StoreFailing) as info:
            worker.run(until_idle=True)
        assert str(info.value).startswith("store failing: database ")
        assert "database or disk is full" in str(info.value)
        # node1 is off, mid power cycle; its request is left running, to be resumed.
        assert [s for _, s in sim.by_name()["node1"].history] == ["off"]
        assert fleet.status(rids[0]).state == "running"
        fillers[0].unlink()
        # The claims expire (claim_ttl=1); the next worker resumes both requests.
        report = fleet.run(driver_factory=sim.driver_factory, poll=0.05, claim_ttl=1)
        assert report.errors == []
        _assert_done_once(fleet, sim, rids)


def test_maasctl_run_on_a_failing_store_exits_1_with_one_line(
    small_disk: Path, creds: None
) -> None:
    import sqlite3

    db = small_disk / "f.db"
    with maas_lib.open_fleet(db) as fleet:
        fleet.store.upsert_hosts(_hosts(1), [], actor="test")
        fleet.submit("power-on", ["node0"])
    # Keep the WAL and its index in place (the last connection to close removes them).
    keep = sqlite3.connect(db)
    keep.execute("SELECT 1 FROM hosts").fetchall()
    try:
        _fill(small_disk)
        proc = subprocess.run(
            [sys.executable, "-m", "maas_lib", "run", "--until-idle", "--store-retry", "1"],
            env={**os.environ, "MAAS_DB": str(db)},
            capture_output=True,
            text=True,
            timeout=patience(120),
        )
    finally:
        keep.close()
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("maasctl: error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"maasctl: error: store failing: database {db}: ")
    assert "database or disk is full" in errors[0]


class CuttableProxy:
    """A TCP relay to PostgreSQL that can be cut (every connection dropped, new ones
    refused: a server restarting, or a failover in progress) and restored on its port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listen()

    def _listen(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(16)
        self.port = srv.getsockname()[1]
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._server.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self._listen()


def test_a_postgresql_restart_mid_power_cycle_pauses_the_worker_until_it_is_back(
    pg_url: str, creds: None
) -> None:
    if "@127.0.0.1:5432/" not in pg_url:
        pytest.skip("the relay test expects the server at 127.0.0.1:5432")
    proxy = CuttableProxy(("127.0.0.1", 5432))
    url = pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
    sim = InProcessFleet()
    try:
        with maas_lib.open_fleet(url) as fleet:
            rids = _setup(fleet, sim, requests=2)
            fault: dict[str, Any] = {}

            def restart() -> None:
                with maas_lib.open_fleet(pg_url) as direct:
                    fault["started"] = {s["host"] for rid in rids for s in direct.store.steps(rid)}
                fault["at"] = time.time()
                proxy.cut()

            _on_first_power_off(sim.by_name()["node1"], restart)
            worker = fleet.worker(driver_factory=sim.driver_factory, poll=0.05)
            thread, out = _run_in_thread(worker)
            _wait_for(lambda: "at" in fault)
            guard = getattr(worker, "guard", None)
            _wait_for(
                lambda: not thread.is_alive() or (guard is not None and guard.failing.is_set())
            )
            time.sleep(1.0)  # a window in which a worker that ignored the fault would go on
            back = time.time()
            proxy.restore()
            thread.join(timeout=patience(120))
            assert not thread.is_alive()
            for name, machine in sim.by_name().items():
                if name not in fault["started"]:
                    assert not [t for t, _ in machine.history if fault["at"] <= t <= back], name
            assert "error" not in out, out.get("error")
            assert out["report"].errors == []
            assert sorted(out["report"].finished) == rids
            _assert_done_once(fleet, sim, rids)
    finally:
        proxy.cut()


def _terminate(pg_server: str, application_name: str) -> int:
    import psycopg

    from maas_lib.store.pg_url import parse_pg_url

    with psycopg.connect(parse_pg_url(pg_server).conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return len(rows)


def test_a_terminated_postgresql_backend_mid_power_cycle_is_survived(
    pg_server: str, pg_url: str, creds: None
) -> None:
    app = f"maas-fault-{uuid.uuid4().hex[:8]}"
    url = f"{pg_url}&application_name={app}"
    sim = InProcessFleet()
    with maas_lib.open_fleet(url) as fleet:
        rids = _setup(fleet, sim, requests=2)
        terminated: list[int] = []
        _on_first_power_off(
            sim.by_name()["node1"], lambda: terminated.append(_terminate(pg_server, app))
        )
        report = fleet.run(driver_factory=sim.driver_factory, poll=0.05)
        assert terminated == [1]  # the worker's one connection
        assert report.errors == []
        assert sorted(report.finished) == rids
        _assert_done_once(fleet, sim, rids)


def test_a_claim_taken_over_while_the_store_was_locked_stops_the_hosts_steps(
    tmp_path: Path, creds: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the write lock past the busy timeout and, meanwhile, another
    worker takes the request over: once the store works again, the host in flight takes
    no further step (the new holder resumes it)."""
    import sqlite3

    from maas_lib.store import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    db = tmp_path / "f.db"
    sim = InProcessFleet()
    with maas_lib.open_fleet(db) as fleet:
        rids = _setup(fleet, sim, requests=1)
        lock: dict[str, sqlite3.Connection] = {}

        def take_over() -> None:
            conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE requests SET claimed_by = 'other-worker', "
                "claim_expires = '9999-01-01T00:00:00Z' WHERE id = ?",
                (rids[0],),
            )
            lock["conn"] = conn

        node1 = sim.by_name()["node1"]
        _on_first_power_off(node1, take_over)
        worker = fleet.worker(driver_factory=sim.driver_factory, poll=0.05)
        thread, out = _run_in_thread(worker)
        _wait_for(lambda: "conn" in lock)
        guard = getattr(worker, "guard", None)
        _wait_for(lambda: not thread.is_alive() or (guard is not None and guard.failing.is_set()))
        lock["conn"].execute("COMMIT")  # the store works again; the request is another's

        def node1_went_on() -> bool:
            """node1's task was left (interrupted), or it took its next step."""
            with sqlite3.connect(db) as conn:
                task = conn.execute(
                    "SELECT state FROM host_tasks WHERE request_id = ? AND host = 'node1' "
                    "ORDER BY id DESC LIMIT 1",
                    (rids[0],),
                ).fetchone()
                steps = conn.execute(
                    "SELECT step FROM step_results WHERE request_id = ? AND host = 'node1'",
                    (rids[0],),
                ).fetchall()
            return task[0] == "interrupted" or ("power-on",) in steps

        _wait_for(lambda: node1_went_on() or not thread.is_alive())
        assert [s for _, s in node1.history] == ["off"], "a step ran under another's claim"
        # The other worker "dies": its claim expires, and ours resumes the request.
        lock["conn"].execute(
            "UPDATE requests SET claim_expires = '2000-01-01T00:00:00Z' WHERE id = ?", (rids[0],)
        )
        lock["conn"].close()
        thread.join(timeout=patience(120))
        assert not thread.is_alive()
        assert "error" not in out, out.get("error")
        _assert_done_once(fleet, sim, rids)


def test_a_claim_committed_as_the_store_failed_is_run_once_the_store_is_back(
    tmp_path: Path, creds: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim's COMMIT can reach the database even though the worker saw the connection
    fail: the worker holds a request it does not know it has. Once the store is back it
    runs every request it holds that nothing runs (else the request would hang, its claim
    renewed by every heartbeat)."""
    import sqlite3

    from maas_lib.store import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    db = tmp_path / "f.db"
    sim = InProcessFleet()
    with maas_lib.open_fleet(db) as fleet:
        rids = _setup(fleet, sim, requests=2)
        # One request at a time: the second is left accepted while the first runs.
        worker = fleet.worker(driver_factory=sim.driver_factory, poll=0.05, max_requests=1)
        lock: dict[str, sqlite3.Connection] = {}

        def claim_behind_its_back() -> None:
            conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE requests SET state = 'running', claimed_by = ?, "
                "claim_expires = '9999-01-01T00:00:00Z' WHERE id = ?",
                (worker.id, rids[1]),
            )
            lock["conn"] = conn

        _on_first_power_off(sim.by_name()["node1"], claim_behind_its_back)
        thread, out = _run_in_thread(worker)
        _wait_for(lambda: "conn" in lock)
        guard = getattr(worker, "guard", None)
        _wait_for(lambda: not thread.is_alive() or (guard is not None and guard.failing.is_set()))
        lock["conn"].execute("COMMIT")
        lock["conn"].close()
        thread.join(timeout=patience(60))
        hung = thread.is_alive()
        worker.stop()
        thread.join(timeout=patience(60))
        assert not hung, "the worker never ran a request it held"
        assert "error" not in out, out.get("error")
        assert sorted(out["report"].finished) == rids
        _assert_done_once(fleet, sim, rids)
