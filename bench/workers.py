"""Scheduler workers side by side on PostgreSQL: does throughput hold as workers are added?

A simulated power-cycle of --hosts hosts (default 2,000) run by 1, 2 and 4 scheduler
workers (--worker-counts) sharing one PostgreSQL store. Workers spread work by request
(each request is claimed by one worker), so the hosts are submitted as --requests
(default 16) disjoint power-cycle requests of equal size (batches of --batch-size,
default 25%; --max-failures 0). Every host is on first, so each is really cycled: two
recorded steps (power-off, power-on) per host.

Each worker is an OS process of its own (multiprocessing, spawn) running
`Fleet.worker(...).run(until_idle=True)` on the store, with the BMC replaced by
`maas_lib.sim.inproc` (no sockets; power changes complete at once) whose every call
sleeps --bmc-latency seconds (default 0.05, `InProcessFleet(latency=...)`), so workers
wait on their BMCs as with real ones; --concurrency (default 64) BMC calls in flight per
worker, the scheduler's default --max-requests (8) requests side by side per worker.
Every process has its own simulated machines, all on; which worker reaches a machine is
up to the claims. Processes are started and ready (store open, machines built) before
the clock starts; the clock stops when the last worker returns.

For each worker count: a fresh PostgreSQL schema (--pg URL, default $MAAS_BENCH_PG or the
local `test` database; dropped afterwards) with the same hosts and requests, median of
--runs runs (default 1, each on a fresh schema, to keep the bench to about a minute; on
a 2-core machine with other load one run's wall time can move by a third, so compare
with --runs 3 or more).

Prints one JSON line:
- workers: per worker count, wall_s (median) and hosts_per_s (hosts / wall_s),
  ratio_to_baseline (hosts_per_s / the first count's), every run's wall time
  (wall_s_runs), the CPU seconds of all worker processes together (worker_cpu_s, median)
  and the requests each worker finished (requests_per_worker, first run);
- throughput_holds: hosts_per_s with every worker count >= 0.9 x the baseline's (the
  first count, 1 worker by default); the bench exits 1 if not;
- sqlite (with --sqlite): the same on one SQLite file per run, for comparison only.

After every run the store must show every request succeeded and every host with exactly
two steps, both succeeded, and the workers' machines must add up to one power-off and one
power-on per host (every host cycled once, by one worker); otherwise the bench exits 1.
If PostgreSQL cannot be reached, `pg` says "skipped: <reason>" and the bench exits 1
(use --no-pg --sqlite to run on SQLite alone; throughput_holds is then SQLite's).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pgutil

import maas_lib
from maas_lib.models import HostSpec
from maas_lib.sim.inproc import InProcessFleet
from maas_lib.store.pg_url import parse_pg_url

BASE_PORT = 20_000
STEPS_PER_HOST = 2  # power-cycle: power-off, power-on
HOLD_RATIO = 0.9


def bench_hosts(n: int, pools: int) -> list[HostSpec]:
    """One simulated BMC per host: 127.0.0.1 with a port of its own."""
    return [
        HostSpec(
            name=f"w{i:05d}",
            pool=f"pool{i % pools:02d}",
            bmc_address="127.0.0.1",
            bmc_port=BASE_PORT + i,
            bmc_credential="bench",
        )
        for i in range(n)
    ]


def worker_main(url: str, opts: dict[str, Any], start: Any, ready: Any, results: Any) -> None:
    """One scheduler worker process: build the machines, open the store, say ready, wait
    for the start, run until no request is left anywhere, report."""
    logging.basicConfig(level=logging.WARNING)
    try:
        sim = InProcessFleet(latency=opts["bmc_latency"])
        for h in bench_hosts(opts["hosts"], opts["pools"]):
            sim.add_host(h, power="on")
        with maas_lib.open_fleet(url) as fleet:
            worker = fleet.worker(
                driver_factory=sim.driver_factory,
                poll=opts["poll"],
                poll_interval=opts["poll"],
                concurrency=opts["concurrency"],
                max_requests=opts["max_requests"],
            )
            ready.put(os.getpid())
            start.wait()
            c0 = time.process_time()
            report = worker.run(until_idle=True)
            cpu_s = time.process_time() - c0
        touched = {
            m.name: (m.power_offs, m.power_ons, m.power)
            for m in sim.by_name().values()
            if m.power_offs or m.power_ons
        }
        results.put(
            {
                "pid": os.getpid(),
                "finished": report.finished,
                "let_go": report.let_go,
                "errors": report.errors,
                "cpu_s": cpu_s,
                "machines": touched,
            }
        )
    except BaseException as exc:
        ready.put(os.getpid())  # never leave the parent waiting
        results.put({"pid": os.getpid(), "crashed": f"{type(exc).__name__}: {exc}"})
        raise


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    per_worker: list[int]
    problems: list[str]


def submit(url: str, hosts: list[HostSpec], args: argparse.Namespace) -> list[int]:
    """The fleet's hosts, then --requests disjoint power-cycles covering them."""
    per = math.ceil(len(hosts) / args.requests)
    names = [h.name for h in hosts]
    with maas_lib.open_fleet(url) as fleet:
        fleet.store.upsert_hosts(hosts, [], actor="bench")
        return [
            fleet.submit(
                "power-cycle",
                names[k : k + per],
                batch_size=args.batch_size,
                max_failures="0",
                submitted_by="bench",
            ).id
            for k in range(0, len(names), per)
        ]


