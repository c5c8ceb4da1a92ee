"""`stats` over 1,000,000 step records: target < 1 s.

Builds a fresh SQLite fleet (10,000 hosts in 10 pools, 3 hardware models, 2 BMC vendors)
and writes step records in bulk, shaped as the scheduler writes them (requests, request
hosts, host tasks with 5% failures, steps per action), then times `Fleet.stats()` —
everything, one action, the last 7 days, one pool — median of --runs. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import maas_lib
from maas_lib.models import BatchPolicy, HostSpec
from maas_lib.scheduler.steps import ACTION_STEPS

ACTIONS = ["reimage", "reboot", "power-cycle"]
CLASSES = ["unreachable", "auth", "timeout", "install_failed", "install_timeout"]


def populate(fleet: maas_lib.Fleet, steps_wanted: int, hosts_per_request: int) -> int:
    rng = random.Random(5)
    hosts = [
        HostSpec(
            name=f"n{i:05d}",
            pool=f"pool{i % 10}",
            bmc_address="10.0.0.1",
            hw_model=f"model-{i % 3}",
            bmc_vendor=f"vendor-{i % 2}",
        )
        for i in range(10_000)
    ]
    fleet.store.upsert_hosts(hosts, [], actor="bench")
    meta = {h.name: (h.pool, h.hw_model, h.bmc_vendor) for h in hosts}
    conn = fleet.store.conn  # type: ignore[attr-defined]
    policy = BatchPolicy().model_dump_json()
    start = datetime.now(UTC) - timedelta(days=30)
    reqs, rhs, tasks, steps = [], [], [], []
    rid = tid = sid = 0
    while sid < steps_wanted:
        rid += 1
        action = ACTIONS[rid % len(ACTIONS)]
        names = [s.name for s in ACTION_STEPS[maas_lib.models.Action(action)]]
        t0 = start + timedelta(minutes=rid * 10)
        created = t0.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        picked = rng.sample(list(meta), hosts_per_request)
        reqs.append(
            (rid, action, "succeeded", policy, "[]", "bench", "bench", len(picked), created)
        )
        for host in picked:
            tid += 1
            ok = rng.random() > 0.05
            error_class = None if ok else rng.choice(CLASSES)
            state = "succeeded" if ok else "failed"
            t = t0 + timedelta(seconds=rng.expovariate(1 / 30))
            stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            rhs.append((rid, host, state, error_class))
            tasks.append((tid, rid, host, action, 1, state, error_class, stamp, *meta[host]))
            for k, step in enumerate(names):
                sid += 1
                last = not ok and k == len(names) - 1
                steps.append(
                    (
                        sid,
                        tid,
                        rid,
                        host,
                        action,
                        step,
                        "failed" if last else "succeeded",
                        error_class if last else None,
                        stamp,
                        rng.lognormvariate(0, 1),
                        meta[host][0],
                    )
                )
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO requests (id, action, state, policy, patterns, submitted_by, os_user, "
        "host_count, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?9)",
        reqs,
    )
    conn.executemany(
        "INSERT INTO request_hosts (request_id, host, state, error_class) VALUES (?,?,?,?)", rhs
    )
    conn.executemany(
        "INSERT INTO host_tasks (id, request_id, host, action, attempt, state, error_class, "
        "started, pool, hw_model, bmc_vendor) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        tasks,
    )
    conn.executemany(
        "INSERT INTO step_results (id, task_id, request_id, host, action, step, outcome, "
        "error_class, started, duration_s, pool) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        steps,
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    return sid


def timed(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return round(statistics.median(samples), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--hosts-per-request", type=int, default=500)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, maas_lib.open_fleet(Path(tmp) / "s.db") as fleet:
        t0 = time.perf_counter()
        n = populate(fleet, args.steps, args.hosts_per_request)
        build_s = time.perf_counter() - t0
        result = fleet.stats()
        total = sum(s.count for a in result.actions for s in a.steps)
        if total != n:
            raise SystemExit(f"stats counted {total} steps, wrote {n}")
        figures = {
            "all_s": timed(lambda: fleet.stats(), args.runs),
            "one_action_s": timed(lambda: fleet.stats(action="reimage"), args.runs),
            "since_7d_s": timed(lambda: fleet.stats("7d"), args.runs),
            "one_pool_s": timed(lambda: fleet.stats(pool="pool3"), args.runs),
        }
    print(
        json.dumps(
            {
                "bench": "stats",
                "step_records": n,
                "build_s": round(build_s, 1),
                **figures,
                "target_s": 1.0,
                "meets_target": max(figures.values()) < 1.0,
            }
        )
    )


if __name__ == "__main__":
    main()
