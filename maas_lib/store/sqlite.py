"""The SQLite job-queue store: one file, WAL mode, shared by many processes.

Writers take the write lock up front (`BEGIN IMMEDIATE`) so two processes never deadlock
upgrading a read lock, and every write transaction is short. Readers never block writers.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from maas_lib.errors import InputError, NotFound, StoreError
from maas_lib.models import (
    TERMINAL_REQUEST_STATES,
    BatchPolicy,
    HostRecord,
    HostSpec,
    HostStatus,
    HostTaskState,
    InstallReport,
    Lease,
    PoolSpec,
    RequestHost,
    RequestOptions,
    RequestState,
    RequestStatus,
    RequestSummary,
)
from maas_lib.patterns import glob_matches, literal_prefix
from maas_lib.store.base import (
    BeginResult,
    ClaimState,
    Event,
    LeaseResult,
    NewRequest,
    PatternMatch,
    Store,
)
from maas_lib.store.sqlite_schema import LATEST_VERSION, MIGRATIONS
from maas_lib.telemetry.models import OutcomePoint, Stats, StepHistogram
from maas_lib.timeutil import utc_now

#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 30.0

_HOST_COLUMNS = [name for name in HostSpec.model_fields if name != "name"]
# Re-imports update every declared field but never `status` (a host's standing) or `created`.
_UPSERT_HOST_SQL = (
    f"INSERT INTO hosts (name, {', '.join(_HOST_COLUMNS)}, created, updated) "
    f"VALUES (:name, {', '.join(':' + c for c in _HOST_COLUMNS)}, :now, :now) "
    "ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _HOST_COLUMNS)
    + ", updated = excluded.updated"
)


def _after(seconds: float) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


C = TypeVar("C", bound=type)


def _serialized(cls: C) -> C:
    """Make every public method hold the store's lock: one connection, many threads.

    The scheduler writes step records from many host threads; SQLite serialises writers
    anyway, and one lock keeps each thread's transaction from interleaving another's."""
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or not callable(fn):
            continue

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def locked(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
                with self._lock:
                    return fn(self, *args, **kwargs)

            return locked

        setattr(cls, name, wrap(fn))
    return cls


def _prefix_upper_bound(prefix: str) -> str:
    # Every string that starts with `prefix` sorts below prefix + U+10FFFF.
    return prefix + "\U0010ffff"


@_serialized
class SqliteStore(Store):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; every write is explicit.
            conn = sqlite3.connect(
                str(self.path),
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self.db = sqlite_utils.Database(conn)
        self.conn = conn
        try:
            self.db.enable_wal()
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"cannot use database {self.path}: {exc}") from exc

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database write lock from its first statement."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write():
            if not self.db["schema_migrations"].exists():
                self.db["schema_migrations"].create({"version": int, "applied": str}, pk="version")
            current = self._version()
            if current > LATEST_VERSION:
                raise StoreError(
                    f"database {self.path} has schema version {current}, newer than this "
                    f"maas-lib understands ({LATEST_VERSION}); upgrade maas-lib"
                )
            for version, migrate in MIGRATIONS:
                if version > current:
                    migrate(self.db)
                    self.conn.execute(
                        "INSERT INTO schema_migrations (version, applied) VALUES (?, ?)",
                        (version, utc_now()),
                    )

    def _version(self) -> int:
        row = self.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return row[0] or 0

    def close(self) -> None:
        self.conn.close()

    def schema_version(self) -> int:
        return self._version()

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict]:
        return list(self.db.query(sql, params))

    # -- hosts ----------------------------------------------------------------------------

    def upsert_hosts(
        self, hosts: Sequence[HostSpec], pools: Sequence[PoolSpec], *, actor: str
    ) -> tuple[int, int]:
        now = utc_now()
        names = [h.name for h in hosts]
        with self._write() as conn:
            existing = {
                r[0]
                for r in self.conn.execute(
                    "SELECT name FROM hosts WHERE name IN (SELECT value FROM json_each(?))",
                    (json.dumps(names),),
                )
            }
            new = [h for h in hosts if h.name not in existing]
            old = [h for h in hosts if h.name in existing]
            conn.executemany(
                _UPSERT_HOST_SQL,
                [
                    {**h.model_dump(mode="json"), "vars": json.dumps(h.vars), "now": now}
                    for h in hosts
                ],
            )
            self.db["pools"].upsert_all(
                [
                    {
                        "name": p.name,
                        "max_unavailable": None
                        if p.max_unavailable is None
                        else str(p.max_unavailable),
                        "updated": now,
                    }
                    for p in pools
                ],
                pk="name",
            )
            self._event(
                "hosts_imported",
                f"{len(new)} hosts added, {len(old)} updated",
                actor=actor,
                data={
                    "added": len(new),
                    "updated": len(old),
                    "pools": sorted({h.pool for h in hosts}),
                },
            )
        return len(new), len(old)

    def list_hosts(self, pool: str | None = None) -> list[HostRecord]:
        if pool is None:
            rows = self._rows("SELECT * FROM hosts ORDER BY name")
        else:
            rows = self._rows("SELECT * FROM hosts WHERE pool = ? ORDER BY name", (pool,))
        return [HostRecord.model_validate(r) for r in rows]

    def get_host(self, name: str) -> HostRecord:
        rows = self._rows("SELECT * FROM hosts WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"unknown host {name}")
        return HostRecord.model_validate(rows[0])

    def get_hosts(self, names: Sequence[str]) -> list[HostRecord]:
        rows = {
            r["name"]: r
            for r in self._rows(
                "SELECT * FROM hosts WHERE name IN (SELECT value FROM json_each(?))",
                (json.dumps(list(names)),),
            )
        }
        return [HostRecord.model_validate(rows[n]) for n in names if n in rows]

    def set_host_status(
        self, name: str, status: HostStatus, reason: str | None, *, actor: str
    ) -> HostStatus:
        with self._write() as conn:
            row = conn.execute("SELECT status FROM hosts WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"unknown host {name}")
            conn.execute(
                "UPDATE hosts SET status = ?, status_reason = ?, updated = ? WHERE name = ?",
                (str(status), reason, utc_now(), name),
            )
            self._event(
                "host_status",
                f"{row[0]} -> {status}" + (f": {reason}" if reason else ""),
                host=name,
                actor=actor,
            )
        return HostStatus(row[0])

    def list_pools(self) -> list[PoolSpec]:
        return [
            PoolSpec(name=r["name"], max_unavailable=r["max_unavailable"])
            for r in self._rows(
                "SELECT p.name, pl.max_unavailable FROM "
                "(SELECT DISTINCT pool AS name FROM hosts) p "
                "LEFT JOIN pools pl ON pl.name = p.name ORDER BY p.name"
            )
        ]

    def match_hosts(self, names: Sequence[str], globs: Sequence[str]) -> PatternMatch:
        status: dict[str, HostStatus] = {}
        if names:
            for name, st in self.conn.execute(
                "SELECT name, status FROM hosts WHERE name IN (SELECT value FROM json_each(?))",
                (json.dumps(list(names)),),
            ):
                status[name] = HostStatus(st)
        hits: dict[str, list[str]] = {}
        for pattern in globs:
            prefix = literal_prefix(pattern)
            if prefix:
                rows = self.conn.execute(
                    "SELECT name, status FROM hosts WHERE name >= ? AND name < ? ORDER BY name",
                    (prefix, _prefix_upper_bound(prefix)),
                ).fetchall()
            else:
                rows = self.conn.execute("SELECT name, status FROM hosts ORDER BY name").fetchall()
            candidates = dict(rows)
            hits[pattern] = glob_matches(pattern, candidates)
            status.update((n, HostStatus(candidates[n])) for n in hits[pattern])
        return PatternMatch(status=status, glob_hits=hits)

    # -- requests -------------------------------------------------------------------------

    def create_request(self, request: NewRequest) -> int:
        now = utc_now()
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO requests (action, state, policy, options, patterns, image, "
                "submitted_by, os_user, host_count, created, updated) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
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
            request_id = cur.lastrowid
            assert request_id is not None
            conn.executemany(
                "INSERT INTO request_hosts (request_id, host) VALUES (?, ?)",
                [(request_id, h) for h in request.hosts],
            )
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
        for rid, state, n in self.conn.execute(
            "SELECT request_id, state, COUNT(*) FROM request_hosts "
            "WHERE request_id IN (SELECT value FROM json_each(?)) GROUP BY request_id, state",
            (json.dumps(list(ids)),),
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
                "FROM request_hosts WHERE request_id = ? ORDER BY rowid",
                (request_id,),
            )
        ]
        counts: dict[str, int] = {}
        for h in hosts:
            counts[h.state] = counts.get(h.state, 0) + 1
        return RequestStatus(
            **self._summary_fields(row, counts),
            os_user=row["os_user"],
            policy=BatchPolicy.model_validate_json(row["policy"]),
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
            sql += " WHERE state IN (SELECT value FROM json_each(?))"
            params.append(json.dumps([str(s) for s in states]))
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._rows(sql, params)
        counts = self._counts([r["id"] for r in rows])
        return [RequestSummary(**self._summary_fields(r, counts[r["id"]])) for r in rows]

    def cancel_request(self, request_id: int, *, actor: str) -> RequestState:
        now = utc_now()
        with self._write() as conn:
            row = conn.execute("SELECT state FROM requests WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                raise NotFound(f"unknown request id {request_id}")
            state = RequestState(row[0])
            if state in TERMINAL_REQUEST_STATES:
                raise InputError(f"request {request_id} has already ended ({state})")
            if state is RequestState.ACCEPTED:
                conn.execute(
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
                conn.execute(
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
                conn.execute(
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

    # -- scheduler workers and request claims ---------------------------------------------

    def heartbeat(self, worker: str, *, ttl: float) -> None:
        import os
        import socket

        now = utc_now()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO workers (id, hostname, pid, started, heartbeat) VALUES (?,?,?,?,?) "
                "ON CONFLICT (id) DO UPDATE SET heartbeat = excluded.heartbeat",
                (worker, socket.gethostname(), os.getpid(), now, now),
            )
            conn.execute(
                "UPDATE requests SET claim_expires = ? WHERE claimed_by = ? AND state = ?",
                (_after(ttl), worker, str(RequestState.RUNNING)),
            )

    def retire_worker(self, worker: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker,))

    def claim_request(self, worker: str, *, ttl: float, resume_only: bool = False) -> int | None:
        now = utc_now()
        with self._write() as conn:
            row = conn.execute(
                "SELECT id, state, policy FROM requests WHERE (state = ? AND NOT ?) "
                "OR (state = ? AND (claimed_by IS NULL OR claim_expires < ?)) "
                "ORDER BY id LIMIT 1",
                (str(RequestState.ACCEPTED), resume_only, str(RequestState.RUNNING), now),
            ).fetchone()
            if row is None:
                return None
            request_id, state, policy = row
            conn.execute(
                "UPDATE requests SET state = ?, claimed_by = ?, claim_expires = ?, updated = ?, "
                "started = COALESCE(started, ?) WHERE id = ?",
                (str(RequestState.RUNNING), worker, _after(ttl), now, now, request_id),
            )
            conn.execute(
                "UPDATE host_leases SET holder = ? WHERE request_id = ?", (worker, request_id)
            )
            self._event(
                "request_claimed" if state == RequestState.ACCEPTED else "request_resumed",
                f"claimed by {worker}",
                request_id=request_id,
                actor=worker,
            )
            if state == RequestState.ACCEPTED:
                self._resolve_overlaps(request_id, BatchPolicy.model_validate_json(policy), now)
        return request_id

    def _resolve_overlaps(self, request_id: int, policy: BatchPolicy, now: str) -> None:
        """Inside the claim's transaction: drop (or mark waiting) every blocked host."""
        from maas_lib.planner import resolve_overlaps

        pending = [
            h
            for (h,) in self.conn.execute(
                "SELECT host FROM request_hosts WHERE request_id = ? AND state = ? ORDER BY rowid",
                (request_id, str(HostTaskState.PENDING)),
            )
        ]
        result = resolve_overlaps(
            request_id, pending, self._blockers(pending, request_id), policy.on_overlap
        )
        if result.dropped:
            # A 10,000-host request may drop most of its hosts: one joined UPDATE through
            # a keyed temp table beats one UPDATE per host.
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS overlap_drops "
                "(host TEXT PRIMARY KEY, holder INTEGER) WITHOUT ROWID"
            )
            self.conn.execute("DELETE FROM overlap_drops")
            self.conn.executemany(
                "INSERT INTO overlap_drops (host, holder) VALUES (?, ?)", result.dropped.items()
            )
            self.conn.execute(
                "UPDATE request_hosts SET state = ?, holder_request = d.holder, "
                "reason = 'held by request ' || d.holder, finished = ? "
                "FROM overlap_drops d "
                "WHERE request_hosts.request_id = ? AND request_hosts.host = d.host",
                (str(HostTaskState.DROPPED), now, request_id),
            )
            self.conn.execute("DELETE FROM overlap_drops")
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
        rows = self.conn.execute(
            # Only in-flight requests have hosts pending or running (ending a request ends
            # them all), so the host index alone answers the acceptance-order question.
            "SELECT j.value, COALESCE("
            " (SELECT l.request_id FROM host_leases l WHERE l.host = j.value"
            "  AND l.request_id != :r),"
            " (SELECT MIN(o.request_id) FROM request_hosts o WHERE o.host = j.value"
            "  AND o.state IN ('pending', 'running') AND o.request_id < :r)"
            ") FROM json_each(:hosts) j",
            {"r": rid, "hosts": json.dumps(list(hosts))},
        )
        return {h: holder for h, holder in rows if holder is not None}

    def blockers(self, hosts: Sequence[str], request_id: int | None = None) -> dict[str, int]:
        return self._blockers(hosts, request_id)

    def _set_waiting(self, request_id: int, waits: Mapping[str, int]) -> None:
        self.conn.executemany(
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
        return dict(self.conn.execute(sql + " GROUP BY state", params).fetchall())

    def pending_hosts(self, request_id: int) -> list[str]:
        return [
            h
            for (h,) in self.conn.execute(
                "SELECT host FROM request_hosts WHERE request_id = ? AND state = ? ORDER BY rowid",
                (request_id, str(HostTaskState.PENDING)),
            )
        ]

    def set_waiting(self, request_id: int, waits: Mapping[str, int]) -> None:
        with self._write():
            self._set_waiting(request_id, waits)

    def claim_state(self, request_id: int) -> ClaimState:
        row = self.conn.execute(
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
        with self._write() as conn:
            (claimed_by,) = conn.execute(
                "SELECT claimed_by FROM requests WHERE id = ?", (request_id,)
            ).fetchone()
            if claimed_by != holder:
                return BeginResult({}, dict.fromkeys(hosts, f"request claimed by {claimed_by}"))
            others = self._blockers(hosts, request_id)
            pool_of = dict(
                conn.execute(
                    "SELECT name, pool FROM hosts WHERE name IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(hosts)),),
                ).fetchall()
            )
            down = dict(
                conn.execute(
                    "SELECT h.pool, COUNT(*) FROM host_leases l JOIN hosts h ON h.name = l.host "
                    "GROUP BY h.pool"
                ).fetchall()
            )
            own = {
                h
                for (h,) in conn.execute(
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
                    conn.execute(
                        "INSERT INTO host_leases (host, request_id, holder, acquired) "
                        "VALUES (?, ?, ?, ?)",
                        (host, request_id, holder, now),
                    )
                    down[pool] = down.get(pool, 0) + 1
                started[host] = self._start_task(request_id, host, action, batch, now)
        return BeginResult(started=started, blocked=blocked)

    def cancel_pending(self, request_id: int, reason: str) -> int:
        with self._write() as conn:
            cur = conn.execute(
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
        with self._write() as conn:
            conn.execute(
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
        with self._write() as conn:
            if quarantine_running:
                cur = conn.execute(
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
            conn.execute(
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
            conn.execute("DELETE FROM host_leases WHERE request_id = ?", (request_id,))
            conn.execute(
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
        with self._write() as conn:
            conn.execute(
                "UPDATE requests SET claimed_by = NULL, claim_expires = NULL "
                "WHERE id = ? AND claimed_by = ?",
                (request_id, worker),
            )

    # -- host tasks and step results ------------------------------------------------------

    def _start_task(self, request_id: int, host: str, action: str, batch: int, now: str) -> int:
        (attempts,) = self.conn.execute(
            "SELECT COUNT(*) FROM host_tasks WHERE request_id = ? AND host = ?",
            (request_id, host),
        ).fetchone()
        cur = self.conn.execute(
            "INSERT INTO host_tasks (request_id, host, action, attempt, state, started, "
            "pool, hw_model, bmc_vendor) "
            "SELECT ?, ?, ?, ?, ?, ?, pool, hw_model, bmc_vendor FROM hosts WHERE name = ?",
            (request_id, host, action, attempts + 1, str(HostTaskState.RUNNING), now, host),
        )
        self.conn.execute(
            "UPDATE request_hosts SET state = ?, batch = ?, reason = NULL, "
            "started = COALESCE(started, ?) WHERE request_id = ? AND host = ?",
            (str(HostTaskState.RUNNING), batch, now, request_id, host),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def start_task(self, request_id: int, host: str, action: str, batch: int) -> int:
        with self._write():
            return self._start_task(request_id, host, action, batch, utc_now())

    def start_step(self, task_id: int, step: str) -> int:
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO step_results (task_id, request_id, host, action, step, outcome, "
                "started, pool) SELECT id, request_id, host, action, ?, 'running', ?, pool "
                "FROM host_tasks WHERE id = ?",
                (step, utc_now(), task_id),
            )
        if cur.rowcount != 1:
            raise NotFound(f"unknown host task {task_id}")
        assert cur.lastrowid is not None
        return cur.lastrowid

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
        with self._write() as conn:
            conn.execute(
                "UPDATE step_results SET outcome = ?, duration_s = ?, error_class = ?, "
                "error = ?, via = ?, finished = ? WHERE id = ?",
                (outcome, duration_s, error_class, error, via, utc_now(), step_id),
            )

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
        with self._write() as conn:
            row = conn.execute(
                "SELECT t.request_id, t.host, r.claimed_by FROM host_tasks t "
                "JOIN requests r ON r.id = t.request_id WHERE t.id = ?",
                (task_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"unknown host task {task_id}")
            request_id, host, claimed_by = row
            conn.execute(
                "UPDATE host_tasks SET state = ?, error_class = ?, error = ?, via = ?, "
                "finished = ? WHERE id = ?",
                (str(state), error_class, reason, via, now, task_id),
            )
            if holder is not None and claimed_by != holder:
                return  # taken over: the host's state and lease are the new holder's
            conn.execute(
                "UPDATE request_hosts SET state = ?, error_class = ?, reason = ?, finished = ? "
                "WHERE request_id = ? AND host = ?",
                (str(state), error_class, reason, now, request_id, host),
            )
            conn.execute(
                "DELETE FROM host_leases WHERE host = ? AND request_id = ?", (host, request_id)
            )
            if host_status is not None:
                conn.execute(
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
        with self._write() as conn:
            conn.execute(
                "UPDATE host_tasks SET state = 'interrupted', finished = ? WHERE id = ?",
                (utc_now(), task_id),
            )

    def interrupt_open_steps(self, request_id: int) -> list[tuple[str, str]]:
        with self._write() as conn:
            rows = conn.execute(
                "SELECT host, step FROM step_results WHERE request_id = ? AND outcome = 'running' "
                "ORDER BY id",
                (request_id,),
            ).fetchall()
            conn.execute(
                "UPDATE step_results SET outcome = 'interrupted', finished = ? "
                "WHERE request_id = ? AND outcome = 'running'",
                (utc_now(), request_id),
            )
            conn.execute(
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

    def acquire_leases(self, request_id: int, hosts: Sequence[str], *, holder: str) -> LeaseResult:
        now = utc_now()
        with self._write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO host_leases (host, request_id, holder, acquired) "
                "VALUES (?, ?, ?, ?)",
                [(h, request_id, holder, now) for h in hosts],
            )
            owners = dict(
                conn.execute(
                    "SELECT host, request_id FROM host_leases "
                    "WHERE host IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(hosts)),),
                ).fetchall()
            )
        acquired = [h for h in hosts if owners.get(h) == request_id]
        held_by = {h: owners[h] for h in hosts if owners.get(h) not in (None, request_id)}
        return LeaseResult(acquired=acquired, held_by=held_by)

    def holders(self, hosts: Sequence[str]) -> dict[str, int]:
        return dict(
            self.conn.execute(
                "SELECT host, request_id FROM host_leases "
                "WHERE host IN (SELECT value FROM json_each(?))",
                (json.dumps(list(hosts)),),
            ).fetchall()
        )

    def release_leases(self, request_id: int, hosts: Sequence[str] | None = None) -> int:
        with self._write() as conn:
            if hosts is None:
                cur = conn.execute("DELETE FROM host_leases WHERE request_id = ?", (request_id,))
            else:
                cur = conn.execute(
                    "DELETE FROM host_leases WHERE request_id = ? "
                    "AND host IN (SELECT value FROM json_each(?))",
                    (request_id, json.dumps(list(hosts))),
                )
            return cur.rowcount

    def inflight(self) -> list[Lease]:
        return [
            Lease.model_validate(r)
            for r in self._rows(
                "SELECT l.host, l.request_id, r.action, h.pool, l.holder, l.acquired "
                "FROM host_leases l JOIN requests r ON r.id = l.request_id "
                "JOIN hosts h ON h.name = l.host ORDER BY l.host"
            )
        ]

    # -- install-completion path ----------------------------------------------------------

    def set_install_target(self, host: str, image: str, request_id: int | None) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO install_targets (host, image, request_id, set_at) VALUES (?,?,?,?) "
                "ON CONFLICT (host) DO UPDATE SET image = excluded.image, "
                "request_id = excluded.request_id, set_at = excluded.set_at",
                (host, image, request_id, utc_now()),
            )

    def install_target(self, host: str) -> tuple[str, int | None] | None:
        row = self.conn.execute(
            "SELECT image, request_id FROM install_targets WHERE host = ?", (host,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def add_install_report(self, host: str, image: str, reason: str | None) -> InstallReport:
        now = utc_now()
        with self._write() as conn:
            target = conn.execute(
                "SELECT image, request_id FROM install_targets WHERE host = ?", (host,)
            ).fetchone()
            expected, request_id = target if target else (None, None)
            outcome = "failed" if reason is not None else "succeeded"
            cur = conn.execute(
                "INSERT INTO install_reports (host, image, outcome, reason, request_id, "
                "expected_image, reported) VALUES (?,?,?,?,?,?,?)",
                (host, image, outcome, reason, request_id, expected, now),
            )
            conn.execute("DELETE FROM install_targets WHERE host = ?", (host,))
            self._event(
                "install_reported",
                f"install of {image} {outcome}" + (f": {reason}" if reason else ""),
                request_id=request_id,
                host=host,
            )
        return InstallReport(
            id=cur.lastrowid,
            host=host,
            image=image,
            outcome=outcome,
            reason=reason,
            request_id=request_id,
            expected_image=expected,
            reported=now,
        )

    def last_install_report_id(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM install_reports").fetchone()[0]

    def install_reports(self, host: str | None = None, after_id: int = 0) -> list[InstallReport]:
        sql = "SELECT * FROM install_reports WHERE id > ?"
        params: list[Any] = [after_id]
        if host is not None:
            sql += " AND host = ?"
            params.append(host)
        return [InstallReport.model_validate(r) for r in self._rows(sql + " ORDER BY id", params)]

    # -- telemetry ------------------------------------------------------------------------

    def stats(self, since: str | None, action: str | None, pool: str | None) -> Stats:
        from maas_lib.store.sqlite_stats import stats

        return stats(self.conn, since, action, pool)

    def step_histograms(self, since: str | None, buckets: Sequence[float]) -> list[StepHistogram]:
        from maas_lib.store.sqlite_stats import step_histograms

        return step_histograms(self.conn, since, list(buckets))

    def outcome_series(
        self, since: str | None, bucket_s: int, action: str | None = None
    ) -> list[OutcomePoint]:
        from maas_lib.store.sqlite_stats import outcome_series

        return outcome_series(self.conn, since, bucket_s, action)

    # -- events ---------------------------------------------------------------------------

    def _event(
        self,
        kind: str,
        message: str,
        *,
        request_id: int | None = None,
        host: str | None = None,
        actor: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.conn.execute(
            "INSERT INTO events (ts, kind, request_id, host, actor, message, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (utc_now(), kind, request_id, host, actor, message, json.dumps(data) if data else None),
        )

    def record_event(
        self,
        kind: str,
        message: str,
        *,
        request_id: int | None = None,
        host: str | None = None,
        actor: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        with self._write():
            self._event(kind, message, request_id=request_id, host=host, actor=actor, data=data)

    def events(self, request_id: int | None = None, limit: int = 100) -> list[Event]:
        if request_id is None:
            rows = self._rows("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._rows(
                "SELECT * FROM events WHERE request_id = ? ORDER BY id DESC LIMIT ?",
                (request_id, limit),
            )
        return [Event(**{**r, "data": json.loads(r["data"]) if r["data"] else {}}) for r in rows]
