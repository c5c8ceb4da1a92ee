"""Overlap resolution: a 10,000-host request against 100,000 hosts held in flight.

Prints one JSON line (target <= 100 ms):
- resolve_with_store_ms: what the scheduler does when it claims a request, read side —
  `store.blockers()` (leases of other requests, and hosts older in-flight requests still
  have pending or running: acceptance order) plus the pure resolve_overlaps(), median of
  --runs;
- claim_ms: the whole claim transaction (claim, resolve, write every dropped host and
  an event), measured once since it changes the database;
- resolve_pure_ms: the pure function alone.

The same on PostgreSQL (--pg URL, default $MAAS_BENCH_PG or the local `test` database;
--no-pg skips it), with the same hosts, holders and request, in a fresh schema dropped
afterwards: resolve_with_store_ms_pg, claim_ms_pg, resolve_pure_ms_pg, dropped_pg, and
setup_s_pg — the data generation through the store's public methods (`upsert_hosts`,
`create_request`, `claim_request`, `begin_hosts`; not part of any target). The tables
are not ANALYZEd by the bench: the figures are what the store's queries get as loaded.
`pg` is the database URL used (password hidden), or "skipped: <reason>" when it cannot
be reached.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import pgutil

from maas_lib.models import Action, BatchPolicy, HostSpec, OverlapMode
from maas_lib.planner import resolve_overlaps
from maas_lib.store import NewRequest, Store, open_store
from maas_lib.store.pg_url import parse_pg_url


def measure(
    store: Store,
    names: list[str],
    held: list[str],
    request: list[str],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Load the fleet, holders and request into `store`, then time the resolution."""
    t0 = time.perf_counter()
    store.upsert_hosts(
        [HostSpec(name=n, pool=f"p{i % 50}", bmc_address="10.0.0.1") for i, n in enumerate(names)],
        [],
        actor="bench",
    )
    chunk = args.held // args.holders
    for k in range(args.holders):
        part = held[k * chunk : (k + 1) * chunk]
        rid = store.create_request(
            NewRequest(Action.REBOOT, BatchPolicy(), ["x"], part, "bench", "bench")
        )
        # The holders run as a scheduler runs them: claimed, their hosts started (leased).
        assert store.claim_request("bench", ttl=3600) == rid
        store.begin_hosts(rid, part, batch=0, action="reboot", holder="bench", limits={})
    rid = store.create_request(
        NewRequest(Action.REBOOT, BatchPolicy(), ["x"], request, "bench", "bench")
    )
    setup_s = time.perf_counter() - t0
    full, pure = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        holders = store.blockers(request, rid)
        t1 = time.perf_counter()
        result = resolve_overlaps(rid, request, holders, OverlapMode.DROP)
        t2 = time.perf_counter()
        full.append(t2 - t0)
        pure.append(t2 - t1)
    t0 = time.perf_counter()
    claimed = store.claim_request("bench", ttl=3600)
    claim_s = time.perf_counter() - t0
    assert claimed == rid
    dropped = store.get_request(rid).counts.get("dropped", 0)
    assert dropped == len(result.dropped), (dropped, len(result.dropped))
    return {
        "dropped": len(result.dropped),
        "resolve_with_store_ms": round(statistics.median(full) * 1000, 1),
        "resolve_pure_ms": round(statistics.median(pure) * 1000, 2),
        "claim_ms": round(claim_s * 1000, 1),
        "setup_s": round(setup_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fleet", type=int, default=110_000)
    ap.add_argument("--held", type=int, default=100_000)
    ap.add_argument("--request", type=int, default=10_000)
    ap.add_argument("--holders", type=int, default=100, help="in-flight requests holding hosts")
    ap.add_argument("--runs", type=int, default=7)
    pgutil.add_pg_arguments(ap)
    args = ap.parse_args()

    rng = random.Random(7)
    names = [f"n{i:06d}" for i in range(args.fleet)]
    held = rng.sample(names, args.held)
    request = rng.sample(names, args.request)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "overlap.db")
        lite = measure(store, names, held, request, args)
        store.close()

    pg: dict[str, object] = {}
    if args.no_pg:
        pg["pg"] = "skipped: --no-pg"
    elif reason := pgutil.unreachable(args.pg):
        pg["pg"] = f"skipped: {reason}"
    else:
        pg["pg"] = parse_pg_url(args.pg).url
        with pgutil.fresh_schema(args.pg, "overlap") as url:
            store = open_store(url)
            try:
                figures = measure(store, names, held, request, args)
            finally:
                store.close()
        pg.update({f"{k}_pg": v for k, v in figures.items()})
    print(
        json.dumps(
            {
                "bench": "overlap",
                "fleet_hosts": args.fleet,
                "held_hosts": args.held,
                "request_hosts": args.request,
                "dropped": lite["dropped"],
                "resolve_with_store_ms": lite["resolve_with_store_ms"],
                "resolve_pure_ms": lite["resolve_pure_ms"],
                "claim_ms": lite["claim_ms"],
                "target_ms": 100,
                **pg,
            }
        )
    )


if __name__ == "__main__":
    main()
