"""The job-queue store against real databases — SQLite files and PostgreSQL schemas —
including several processes sharing one.

Tests taking `store_url` run once per backend (`[sqlite]`, `[postgresql]`); the
PostgreSQL ones skip when no server answers at `MAAS_TEST_PG`.
"""

import itertools
import multiprocessing as mp
import sqlite3
import time
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maas_lib
from maas_lib.errors import InputError, NotFound, StoreError
from maas_lib.models import (
    Action,
    BatchPolicy,
    HostSpec,
    HostStatus,
    HostTaskState,
    PoolSpec,
    RequestState,
)
from maas_lib.store import NewRequest, open_store
from maas_lib.store.pg_url import parse_pg_url
from maas_lib.store.schema import LATEST_VERSION

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
    "install_targets",
    "install_reports",
    "workers",
    "api_tokens",
    "pool_owners",
    "audit_log",
    "idempotency_keys",
    "schema_migrations",
}
#: What a failed foreign key raises, per driver (the store passes driver errors through).
INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


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


def is_pg(url) -> bool:
    return str(url).startswith("postgresql://")


# -- schema and migrations ----------------------------------------------------------------


def test_fresh_database_is_wal_with_all_tables_at_latest_version(db_path):
    store = open_store(db_path)
    assert store.schema_version() == LATEST_VERSION
    store.close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names >= TABLES


def test_reopening_does_not_reapply_migrations(store_url):
    open_store(store_url).close()
    again = f"sqlite:///{store_url}" if not is_pg(store_url) else store_url
    store = open_store(again)
    # A fresh store is created at the latest version at once, on both backends.
    applied = store.conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert applied == [(LATEST_VERSION,)]
    assert store.schema_version() == LATEST_VERSION


def test_newer_schema_is_refused(store_url):
    store = open_store(store_url)
    store.conn.execute(
        f"INSERT INTO schema_migrations (version, applied) VALUES ({LATEST_VERSION + 1}, 'x')"
    )
    store.close()
    with pytest.raises(StoreError, match="newer than this maas-lib"):
        open_store(store_url)


def test_not_a_database_is_a_clear_error(tmp_path):
    bogus = tmp_path / "x.db"
    bogus.write_text("this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot use database"):
        open_store(bogus)


def _open_worker(url, go, out):
    go.wait(30)
    try:
        store = open_store(url)
        out.put(store.schema_version())
        store.close()
    except Exception as exc:  # reported, not raised: the parent asserts
        out.put(repr(exc))


def test_processes_opening_a_fresh_pg_schema_at_once_all_succeed(pg_url):
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_open_worker, args=(pg_url, go, out)) for _ in range(4)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # every process imported and waiting
    go.set()
    versions = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert versions == [LATEST_VERSION] * 4
    store = open_store(pg_url)
    assert store.conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == 1


# -- URLs and secrets ---------------------------------------------------------------------


def test_pg_urls_keep_passwords_out_of_what_is_shown():
    t = parse_pg_url("postgresql://u:p%40ss@db1:5432,db2/q?schema=s1&password=other&sslmode=off")
    assert t.schema == "s1"
    assert "schema" not in t.conninfo and "sslmode=off" in t.conninfo
    assert t.url == "postgresql://u:***@db1:5432,db2/q?schema=s1&password=***&sslmode=off"
    assert t.scrub("auth failed for p@ss, p%40ss and other\nsecond line") == (
        "auth failed for ***, *** and *** second line"
    )
    with pytest.raises(InputError, match="schema="):
        parse_pg_url("postgresql://h/db?schema=a;drop")


def test_an_unreachable_pg_server_is_a_clear_error_without_the_password():
    with pytest.raises(StoreError) as info:
        open_store("postgresql://maas:hunter2@127.0.0.1:1/maas?connect_timeout=3")
    message = str(info.value)
    assert message.startswith("cannot open database postgresql://maas:***@127.0.0.1:1/maas")
    assert "hunter2" not in message and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_store_url_hides_the_password(pg_url):
    parts = urlsplit(pg_url)
    user, _, host = parts.netloc.rpartition("@")
    if ":" not in user:  # trust auth ignores a password, so give it one to hide
        user = f"{user or 'postgres'}:hunter2"
    password = user.partition(":")[2]
    store = open_store(urlunsplit(parts._replace(netloc=f"{user}@{host}")))
    assert password not in store.url and ":***@" in store.url
    assert store.url.endswith(parts.query)
    store.close()


