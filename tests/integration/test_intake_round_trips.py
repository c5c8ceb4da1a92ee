"""How often an operator's submission waits on PostgreSQL while it holds the intake lock
(every other submission and host import waits that long): read from libpq's own trace of
the real connection, from the lock's statement to the transaction's end. A wait is a
message the client sends (Flush, Sync) that the server answers before the client goes on.
Authorized before the lock (checked under it by the server: `maas_access_gate`), its
request's id not read back (`currval`), BEGIN, the lock, every write and COMMIT are sent
in one pipeline: the only wait is COMMIT's answer, none before COMMIT is sent. There were
5 (the key, pools and grants, the request's id, the pipeline's end, COMMIT), and 7."""

from __future__ import annotations

from pathlib import Path

from psycopg.pq import Trace

from maas_lib.access.guard import GuardedFleet, stored_key
from maas_lib.access.models import Role
from maas_lib.access.principal import Principal
from tests.apiserver import SeededFleet

OPS = Principal("token:ops", Role.OPERATOR, ("web-team",))


def _waits_holding_the_lock(trace: str) -> tuple[int, int]:
    """(waits from the lock's statement to COMMIT being sent, waits to the end)."""
    lines = [line.split("\t") for line in trace.splitlines()]
    start = next(i for i, m in enumerate(lines) if "pg_advisory_xact_lock" in m[-1])
    commit = next(i for i, m in enumerate(lines) if i > start and "COMMIT" in m[-1])
    end = next(i for i, m in enumerate(lines) if i > commit and m[2:3] == ["ReadyForQuery"])

    def waits(first: int, last: int) -> int:
        return sum(
            1
            for here, after in zip(lines[first:last], lines[first + 1 : last + 1], strict=True)
            if here[0] == "F" and here[2] in ("Flush", "Sync") and after[0] == "B"
        )

    return waits(start, commit), waits(start, end)


def test_a_submission_waits_on_postgresql_only_for_commit_holding_the_intake_lock(
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
        assert _waits_holding_the_lock(traced.read_text()) == (0, 1)
        record = fleet.audit(decision="allowed")[0]
        assert (record.verb, record.target) == ("submit", f"request:{result.id}")
        key = fleet.idempotent_request("token:ops", stored_key("k-1"))
        assert key is not None and key[0] == result.id
        assert [h.host for h in fleet.status(result.id).hosts] == ["web01", "web02"]
