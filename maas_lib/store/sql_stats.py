"""`stats` for the SQL stores: aggregates computed by SQL over the step records.

Every query is answered from a covering index (schema v5): step percentiles walk
`idx_step_results_stats` to the nearest-rank offset (`ORDER BY … LIMIT 1 OFFSET k`), so
no row is loaded into Python but the answer, and every backend picks the same row. Groups
come back in a stated order (PostgreSQL's hash aggregates have none of their own). The
few expressions the dialects spell differently (timestamps, index hints, float sums) come
from the store's hooks, which compute the same figures as SQLite does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from maas_lib.classes import ErrorClass
from maas_lib.store.sql_base import SqlBase
from maas_lib.telemetry.models import (
    ActionStats,
    Breakdown,
    FleetNow,
    OutcomePoint,
    Runtime,
    Stats,
    StepHistogram,
    StepStats,
    WorkerState,
)


def age_s(beat: str, now: datetime) -> float:
    """Seconds since the ISO UTC timestamp `beat`."""
    return (now - datetime.fromisoformat(beat.replace("Z", "+00:00"))).total_seconds()


def _ranks(n: int) -> tuple[int, int]:
    """Nearest-rank (1-based) positions of p50 and p95 among n: ceil(p * n), in integers."""
    return (n + 1) // 2, (95 * n + 99) // 100


def _where(since: str | None, action: str | None, pool: str | None, ts: str) -> tuple[str, dict]:
    clauses, params = [], {}
    if since is not None:
        clauses.append(f"{ts} >= :since")
        params["since"] = since
    if action is not None:
        clauses.append("action = :action")
        params["action"] = action
    if pool is not None:
        clauses.append("pool = :pool")
        params["pool"] = pool
    return (" AND ".join(clauses) or "TRUE"), params


def _count_if(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def _steps(db: SqlBase, since, action, pool) -> dict[str, list[StepStats]]:
    where, params = _where(since, action, pool, "started")
    table = f"step_results {db._indexed_by('idx_step_results_stats')}"
    failed = _count_if("outcome != 'succeeded'")
    groups = db._exec(
        f"SELECT action, step, COUNT(duration_s), {failed}, MAX(duration_s) "
        f"FROM {table} WHERE {where} GROUP BY action, step ORDER BY action, step",
        params,
    ).fetchall()
    out: dict[str, list[StepStats]] = {}
    pick = (
        f"SELECT duration_s FROM {table} "
        f"WHERE action = :a AND step = :s AND duration_s IS NOT NULL AND {where} "
        "ORDER BY duration_s LIMIT 1 OFFSET :k"
    )
    for act, step, n, failed, longest in groups:
        p50 = p95 = None
        if n:
            r50, r95 = _ranks(n)
            p50 = db._exec(pick, {**params, "a": act, "s": step, "k": r50 - 1}).fetchone()[0]
            p95 = db._exec(pick, {**params, "a": act, "s": step, "k": r95 - 1}).fetchone()[0]
        out.setdefault(act, []).append(
            StepStats(step=step, count=n, failed=failed or 0, p50_s=p50, p95_s=p95, max_s=longest)
        )
    return out


def _queue_waits(db: SqlBase, since, action, pool) -> dict[str, Runtime]:
    """Accepted → first step started, per request (requests that started a step)."""
    where, params = _where(since, action, None, "r.created")
    where = where.replace("action =", "r.action =")
    pool_clause = ""
    if pool is not None:
        pool_clause = (
            " AND EXISTS (SELECT 1 FROM host_tasks t WHERE t.request_id = r.id AND t.pool = :pool)"
        )
        params["pool"] = pool
    rows = db._exec(
        "WITH f AS (SELECT r.action AS action, r.created AS created, (SELECT MIN(s.started) "
        "FROM step_results s WHERE s.request_id = r.id) AS first_step "
        f"FROM requests r WHERE {where}{pool_clause}), "
        f"w AS (SELECT action, {db._seconds_between('first_step', 'created')} AS wait FROM f), "
        "ranked AS (SELECT action, wait, ROW_NUMBER() OVER (PARTITION BY action ORDER BY wait) "
        "AS rn, COUNT(*) OVER (PARTITION BY action) AS n FROM w WHERE wait IS NOT NULL) "
        "SELECT action, MAX(n), MAX(CASE WHEN rn = (n + 1) / 2 THEN wait END), "
        "MAX(CASE WHEN rn = (95 * n + 99) / 100 THEN wait END), MAX(wait) "
        "FROM ranked GROUP BY action",
        params,
    ).fetchall()
    return {
        a: Runtime(count=n, p50_s=max(p50, 0.0), p95_s=max(p95, 0.0), max_s=max(mx, 0.0))
        for a, n, p50, p95, mx in rows
    }


def _requests(db: SqlBase, since, action, pool) -> dict[str, dict[str, int]]:
    where, params = _where(since, action, None, "created")
    if pool is not None:
        where += (
            " AND EXISTS (SELECT 1 FROM request_hosts rh JOIN hosts h ON h.name = rh.host "
            "WHERE rh.request_id = requests.id AND h.pool = :pool)"
        )
        params["pool"] = pool
    out: dict[str, dict[str, int]] = {}
    for act, state, n in db._exec(
        f"SELECT action, state, COUNT(*) FROM requests WHERE {where} "
        "GROUP BY action, state ORDER BY action, state",
        params,
    ):
        out.setdefault(act, {})[state] = n
    return out


def _outcomes(db: SqlBase, since, action, pool) -> list[tuple[Any, ...]]:
    where, params = _where(since, action, pool, "started")
    return db._exec(
        "SELECT action, state, error_class, pool, hw_model, bmc_vendor, COUNT(*) "
        f"FROM host_tasks {db._indexed_by('idx_host_tasks_stats')} "
        f"WHERE state IN ('succeeded', 'failed') AND {where} "
        "GROUP BY action, state, error_class, pool, hw_model, bmc_vendor "
        "ORDER BY action, state, error_class NULLS FIRST",
        params,
    ).fetchall()


def _add(target: Any, state: str, error_class: str | None, n: int) -> None:
    if state == "succeeded":
        target.succeeded += n
    else:
        target.failed += n
        key = error_class or ErrorClass.UNKNOWN
        target.failures_by_class[key] = target.failures_by_class.get(key, 0) + n


def _fleet(db: SqlBase) -> FleetNow:
    by_status = dict(
        db._exec("SELECT status, COUNT(*) FROM hosts GROUP BY status ORDER BY status").fetchall()
    )
    now = datetime.now(UTC)
    workers = []
    for wid, hostname, pid, beat in db._exec(
        # Workers that stopped cleanly are gone; one silent for a day is long dead.
        "SELECT id, hostname, pid, heartbeat FROM workers WHERE heartbeat >= ? "
        "ORDER BY heartbeat DESC LIMIT 50",
        ((now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),),
    ):
        workers.append(
            WorkerState(
                id=wid, hostname=hostname, pid=pid, heartbeat=beat, heartbeat_age_s=age_s(beat, now)
            )
        )
    return FleetNow(
        hosts=sum(by_status.values()),
        hosts_by_status=by_status,
        hosts_in_flight=db._exec("SELECT COUNT(*) FROM host_leases").fetchone()[0],
        requests_by_state=dict(
            db._exec(
                "SELECT state, COUNT(*) FROM requests GROUP BY state ORDER BY state"
            ).fetchall()
        ),
        workers=workers,
    )


def stats(db: SqlBase, since: str | None, action: str | None, pool: str | None) -> Stats:
    steps = _steps(db, since, action, pool)
    waits = _queue_waits(db, since, action, pool)
    requests = _requests(db, since, action, pool)
    actions: dict[str, ActionStats] = {}

    def get(act: str) -> ActionStats:
        if act not in actions:
            actions[act] = ActionStats(action=act)
        return actions[act]

    dims: dict[tuple[str, str, str], Breakdown] = {}
    for act, state, error_class, p, hw, vendor, n in _outcomes(db, since, action, pool):
        a = get(act)
        _add(a, state, error_class, n)
        for dim, value in (("by_pool", p), ("by_hw_model", hw), ("by_bmc_vendor", vendor)):
            if value is None:
                continue
            key = (act, dim, value)
            if key not in dims:
                dims[key] = Breakdown(value=value)
                getattr(a, dim).append(dims[key])
            _add(dims[key], state, error_class, n)
    for act, by_state in requests.items():
        get(act).requests_by_state = by_state
        get(act).requests = sum(by_state.values())
    for act, runtime in waits.items():
        get(act).queue_wait = runtime
    for act, step_list in steps.items():
        get(act).steps = step_list
    for a in actions.values():
        for dim in ("by_pool", "by_hw_model", "by_bmc_vendor"):
            getattr(a, dim).sort(key=lambda b: b.value)
    return Stats(
        since=since,
        action=action,
        pool=pool,
        actions=sorted(actions.values(), key=lambda a: a.action),
        fleet=_fleet(db),
    )


def step_histograms(db: SqlBase, since: str | None, buckets: list[float]) -> list[StepHistogram]:
    """Cumulative bucket counts per (action, step), one indexed scan (no rows to Python)."""
    where, params = _where(since, None, None, "started")
    cols = ", ".join(_count_if(f"duration_s <= :b{i}") for i in range(len(buckets)))
    params.update({f"b{i}": b for i, b in enumerate(buckets)})
    rows = db._exec(
        f"SELECT action, step, COUNT(duration_s), {db._total('duration_s')}"
        f"{', ' + cols if cols else ''} "
        f"FROM step_results {db._indexed_by('idx_step_results_stats')} "
        f"WHERE duration_s IS NOT NULL AND {where} GROUP BY action, step ORDER BY action, step",
        params,
    ).fetchall()
    return [
        StepHistogram(
            action=r[0],
            step=r[1],
            buckets=list(buckets),
            counts=[int(c or 0) for c in r[4:]],
            count=r[2],
            sum_s=r[3],
        )
        for r in rows
    ]


def outcome_series(
    db: SqlBase, since: str | None, bucket_s: int, action: str | None
) -> list[OutcomePoint]:
    """Hosts' task outcomes per action per time bucket (by when the task started)."""
    where, params = _where(since, action, None, "started")
    params["w"] = bucket_s
    ok, bad = _count_if("state = 'succeeded'"), _count_if("state = 'failed'")
    rows = db._exec(
        f"SELECT action, CAST({db._epoch_s('started')} / :w AS BIGINT) * :w AS b, {ok}, {bad} "
        f"FROM host_tasks {db._indexed_by('idx_host_tasks_stats')} "
        f"WHERE state IN ('succeeded', 'failed') AND {where} GROUP BY action, b ORDER BY b, action",
        params,
    ).fetchall()
    return [
        OutcomePoint(
            action=a,
            bucket=datetime.fromtimestamp(b, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            succeeded=ok,
            failed=bad,
        )
        for a, b, ok, bad in rows
    ]


class SqlStats(SqlBase):
    def stats(self, since: str | None, action: str | None, pool: str | None) -> Stats:
        return stats(self, since, action, pool)

    def step_histograms(self, since: str | None, buckets: Sequence[float]) -> list[StepHistogram]:
        return step_histograms(self, since, list(buckets))

    def outcome_series(
        self, since: str | None, bucket_s: int, action: str | None = None
    ) -> list[OutcomePoint]:
        return outcome_series(self, since, bucket_s, action)
