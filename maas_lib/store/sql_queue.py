"""Requests from submission to their end, in portable SQL: intake, status, cancellation,
worker heartbeats and claims (with overlaps resolved in acceptance order as a request is
claimed), its hosts' progress and its events (see `sql_base` for the hooks it relies on).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from maas_lib.errors import InputError, NotFound
from maas_lib.models import (
    TERMINAL_REQUEST_STATES,
    BatchPolicy,
    HostStatus,
    HostTaskState,
    RequestHost,
    RequestOptions,
    RequestState,
    RequestStatus,
    RequestSummary,
)
from maas_lib.planner import resolve_overlaps
from maas_lib.store import sql_stats
from maas_lib.store.base import ClaimState, Event, NewRequest
from maas_lib.store.sql_base import NewId, SqlBase
from maas_lib.store.sql_leases import find_blockers
from maas_lib.telemetry.models import WorkerInfo
from maas_lib.timeutil import utc_now


def _after(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SqlQueue(SqlBase):
    # -- requests -------------------------------------------------------------------------

    def create_request(self, request: NewRequest) -> int:
        with self._write():
            self._lock_intake()
            request_id = self._insert_request(request)
        return request_id.value()

    def _insert_hosts(self, request_id: NewId, hosts: Sequence[str]) -> None:
        """A new request's hosts, in their order (a dialect may do it in one statement)."""
        self._many(
            f"INSERT INTO request_hosts (request_id, host) VALUES ({request_id.sql}, ?)",
            [(*request_id.params, h) for h in hosts],
        )

    def _insert_request(self, request: NewRequest) -> NewId:
        """Write a request, its hosts and its event (inside a write, after `_lock_intake`)."""
        now = utc_now()
        inserted = self._exec(
            "INSERT INTO requests (action, state, policy, options, patterns, image, "
            "submitted_by, os_user, host_count, created, updated) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
            (
                str(request.action),
                str(RequestState.ACCEPTED),
                request.policy.model_dump_json(),
                request.options.model_dump_json(exclude_defaults=True),
                json.dumps(request.patterns),
                request.image,
                request.submitted_by,
                request.os_user,
                len(request.hosts),
                now,
                now,
            ),
        )
        request_id = self._new_id(inserted, "requests")
        self._insert_hosts(request_id, request.hosts)
        self._event(
            "request_accepted",
            f"{request.action} of {len(request.hosts)} hosts accepted",
            request_id=request_id,
            actor=request.submitted_by,
        )
        return request_id

    def _request_row(self, request_id: int) -> dict[str, Any]:
        rows = self._rows("SELECT * FROM requests WHERE id = ?", (request_id,))
        if not rows:
            raise NotFound(f"unknown request id {request_id}")
        return rows[0]

    def _counts(self, ids: Sequence[int]) -> dict[int, dict[str, int]]:
        counts: dict[int, dict[str, int]] = {i: {} for i in ids}
        for rid, state, n in self._exec(
            "SELECT request_id, state, COUNT(*) FROM request_hosts "
            f"WHERE {self._in('request_id')} GROUP BY request_id, state ORDER BY request_id, state",
            (self._list(ids),),
        ):
            counts[rid][state] = n
        return counts

    @staticmethod
    def _summary_fields(row: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "action": row["action"],
            "state": row["state"],
            "submitted_by": row["submitted_by"],
            "created": row["created"],
            "updated": row["updated"],
            "image": row["image"],
            "host_count": row["host_count"],
            "cancel_requested": bool(row["cancel_requested"]),
            "counts": counts,
        }

    def get_request(self, request_id: int) -> RequestStatus:
        row = self._request_row(request_id)
        hosts = [
            RequestHost.model_validate(r)
            for r in self._rows(
                "SELECT host, state, reason, error_class, batch, holder_request AS holder "
                f"FROM request_hosts WHERE request_id = ? ORDER BY {self.ROW_ORDER}",
                (request_id,),
            )
        ]
        counts: dict[str, int] = {}
        for h in hosts:
            counts[h.state] = counts.get(h.state, 0) + 1
        return RequestStatus(
            **self._summary_fields(row, counts),
            os_user=row["os_user"],
            policy=BatchPolicy.from_stored(row["policy"]),
            options=RequestOptions.model_validate_json(row["options"] or "{}"),
            patterns=json.loads(row["patterns"]),
            reason=row["reason"],
            started=row["started"],
            finished=row["finished"],
            claimed_by=row["claimed_by"],
            hosts=hosts,
        )

    def list_requests(
        self, states: Sequence[RequestState] | None = None, limit: int | None = None
    ) -> list[RequestSummary]:
        sql = "SELECT * FROM requests"
        params: list[Any] = []
        if states:
            sql += f" WHERE {self._in('state')}"
            params.append(self._list([str(s) for s in states]))
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._rows(sql, params)
        counts = self._counts([r["id"] for r in rows])
        return [RequestSummary(**self._summary_fields(r, counts[r["id"]])) for r in rows]

    def cancel_request(self, request_id: int, *, actor: str) -> RequestState:
        now = utc_now()
        with self._write():
            row = self._exec(
                f"SELECT state FROM requests WHERE id = ?{self._for('FOR NO KEY UPDATE')}",
                (request_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"unknown request id {request_id}")
            state = RequestState(row[0])
            if state in TERMINAL_REQUEST_STATES:
                raise InputError(f"request {request_id} has already ended ({state})")
            if state is RequestState.ACCEPTED:
                self._exec(
                    "UPDATE requests SET state = ?, cancel_requested = 1, cancelled_by = ?, "
                    "updated = ?, finished = ?, reason = ? WHERE id = ?",
                    (
                        str(RequestState.CANCELLED),
                        actor,
                        now,
                        now,
                        f"cancelled by {actor} before it started",
                        request_id,
                    ),
                )
                self._exec(
                    "UPDATE request_hosts SET state = ?, reason = ?, finished = ? "
                    "WHERE request_id = ? AND state = ?",
                    (
                        str(HostTaskState.CANCELLED),
                        f"request cancelled by {actor}",
                        now,
                        request_id,
                        str(HostTaskState.PENDING),
                    ),
                )
                new_state = RequestState.CANCELLED
            else:
                self._exec(
                    "UPDATE requests SET cancel_requested = 1, cancelled_by = ?, updated = ? "
                    "WHERE id = ?",
                    (actor, now, request_id),
                )
                new_state = state
            self._event(
                "request_cancelled" if new_state is RequestState.CANCELLED else "cancel_requested",
                f"cancel by {actor} while {state}",
                request_id=request_id,
                actor=actor,
            )
        return new_state

    def events(self, request_id: int | None = None, limit: int = 100) -> list[Event]:
        if request_id is None:
            rows = self._rows("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._rows(
                "SELECT * FROM events WHERE request_id = ? ORDER BY id DESC LIMIT ?",
                (request_id, limit),
            )
        return [Event(**{**r, "data": json.loads(r["data"]) if r["data"] else {}}) for r in rows]

    # -- scheduler workers, request claims and the request's hosts ------------------------

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
        pending = self._pending(request_id)
        result = resolve_overlaps(
            request_id, pending, find_blockers(self, pending, request_id), policy.on_overlap
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

    def release_claim(self, request_id: int, worker: str) -> None:
        with self._write():
            self._exec(
                "UPDATE requests SET claimed_by = NULL, claim_expires = NULL "
                "WHERE id = ? AND claimed_by = ?",
                (request_id, worker),
            )

    def claim_state(self, request_id: int) -> ClaimState:
        row = self._exec(
            "SELECT state, cancel_requested, claimed_by FROM requests WHERE id = ?", (request_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"unknown request id {request_id}")
        return ClaimState(RequestState(row[0]), bool(row[1]), row[2])

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

    def set_waiting(self, request_id: int, waits: Mapping[str, int]) -> None:
        with self._write():
            self._set_waiting(request_id, waits)

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