def test_deadlocks_are_retried_not_raised(pg_url):
    store = open_store(pg_url)
    calls = []

    def flaky(self):
        calls.append(1)
        if len(calls) < 3:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return "done"

    assert store._call(flaky, (), {}) == "done" and len(calls) == 3
    store.close()


# -- hosts and requests -------------------------------------------------------------------


def test_reimport_updates_fields_but_keeps_standing_and_created(store_url):
    store = open_store(store_url)
    assert store.upsert_hosts(hosts("a", "b"), [PoolSpec(name="p")], actor="t") == (2, 0)
    created = store.get_host("a").created
    store.conn.execute("UPDATE hosts SET status = 'quarantined' WHERE name = 'a'")
    moved = [HostSpec(name="a", pool="q", bmc_address="10.9.9.9"), *hosts("c")]
    assert store.upsert_hosts(moved, [], actor="t") == (1, 1)
    a = store.get_host("a")
    assert (a.pool, a.bmc_address, a.status, a.created) == ("q", "10.9.9.9", "quarantined", created)
    assert [h.name for h in store.list_hosts()] == ["a", "b", "c"]
    assert [h.name for h in store.list_hosts("p")] == ["b", "c"]
    assert a.bmc_tls_verify is True and [p.name for p in store.list_pools()] == ["p", "q"]


def test_request_and_its_hosts_are_written_in_one_transaction(store_url):
    store = open_store(store_url)
    store.upsert_hosts(hosts("a", "b"), [], actor="t")
    with pytest.raises(INTEGRITY_ERRORS):
        store.create_request(new_request(["a", "ghost"]))
    assert store.list_requests() == []
    assert store.conn.execute("SELECT COUNT(*) FROM request_hosts").fetchone()[0] == 0
    rid = store.create_request(new_request(["b", "a"]))
    st_ = store.get_request(rid)
    assert [h.host for h in st_.hosts] == ["b", "a"]  # as submitted, not sorted
    assert {h.state for h in st_.hosts} == {"pending"}
    assert [e.kind for e in store.events(rid)] == ["request_accepted"]


NAME_CHARS = "ab01-"
_EXAMPLES = itertools.count()


@settings(
    max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(
    names=st.sets(st.text(NAME_CHARS, min_size=1, max_size=5), min_size=1, max_size=25),
    pattern=st.text(NAME_CHARS + "*?[]!", min_size=1, max_size=6),
)
def test_glob_matching_equals_fnmatch(store_url, names, pattern):
    # One store for every example: each example's hosts under a prefix of their own.
    prefix = f"x{next(_EXAMPLES)}_h"
    store = open_store(store_url)
    store.upsert_hosts(
        [HostSpec(name=prefix + n, pool="p", bmc_address="10.0.0.1") for n in names], [], actor="t"
    )
    glob = prefix + pattern
    got = store.match_hosts([], [glob]).glob_hits[glob]
    assert got == sorted(n for n in (prefix + x for x in names) if fnmatchcase(n, glob))
    store.close()


# -- leases, claims and workers -----------------------------------------------------------


def begin(store, request_id, names, *, holder="w", batch=0, action="reboot"):
    """Start `names` of a claimed request as the scheduler does; host → task id."""
    began = store.begin_hosts(
        request_id, names, batch=batch, action=action, holder=holder, limits={}
    )
    assert not began.blocked, began.blocked
    return began.started


def _lease_worker(db, out):
    store = open_store(db)
    worker = f"w{mp.current_process().pid}"
    rid = store.claim_request(worker, ttl=60)
    began = store.begin_hosts(
        rid, store.pending_hosts(rid), batch=0, action="reboot", holder=worker, limits={}
    )
    out.put((rid, worker, sorted(began.started), began.blocked))


def test_leases_are_atomic_across_processes(store_url):
    store = open_store(store_url)
    names = [f"n{i:03d}" for i in range(200)]
    store.upsert_hosts(hosts(*names), [], actor="t")
    wait = NewRequest(**{**new_request(names).__dict__, "policy": BatchPolicy(on_overlap="wait")})
    ids = [store.create_request(wait) for _ in range(4)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_lease_worker, args=(store_url, out)) for _ in ids]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    # Each process claimed its own request, and every host went to the oldest one only.
    assert [rid for rid, *_ in results] == ids
    (first, worker, started, _), *rest = results
    assert started == names
    for *_, started, blocked in rest:
        assert started == [] and set(blocked.values()) == {f"waiting for request {first}"}
    assert {x.host: x.request_id for x in store.inflight()} == dict.fromkeys(names, first)
    # Ending the first request frees its hosts for the next one.
    store.finish_request(first, worker, RequestState.SUCCEEDED, None)
    assert store.inflight() == []
    second, worker2 = results[1][:2]
    assert sorted(begin(store, second, names, holder=worker2)) == names
    assert {x.request_id for x in store.inflight()} == {second}


