"""Acceptance throughput: how fast submissions are accepted into the job queue.

Prints one JSON line. Figures:
- accepted_hosts_per_s: host submissions accepted per second in-process (Fleet.submit:
  validation, host resolution, one write transaction per submission), 1,000 submissions
  of 100 hosts each against a 20,000-host fleet;
- raw_insert_hosts_per_s: a raw sqlite3 executemany of the same request_hosts rows into the
  same schema, one transaction per 100-row submission, in the same run;
- ratio: accepted / raw (target >= 0.5);
- start-up, as new processes run in turn --cli-runs times (so each sees the same machine),
  medians: python_pass_median_s (`python -c pass`, the floor), cli_help_median_s
  (`maasctl --help`, target at most 0.15 s) and cli_submit_1000_median_s (`maasctl submit
  reboot <1,000 hosts>` on the 20,000-host fleet, target at most 0.3 s); cli_submit_max_s;
  cli_help_over_pass_s and cli_submit_over_pass_s: each median less the floor's;
  `--cli-only` measures these alone (after the inventory import);
- import_s: `maasctl hosts import` of the 20,000-host YAML inventory (ansible-core parsing);
- linkedin_mvp_hosts_per_day: 72,000, for comparison with accepted_hosts_per_s * 86,400.

The same figures on PostgreSQL (--pg URL, default $MAAS_BENCH_PG or the local `test`
database; --no-pg skips them), measured after the SQLite ones in the same run, each part
in a fresh schema of that database dropped afterwards:
- accepted_hosts_per_s_pg, accepted_submissions_per_s_pg: Fleet.submit as above;
- raw_insert_hosts_per_s_pg: the peer, a raw psycopg `executemany` of the same
  request_hosts rows into the same schema (the store's own tables), one transaction per
  100-row submission — the same kind of peer as raw_insert_hosts_per_s (and what the
  store itself runs per submission);
- ratio_pg: accepted_hosts_per_s_pg / raw_insert_hosts_per_s_pg (target >= 0.5);
- raw_copy_hosts_per_s_pg, ratio_copy_pg: the same rows by `COPY ... FROM STDIN`, one
  transaction per submission, for reference (PostgreSQL's fastest bulk path);
- the start-up figures with a _pg suffix (cli_submit_1000_median_s_pg, …) and import_s_pg, with
  MAAS_DB set to the PostgreSQL URL.
`pg` is the database URL used (password hidden), or "skipped: <reason>" when it cannot
be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pgutil

import maas_lib
from maas_lib.models import HostSpec, PoolSpec
from maas_lib.store import open_store
from maas_lib.store.pg_url import parse_pg_url


def fleet_hosts(n: int) -> list[HostSpec]:
    return [
        HostSpec(
            name=f"n{i:05d}",
            pool=f"pool{i % 20:02d}",
            rack=f"r{i // 40}",
            bmc_address=f"10.{i // 62500}.{(i // 250) % 250}.{i % 250 + 1}",
        )
        for i in range(n)
    ]


def write_inventory(path: Path, hosts: list[HostSpec]) -> None:
    lines = ["all:", "  children:"]
    for pool in sorted({h.pool for h in hosts}):
        lines += [f"    {pool}:", "      hosts:"]
        lines += [
            f"        {h.name}: {{bmc_address: {h.bmc_address}, rack: {h.rack}}}"
            for h in hosts
            if h.pool == pool
        ]
    path.write_text("\n".join(lines) + "\n")


def maasctl() -> list[str]:
    """The `maasctl` people run: the console script beside this interpreter (else -m)."""
    script = Path(sys.executable).with_name("maasctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "maas_lib"]


def cli_times(env: dict[str, str], names: list[str], runs: int) -> dict[str, list[float]]:
    """Wall times of new processes, `runs` rounds of `python -c pass`, `maasctl --help` and
    `maasctl submit reboot <names>` in turn: each command sees the same machine."""
    commands = {
        "pass": [sys.executable, "-c", "pass"],
        "help": [*maasctl(), "--help"],
        "submit": [*maasctl(), "submit", "reboot", *names, "--json"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            t0 = time.perf_counter()
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
    return times


def cli_figures(times: dict[str, list[float]], suffix: str = "") -> dict[str, object]:
    med = {name: round(statistics.median(t), 3) for name, t in times.items()}
    return {
        f"python_pass_median_s{suffix}": med["pass"],
        f"cli_help_median_s{suffix}": med["help"],
        f"cli_help_over_pass_s{suffix}": round(med["help"] - med["pass"], 3),
        f"cli_help_target_s{suffix}": 0.15,
        f"cli_submit_1000_median_s{suffix}": med["submit"],
        f"cli_submit_over_pass_s{suffix}": round(med["submit"] - med["pass"], 3),
        f"cli_submit_max_s{suffix}": round(max(times["submit"]), 3),
        f"cli_target_s{suffix}": 0.3,
    }


def pg_figures(
    url: str,
    args: argparse.Namespace,
    hosts: list[HostSpec],
    batches: list[list[str]],
    inv: Path,
    cli_names: list[str],
) -> dict[str, object]:
    """The figures of main() on PostgreSQL: the fleet and the raw peer in schemas of their
    own, with the same hosts, submissions and CLI hosts."""
    rows = args.submissions * args.hosts_per_submission
    with (
        pgutil.fresh_schema(url, "accept") as fleet_url,
        pgutil.fresh_schema(url, "accept_raw") as raw_url,
    ):
        env = {**os.environ, "MAAS_DB": fleet_url}
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "maas_lib", "hosts", "import", str(inv)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        import_s = time.perf_counter() - t0

        # Raw peers: same schema and fleet, request rows made beforehand (untimed); ids
        # 1..N for executemany, N+1..2N for COPY.
        store = open_store(raw_url)
        store.upsert_hosts(
            hosts, [PoolSpec(name=p) for p in {h.pool for h in hosts}], actor="bench"
        )
        store.close()
        with pgutil.schema_connection(raw_url) as conn:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO requests (id, action, state, policy, patterns, submitted_by, "
                    "os_user, host_count, created, updated) VALUES (%s, 'reboot', 'accepted', "
                    "'{}', '[]', 'b', 'b', 100, 'now', 'now')",
                    [(i + 1,) for i in range(2 * args.submissions)],
                )
            t0 = time.perf_counter()
            for i, batch in enumerate(batches, start=1):
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO request_hosts (request_id, host) VALUES (%s, %s)",
                        [(i, h) for h in batch],
                    )
            raw_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i, batch in enumerate(batches, start=args.submissions + 1):
                with (
                    conn.transaction(),
                    conn.cursor() as cur,
                    cur.copy("COPY request_hosts (request_id, host) FROM STDIN") as copy,
                ):
                    for h in batch:
                        copy.write_row((i, h))
            copy_s = time.perf_counter() - t0

        with maas_lib.open_fleet(fleet_url) as fleet:
            t0 = time.perf_counter()
            for batch in batches:
                fleet.submit("reboot", batch, batch_size="10%")
            accept_s = time.perf_counter() - t0
            assert len(fleet.requests(limit=args.submissions)) == args.submissions

        times = cli_times(env, cli_names, args.cli_runs)

    accepted, raw, copied = rows / accept_s, rows / raw_s, rows / copy_s
    return {
        "accepted_hosts_per_s_pg": round(accepted),
        "accepted_submissions_per_s_pg": round(args.submissions / accept_s, 1),
        "raw_insert_hosts_per_s_pg": round(raw),
        "ratio_pg": round(accepted / raw, 3),
        "raw_copy_hosts_per_s_pg": round(copied),
        "ratio_copy_pg": round(accepted / copied, 3),
        **cli_figures(times, "_pg"),
        "import_s_pg": round(import_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fleet", type=int, default=20_000)
    ap.add_argument("--submissions", type=int, default=1_000)
    ap.add_argument("--hosts-per-submission", type=int, default=100)
    ap.add_argument("--cli-hosts", type=int, default=1_000)
    ap.add_argument("--cli-runs", type=int, default=11)
    ap.add_argument("--cli-only", action="store_true", help="Only the start-up figures (SQLite).")
    pgutil.add_pg_arguments(ap)
    args = ap.parse_args()

    rng = random.Random(42)
    hosts = fleet_hosts(args.fleet)
    names = [h.name for h in hosts]
    batches = [rng.sample(names, args.hosts_per_submission) for _ in range(args.submissions)]
    rows = args.submissions * args.hosts_per_submission

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        inv = tmpdir / "fleet.yml"
        write_inventory(inv, hosts)
        db = tmpdir / "accept.db"
        env = {**os.environ, "MAAS_DB": str(db)}
        maasctl = [sys.executable, "-m", "maas_lib"]
        t0 = time.perf_counter()
        subprocess.run(
            [*maasctl, "hosts", "import", str(inv)], check=True, env=env, stdout=subprocess.DEVNULL
        )
        import_s = time.perf_counter() - t0
        cli_names = rng.sample(names, args.cli_hosts)
        if args.cli_only:
            times = cli_times(env, cli_names, args.cli_runs)
            print(
                json.dumps(
                    {
                        "bench": "accept",
                        "fleet_hosts": args.fleet,
                        "cli_submit_hosts": args.cli_hosts,
                        **cli_figures(times),
                        "import_s": round(import_s, 2),
                    }
                )
            )
            return

        # Raw baseline: same schema and fleet, request rows made beforehand (untimed).
        raw_db = tmpdir / "raw.db"
        store = open_store(raw_db)
        store.upsert_hosts(
            hosts, [PoolSpec(name=p) for p in {h.pool for h in hosts}], actor="bench"
        )
        store.close()
        conn = sqlite3.connect(raw_db, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO requests (id, action, state, policy, patterns, submitted_by, os_user, "
            "host_count, created, updated) VALUES (?, 'reboot', 'accepted', '{}', '[]', 'b', "
            "'b', 100, 'now', 'now')",
            [(i + 1,) for i in range(args.submissions)],
        )
        conn.execute("COMMIT")
        t0 = time.perf_counter()
        for i, batch in enumerate(batches, start=1):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO request_hosts (request_id, host) VALUES (?, ?)",
                [(i, h) for h in batch],
            )
            conn.execute("COMMIT")
        raw_s = time.perf_counter() - t0
        conn.close()

        with maas_lib.open_fleet(db) as fleet:
            t0 = time.perf_counter()
            for batch in batches:
                fleet.submit("reboot", batch, batch_size="10%")
            accept_s = time.perf_counter() - t0
            assert len(fleet.requests(limit=args.submissions)) == args.submissions

        times = cli_times(env, cli_names, args.cli_runs)

        pg: dict[str, object] = {}
        if args.no_pg:
            pg["pg"] = "skipped: --no-pg"
        elif reason := pgutil.unreachable(args.pg):
            pg["pg"] = f"skipped: {reason}"
        else:
            pg["pg"] = parse_pg_url(args.pg).url
            pg.update(pg_figures(args.pg, args, hosts, batches, inv, cli_names))

    accepted = rows / accept_s
    raw = rows / raw_s
    print(
        json.dumps(
            {
                "bench": "accept",
                "fleet_hosts": args.fleet,
                "submissions": args.submissions,
                "hosts_per_submission": args.hosts_per_submission,
                "accepted_hosts_per_s": round(accepted),
                "accepted_submissions_per_s": round(args.submissions / accept_s, 1),
                "raw_insert_hosts_per_s": round(raw),
                "ratio": round(accepted / raw, 3),
                "ratio_target": 0.5,
                "cli_submit_hosts": args.cli_hosts,
                **cli_figures(times),
                "import_s": round(import_s, 2),
                "accepted_hosts_per_day": round(accepted * 86_400),
                "linkedin_mvp_hosts_per_day": 72_000,
                **pg,
            }
        )
    )


if __name__ == "__main__":
    main()
