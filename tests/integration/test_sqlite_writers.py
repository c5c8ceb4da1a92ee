"""SQLite writers of one process (maas_lib.store.sqlite: a lock per database file, taken
before SQLite's own): a writer waits for another thread's write, and gives up after the
busy timeout as it does for another process's (`StoreUnavailable`, nothing written)."""

from __future__ import annotations

import threading
from pathlib import Path

import maas_lib
from maas_lib.access.models import AuditEntry, Outcome
from maas_lib.errors import StoreUnavailable
from maas_lib.store import sqlite as sqlite_store
from tests.conftest import patience


def _entry(verb: str) -> AuditEntry:
    return AuditEntry(principal="test", verb=verb, decision=Outcome.ALLOWED)


def test_a_write_held_past_the_timeout_is_store_unavailable(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    db = tmp_path / "w.db"
    with maas_lib.open_fleet(db) as holder, maas_lib.open_fleet(db) as other:
        with holder.store._write():  # another thread's write, held on
            done = threading.Event()
            failed: list[BaseException] = []

            def write() -> None:
                try:
                    other.record_audit(_entry("late"))
                except BaseException as exc:
                    failed.append(exc)
                done.set()

            threading.Thread(target=write, daemon=True).start()
            assert done.wait(patience(10)), "a writer waited past the busy timeout"
        assert len(failed) == 1 and isinstance(failed[0], StoreUnavailable), failed
        assert "locked" in str(failed[0])
        other.record_audit(_entry("after"))  # the lock is free again
        assert [r.verb for r in other.audit()] == ["after"]


def test_writers_of_one_process_take_turns(tmp_path: Path):
    db = tmp_path / "t.db"
    with maas_lib.open_fleet(db):
        pass
    fleets = [maas_lib.open_fleet(db) for _ in range(4)]
    errors: list[BaseException] = []

    def write(fleet: maas_lib.Fleet, n: int) -> None:
        try:
            for i in range(25):
                fleet.record_audit(_entry(f"w{n}-{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f, n)) for n, f in enumerate(fleets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(patience(30))
    try:
        assert not errors, errors
        assert len(fleets[0].audit(limit=1000)) == 100
    finally:
        for f in fleets:
            f.close()