def _submit_worker(db, n, out):
    with maas_lib.open_fleet(db) as fleet:
        out.put([fleet.submit("reboot", ["n*"], batch_size="50%").id for _ in range(n)])


def test_many_processes_submit_concurrently_without_loss(store_url):
    with maas_lib.open_fleet(store_url) as fleet:
        fleet.store.upsert_hosts(hosts(*[f"n{i}" for i in range(50)]), [], actor="t")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_submit_worker, args=(store_url, 25, out)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in out.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
    assert len(ids) == len(set(ids)) == 100
    with maas_lib.open_fleet(store_url) as fleet:
        rows = fleet.requests()
        assert len(rows) == 100 and all(r.host_count == 50 for r in rows)
        assert all(r.counts == {"pending": 50} for r in rows)


def test_claims_go_oldest_first_and_each_request_to_one_worker(store_url):
    store = open_store(store_url)
    store.upsert_hosts(hosts("a", "b"), [], actor="t")
    ids = [store.create_request(new_request(["a"])) for _ in range(3)]
    assert store.claim_request("w1", ttl=30) == ids[0]
    assert store.claim_request("w2", ttl=30) == ids[1]
    assert store.get_request(ids[0]).state == "running"
    assert store.claim_request("w1", ttl=30) == ids[2]
    assert store.claim_request("w2", ttl=30) is None
    kinds = [e.kind for e in store.events(ids[0])]
    assert kinds == ["request_claimed", "request_accepted"]


def test_a_dead_workers_request_is_resumed_with_its_leases(store_url):
    store = open_store(store_url)
    store.upsert_hosts(hosts("a", "b"), [], actor="t")
    rid = store.create_request(new_request(["a", "b"]))
    assert store.claim_request("dead", ttl=0.2) == rid
    begin(store, rid, ["a", "b"], holder="dead")
    assert store.claim_request("alive", ttl=30) is None  # claim still valid
    time.sleep(0.3)  # no heartbeat from "dead": its claim expires
    assert store.claim_request("alive", ttl=30) == rid
    assert {x.holder for x in store.inflight()} == {"alive"}
    assert store.events(rid)[0].kind == "request_resumed"


def test_a_worker_that_lost_its_claim_starts_nothing_and_writes_only_its_task(store_url):
    store = open_store(store_url)
    store.upsert_hosts(hosts("a", "b"), [], actor="t")
    rid = store.create_request(new_request(["a", "b"]))
    assert store.claim_request("old", ttl=0.2) == rid
    task = store.begin_hosts(rid, ["a"], batch=0, action="reboot", holder="old", limits={})
    time.sleep(0.3)
    assert store.claim_request("new", ttl=30) == rid  # "old" stalled: taken over
    late = store.begin_hosts(rid, ["b"], batch=0, action="reboot", holder="old", limits={})
    assert late.started == {} and late.blocked == {"b": "request claimed by new"}
    store.end_task(task.started["a"], HostTaskState.FAILED, reason="late", holder="old")
    hosts_now = {h.host: h.state for h in store.get_request(rid).hosts}
    assert hosts_now == {"a": "running", "b": "pending"}
    assert [(x.host, x.holder) for x in store.inflight()] == [("a", "new")]


def test_heartbeats_keep_claims(store_url):
    store = open_store(store_url)
    store.upsert_hosts(hosts("a"), [], actor="t")
    rid = store.create_request(new_request(["a"]))
    assert store.claim_request("w1", ttl=0.3) == rid
    for _ in range(3):
        time.sleep(0.15)
        store.heartbeat("w1", ttl=0.3)
        assert store.claim_request("w2", ttl=30) is None
    store.release_claim(rid, "w1")
    assert store.claim_request("w2", ttl=30) == rid


