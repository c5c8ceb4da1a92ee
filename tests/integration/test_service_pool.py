"""The API's store connections (maas_lib.service.pool.FleetPool) on a real SQLite store: at
most `size` calls hold one at once, the rest wait their turn, and a failed call gives its
turn back."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import maas_lib
from maas_lib.errors import StoreUnavailable
from maas_lib.service.pool import FleetPool
from tests.conftest import patience


@pytest.fixture
def pool(tmp_path: Path, inventory: Path):
    db = tmp_path / "pool.db"
    with maas_lib.open_fleet(db) as fleet:
        fleet.import_hosts([str(inventory)])
    pool = FleetPool(str(db), 2)
    yield pool
    pool.close()


def _third_call(pool: FleetPool) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """A call in a thread of its own: `got` once it holds a fleet; it ends when `done` is set."""
    got, done = threading.Event(), threading.Event()

    def call() -> None:
        with pool.fleet() as fleet:
            fleet.hosts()
            got.set()
            done.wait(patience(30))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, got, done


def test_calls_beyond_size_wait_for_a_connection(pool: FleetPool):
    first, second = pool.fleet(), pool.fleet()
    a, b = first.__enter__(), second.__enter__()
    assert a is not b and a.hosts() and b.hosts()
    thread, got, done = _third_call(pool)
    try:
        assert not got.wait(0.3), "a third call got a connection while two were in use"
        first.__exit__(None, None, None)
        assert got.wait(patience(10)), "the waiting call did not get the freed connection"
    finally:
        done.set()
        second.__exit__(None, None, None)
        thread.join(patience(10))


def test_a_failed_call_gives_its_turn_back(pool: FleetPool):
    for _ in range(3):  # more failures than turns: each one's turn came back
        with pytest.raises(StoreUnavailable), pool.fleet():
            raise StoreUnavailable("connection lost")
    thread, got, done = _third_call(pool)
    done.set()
    assert got.wait(patience(10)), "no connection left after failed calls"
    thread.join(patience(10))
