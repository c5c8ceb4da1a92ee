"""The SQLite job-queue store against real database files, including several processes."""

import multiprocessing as mp
import sqlite3
from fnmatch import fnmatchcase

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maas_lib
from maas_lib.errors import StoreError
from maas_lib.models import Action, BatchPolicy, HostSpec, PoolSpec
from maas_lib.store import NewRequest, open_store
from maas_lib.store.sqlite_schema import LATEST_VERSION

TABLES = {
    "hosts",
    "pools",
    "requests",
    "request_hosts",
    "batches",
    "host_tasks",
    "step_results",
    "host_leases",
    "events",
    "schema_migrations",
}


def hosts(*names, pool="p"):
    return [HostSpec(name=n, pool=pool, bmc_address="10.0.0.1") for n in names]


def new_request(names, action=Action.REBOOT):
    return NewRequest(
        action=action,
        policy=BatchPolicy(),
        patterns=list(names),
        hosts=list(names),
        submitted_by="t",
        os_user="t",
    )


def test_fresh_database_is_wal_with_all_tables_at_latest_version(db_path):
    store = open_store(db_path)
    assert store.schema_version() == LATEST_VERSION
    store.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names >= TABLES


def test_reopening_does_not_reapply_migrations(db_path):
    open_store(db_path).close()
    open_store(f"sqlite:///{db_path}").close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == LATEST_VERSION