def test_list_workers_shows_liveness_claims_and_leases(store_url):
    store = open_store(store_url)
    assert store.list_workers() == []
    store.upsert_hosts(hosts("a", "b", "c"), [], actor="t")
    r1 = store.create_request(new_request(["a", "b"]))
    r2 = store.create_request(new_request(["c"]))
    store.heartbeat("w2", ttl=30)
    store.heartbeat("w1", ttl=30)
    assert store.claim_request("w1", ttl=30) == r1
    assert store.claim_request("w1", ttl=30) == r2
    begin(store, r1, ["a", "b"], holder="w1")
    time.sleep(0.3)
    store.heartbeat("w1", ttl=30)
    workers = store.list_workers(ttl=0.2)
    assert [w.id for w in workers] == ["w1", "w2"]
    w1, w2 = workers
    assert (w1.alive, w1.requests, w1.hosts_leased) == (True, [r1, r2], 2)
    assert (w2.alive, w2.requests, w2.hosts_leased) == (False, [], 0)
    assert w2.heartbeat_age_s >= 0.3 and w1.heartbeat_age_s < 0.2
    assert w1.started <= w1.heartbeat and w1.pid > 0 and w1.hostname
    assert all(w.alive for w in store.list_workers())  # the default ttl is 30 s
    store.finish_request(r2, "w1", "succeeded", None)
    store.retire_worker("w2")
    assert [(w.id, w.requests) for w in store.list_workers()] == [("w1", [r1])]
    with maas_lib.open_fleet(store_url) as fleet:
        assert [w.id for w in fleet.workers()] == ["w1"]


def _claim_worker(db, name, out):
    store = open_store(db)
    got = []
    while (rid := store.claim_request(name, ttl=60)) is not None:
        got.append(rid)
    out.put(got)


def test_claims_are_atomic_across_processes(store_url):
    store = open_store(store_url)
    store.upsert_hosts(hosts("a"), [], actor="t")
    ids = [store.create_request(new_request(["a"])) for _ in range(60)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_worker, args=(store_url, f"w{i}", out)) for i in range(4)]
    for p in procs:
        p.start()
    claimed = [rid for _ in procs for rid in out.get(timeout=60)]
    for p in procs:
        p.join(timeout=60)
    assert sorted(claimed) == ids


# -- tasks, steps, overlaps and budgets ---------------------------------------------------


def test_steps_are_recorded_as_they_happen_and_survive_a_crash(store_url):
    store = open_store(store_url)
    store.upsert_hosts(hosts("a", "b"), [], actor="t")
    rid = store.create_request(new_request(["a", "b"], Action.POWER_CYCLE))
    assert store.claim_request("w", ttl=60) == rid
    ta = begin(store, rid, ["a"], action="power-cycle")["a"]
    s1 = store.start_step(ta, "power_off")
    store.end_step(s1, "succeeded", 0.4, via="ipmi://x:623")
    s2 = store.start_step(ta, "power_on")
    store.end_step(s2, "failed", 3.0, error_class="unreachable", error="no answer")
    store.end_task(ta, HostTaskState.FAILED, error_class="unreachable", reason="no answer")
    tb = begin(store, rid, ["b"], action="power-cycle", batch=1)["b"]
    store.start_step(tb, "power_off")  # the worker dies here: no end is written
    st = {h.host: h for h in store.get_request(rid).hosts}
    assert (st["a"].state, st["a"].error_class, st["a"].batch) == ("failed", "unreachable", 0)
    assert (st["b"].state, st["b"].batch) == ("running", 1)

    # A fresh process (the restarted scheduler) finds exactly the step in flight.
    store.close()
    store = open_store(store_url)
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
    tb2 = begin(store, rid, ["b"], action="power-cycle", batch=1)["b"]
    store.start_step(tb2, "power_off")
    assert [s["attempt"] for s in store.steps(rid, "b")] == [1, 2]
    with pytest.raises(NotFound, match="unknown host task"):
        store.start_step(10**9, "power_off")


def test_overlaps_are_resolved_in_acceptance_order_when_claimed(store_url):
    store = open_store(store_url)
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


