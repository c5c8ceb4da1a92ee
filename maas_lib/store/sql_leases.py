"""Which request holds which host, in portable SQL: overlaps in acceptance order, pool
budgets and leases, taken as a batch's hosts start (see `sql_base` for the hooks).

A lease is a `host_leases` row keyed by host, taken with `INSERT … ON CONFLICT DO
NOTHING`: a conflict means another request holds the host. `begin_hosts` counts a pool's
leases only after `_lock_pools` has serialized it with every other writer of those pools'
budgets, hands the counts to `planner.admit` (the rule `submit --dry-run` shows), and
re-reads its claim under a row lock (claim fencing, like `end_task`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from maas_lib.models import HostTaskState, Lease
from maas_lib.planner import PoolLimits, admit
from maas_lib.store.base import BeginResult
from maas_lib.store.sql_base import SqlBase
from maas_lib.timeutil import utc_now


def find_blockers(db: SqlBase, hosts: Sequence[str], request_id: int | None) -> dict[str, int]:
    """For each of `hosts` another request stands in the way of (for `request_id`; None:
    a request newer than all): that request's id — see `Store.blockers`."""
    rid = request_id if request_id is not None else 2**62
    rows = db._exec(
        # Only in-flight requests have hosts pending or running (ending a request ends
        # them all), so the host index alone answers the acceptance-order question.
        "SELECT j.value, COALESCE("
        " (SELECT l.request_id FROM host_leases l WHERE l.host = j.value"
        "  AND l.request_id != :r),"
        " (SELECT MIN(o.request_id) FROM request_hosts o WHERE o.host = j.value"
        "  AND o.state IN ('pending', 'running') AND o.request_id < :r)"
        f") FROM {db._each(':hosts', 'j')}",
        {"r": rid, "hosts": db._list(hosts)},
    )
    return {h: holder for h, holder in rows if holder is not None}


class SqlLeases(SqlBase):
    def blockers(self, hosts: Sequence[str], request_id: int | None = None) -> dict[str, int]:
        return find_blockers(self, hosts, request_id)

    def begin_hosts(
        self,
        request_id: int,
        hosts: Sequence[str],
        *,
        batch: int,
        action: str,
        holder: str,
        limits: Mapping[str, int],
    ) -> BeginResult:
        now = utc_now()
        started: dict[str, int] = {}
        blocked: dict[str, str] = {}
        with self._write():
            # The claim, re-read under a lock a takeover waits for (claim fencing).
            (claimed_by,) = self._exec(
                "SELECT claimed_by FROM requests WHERE id = ?" + self._for("FOR SHARE"),
                (request_id,),
            ).fetchone()
            if claimed_by != holder:
                return BeginResult({}, dict.fromkeys(hosts, f"request claimed by {claimed_by}"))
            pool_of = dict(
                self._exec(
                    f"SELECT name, pool FROM hosts WHERE {self._in('name')}",
                    (self._list(hosts),),
                ).fetchall()
            )
            # Budgets are exact only if nobody else starts hosts in these pools until we
            # commit: count the pools' leases after taking them.
            self._lock_pools(sorted(set(pool_of.values())))
            others = find_blockers(self, hosts, request_id)
            down = dict(
                self._exec(
                    "SELECT h.pool, COUNT(*) FROM host_leases l JOIN hosts h ON h.name = l.host "
                    "GROUP BY h.pool"
                ).fetchall()
            )
            own = {
                h
                for (h,) in self._exec(
                    "SELECT host FROM host_leases WHERE request_id = ?", (request_id,)
                )
            }
            # The one admission rule, the one `submit --dry-run` shows: hosts this request
            # does not hold yet go down only while their pool has room.
            budget = PoolLimits(dict(limits))
            _, deferred = admit(
                [h for h in hosts if h not in others and h not in own], pool_of, down, budget
            )
            for host in deferred:
                pool = pool_of[host]
                blocked[host] = f"pool {pool} at its budget of {budget.limits[pool]} unavailable"
            for host in hosts:
                if host in others:
                    blocked[host] = f"waiting for request {others[host]}"
                    continue
                if host in blocked:
                    continue
                if host not in own and not self._lease(host, request_id, holder, now):
                    blocked[host] = f"waiting for request {self._holder(host)}"
                    continue
                started[host] = self._start_task(request_id, host, action, batch, now)
        return BeginResult(started=started, blocked=blocked)

    def _lease(self, host: str, request_id: int, holder: str, now: str) -> bool:
        """Take one host's lease; False if another request took it first."""
        return bool(
            self._exec(
                "INSERT INTO host_leases (host, request_id, holder, acquired) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (host) DO NOTHING RETURNING host",
                (host, request_id, holder, now),
            ).fetchall()
        )

    def _holder(self, host: str) -> int | None:
        row = self._exec("SELECT request_id FROM host_leases WHERE host = ?", (host,)).fetchone()
        return None if row is None else row[0]

    def _start_task(self, request_id: int, host: str, action: str, batch: int, now: str) -> int:
        (attempts,) = self._exec(
            "SELECT COUNT(*) FROM host_tasks WHERE request_id = ? AND host = ?",
            (request_id, host),
        ).fetchone()
        (task_id,) = self._exec(
            "INSERT INTO host_tasks (request_id, host, action, attempt, state, started, "
            "pool, hw_model, bmc_vendor) "
            "SELECT ?, ?, ?, ?, ?, ?, pool, hw_model, bmc_vendor FROM hosts WHERE name = ? "
            "RETURNING id",
            (request_id, host, action, attempts + 1, str(HostTaskState.RUNNING), now, host),
        ).fetchall()[0]
        self._exec(
            "UPDATE request_hosts SET state = ?, batch = ?, reason = NULL, "
            "started = COALESCE(started, ?) WHERE request_id = ? AND host = ?",
            (str(HostTaskState.RUNNING), batch, now, request_id, host),
        )
        return task_id

    def inflight(self) -> list[Lease]:
        return [
            Lease.model_validate(r)
            for r in self._rows(
                "SELECT l.host, l.request_id, r.action, h.pool, l.holder, l.acquired "
                "FROM host_leases l JOIN requests r ON r.id = l.request_id "
                "JOIN hosts h ON h.name = l.host ORDER BY l.host"
            )
        ]
