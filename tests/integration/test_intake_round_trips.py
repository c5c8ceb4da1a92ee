"""How often an operator's submission waits on PostgreSQL while it holds the intake lock
(every other submission and host import waits that long): read from libpq's own trace of
the real connection, from the lock's statement to the transaction's end. A wait is a
message the client sends (Flush, Sync) that the server answers before the client goes on.
The hosts' pools and their grants are read together, and the audit record's id is not read
back: 5 waits (the key, pools and grants, the request's id, the pipeline's end, COMMIT);
there were 7."""

from __future__ import annotations

from pathlib import Path

from psycopg.pq import Trace

from maas_lib.access.guard import GuardedFleet
from maas_lib.access.models import Role
from maas_lib.access.principal import Principal
from tests.apiserver import SeededFleet

OPS = Principal("token:ops", Role.OPERATOR, ("web-team",))


def _waits_holding_the_lock(trace: str) -> int:
    lines = [line.split("\t") for line in trace.splitlines()]
    start = next(i for i, m in enumerate(lines) if "pg_advisory_xact_lock" in m[-1])
    end = next(i for i, m in enumerate(lines) if i > start and "COMMIT" in m[-1])
    end = next(i for i, m in enumerate(lines) if i > end and m[2:3] == ["ReadyForQuery"])
    return sum(
        1
        for here, after in zip(lines[start:end], lines[start + 1 : end + 1], strict=True)
        if here[0] == "F" and here[2] in ("Flush", "Sync") and after[0] == "B"
    )


def test_a_submission_waits_on_postgresql_five_times_holding_the_intake_lock(
    pg_url: str, inventory: Path, tmp_path: Path
):
    setup = SeededFleet(pg_url, inventory)
    with setup.fleet() as fleet:
        pgconn = fleet.store.conn.pgconn  # type: ignore[attr-defined]
        traced = tmp_path / "libpq.trace"
        with open(traced, "w") as out:
            pgconn.trace(out.fileno())
            pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
            try:
                result = GuardedFleet(fleet, OPS).submit(
                    "reboot", ["web01", "web02"], idempotency_key="k-1"
                )
            finally:
                pgconn.untrace()
        assert result.hosts == 2
        assert _waits_holding_the_lock(traced.read_text()) == 5
        record = fleet.audit(decision="allowed")[0]
        assert (record.verb, record.target) == ("submit", f"request:{result.id}")
