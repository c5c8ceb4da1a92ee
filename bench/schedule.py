"""Scheduler overhead per host-step with a zero-latency simulated BMC: target <= 2 ms CPU.

A `power-cycle` of every host of a fresh SQLite fleet (--hosts, default 2,000; batches of
--batch-size, --max-failures 0), run by an in-process worker whose BMC is
`maas_lib.sim.inproc` (no sockets; power changes complete at once). Every host is on
first, so each is really cycled: two recorded steps (power-off, power-on) per host.

Prints one JSON line (figures are medians of --runs runs, each on a fresh copy of the
imported fleet; the machine's other load shows up in CPU time too, hence several runs):
- cpu_ms_per_host_step: process CPU (every thread: `time.process_time`) of the worker's
  run, divided by the steps the store recorded (target <= 2.0); every run's in
  cpu_ms_per_host_step_runs;
- wall_s, cpu_s, hosts, steps, bmc_calls: the run itself;
- breakdown_cpu_ms_per_host_step, measured afterwards on fresh machines in one thread:
  driver_calls — a bare loop of the same number of driver calls (the fake BMC's own
  cost); controller — `BmcController.set_power` off then on per host, i.e. the BMC work
  of the steps (deadline threads, retries, polling) including the driver calls;
  scheduler_store — the rest (claims, batches, step and task records, host threads).

Exits 1 if the request did not succeed or a machine was not cycled exactly once.
`--profile FILE` also writes a cProfile of every thread of the run (pstats format) and
prints its top functions to stderr; the CPU figures are then inflated by the profiler.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import maas_lib
from maas_lib.bmc import BmcController, BmcSettings, PowerAction
from maas_lib.bmc.base import BmcTarget
from maas_lib.credentials import Credential
from maas_lib.models import HostSpec
from maas_lib.sim.inproc import InProcessFleet

TARGET_CPU_MS = 2.0
BASE_PORT = 20_000
STEPS_PER_HOST = 2  # power-cycle: power-off, power-on


def bench_hosts(n: int, pools: int) -> list[HostSpec]:
    return [
        HostSpec(
            name=f"b{i:05d}",
            pool=f"pool{i % pools:02d}",
            bmc_address="127.0.0.1",
            bmc_port=BASE_PORT + i,
            bmc_credential="bench",
        )
        for i in range(n)
    ]


def write_inventory(path: Path, hosts: list[HostSpec]) -> None:
    lines = ["all:", "  vars:", "    bmc_credential: bench", "  children:"]
    for pool in sorted({h.pool for h in hosts}):
        lines += [f"    {pool}:", "      hosts:"]
        lines += [
            f"        {h.name}: {{bmc_address: {h.bmc_address}, bmc_port: {h.bmc_port}}}"
            for h in hosts
            if h.pool == pool
        ]
    path.write_text("\n".join(lines) + "\n")


def powered_on_fleet(hosts: list[HostSpec]) -> InProcessFleet:
    sim = InProcessFleet()
    for h in hosts:
        sim.add_host(h, power="on")
    return sim


class ThreadProfiler:
    """cProfile for every thread started while it is on (cProfile sees one thread only),
    timed by each thread's own CPU clock: time spent blocked (locks, queues) is not counted."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_in_thread(self, *_: object) -> None:
        prof = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(prof)
        prof.enable()  # replaces this hook for the rest of the thread

    def __enter__(self) -> ThreadProfiler:
        threading.setprofile(self._start_in_thread)
        self._start_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        threading.setprofile(None)
        self.profiles[0].disable()

    def stats(self) -> pstats.Stats:
        stats = pstats.Stats(self.profiles[0], stream=sys.stderr)
        for prof in self.profiles[1:]:
            prof.disable()
            stats.add(prof)
        return stats


