"""Properties of the scheduler's pure core, checked with hypothesis — and of the store's
admission, which runs that core under its locks (on a real SQLite store)."""

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import maas_lib
from maas_lib.models import Amount, BatchPolicy, HostSpec, OverlapMode, PoolSpec
from maas_lib.planner import (
    admit,
    batch_size,
    failures_exceeded,
    next_batch,
    plan_batches,
    pool_limits,
    pool_limits_for,
    resolve_overlaps,
)

host_lists = st.lists(st.text("abcdef0123", min_size=1, max_size=6), unique=True, max_size=60)
amounts = st.one_of(st.integers(1, 70).map(str), st.integers(1, 100).map(lambda p: f"{p}%"))


@given(host_lists, amounts, st.integers(0, 10))
def test_batches_cover_every_host_once_in_order(hosts, size, canary):
    canary = min(canary, len(hosts))
    policy = BatchPolicy(batch_size=size, canary=canary)
    batches = plan_batches(hosts, policy)
    assert [h for b in batches for h in b] == hosts  # each host once, order kept
    assert all(batches)
    limit = max(1, Amount.model_validate(size).ceil_of(len(hosts)))
    rest = batches[1:] if canary else batches
    assert all(len(b) <= limit for b in rest)
    if canary and hosts:
        assert batches[0] == hosts[:canary]


def test_percent_batches_round_up():
    hosts = [f"h{i}" for i in range(10)]
    assert [len(b) for b in plan_batches(hosts, BatchPolicy(batch_size="25%"))] == [3, 3, 3, 1]
    assert [len(b) for b in plan_batches(hosts, BatchPolicy(batch_size="1%"))] == [1] * 10


@given(st.integers(0, 200), st.integers(1, 200), amounts)
def test_failure_threshold_is_strictly_greater_than(failed, total, threshold):
    policy = BatchPolicy(max_failures=threshold)
    allowed = Amount.model_validate(threshold).floor_of(total)
    assert failures_exceeded(failed, total, policy) == (failed > allowed)


def test_failure_threshold_equal_is_allowed():
    policy = BatchPolicy(max_failures="2")
    assert not failures_exceeded(2, 10, policy)
    assert failures_exceeded(3, 10, policy)
    assert failures_exceeded(1, 10, BatchPolicy(max_failures="0"))


@given(
    host_lists,
    st.dictionaries(st.text("abcdef0123", min_size=1, max_size=6), st.integers(1, 9)),
    st.integers(1, 9),
)
def test_overlaps_split_hosts_without_loss(hosts, holders, me):
    for mode in OverlapMode:
        r = resolve_overlaps(me, hosts, holders, mode)
        blocked = r.dropped if mode is OverlapMode.DROP else r.waiting
        assert sorted(r.free + list(blocked)) == sorted(hosts)
        assert all(holders[h] != me for h in blocked)
        assert all(holders.get(h) in (None, me) for h in r.free)
        assert r.free == [h for h in hosts if h in set(r.free)]


def test_overlap_names_the_holder():
    r = resolve_overlaps(7, ["a", "b", "c"], {"b": 3, "c": 7})
    assert (r.free, r.dropped, r.waiting) == (["a", "c"], {"b": 3}, {})
    w = resolve_overlaps(7, ["a", "b"], {"b": 3}, OverlapMode.WAIT)
    assert (w.free, w.waiting) == (["a"], {"b": 3})


pools = st.sampled_from(["p1", "p2", "p3"])


@given(
    st.lists(
        st.tuples(st.text("abcdef", min_size=1, max_size=5), pools),
        unique_by=lambda t: t[0],
        max_size=40,
    ),
    st.dictionaries(pools, st.integers(0, 6)),
    st.dictionaries(pools, st.one_of(st.none(), amounts)),
    st.one_of(st.none(), amounts),
)
def test_admission_never_exceeds_any_pool_budget(hosts, down, standing, requested):
    pool_of = dict(hosts)
    sizes = {p: 10 for p in ("p1", "p2", "p3")}
    limits = pool_limits(
        sizes,
        {p: Amount.model_validate(a) if a else None for p, a in standing.items()},
        Amount.model_validate(requested) if requested else None,
    )
    admitted, deferred = admit([h for h, _ in hosts], pool_of, down, limits)
    order = [h for h, _ in hosts]
    assert admitted == [h for h in order if h in set(admitted)]
    assert deferred == [h for h in order if h in set(deferred)]
    assert sorted(admitted + deferred) == sorted(pool_of)
    for pool, limit in limits.limits.items():
        now = sum(1 for h in admitted if pool_of[h] == pool)
        already = down.get(pool, 0)
        assert now == 0 or already + now <= limit
        # Nothing deferred while the pool still had room.
        if any(pool_of[h] == pool for h in deferred):
            assert already + now >= limit
    for pool in {"p1", "p2", "p3"} - set(limits.limits):
        assert not any(pool_of[h] == pool for h in deferred)