def test_starting_hosts_is_atomic_and_keeps_the_pool_budget_across_processes(store_url):
    store = open_store(store_url)
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
        ctx.Process(target=_begin_worker, args=(store_url, rid, s, out))
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


# -- telemetry: the same figures from both backends ---------------------------------------


def _record_history(url: str) -> object:
    """The same requests, tasks and steps on a store, with fixed timestamps."""
    store = open_store(url)
    store.upsert_hosts(
        [
            HostSpec(name=f"h{i}", pool=f"p{i % 3}", bmc_address="10.0.0.1", hw_model=f"m{i % 2}")
            for i in range(12)
        ],
        [],
        actor="t",
    )
    for r in range(3):
        rid = store.create_request(new_request([f"h{i}" for i in range(r, 12, 3)]))
        assert store.claim_request("w", ttl=60) == rid
        for i in range(r, 12, 3):
            task = begin(store, rid, [f"h{i}"])[f"h{i}"]
            for k, step in enumerate(("power_off", "power_on")):
                sid = store.start_step(task, step)
                ok = (i + k) % 5 != 0
                store.end_step(sid, "succeeded" if ok else "failed", 0.1 * i + 0.37 * k + r / 7)
            state = HostTaskState.SUCCEEDED if i % 5 else HostTaskState.FAILED
            store.end_task(task, state, error_class=None if i % 5 else "timeout")
        store.finish_request(rid, "w", "partial", None)
    ph = "%s" if is_pg(url) else "?"
    rows = store.conn.execute("SELECT id FROM requests ORDER BY id").fetchall()
    for n, (rid,) in enumerate(rows):
        created = f"2024-03-01T10:00:{n:02d}.{n * 137 + 500:06d}Z"
        store.conn.execute(f"UPDATE requests SET created = {ph} WHERE id = {ph}", (created, rid))
    for table in ("step_results", "host_tasks"):
        ids = store.conn.execute(f"SELECT id FROM {table} ORDER BY id").fetchall()
        for n, (row_id,) in enumerate(ids):
            started = f"2024-03-01T10:{n // 7:02d}:{n % 60:02d}.{(n * 99991) % 10**6:06d}Z"
            update = f"UPDATE {table} SET started = {ph} WHERE id = {ph}"
            store.conn.execute(update, (started, row_id))
    return store


def test_stats_are_the_same_figures_on_both_backends(tmp_path, pg_url):
    lite, pg = _record_history(str(tmp_path / "s.db")), _record_history(pg_url)
    for since, action, pool in [(None, None, None), ("2024-03-01T10:01:00Z", "reboot", "p1")]:
        a, b = lite.stats(since, action, pool), pg.stats(since, action, pool)
        assert a.actions == b.actions and a.actions
        assert a.fleet.model_dump(exclude={"workers"}) == b.fleet.model_dump(exclude={"workers"})
    buckets = [0.2, 0.5, 1.0, 2.5]
    assert lite.step_histograms(None, buckets) == pg.step_histograms(None, buckets)
    assert lite.outcome_series(None, 60) == pg.outcome_series(None, 60)
    assert lite.outcome_series("2024-03-01T10:02:00Z", 7, "reboot") == pg.outcome_series(
        "2024-03-01T10:02:00Z", 7, "reboot"
    )


# -- the scheduler on PostgreSQL ----------------------------------------------------------