def test_newer_schema_is_refused(db_path):
    open_store(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO schema_migrations VALUES (?, 'x')", (LATEST_VERSION + 1,))
    conn.commit()
    with pytest.raises(StoreError, match="newer than this maas-lib"):
        open_store(db_path)


def test_not_a_database_is_a_clear_error(tmp_path):
    bogus = tmp_path / "x.db"
    bogus.write_text("this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot use database"):
        open_store(bogus)


def test_reimport_updates_fields_but_keeps_standing_and_created(db_path):
    store = open_store(db_path)
    assert store.upsert_hosts(hosts("a", "b"), [PoolSpec(name="p")], actor="t") == (2, 0)
    created = store.get_host("a").created
    store.conn.execute("UPDATE hosts SET status = 'quarantined' WHERE name = 'a'")
    moved = [HostSpec(name="a", pool="q", bmc_address="10.9.9.9"), *hosts("c")]
    assert store.upsert_hosts(moved, [], actor="t") == (1, 1)
    a = store.get_host("a")
    assert (a.pool, a.bmc_address, a.status, a.created) == ("q", "10.9.9.9", "quarantined", created)
    assert [h.name for h in store.list_hosts()] == ["a", "b", "c"]
    assert [h.name for h in store.list_hosts("p")] == ["b", "c"]


def test_request_and_its_hosts_are_written_in_one_transaction(db_path):
    store = open_store(db_path)
    store.upsert_hosts(hosts("a", "b"), [], actor="t")
    with pytest.raises(sqlite3.IntegrityError):
        store.create_request(new_request(["a", "ghost"]))
    assert store.list_requests() == []
    assert store.conn.execute("SELECT COUNT(*) FROM request_hosts").fetchone()[0] == 0
    rid = store.create_request(new_request(["a", "b"]))
    st_ = store.get_request(rid)
    assert [h.host for h in st_.hosts] == ["a", "b"]
    assert {h.state for h in st_.hosts} == {"pending"}
    assert [e.kind for e in store.events(rid)] == ["request_accepted"]


NAME_CHARS = "ab01-"


@settings(
    max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(
    names=st.sets(st.text(NAME_CHARS, min_size=1, max_size=5), min_size=1, max_size=25),
    pattern=st.text(NAME_CHARS + "*?[]!", min_size=1, max_size=6),
)
def test_glob_matching_equals_fnmatch(tmp_path_factory, names, pattern):
    db = tmp_path_factory.mktemp("glob") / "g.db"
    store = open_store(db)
    store.upsert_hosts(
        [HostSpec(name="h" + n, pool="p", bmc_address="10.0.0.1") for n in names], [], actor="t"
    )
    glob = "h" + pattern
    got = store.match_hosts([], [glob]).glob_hits[glob]
    assert got == sorted(n for n in ("h" + x for x in names) if fnmatchcase(n, glob))
    store.close()


def _lease_worker(db, request_id, names, out):
    store = open_store(db)
    result = store.acquire_leases(request_id, names, holder=f"worker-{request_id}")
    out.put((request_id, result.acquired, result.held_by))


def test_leases_are_atomic_across_processes(db_path):
    store = open_store(db_path)
    names = [f"n{i:03d}" for i in range(200)]
    store.upsert_hosts(hosts(*names), [], actor="t")
    ids = [store.create_request(new_request(names)) for _ in range(4)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_lease_worker, args=(str(db_path), i, names, out)) for i in ids]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    owner = {}
    for rid, acquired, held_by in results:
        for h in acquired:
            assert h not in owner, f"{h} leased twice"
            owner[h] = rid
        assert rid not in held_by.values()
    assert sorted(owner) == names
    leases = store.inflight()
    assert {x.host: x.request_id for x in leases} == owner
    assert store.holders([*names, "not-a-host"]) == owner
    # Releasing frees hosts for the next request.
    first = results[0][0]
    mine = [h for h, r in owner.items() if r == first]
    assert store.release_leases(first) == len(mine)
    assert all(x.request_id != first for x in store.inflight())


def _submit_worker(db, n, out):
    with maas_lib.open_fleet(db) as fleet:
        out.put([fleet.submit("reboot", ["n*"], batch_size="50%").id for _ in range(n)])


def test_many_processes_submit_concurrently_without_loss(db_path):
    with maas_lib.open_fleet(db_path) as fleet:
        fleet.store.upsert_hosts(hosts(*[f"n{i}" for i in range(50)]), [], actor="t")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_submit_worker, args=(str(db_path), 25, out)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in out.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
    assert len(ids) == len(set(ids)) == 100
    with maas_lib.open_fleet(db_path) as fleet:
        rows = fleet.requests()
        assert len(rows) == 100 and all(r.host_count == 50 for r in rows)
        assert all(r.counts == {"pending": 50} for r in rows)


def test_claims_go_oldest_first_and_each_request_to_one_worker(db_path):
    store = open_store(db_path)
    store.upsert_hosts(hosts("a", "b"), [], actor="t")
    ids = [store.create_request(new_request(["a"])) for _ in range(3)]
    assert store.claim_request("w1", ttl=30) == ids[0]
    assert store.claim_request("w2", ttl=30) == ids[1]
    assert store.get_request(ids[0]).state == "running"
    assert store.claim_request("w1", ttl=30) == ids[2]
    assert store.claim_request("w2", ttl=30) is None
    kinds = [e.kind for e in store.events(ids[0])]
    assert kinds == ["request_claimed", "request_accepted"]


def test_a_dead_workers_request_is_resumed_with_its_leases(db_path):
    store = open_store(db_path)
    store.upsert_hosts(hosts("a", "b"), [], actor="t")
    rid = store.create_request(new_request(["a", "b"]))
    assert store.claim_request("dead", ttl=0.2) == rid
    store.acquire_leases(rid, ["a", "b"], holder="dead")
    assert store.claim_request("alive", ttl=30) is None  # claim still valid
    import time

    time.sleep(0.3)  # no heartbeat from "dead": its claim expires
    assert store.claim_request("alive", ttl=30) == rid
    assert {x.holder for x in store.inflight()} == {"alive"}
    assert store.events(rid)[0].kind == "request_resumed"


def test_heartbeats_keep_claims(db_path):
    import time

    store = open_store(db_path)
    store.upsert_hosts(hosts("a"), [], actor="t")
    rid = store.create_request(new_request(["a"]))
    assert store.claim_request("w1", ttl=0.3) == rid
    for _ in range(3):
        time.sleep(0.15)
        store.heartbeat("w1", ttl=0.3)
        assert store.claim_request("w2", ttl=30) is None
    store.release_claim(rid, "w1")
    assert store.claim_request("w2", ttl=30) == rid


def _claim_worker(db, name, out):
    store = open_store(db)
    got = []
    while (rid := store.claim_request(name, ttl=60)) is not None:
        got.append(rid)
    out.put(got)


def test_claims_are_atomic_across_processes(db_path):
    store = open_store(db_path)
    store.upsert_hosts(hosts("a"), [], actor="t")
    ids = [store.create_request(new_request(["a"])) for _ in range(60)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_worker, args=(str(db_path), f"w{i}", out)) for i in range(4)]
    for p in procs:
        p.start()
    claimed = [rid for _ in procs for rid in out.get(timeout=60)]
    for p in procs:
        p.join(timeout=60)
    assert sorted(claimed) == ids


