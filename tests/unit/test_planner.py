"""Properties of the scheduler's pure core, checked with hypothesis."""

from hypothesis import given
from hypothesis import strategies as st

from maas_lib.models import Amount, BatchPolicy, OverlapMode
from maas_lib.planner import (
    admit,
    failures_exceeded,
    plan_batches,
    pool_limits,
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
