"""The job queue in portable SQL: workers, claims, overlaps, host tasks, leases, telemetry.

Correctness across processes rests on three things, whatever the backend:
  * a request is claimed by selecting its row with a row lock that other claimers skip
    (`_for`), so two workers never claim the same request;
  * `host_leases` has the host as its primary key, and a lease is taken with
    `INSERT … ON CONFLICT DO NOTHING`: a conflict means another request holds the host;
  * `begin_hosts` counts a pool's leases only after `_lock_pools` has serialized it with
    every other writer of those pools' budgets, and re-reads its claim under a row lock
    (claim fencing, like `end_task(holder=…)`).
On SQLite the locks are no-ops: `BEGIN IMMEDIATE` already makes every write exclusive.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from maas_lib.errors import NotFound
from maas_lib.models import (
    BatchPolicy,
    HostStatus,
    HostTaskState,
    Lease,
    RequestState,
)
from maas_lib.store import sql_stats
from maas_lib.store.base import BeginResult, ClaimState
from maas_lib.store.sql_catalog import SqlCatalog
from maas_lib.telemetry.models import OutcomePoint, Stats, StepHistogram, WorkerInfo
from maas_lib.timeutil import utc_now


def _after(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SqlStore(SqlCatalog):
    # -- scheduler workers and request claims ---------------------------------------------

    def heartbeat(self, worker: str, *, ttl: float) -> None:
        now = utc_now()
        with self._write():
            self._exec(
                "INSERT INTO workers (id, hostname, pid, started, heartbeat) VALUES (?,?,?,?,?) "
                "ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat",
                (worker, socket.gethostname(), os.getpid(), now, now),
            )
            self._exec(
                "UPDATE requests SET claim_expires = ? WHERE claimed_by = ? AND state = ?",
                (_after(ttl), worker, str(RequestState.RUNNING)),
            )

    def retire_worker(self, worker: str) -> None:
        with self._write():
            self._exec("DELETE FROM workers WHERE id = ?", (worker,))

    def list_workers(self, ttl: float = 30.0) -> list[WorkerInfo]:
        held: dict[str, list[int]] = {}
        for rid, worker in self._exec(
            "SELECT id, claimed_by FROM requests WHERE state = ? AND claimed_by IS NOT NULL "
            "ORDER BY id",
            (str(RequestState.RUNNING),),
        ):
            held.setdefault(worker, []).append(rid)
        leased = dict(
            self._exec("SELECT holder, COUNT(*) FROM host_leases GROUP BY holder").fetchall()
        )
        now = datetime.now(UTC)
        workers = []
        for r in self._rows("SELECT * FROM workers ORDER BY id"):
            age = sql_stats.age_s(r["heartbeat"], now)
            workers.append(
                WorkerInfo(
                    **r,
                    heartbeat_age_s=age,
                    alive=age <= ttl,
                    requests=held.get(r["id"], []),
                    hosts_leased=leased.get(r["id"], 0),
                )
            )
        return workers

    def claim_request(self, worker: str, *, ttl: float, resume_only: bool = False) -> int | None:
        now = utc_now()
        with self._write():
            # Other claimers skip a row this one has locked (and one its holder is using).
            row = self._exec(
                "SELECT id, state, policy FROM requests WHERE (state = ? AND NOT ?) "
                "OR (state = ? AND (claimed_by IS NULL OR claim_expires < ?)) "
                "ORDER BY id LIMIT 1" + self._for("FOR NO KEY UPDATE SKIP LOCKED"),
                (str(RequestState.ACCEPTED), resume_only, str(RequestState.RUNNING), now),
            ).fetchone()
            if row is None:
                return None
            request_id, state, policy = row
            self._exec(
                "UPDATE requests SET state = ?, claimed_by = ?, claim_expires = ?, updated = ?, "
                "started = COALESCE(started, ?) WHERE id = ?",
                (str(RequestState.RUNNING), worker, _after(ttl), now, now, request_id),
            )
            self._exec(
                "UPDATE host_leases SET holder = ? WHERE request_id = ?", (worker, request_id)
            )
            self._event(
                "request_claimed" if state == RequestState.ACCEPTED else "request_resumed",
                f"claimed by {worker}",
                request_id=request_id,
                actor=worker,
            )
            stored = BatchPolicy.from_stored(policy)
            # A row that fails today's checks is failed by the scheduler, not planned.
            if state == RequestState.ACCEPTED and stored.stored_problem is None:
                self._resolve_overlaps(request_id, stored, now)
        return request_id

    def _resolve_overlaps(self, request_id: int, policy: BatchPolicy, now: str) -> None:
        """Inside the claim's transaction: drop (or mark waiting) every blocked host."""
        from maas_lib.planner import resolve_overlaps

        pending = self._pending(request_id)
        result = resolve_overlaps(
            request_id, pending, self._blockers(pending, request_id), policy.on_overlap
        )
        if result.dropped:
            # A 10,000-host request may drop most of its hosts: one joined UPDATE through
            # a keyed table of (host, holder) beats one UPDATE per host.
            with self._pairs(result.dropped, "d") as (source, params):
                self._exec(
                    "UPDATE request_hosts SET state = ?, holder_request = d.holder, "
                    "reason = 'held by request ' || d.holder, finished = ? "
                    f"FROM {source} "
                    "WHERE request_hosts.request_id = ? AND request_hosts.host = d.host",
                    (str(HostTaskState.DROPPED), now, *params, request_id),
                )
            holders = sorted(set(result.dropped.values()))
            self._event(
                "hosts_dropped",
                f"{len(result.dropped)} hosts dropped: held by request "
                + ", ".join(map(str, holders)),
                request_id=request_id,
                data={"hosts": len(result.dropped), "holders": holders},
            )
        if result.waiting:
            self._set_waiting(request_id, result.waiting)
            self._event(
                "hosts_waiting",
                f"{len(result.waiting)} hosts wait for earlier requests",
                request_id=request_id,
                data={"holders": sorted(set(result.waiting.values()))},
            )

    def _blockers(self, hosts: Sequence[str], request_id: int | None) -> dict[str, int]:
        rid = request_id if request_id is not None else 2**62
        rows = self._exec(
            # Only in-flight requests have hosts pending or running (ending a request ends
            # them all), so the host index alone answers the acceptance-order question.
            "SELECT j.value, COALESCE("
            " (SELECT l.request_id FROM host_leases l WHERE l.host = j.value"
            "  AND l.request_id != :r),"
            " (SELECT MIN(o.request_id) FROM request_hosts o WHERE o.host = j.value"
            "  AND o.state IN ('pending', 'running') AND o.request_id < :r)"
            f") FROM {self._each(':hosts', 'j')}",
            {"r": rid, "hosts": self._list(hosts)},
        )
        return {h: holder for h, holder in rows if holder is not None}

    def blockers(self, hosts: Sequence[str], request_id: int | None = None) -> dict[str, int]:
        return self._blockers(hosts, request_id)

    def _set_waiting(self, request_id: int, waits: Mapping[str, int]) -> None:
        self._many(
            "UPDATE request_hosts SET reason = ?, holder_request = ? "
            "WHERE request_id = ? AND host = ? AND state = ?",
            [
                (
                    f"waiting for request {holder}",
                    holder,
                    request_id,
                    host,
                    str(HostTaskState.PENDING),
                )
                for host, holder in waits.items()
            ],
        )

    def host_counts(self, request_id: int, batch: int | None = None) -> dict[str, int]:
        sql = "SELECT state, COUNT(*) FROM request_hosts WHERE request_id = ?"
        params: list[Any] = [request_id]
        if batch is not None:
            sql += " AND batch = ?"
            params.append(batch)
        return dict(self._exec(sql + " GROUP BY state ORDER BY state", params).fetchall())

    def _pending(self, request_id: int) -> list[str]:
        return [
            h
            for (h,) in self._exec(
                "SELECT host FROM request_hosts WHERE request_id = ? AND state = ? "
                f"ORDER BY {self.ROW_ORDER}",
                (request_id, str(HostTaskState.PENDING)),
            )
        ]

    def pending_hosts(self, request_id: int) -> list[str]:
        return self._pending(request_id)

    def set_waiting(self, request_id: int, waits: Mapping[str, int]) -> None:
        with self._write():
            self._set_waiting(request_id, waits)

    def claim_state(self, request_id: int) -> ClaimState:
        row = self._exec(
            "SELECT state, cancel_requested, claimed_by FROM requests WHERE id = ?", (request_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"unknown request id {request_id}")
        return ClaimState(RequestState(row[0]), bool(row[1]), row[2])

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
            others = self._blockers(hosts, request_id)
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
            for host in hosts:
                if host in others:
                    blocked[host] = f"waiting for request {others[host]}"
                    continue
                if host not in own:
                    pool = pool_of[host]
                    limit = limits.get(pool)
                    if limit is not None and down.get(pool, 0) >= limit:
                        blocked[host] = f"pool {pool} at its budget of {limit} unavailable"
                        continue
                    if not self._lease(host, request_id, holder, now):
                        blocked[host] = f"waiting for request {self._holder(host)}"
                        continue
                    down[pool] = down.get(pool, 0) + 1
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

    def cancel_pending(self, request_id: int, reason: str) -> int:
        with self._write():
            cur = self._exec(
                "UPDATE request_hosts SET state = ?, reason = ?, finished = ? "
                "WHERE request_id = ? AND state = ?",
                (
                    str(HostTaskState.CANCELLED),
                    reason,
                    utc_now(),
                    request_id,
                    str(HostTaskState.PENDING),
                ),
            )
            if cur.rowcount:
                self._event(
                    "hosts_cancelled",
                    f"{cur.rowcount} hosts cancelled: {reason}",
                    request_id=request_id,
                )
            return cur.rowcount

    def record_batch(self, request_id: int, idx: int, size: int, state: str) -> None:
        now = utc_now()
        done = state != "running"
        with self._write():
            self._exec(
                "INSERT INTO batches (request_id, idx, state, size, started, finished) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT (request_id, idx) DO UPDATE SET "
                "state = excluded.state, size = excluded.size, "
                "finished = excluded.finished",
                (request_id, idx, state, size, now, now if done else None),
            )
            self._event(
                f"batch_{'started' if not done else state}",
                f"batch {idx}: {size} hosts {state}",
                request_id=request_id,
                data={"batch": idx, "size": size},
            )

    def finish_request(
        self,
        request_id: int,
        worker: str,
        state: RequestState,
        reason: str | None,
        *,
        quarantine_running: bool = False,
    ) -> None:
        now = utc_now()
        with self._write():
            if quarantine_running:
                cur = self._exec(
                    "UPDATE hosts SET status = ?, status_reason = ?, updated = ? WHERE name IN "
                    "(SELECT host FROM request_hosts WHERE request_id = ? AND state = ?) "
                    "AND status = ?",
                    (
                        str(HostStatus.QUARANTINED),
                        f"request {request_id}: ended {state} with its wipe unfinished",
                        now,
                        request_id,
                        str(HostTaskState.RUNNING),
                        str(HostStatus.ACTIVE),
                    ),
                )
                if cur.rowcount:
                    self._event(
                        "hosts_quarantined",
                        f"{cur.rowcount} hosts quarantined: wipe unfinished",
                        request_id=request_id,
                    )
            self._exec(
                "UPDATE request_hosts SET state = ?, reason = COALESCE(reason, ?), finished = ? "
                "WHERE request_id = ? AND state IN (?, ?)",
                (
                    str(HostTaskState.CANCELLED),
                    f"request ended {state}",
                    now,
                    request_id,
                    str(HostTaskState.PENDING),
                    str(HostTaskState.RUNNING),
                ),
            )
            self._exec("DELETE FROM host_leases WHERE request_id = ?", (request_id,))
            self._exec(
                "UPDATE requests SET state = ?, reason = ?, claimed_by = NULL, "
                "claim_expires = NULL, updated = ?, finished = ? WHERE id = ?",
                (str(state), reason, now, now, request_id),
            )
            self._event(
                f"request_{state}",
                f"request {state}" + (f": {reason}" if reason else ""),
                request_id=request_id,
                actor=worker,
            )

    def release_claim(self, request_id: int, worker: str) -> None:
        with self._write():
            self._exec(
                "UPDATE requests SET claimed_by = NULL, claim_expires = NULL "
                "WHERE id = ? AND claimed_by = ?",
                (request_id, worker),
            )

    # -- host tasks and step results ------------------------------------------------------

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

    def start_step(self, task_id: int, step: str) -> int:
        with self._write():
            rows = self._exec(
                "INSERT INTO step_results (task_id, request_id, host, action, step, outcome, "
                "started, pool) SELECT id, request_id, host, action, ?, 'running', ?, pool "
                "FROM host_tasks WHERE id = ? RETURNING id",
                (step, utc_now(), task_id),
            ).fetchall()
        if len(rows) != 1:
            raise NotFound(f"unknown host task {task_id}")
        return rows[0][0]

    def end_step(
        self,
        step_id: int,
        outcome: str,
        duration_s: float,
        *,
        error_class: str | None = None,
        error: str | None = None,
        via: str | None = None,
    ) -> None:
        with self._write():
            self._exec(
                "UPDATE step_results SET outcome = ?, duration_s = ?, error_class = ?, "
                "error = ?, via = ?, finished = ? WHERE id = ?",
                (outcome, duration_s, error_class, error, via, utc_now(), step_id),
            )

    def discard_step(self, step_id: int) -> None:
        with self._write():
            self._exec("DELETE FROM step_results WHERE id = ?", (step_id,))

    def end_task(
        self,
        task_id: int,
        state: HostTaskState,
        *,
        error_class: str | None = None,
        reason: str | None = None,
        via: str | None = None,
        host_status: HostStatus | None = None,
        holder: str | None = None,
    ) -> None:
        now = utc_now()
        with self._write():
            row = self._exec(
                "SELECT t.request_id, t.host, r.claimed_by FROM host_tasks t "
                "JOIN requests r ON r.id = t.request_id WHERE t.id = ?"
                + self._for("FOR SHARE OF r"),
                (task_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"unknown host task {task_id}")
            request_id, host, claimed_by = row
            self._exec(
                "UPDATE host_tasks SET state = ?, error_class = ?, error = ?, via = ?, "
                "finished = ? WHERE id = ?",
                (str(state), error_class, reason, via, now, task_id),
            )
            if holder is not None and claimed_by != holder:
                return  # taken over: the host's state and lease are the new holder's
            self._exec(
                "UPDATE request_hosts SET state = ?, error_class = ?, reason = ?, finished = ? "
                "WHERE request_id = ? AND host = ?",
                (str(state), error_class, reason, now, request_id, host),
            )
            self._exec(
                "DELETE FROM host_leases WHERE host = ? AND request_id = ?", (host, request_id)
            )
            if host_status is not None:
                self._exec(
                    "UPDATE hosts SET status = ?, status_reason = ?, updated = ? WHERE name = ?",
                    (str(host_status), f"request {request_id}: {reason or state}", now, host),
                )
                self._event(
                    "host_status",
                    f"-> {host_status}" + (f": {reason}" if reason else ""),
                    request_id=request_id,
                    host=host,
                )

    def interrupt_task(self, task_id: int) -> None:
        with self._write():
            self._exec(
                "UPDATE host_tasks SET state = 'interrupted', finished = ? WHERE id = ?",
                (utc_now(), task_id),
            )

    def interrupt_open_steps(self, request_id: int) -> list[tuple[str, str]]:
        with self._write():
            rows = self._exec(
                "SELECT host, step FROM step_results WHERE request_id = ? AND outcome = 'running' "
                "ORDER BY id",
                (request_id,),
            ).fetchall()
            self._exec(
                "UPDATE step_results SET outcome = 'interrupted', finished = ? "
                "WHERE request_id = ? AND outcome = 'running'",
                (utc_now(), request_id),
            )
            self._exec(
                "UPDATE host_tasks SET state = 'interrupted', finished = ? "
                "WHERE request_id = ? AND state = ?",
                (utc_now(), request_id, str(HostTaskState.RUNNING)),
            )
        return [(h, s) for h, s in rows]

    def steps(self, request_id: int, host: str | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT s.host, t.attempt, s.step, s.outcome, s.error_class, s.error, s.via, "
            "s.started, s.finished, s.duration_s FROM step_results s "
            "JOIN host_tasks t ON t.id = s.task_id WHERE s.request_id = ?"
        )
        params: list[Any] = [request_id]
        if host is not None:
            sql += " AND s.host = ?"
            params.append(host)
        return self._rows(sql + " ORDER BY s.id", params)

    # -- leases ---------------------------------------------------------------------------

    def inflight(self) -> list[Lease]:
        return [
            Lease.model_validate(r)
            for r in self._rows(
                "SELECT l.host, l.request_id, r.action, h.pool, l.holder, l.acquired "
                "FROM host_leases l JOIN requests r ON r.id = l.request_id "
                "JOIN hosts h ON h.name = l.host ORDER BY l.host"
            )
        ]

    # -- telemetry ------------------------------------------------------------------------

    def stats(self, since: str | None, action: str | None, pool: str | None) -> Stats:
        return sql_stats.stats(self, since, action, pool)

    def step_histograms(self, since: str | None, buckets: Sequence[float]) -> list[StepHistogram]:
        return sql_stats.step_histograms(self, since, list(buckets))

    def outcome_series(
        self, since: str | None, bucket_s: int, action: str | None = None
    ) -> list[OutcomePoint]:
        return sql_stats.outcome_series(self, since, bucket_s, action)