def check(url: str, hosts: list[HostSpec], ids: list[int], reports: list[dict]) -> list[str]:
    """Everything that says the run did not cycle every host exactly once."""
    problems = []
    for r in reports:
        if "crashed" in r:
            problems.append(f"worker {r['pid']} crashed: {r['crashed']}")
        elif r["errors"] or r["let_go"]:
            problems.append(f"worker {r['pid']}: errors {r['errors'][:3]}, let go {r['let_go']}")
    names = {h.name for h in hosts}
    with maas_lib.open_fleet(url) as fleet:
        steps_by_host: Counter[str] = Counter()
        for rid in ids:
            status = fleet.status(rid)
            if str(status.state) != "succeeded":
                problems.append(f"request {rid} ended {status.state}: {status.reason}")
            for s in fleet.steps(rid):
                if s["outcome"] == "succeeded":
                    steps_by_host[s["host"]] += 1
                else:
                    problems.append(f"request {rid}: step did not succeed: {s}")
    wrong = [n for n in sorted(names) if steps_by_host[n] != STEPS_PER_HOST]
    if wrong:
        problems.append(
            f"{len(wrong)} hosts without exactly {STEPS_PER_HOST} succeeded steps, e.g. "
            f"{wrong[0]}: {steps_by_host[wrong[0]]}"
        )
    offs: Counter[str] = Counter()
    ons: Counter[str] = Counter()
    for r in reports:
        for name, (n_off, n_on, power) in r.get("machines", {}).items():
            offs[name] += n_off
            ons[name] += n_on
            if power != "on":
                problems.append(f"{name} left {power} by worker {r['pid']}")
    uncycled = [n for n in sorted(names) if (offs[n], ons[n]) != (1, 1)]
    if uncycled:
        n = uncycled[0]
        problems.append(
            f"{len(uncycled)} machines not cycled exactly once, e.g. {n}: "
            f"{offs[n]} offs, {ons[n]} ons"
        )
    return problems