def test_pool_limit_is_the_tighter_and_at_least_one():
    limits = pool_limits(
        {"web": 8, "db": 3}, {"web": Amount.model_validate("25%")}, Amount.model_validate("3")
    )
    assert limits.limits == {"web": 2, "db": 3}
    tiny = pool_limits({"db": 3}, {"db": Amount.model_validate("10%")})
    assert tiny.limits == {"db": 1}
    assert admit(["a", "b", "c"], {"a": "db", "b": "db", "c": "web"}, {"db": 0}, tiny) == (
        ["a", "c"],
        ["b"],
    )


@given(host_lists, amounts, st.integers(0, 10), st.integers(0, 40))
def test_a_plan_is_the_batches_the_scheduler_cuts_one_by_one(hosts, size, canary, waiting):
    policy = BatchPolicy(batch_size=size, canary=min(canary, len(hosts)))
    total = len(hosts) + waiting  # hosts waiting for another request count in a share
    cut: list[list[str]] = []
    rest = hosts
    while rest:
        cut.append(next_batch(rest, policy, len(cut), total))
        rest = rest[len(cut[-1]) :]
    assert plan_batches(hosts, policy, total) == cut
    assert all(len(b) == batch_size(policy, i, total) for i, b in enumerate(cut[:-1]))


# -- admission as the store runs it --------------------------------------------------------

NAMES = [f"{p}{i}" for p in ("p1", "p2") for i in range(5)]


def _fleet_of(directory: str, standing: dict[str, str | None]) -> maas_lib.Fleet:
    fleet = maas_lib.open_fleet(Path(directory) / "f.db")
    specs = [
        HostSpec(name=n, pool=n[:2], bmc_address="127.0.0.1", bmc_credential="lab") for n in NAMES
    ]
    pools = [PoolSpec(name=p, max_unavailable=a) for p, a in standing.items()]
    fleet.store.upsert_hosts(specs, pools, actor="test")
    return fleet


@settings(max_examples=25, deadline=None)
@given(
    hosts=st.lists(st.sampled_from(NAMES), min_size=1, unique=True),
    held=st.lists(st.sampled_from(NAMES), unique=True, max_size=4),
    standing=st.fixed_dictionaries({"p1": st.one_of(st.none(), amounts), "p2": amounts}),
    requested=st.one_of(st.none(), amounts),
    size=amounts,
)
def test_the_store_admits_what_the_dry_run_shows_and_never_exceeds_a_budget(
    hosts, held, standing, requested, size
):
    with tempfile.TemporaryDirectory() as directory, _fleet_of(directory, standing) as fleet:
        store = fleet.store
        if held:  # an older request another worker runs holds these hosts
            holder = fleet.submit("reboot", held).id
            assert store.claim_request("other", ttl=60) == holder
            store.begin_hosts(holder, held, batch=0, action="reboot", holder="other", limits={})
        policy = {"batch_size": size, "max_unavailable": requested}
        plan = fleet.plan("power-cycle", hosts, **policy)
        pool_of = {h.name: h.pool for h in store.list_hosts()}
        requested_amount = BatchPolicy.model_validate(plan["policy"]).max_unavailable
        limits = pool_limits_for(pool_of, store.list_pools(), requested_amount)
        assert plan["pool_limits"] == limits.limits
        rid = fleet.submit("power-cycle", hosts, **policy).id
        assert store.claim_request("me", ttl=60) == rid
        pending = store.pending_hosts(rid)
        assert pending == [h for b in plan["batches"] for h in b["hosts"]]
        if not plan["batches"]:
            return
        first = plan["batches"][0]
        began = store.begin_hosts(
            rid, first["hosts"], batch=0, action="power-cycle", holder="me", limits=limits.limits
        )
        # The hosts the dry-run said would wait for a budget are the ones the store defers.
        assert list(began.blocked) == first["budget_waits"]
        assert list(began.started) == [h for h in first["hosts"] if h not in began.blocked]
        down_before = plan["pool_down_now"]
        for pool, limit in limits.limits.items():
            now = sum(1 for lease in store.inflight() if lease.pool == pool)
            assert now <= max(limit, down_before.get(pool, 0))
            if any(pool_of[h] == pool for h in began.blocked):
                assert now >= limit
                assert began.blocked[next(h for h in began.blocked if pool_of[h] == pool)] == (
                    f"pool {pool} at its budget of {limit} unavailable"
                )
