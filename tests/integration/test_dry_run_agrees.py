"""`submit --dry-run` and the scheduler cut the same batches, for random policies.

Each seed draws a policy (batch size or share, canary, max failures, request budget),
standing pool budgets, an older request holding some hosts (dropped or waited for) and
hosts that fail; the plan is taken as `--dry-run` takes it, then the request runs for real
on the in-process simulator and its hosts' batches are read back from the store.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

import maas_lib
from maas_lib.models import Amount, BatchPolicy, HostSpec, PoolSpec, RequestState
from maas_lib.planner import failures_exceeded
from maas_lib.sim.inproc import InProcessFleet, zero_latency

POOLS = {"a": 5, "b": 4}
RUN = {"poll": 0.02, "poll_interval": 0.01, "timeout": 1.0, "retries": 0, "claim_ttl": 30}


def _hosts() -> list[HostSpec]:
    names = [(pool, i) for pool, n in POOLS.items() for i in range(n)]
    return [
        HostSpec(
            name=f"{pool}{i}",
            pool=pool,
            bmc_address="127.0.0.1",
            bmc_port=6230,
            bmc_system=f"sys-{pool}{i}",
            bmc_credential="lab",
        )
        for pool, i in names
    ]


def _amount(rng: random.Random, most: int) -> str:
    return rng.choice([str(rng.randint(1, most)), f"{rng.choice([10, 25, 34, 50, 100])}%"])


def _case(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    names = [h.name for h in _hosts()]
    hosts = sorted(rng.sample(names, rng.randint(3, len(names))), key=names.index)
    policy = {
        "batch_size": _amount(rng, 4),
        "canary": rng.choice([0, 0, 1, 2]),
        "max_failures": _amount(rng, 2),
        "on_overlap": rng.choice(["drop", "wait"]),
    }
    if rng.random() < 0.5:
        policy["max_unavailable"] = _amount(rng, 3)
    standing = {p: (_amount(rng, 3) if rng.random() < 0.5 else None) for p in POOLS}
    held = rng.sample(names, rng.randint(0, 3))
    dead = rng.sample(hosts, rng.choice([0, 0, 1, 2]))
    return {"hosts": hosts, "policy": policy, "standing": standing, "held": held, "dead": dead}


def _expected(plan: dict[str, Any], policy: BatchPolicy, dead: set[str]) -> list[list[str]]:
    """The plan's batches, then (once their holder lets go) the waiting hosts' batches,
    up to the batch after which the request stops for its failures."""
    from maas_lib.planner import next_batch

    batches = [b["hosts"] for b in plan["batches"]]
    waiting = list(plan["waiting"])
    total = plan["hosts"] - len(plan["dropped"])
    while waiting:
        batch = next_batch(waiting, policy, len(batches), total)
        batches.append(batch)
        waiting = waiting[len(batch) :]
    failed = 0
    for i, batch in enumerate(batches):
        failed += len(dead & set(batch))
        canary_failed = i == 0 and policy.canary and failed
        if failures_exceeded(failed, total, policy) or canary_failed:
            return batches[: i + 1]
    return batches


def _run(
    fleet: maas_lib.Fleet, sim: InProcessFleet, rid: int, holder: int | None, waiting: set[str]
) -> None:
    """Run the scheduler until request `rid` ends; let the holder go once nothing but
    hosts waiting for it is left (it never runs: another worker holds it)."""
    worker = fleet.worker(driver_factory=sim.driver_factory, **RUN)
    out: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: out.update(report=worker.run(until_idle=True)), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    try:
        while thread.is_alive() and time.monotonic() < deadline:
            st = fleet.status(rid)
            open_ = {h.host for h in st.hosts if h.state in ("pending", "running")}
            if holder is not None and (
                st.state in ("succeeded", "failed", "partial") or (open_ and open_ <= waiting)
            ):
                fleet.store.finish_request(holder, "other", RequestState.CANCELLED, "let go")
                holder = None
            time.sleep(0.01)
    finally:
        worker.stop()
        thread.join(10)
    assert "report" in out and not out["report"].errors, out


# Seeds 20, 40 and 69 wait for a holder: a dry-run once cut their batches from the free
# hosts alone (50% of 6 instead of 50% of 8).
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7, 20, 40, 69])
def test_dry_run_and_run_cut_the_same_batches(seed, tmp_path, monkeypatch):
    monkeypatch.setenv("MAAS_CRED_LAB_USERNAME", "admin")
    monkeypatch.setenv("MAAS_CRED_LAB_PASSWORD", "secret")
    case = _case(seed)
    specs = _hosts()
    sim = InProcessFleet(config=zero_latency())
    for h in specs:
        if h.name not in case["dead"]:
            sim.add_host(h, power="on")
    pools = [
        PoolSpec(name=p, max_unavailable=Amount.model_validate(a) if a else None)
        for p, a in case["standing"].items()
    ]
    with maas_lib.open_fleet(tmp_path / "fleet.db") as fleet:
        fleet.store.upsert_hosts(specs, pools, actor="test")
        plan = fleet.plan("power-cycle", case["hosts"], **case["policy"])
        # An older request another worker runs holds some hosts — but leaves every pool
        # room under its budget, so the request is never stalled for good.
        limits = plan["pool_limits"]
        held: list[str] = []
        for name in case["held"]:
            pool = name[0]
            if sum(1 for h in held if h[0] == pool) + 1 < limits.get(pool, 99):
                held.append(name)
        holder = None
        if held:
            holder = fleet.submit("power-cycle", held).id
            assert fleet.store.claim_request("other", ttl=3600) == holder
            fleet.store.begin_hosts(
                holder, held, batch=0, action="power-cycle", holder="other", limits={}
            )
        plan = fleet.plan("power-cycle", case["hosts"], **case["policy"])
        rid = fleet.submit("power-cycle", case["hosts"], **case["policy"]).id
        _run(fleet, sim, rid, holder, set(plan["waiting"]))
        st = fleet.status(rid)
        ran: dict[int, list[str]] = {}
        for h in st.hosts:
            if h.batch is not None:
                ran.setdefault(h.batch, []).append(h.host)
        assert sorted(ran) == list(range(len(ran)))
        expected = _expected(plan, BatchPolicy.model_validate(plan["policy"]), set(case["dead"]))
        assert [ran[i] for i in sorted(ran)] == expected, (case, plan)
        dropped = {h.host: h.holder for h in st.hosts if h.state == "dropped"}
        assert dropped == plan["dropped"]