def run_once(url: str, n_workers: int, hosts: list[HostSpec], args: argparse.Namespace) -> Run:
    """Submit the requests on `url`, then time `n_workers` worker processes through them."""
    ids = submit(url, hosts, args)
    ctx = mp.get_context("spawn")
    start, ready, results = ctx.Event(), ctx.Queue(), ctx.Queue()
    opts = {
        "hosts": len(hosts),
        "pools": args.pools,
        "bmc_latency": args.bmc_latency,
        "poll": args.poll,
        "concurrency": args.concurrency,
        "max_requests": args.max_requests,
    }
    procs = [
        ctx.Process(target=worker_main, args=(url, opts, start, ready, results), daemon=True)
        for _ in range(n_workers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    t0 = time.perf_counter()
    start.set()
    reports = [results.get(timeout=args.timeout) for _ in procs]
    wall_s = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=30)
    problems = check(url, hosts, ids, reports)
    return Run(
        wall_s=wall_s,
        cpu_s=sum(r.get("cpu_s", 0.0) for r in reports),
        per_worker=sorted((len(r.get("finished", {})) for r in reports), reverse=True),
        problems=problems,
    )


def series(backend: str, args: argparse.Namespace, hosts: list[HostSpec]) -> dict[str, Any]:
    """Every worker count on `backend` ("pg" or "sqlite"), --runs runs each."""
    runs: dict[int, list[Run]] = {n: [] for n in args.worker_counts}
    for i in range(args.runs):
        for n in args.worker_counts:
            if backend == "pg":
                with pgutil.fresh_schema(args.pg, f"workers{n}") as url:
                    run = run_once(url, n, hosts, args)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    run = run_once(str(Path(tmp) / "fleet.db"), n, hosts, args)
            for p in run.problems:
                print(f"bench/workers: {backend}, {n} workers, run {i + 1}: {p}", file=sys.stderr)
            runs[n].append(run)
    figures: dict[str, Any] = {}
    for n, rs in runs.items():
        wall = statistics.median(r.wall_s for r in rs)
        figures[str(n)] = {
            "wall_s": round(wall, 2),
            "hosts_per_s": round(len(hosts) / wall, 1),
            "wall_s_runs": [round(r.wall_s, 2) for r in rs],
            "worker_cpu_s": round(statistics.median(r.cpu_s for r in rs), 2),
            "requests_per_worker": rs[0].per_worker,
        }
    base = figures[str(args.worker_counts[0])]["hosts_per_s"]
    for f in figures.values():
        f["ratio_to_baseline"] = round(f["hosts_per_s"] / base, 3)
    holds = all(f["hosts_per_s"] >= HOLD_RATIO * base for f in figures.values())
    ok = not any(r.problems for rs in runs.values() for r in rs)
    return {"workers": figures, "throughput_holds": holds, "verified": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=2_000)
    ap.add_argument("--requests", type=int, default=16, help="disjoint requests submitted")
    ap.add_argument("--pools", type=int, default=8)
    ap.add_argument("--batch-size", default="25%")
    ap.add_argument(
        "--worker-counts",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2, 4],
        help="comma-separated worker counts; the first is the baseline (default 1,2,4)",
    )
    ap.add_argument("--bmc-latency", type=float, default=0.05, help="seconds per BMC call")
    ap.add_argument("--concurrency", type=int, default=64, help="BMC calls in flight per worker")
    ap.add_argument("--max-requests", type=int, default=8, help="requests per worker at once")
    ap.add_argument("--poll", type=float, default=0.05, help="worker poll and poll_interval, s")
    ap.add_argument("--runs", type=int, default=1, help="runs per worker count (median)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds a run may take")
    ap.add_argument("--sqlite", action="store_true", help="also run on SQLite, for comparison")
    pgutil.add_pg_arguments(ap)
    args = ap.parse_args()
    if not 1 <= args.hosts <= 65_535 - BASE_PORT:
        ap.error(f"--hosts must be between 1 and {65_535 - BASE_PORT}")
    if not 1 <= args.requests <= args.hosts:
        ap.error("--requests must be between 1 and --hosts")
    if args.runs < 1 or not args.worker_counts or min(args.worker_counts) < 1:
        ap.error("--runs and every worker count must be at least 1")
    if args.no_pg and not args.sqlite:
        ap.error("--no-pg leaves nothing to run without --sqlite")

    logging.basicConfig(level=logging.WARNING)
    os.environ["MAAS_CRED_BENCH_USERNAME"] = "bench"  # inherited by the worker processes
    os.environ["MAAS_CRED_BENCH_PASSWORD"] = "bench"
    hosts = bench_hosts(args.hosts, args.pools)

    out: dict[str, Any] = {
        "bench": "workers",
        "hosts": args.hosts,
        "requests": args.requests,
        "batch_size": args.batch_size,
        "bmc_latency_s": args.bmc_latency,
        "concurrency": args.concurrency,
        "max_requests": args.max_requests,
        "poll_s": args.poll,
        "runs": args.runs,
    }
    failed = False
    if args.no_pg:
        out["pg"] = "skipped: --no-pg"
    elif reason := pgutil.unreachable(args.pg):
        out["pg"] = f"skipped: {reason}"
        failed = True
    else:
        out["pg"] = parse_pg_url(args.pg).url
        pg = series("pg", args, hosts)
        failed |= not pg.pop("verified")
        out.update(pg)
    if args.sqlite:
        lite = series("sqlite", args, hosts)
        failed |= not lite.pop("verified")
        out["sqlite"] = lite
        if args.no_pg:
            out["throughput_holds"] = lite["throughput_holds"]
    print(json.dumps(out))
    return 1 if failed or not out.get("throughput_holds", False) else 0


if __name__ == "__main__":
    sys.exit(main())
