"""Overlap resolution: a 10,000-host request against 100,000 hosts held in flight.

Prints one JSON line (target <= 100 ms):
- resolve_with_store_ms: what the scheduler does when it claims a request, read side —
  `store.blockers()` (leases of other requests, and hosts older in-flight requests still
  have pending or running: acceptance order) plus the pure resolve_overlaps(), median of
  --runs;
- claim_ms: the whole claim transaction (claim, resolve, write every dropped host and
  an event), measured once since it changes the database;
- resolve_pure_ms: the pure function alone.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from maas_lib.models import Action, BatchPolicy, HostSpec, OverlapMode
from maas_lib.planner import resolve_overlaps
from maas_lib.store import NewRequest, open_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fleet", type=int, default=110_000)
    ap.add_argument("--held", type=int, default=100_000)
    ap.add_argument("--request", type=int, default=10_000)
    ap.add_argument("--holders", type=int, default=100, help="in-flight requests holding hosts")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()

    rng = random.Random(7)
    names = [f"n{i:06d}" for i in range(args.fleet)]
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "overlap.db")
        store.upsert_hosts(
            [
                HostSpec(name=n, pool=f"p{i % 50}", bmc_address="10.0.0.1")
                for i, n in enumerate(names)
            ],
            [],
            actor="bench",
        )
        held = rng.sample(names, args.held)
        chunk = args.held // args.holders
        for k in range(args.holders):
            part = held[k * chunk : (k + 1) * chunk]
            rid = store.create_request(
                NewRequest(Action.REBOOT, BatchPolicy(), ["x"], part, "bench", "bench")
            )
            store.acquire_leases(rid, part, holder="bench")
        for _ in range(args.holders):
            store.claim_request("bench", ttl=3600)  # the holders are running
        request = rng.sample(names, args.request)
        rid = store.create_request(
            NewRequest(Action.REBOOT, BatchPolicy(), ["x"], request, "bench", "bench")
        )
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
        store.close()
    print(
        json.dumps(
            {
                "bench": "overlap",
                "fleet_hosts": args.fleet,
                "held_hosts": args.held,
                "request_hosts": args.request,
                "dropped": len(result.dropped),
                "resolve_with_store_ms": round(statistics.median(full) * 1000, 1),
                "resolve_pure_ms": round(statistics.median(pure) * 1000, 2),
                "claim_ms": round(claim_s * 1000, 1),
                "target_ms": 100,
            }
        )
    )


if __name__ == "__main__":
    main()