@pytest.mark.slow
def test_rolling_power_cycle_on_postgres_never_exceeds_pool_budget(tmp_path, pg_url, monkeypatch):
    """test_scheduler's rolling power cycle, with the fleet's store in PostgreSQL."""
    from maas_lib import sim
    from tests.integration.test_scheduler import RUN, offs_since, peak_down, powered_on
    from tests.simfleet import SimFleet, free_udp_base, read_env

    directory = tmp_path / "sim"
    config = sim.sim_config(
        directory=directory,
        db=pg_url,
        ipmi=6,
        redfish=2,
        ipmi_base_port=free_udp_base(12),
        power_delay=0.2,
        install_time=0.8,
    )
    info = sim.start(config)
    try:
        s = SimFleet(directory, pg_url, info, read_env(Path(info["credentials_env"])))
        for key, value in s.env.items():
            monkeypatch.setenv(key, value)
        budgets = tmp_path / "budgets.yml"
        budgets.write_text(
            "all:\n  children:\n    sim_ipmi:\n      vars:\n        pool_max_unavailable: 2\n"
        )
        with s.fleet() as fleet:
            fleet.import_hosts([info["inventory"], str(budgets)])
            ipmi, redfish = s.hosts(kind="ipmi"), s.hosts(kind="redfish")
            since = powered_on(fleet, ipmi + redfish)
            a = fleet.submit("power-cycle", ipmi[:3], batch_size="3").id
            b = fleet.submit("power-cycle", ipmi[3:], batch_size="3").id
            c = fleet.submit("power-cycle", redfish, batch_size="1").id
            report = fleet.run(**RUN)
            assert report.finished == {a: "succeeded", b: "succeeded", c: "succeeded"}
            state = s.state()
            assert all(offs_since(state, h, since) == 1 for h in ipmi + redfish)
            assert peak_down(state, ipmi, since) <= 2, "pool budget of 2 exceeded"
            assert peak_down(state, redfish, since) <= 1, "batch size of 1 exceeded"
            assert fleet.inflight() == []
            assert fleet.stats().actions[0].succeeded == len(ipmi + redfish)
    finally:
        sim.stop(directory)


def test_a_sqlite_store_copies_into_postgresql_whole(db_path, pg_url, cli):
    """`maasctl db copy`: hosts keep their standing, requests their ids, hosts' order,
    steps and events; stats read the same; the target goes on numbering after them."""
    src = open_store(db_path)
    src.upsert_hosts(hosts("c", "a", "b"), [PoolSpec(name="p", max_unavailable="1")], actor="t")
    done = src.create_request(new_request(["c", "a", "b"], Action.POWER_CYCLE))
    assert src.claim_request("w1", ttl=30) == done
    began = src.begin_hosts(done, ["c", "a"], batch=0, action="power-cycle", holder="w1", limits={})
    for host, task in began.started.items():
        step = src.start_step(task, "power-off")
        src.end_step(step, "succeeded", 0.5, via="ipmi://x:623")
        ok = host == "c"
        src.end_task(
            task,
            HostTaskState.SUCCEEDED if ok else HostTaskState.FAILED,
            error_class=None if ok else "unreachable",
            holder="w1",
            host_status=None if ok else HostStatus.QUARANTINED,
        )
    src.cancel_pending(done, "test")
    src.finish_request(done, "w1", RequestState.PARTIAL, "1 of 3 hosts succeeded")
    src.add_install_report("b", "ubuntu", None)
    queued = src.create_request(new_request(["b"]))
    before = {
        "requests": [src.get_request(r) for r in (done, queued)],
        "steps": src.steps(done),
        "hosts": src.list_hosts(),
        "events": [(e.kind, e.message) for e in src.events(done)],
        "stats": src.stats(None, None, None).actions,
        "reports": src.install_reports(),
    }
    src.close()

    r = cli("db", "copy", "--to", pg_url, "--json")
    assert r.code == 0, r
    assert r.json()["request_hosts"] == 4 and r.json()["step_results"] == 2

    dst = open_store(pg_url)
    after = {
        "requests": [dst.get_request(r) for r in (done, queued)],
        "steps": dst.steps(done),
        "hosts": dst.list_hosts(),
        "events": [(e.kind, e.message) for e in dst.events(done)],
        "stats": dst.stats(None, None, None).actions,
        "reports": dst.install_reports(),
    }
    assert after == before
    assert [h.host for h in after["requests"][0].hosts] == ["c", "a", "b"]
    assert dst.get_host("a").status == HostStatus.QUARANTINED
    assert dst.create_request(new_request(["c"])) == queued + 1
    dst.close()
    # A second copy into the same database is refused: it is no longer empty.
    again = cli("db", "copy", "--to", pg_url)
    assert again.code == 2 and "not empty" in again.err


def test_copy_refuses_a_source_with_a_running_request(db_path, tmp_path, cli):
    src = open_store(db_path)
    src.upsert_hosts(hosts("a"), [], actor="t")
    rid = src.create_request(new_request(["a"]))
    src.claim_request("w1", ttl=30)
    src.close()
    r = cli("db", "copy", "--to", str(tmp_path / "new.db"))
    assert r.code == 2 and f"request {rid} is running" in r.err, r