def test_steps_are_recorded_as_they_happen_and_survive_a_crash(db_path):
    from maas_lib.models import HostTaskState

    store = open_store(db_path)
    store.upsert_hosts(hosts("a", "b"), [], actor="t")
    rid = store.create_request(new_request(["a", "b"], Action.POWER_CYCLE))
    ta = store.start_task(rid, "a", "power-cycle", batch=0)
    s1 = store.start_step(ta, "power_off")
    store.end_step(s1, "succeeded", 0.4, via="ipmi://x:623")
    s2 = store.start_step(ta, "power_on")
    store.end_step(s2, "failed", 3.0, error_class="unreachable", error="no answer")
    store.end_task(ta, HostTaskState.FAILED, error_class="unreachable", reason="no answer")
    tb = store.start_task(rid, "b", "power-cycle", batch=1)
    store.start_step(tb, "power_off")  # the worker dies here: no end is written
    st = {h.host: h for h in store.get_request(rid).hosts}
    assert (st["a"].state, st["a"].error_class, st["a"].batch) == ("failed", "unreachable", 0)
    assert (st["b"].state, st["b"].batch) == ("running", 1)

    # A fresh process (the restarted scheduler) finds exactly the step in flight.
    store.close()
    store = open_store(db_path)
    assert store.interrupt_open_steps(rid) == [("b", "power_off")]
    assert store.interrupt_open_steps(rid) == []
    steps = store.steps(rid)
    assert [(s["host"], s["step"], s["outcome"]) for s in steps] == [
        ("a", "power_off", "succeeded"),
        ("a", "power_on", "failed"),
        ("b", "power_off", "interrupted"),
    ]
    assert steps[0]["via"] == "ipmi://x:623" and steps[1]["duration_s"] == 3.0
    assert all(s["started"] and s["finished"] for s in steps)
    # The retry is a second attempt of the same host.
    tb2 = store.start_task(rid, "b", "power-cycle", batch=1)
    store.start_step(tb2, "power_off")
    assert [s["attempt"] for s in store.steps(rid, "b")] == [1, 2]


def test_overlaps_are_resolved_in_acceptance_order_when_claimed(db_path):
    store = open_store(db_path)
    store.upsert_hosts(hosts("a", "b", "c", "d"), [], actor="t")
    r1 = store.create_request(new_request(["a", "b"]))
    r2 = store.create_request(new_request(["b", "c"]))
    wait = NewRequest(
        **{**new_request(["c", "d"]).__dict__, "policy": BatchPolicy(on_overlap="wait")}
    )
    r3 = store.create_request(wait)
    # Nothing is resolved at acceptance; an older request blocks a newer one, never back.
    assert store.blockers(["a", "b", "c"], r2) == {"a": r1, "b": r1}
    assert store.blockers(["a", "b"], r1) == {}
    assert store.blockers(["b", "c", "d"]) == {"b": r1, "c": r2, "d": r3}
    for worker in ("w1", "w2", "w3"):
        store.claim_request(worker, ttl=30)
    h2 = {h.host: h for h in store.get_request(r2).hosts}
    assert (h2["b"].state, h2["b"].holder, h2["b"].reason) == (
        "dropped",
        r1,
        f"held by request {r1}",
    )
    assert h2["c"].state == "pending"
    h3 = {h.host: h for h in store.get_request(r3).hosts}
    assert (h3["c"].state, h3["c"].reason) == ("pending", f"waiting for request {r2}")
    assert h3["d"].state == "pending" and h3["d"].reason is None


def _begin_worker(db, request_id, names, out):
    store = open_store(db)
    result = store.begin_hosts(
        request_id, names, batch=0, action="reboot", holder=f"w{request_id}", limits={"p": 10}
    )
    out.put((request_id, list(result.started), result.blocked))


def test_starting_hosts_is_atomic_and_keeps_the_pool_budget_across_processes(db_path):
    from maas_lib.models import HostTaskState

    store = open_store(db_path)
    names = [f"n{i:03d}" for i in range(200)]
    store.upsert_hosts(hosts(*names), [], actor="t")
    slices = [names[i : i + 50] for i in range(0, 200, 50)]
    ids = [store.create_request(new_request(s)) for s in slices]
    for rid in ids:
        assert store.claim_request(f"w{rid}", ttl=60) == rid
    # A worker that does not hold the claim starts nothing.
    assert (
        store.begin_hosts(
            ids[0], slices[0], batch=0, action="reboot", holder="x", limits={}
        ).started
        == {}
    )
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_begin_worker, args=(str(db_path), rid, s, out))
        for rid, s in zip(ids, slices, strict=True)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    started = [h for _, s, _ in results for h in s]
    # Four schedulers at once, one pool with a budget of 10: exactly 10 hosts go down.
    assert len(started) == len(set(started)) == 10
    assert len(store.inflight()) == 10
    blocked = [why for _, _, b in results for why in b.values()]
    assert blocked and all(why == "pool p at its budget of 10 unavailable" for why in blocked)
    # A host's task ending frees its budget slot (and its lease) for the next one.
    rid, first, _ = next(r for r in results if r[1])
    task = store.begin_hosts(
        rid, first, batch=0, action="reboot", holder=f"w{rid}", limits={"p": 10}
    )
    assert sorted(task.started) == sorted(first)  # own leases: no budget check again
    for task_id in task.started.values():
        store.end_task(task_id, HostTaskState.SUCCEEDED)
    assert len(store.inflight()) == 10 - len(first)