def driver_calls_cpu(hosts: list[HostSpec], calls: int) -> float:
    """CPU seconds of `calls` bare driver calls, as a power-cycle makes them."""
    sim = powered_on_fleet(hosts)
    cred = Credential("bench", "bench", "bench")
    settings = BmcSettings()
    drivers = [sim.driver_factory(BmcTarget.from_host(h).primary, cred, settings) for h in hosts]
    per_host = max(1, calls // len(drivers))
    sequence = [
        lambda d: d.power(PowerAction.OFF),
        lambda d: d.power_state(),
        lambda d: d.power(PowerAction.ON),
        lambda d: d.power_state(),
    ]
    t0 = time.process_time()
    for d in drivers:
        for k in range(per_host):
            sequence[k % 4](d)
    return time.process_time() - t0


def controller_cpu(hosts: list[HostSpec], settings: BmcSettings) -> float:
    """CPU seconds of `BmcController.set_power` off then on for each host (one thread)."""
    sim = powered_on_fleet(hosts)
    cred = Credential("bench", "bench", "bench")
    controller = BmcController(settings, resolve=lambda _: cred, driver_factory=sim.driver_factory)
    drivers = [controller.driver(BmcTarget.from_host(h)) for h in hosts]
    t0 = time.process_time()
    for d in drivers:
        controller.set_power(d, PowerAction.OFF, wait=True)
        controller.set_power(d, PowerAction.ON, wait=True)
    return time.process_time() - t0


@dataclass
class Run:
    cpu_s: float
    wall_s: float
    steps: int
    calls: int
    problems: list[str]


def run_once(db: Path, hosts: list[HostSpec], args: argparse.Namespace, profile: bool) -> Run:
    """Submit a power-cycle of every host on `db` and run a worker until it is done."""
    sim = powered_on_fleet(hosts)
    with maas_lib.open_fleet(db) as fleet:
        submitted = fleet.submit(
            "power-cycle",
            [h.name for h in hosts],
            batch_size=args.batch_size,
            max_failures="0",
            submitted_by="bench",
        )
        worker = fleet.worker(
            driver_factory=sim.driver_factory,
            poll=args.poll,
            poll_interval=args.poll,
            max_hosts=args.max_hosts,
        )
        profiler = ThreadProfiler() if profile else None
        c0, w0 = time.process_time(), time.perf_counter()
        if profiler is not None:
            with profiler:
                report = worker.run(until_idle=True)
        else:
            report = worker.run(until_idle=True)
        cpu_s, wall_s = time.process_time() - c0, time.perf_counter() - w0
        status = fleet.status(submitted.id)
        steps = fleet.steps(submitted.id)
    if profiler is not None:
        stats = profiler.stats()
        stats.dump_stats(str(args.profile))
        stats.sort_stats("tottime").print_stats(args.top)

    problems = []
    if str(status.state) != "succeeded":
        problems.append(f"request {submitted.id} ended {status.state}: {status.reason}")
    if report.errors:
        problems.append(f"worker errors: {report.errors[:3]}")
    bad_steps = [s for s in steps if s["outcome"] != "succeeded"]
    if bad_steps:
        problems.append(f"{len(bad_steps)} steps did not succeed, e.g. {bad_steps[0]}")
    if len(steps) != STEPS_PER_HOST * len(hosts):
        problems.append(f"{len(steps)} steps recorded, expected {STEPS_PER_HOST * len(hosts)}")
    machines = sim.by_name()
    uncycled = [
        m.name for m in machines.values() if (m.power_offs, m.power_ons, m.power) != (1, 1, "on")
    ]
    if uncycled:
        m = machines[uncycled[0]]
        problems.append(
            f"{len(uncycled)} machines not cycled exactly once, e.g. {m.name}: "
            f"{m.power_offs} offs, {m.power_ons} ons, now {m.power}"
        )
    return Run(cpu_s, wall_s, len(steps), sum(sim.calls.values()), problems)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=2_000)
    ap.add_argument("--pools", type=int, default=8)
    ap.add_argument("--batch-size", default="10%")
    ap.add_argument("--poll", type=float, default=0.01, help="worker poll and poll_interval, s")
    ap.add_argument("--max-hosts", type=int, default=None, help="host tasks side by side")
    ap.add_argument("--runs", type=int, default=3, help="runs, each on a fresh copy of the DB")
    ap.add_argument("--profile", type=Path, default=None, help="write a cProfile (pstats) here")
    ap.add_argument("--top", type=int, default=30, help="functions shown with --profile")
    args = ap.parse_args()
    if not 1 <= args.hosts <= 65_535 - BASE_PORT:
        ap.error(f"--hosts must be between 1 and {65_535 - BASE_PORT}")
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    logging.basicConfig(level=logging.WARNING)
    os.environ["MAAS_CRED_BENCH_USERNAME"] = "bench"
    os.environ["MAAS_CRED_BENCH_PASSWORD"] = "bench"
    hosts = bench_hosts(args.hosts, args.pools)

    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        inv = tmpdir / "fleet.yml"
        write_inventory(inv, hosts)
        template = tmpdir / "template.db"
        with maas_lib.open_fleet(template) as fleet:
            fleet.import_hosts([str(inv)], actor="bench")
            bmc_settings = fleet.worker(poll=args.poll, poll_interval=args.poll).settings.bmc
        for i in range(args.runs):
            db = tmpdir / f"run{i}.db"
            shutil.copyfile(template, db)  # closed: the WAL is checkpointed into the file
            run = run_once(db, hosts, args, profile=args.profile is not None and i == 0)
            if run.problems:
                for p in run.problems:
                    print(f"bench/schedule: run {i + 1}: {p}", file=sys.stderr)
                return 1
            runs.append(run)

    per_step = [r.cpu_s * 1000 / r.steps for r in runs]
    cpu_ms = statistics.median(per_step)
    n_steps, calls = runs[0].steps, runs[0].calls
    driver_ms = driver_calls_cpu(hosts, calls) * 1000 / n_steps
    controller_ms = controller_cpu(hosts, bmc_settings) * 1000 / n_steps
    print(
        json.dumps(
            {
                "bench": "schedule",
                "hosts": len(hosts),
                "pools": args.pools,
                "batch_size": args.batch_size,
                "poll_s": args.poll,
                "steps": n_steps,
                "bmc_calls": calls,
                "runs": len(runs),
                "wall_s": round(statistics.median(r.wall_s for r in runs), 2),
                "cpu_s": round(statistics.median(r.cpu_s for r in runs), 2),
                "cpu_ms_per_host_step": round(cpu_ms, 3),
                "cpu_ms_per_host_step_runs": [round(x, 3) for x in per_step],
                "target_cpu_ms_per_host_step": TARGET_CPU_MS,
                "meets_target": cpu_ms <= TARGET_CPU_MS,
                "breakdown_cpu_ms_per_host_step": {
                    "driver_calls": round(driver_ms, 3),
                    "controller": round(controller_ms, 3),
                    "scheduler_store": round(cpu_ms - controller_ms, 3),
                },
                "profiled": args.profile is not None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
