"""SQLite writers (maas_lib.store.sqlite_writers: this process's lock per database file,
then a file lock beside the database, both taken before SQLite's own): a writer waits for
another thread's or another process's write and starts when it ends, and gives up after
the busy timeout (`StoreUnavailable`, nothing written)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import maas_lib
from maas_lib.access.models import AuditEntry, Outcome
from maas_lib.errors import StoreUnavailable
from maas_lib.store import sqlite as sqlite_store
from maas_lib.store import sqlite_writers
from tests.conftest import patience


def _entry(verb: str) -> AuditEntry:
    return AuditEntry(principal="test", verb=verb, decision=Outcome.ALLOWED)


def _write_in_background(
    fleet: maas_lib.Fleet, verb: str
) -> tuple[threading.Event, list[BaseException]]:
    """An audit write in a thread of its own: set once it has ended, and what it raised."""
    done = threading.Event()
    failed: list[BaseException] = []

    def write() -> None:
        try:
            fleet.record_audit(_entry(verb))
        except BaseException as exc:
            failed.append(exc)
        done.set()

    threading.Thread(target=write, daemon=True).start()
    return done, failed


def test_a_write_held_past_the_timeout_is_store_unavailable(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    db = tmp_path / "w.db"
    with maas_lib.open_fleet(db) as holder, maas_lib.open_fleet(db) as other:
        with holder.store._write():  # another thread's write, held on
            done, failed = _write_in_background(other, "late")
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


#: Another maas-lib process: takes the database's writer locks, says "held", and keeps
#: them until its stdin closes.
_HOLDER = """
import sys
from maas_lib.store import sqlite_writers
with sqlite_writers.exclusive(sys.argv[1], 30):
    print("held", flush=True)
    sys.stdin.read()
"""


def _hold_in_another_process(db: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, os.path.realpath(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def _release(holder: subprocess.Popen[str]) -> None:
    """The other process lets go of the writer locks and ends."""
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(patience(10))


def test_a_write_waits_for_another_processs_writer_and_starts_when_it_lets_go(tmp_path: Path):
    db = tmp_path / "p.db"
    with maas_lib.open_fleet(db) as fleet:
        holder = _hold_in_another_process(db)
        try:
            done, failed = _write_in_background(fleet, "queued")
            # SQLite itself is not locked: only the other process's writer lock holds
            # this write back (before that lock existed, it was written at once).
            assert not done.wait(patience(0.5)), "wrote while another process was writing"
            with maas_lib.open_fleet(db) as reader:  # the waiting writer's store is busy
                assert [r.verb for r in reader.audit()] == []
        finally:
            _release(holder)
        assert done.wait(patience(10)), "the write did not start once the other process let go"
        assert not failed, failed
        assert [r.verb for r in fleet.audit()] == ["queued"]


def test_a_write_held_up_by_another_process_past_the_timeout_is_store_unavailable(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.3)
    db = tmp_path / "q.db"
    with maas_lib.open_fleet(db) as fleet:
        holder = _hold_in_another_process(db)
        try:
            try:
                fleet.record_audit(_entry("late"))
            except StoreUnavailable as exc:
                assert "locked" in str(exc)
            else:
                raise AssertionError("wrote while another process held the writer lock")
        finally:
            _release(holder)
        fleet.record_audit(_entry("after"))  # a timed-out wait left nothing held
        fleet.record_audit(_entry("again"))
        assert [r.verb for r in fleet.audit()] == ["again", "after"]


def test_a_process_that_dies_holding_the_writer_lock_frees_it(tmp_path: Path):
    db = tmp_path / "d.db"
    with maas_lib.open_fleet(db) as fleet:
        holder = _hold_in_another_process(db)
        holder.kill()
        holder.wait(patience(10))
        fleet.record_audit(_entry("after"))
        assert [r.verb for r in fleet.audit()] == ["after"]


def test_a_child_forked_during_a_write_does_not_keep_the_parents_writer_lock(tmp_path: Path):
    db = tmp_path / "f.db"
    with maas_lib.open_fleet(db) as fleet:
        read_end, write_end = os.pipe()
        with fleet.store._write():
            pid = os.fork()
            if pid == 0:  # the child lives on, idle, after the parent's write ends
                os.close(write_end)
                os.read(read_end, 1)
                os._exit(0)
        os.close(read_end)
        try:
            # Another process can write while the child still lives.
            other = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys, maas_lib\n"
                    "from maas_lib.access.models import AuditEntry, Outcome\n"
                    "with maas_lib.open_fleet(sys.argv[1]) as f:\n"
                    "    f.record_audit(AuditEntry(principal='t', verb='other', "
                    "decision=Outcome.ALLOWED))\n",
                    str(db),
                ],
                timeout=patience(20),
            )
            assert other.returncode == 0
        finally:
            os.close(write_end)
            os.waitpid(pid, 0)
        assert [r.verb for r in fleet.audit()] == ["other"]


def test_the_lock_file_is_readable_only_by_whoever_may_read_the_database(tmp_path: Path):
    db = tmp_path / "m.db"
    with maas_lib.open_fleet(db) as fleet:
        fleet.record_audit(_entry("x"))
    lock = Path(str(db) + sqlite_writers.SUFFIX)
    assert stat.S_IMODE(lock.stat().st_mode) == stat.S_IMODE(db.stat().st_mode) == 0o600
