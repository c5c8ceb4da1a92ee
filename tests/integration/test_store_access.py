"""Access control's tables through the store, on SQLite and PostgreSQL (`store_url`; the
PostgreSQL cases skip when no server answers at `MAAS_TEST_PG`): API tokens, pool owners,
the audit log, and submissions made once per idempotency key — also when retries race."""

from __future__ import annotations

import threading

import pytest

from maas_lib.access.models import AuditEntry, Outcome, PoolGrant, Role, TokenInfo
from maas_lib.errors import IdempotencyConflict, InputError, NotFound
from maas_lib.models import Action, BatchPolicy, HostSpec, PoolSpec
from maas_lib.store import NewRequest, open_store
from maas_lib.store.base import IdempotencyKey
from maas_lib.store.copy import copy_store


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    s.upsert_hosts(
        [
            HostSpec(name="web01", pool="web", bmc_address="10.0.0.1"),
            HostSpec(name="db01", pool="db", bmc_address="10.0.0.2"),
        ],
        [PoolSpec(name="web"), PoolSpec(name="db")],
        actor="t",
    )
    yield s
    s.close()


def token(name="ci", role=Role.OPERATOR, teams=("web-team",)):
    return TokenInfo(
        name=name,
        role=role,
        teams=list(teams),
        created="2026-01-01T00:00:00.000000Z",
        expires="2026-04-01T00:00:00.000000Z",
    )


def request(hosts=("web01",), by="token:ci"):
    return NewRequest(Action.REBOOT, BatchPolicy(), list(hosts), list(hosts), by, "svc")


def test_tokens_are_found_by_hash_listed_and_revoked_with_audit(store):
    store.add_token(token(), "h" * 64, actor="local:root")
    with pytest.raises(InputError, match="token named ci exists"):
        store.add_token(token(), "x" * 64, actor="local:root")
    found = store.token_by_hash("h" * 64)
    assert found is not None and (found.name, found.role, found.teams) == (
        "ci",
        Role.OPERATOR,
        ["web-team"],
    )
    assert store.token_by_hash("x" * 64) is None  # the refused duplicate wrote nothing
    store.touch_token("ci", "2026-01-02T00:00:00.000000Z")
    assert store.list_tokens()[0].last_used == "2026-01-02T00:00:00.000000Z"
    revoked = store.revoke_token("ci", actor="local:root")
    assert revoked.revoked is not None
    assert store.revoke_token("ci", actor="local:root").revoked == revoked.revoked
    with pytest.raises(NotFound, match="unknown token nope"):
        store.revoke_token("nope", actor="local:root")
    # One record per change (the second revoke changed nothing), newest first.
    assert [(r.verb, r.target, r.principal) for r in store.audit()] == [
        ("tokens.revoke", "token:ci", "local:root"),
        ("tokens.create", "token:ci", "local:root"),
    ]
    assert store.audit()[1].detail["role"] == "operator"


def test_the_database_refuses_two_tokens_with_one_hash(store):
    store.add_token(token("a"), "h" * 64, actor="t")
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError
        store.add_token(token("b"), "h" * 64, actor="t")
    assert [t.name for t in store.list_tokens()] == ["a"]


def test_pool_grants_need_a_known_pool_and_are_audited(store):
    with pytest.raises(NotFound, match="unknown pool nowhere"):
        store.grant_pool(PoolGrant(team="t1", pool="nowhere"), actor="a")
    store.grant_pool(PoolGrant(team="t1", pool="web"), actor="a")
    store.grant_pool(PoolGrant(team="t1", pool="web", destructive=True), actor="a")
    store.grant_pool(PoolGrant(team="t2", pool="db"), actor="a")
    assert [(g.team, g.pool, g.destructive) for g in store.pool_grants()] == [
        ("t2", "db", False),
        ("t1", "web", True),
    ]
    assert [g.team for g in store.pool_grants(["web"])] == ["t1"]
    assert {p.name: p.owners for p in store.list_pools()} == {"db": ["t2"], "web": ["t1"]}
    store.revoke_pool("t1", "web", actor="a")
    with pytest.raises(NotFound, match="team t1 does not own pool web"):
        store.revoke_pool("t1", "web", actor="a")
    assert [(r.verb, r.detail) for r in store.audit()] == [
        ("pools.revoke", {"team": "t1"}),
        ("pools.grant", {"team": "t2", "destructive": False}),
        ("pools.grant", {"team": "t1", "destructive": True}),
        ("pools.grant", {"team": "t1", "destructive": False}),
    ]


def test_an_inventory_owner_is_granted_once_and_never_downgrades_a_grant(store):
    store.grant_pool(PoolGrant(team="t1", pool="web", destructive=True), actor="a")
    spec = [HostSpec(name="web01", pool="web", bmc_address="10.0.0.1")]
    for _ in range(2):
        store.upsert_hosts(spec, [PoolSpec(name="web", owners=["t1", "t3"])], actor="imp")
    assert [(g.team, g.destructive) for g in store.pool_grants(["web"])] == [
        ("t1", True),
        ("t3", False),
    ]
    inventory = [r for r in store.audit() if r.reason == "inventory pool_owner"]
    assert [(r.principal, r.detail["team"]) for r in inventory] == [("imp", "t3")]


def test_audit_filters_by_principal_and_decision(store):
    for who, decision in [("a", "allowed"), ("b", "refused"), ("a", "refused")]:
        store.add_audit(AuditEntry(principal=who, verb="submit", decision=Outcome(decision)))
    assert [r.principal for r in store.audit(decision=Outcome.REFUSED)] == ["a", "b"]
    assert [r.decision for r in store.audit(principal="a")] == ["refused", "allowed"]
    newest = store.audit(limit=1)
    assert len(newest) == 1 and store.audit(before_id=newest[0].id, limit=5)[0].principal == "b"


def test_a_key_gives_one_request_per_principal_and_refuses_another_body(store):
    key = IdempotencyKey("token:ci", "k-1", "body-a")
    rid, created = store.create_request_once(request(), key)
    assert created
    assert store.create_request_once(request(), key) == (rid, False)
    assert store.idempotent_request("token:ci", "k-1") == (rid, "body-a")
    with pytest.raises(IdempotencyConflict, match=f"different submission \\(request {rid}\\)"):
        store.create_request_once(request(("db01",)), IdempotencyKey("token:ci", "k-1", "body-b"))
    # Another principal's key of the same name is its own.
    other, created = store.create_request_once(
        request(by="token:other"), IdempotencyKey("token:other", "k-1", "body-a")
    )
    assert created and other != rid
    assert [r.id for r in store.list_requests()] == [other, rid]
    submits = [r for r in store.audit() if r.verb == "submit"]
    assert [(r.principal, r.target) for r in submits] == [
        ("token:other", f"request:{other}"),
        ("token:ci", f"request:{rid}"),
    ]


def test_racing_retries_of_one_key_create_one_request(store_url, store):
    """Eight connections submit with one key at once: one request, eight same answers."""
    n = 8
    stores = [open_store(store_url) for _ in range(n)]
    barrier = threading.Barrier(n)
    answers: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def retry(s):
        barrier.wait()
        try:
            answers.append(s.create_request_once(request(), IdempotencyKey("p", "k", "h")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=retry, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []
    assert len({rid for rid, _ in answers}) == 1
    assert sorted(created for _, created in answers) == [False] * (n - 1) + [True]
    assert len(store.list_requests()) == 1


def test_db_copy_carries_tokens_grants_the_audit_log_and_keys(tmp_path, pg_url):
    """`maasctl db copy` (SQLite -> PostgreSQL): a token still authenticates by its hash,
    grants and audit records are as they were, a retried key still answers its request."""
    source = open_store(tmp_path / "source.db")
    source.upsert_hosts(
        [HostSpec(name="web01", pool="web", bmc_address="10.0.0.1")],
        [PoolSpec(name="web", owners=["t1"])],
        actor="t",
    )
    source.add_token(token(), "h" * 64, actor="a")
    source.grant_pool(PoolGrant(team="t2", pool="web", destructive=True), actor="a")
    key = IdempotencyKey("token:ci", "k", "body")
    rid, _ = source.create_request_once(request(), key)
    source.finish_request(rid, "w", "cancelled", "test")
    target = open_store(pg_url)
    copy_store(source, target)
    assert target.token_by_hash("h" * 64) == source.token_by_hash("h" * 64)
    assert target.pool_grants() == source.pool_grants()
    assert target.audit() == source.audit()
    assert target.create_request_once(request(), key) == (rid, False)
    # New records go on after the copied ones.
    new_id = target.add_audit(AuditEntry(principal="x", verb="v", decision=Outcome.ALLOWED))
    assert new_id == max(r.id for r in source.audit()) + 1
    source.close()
    target.close()


#: Writes another connection commits between a submission's reads and its transaction:
#: (what it does, whether it can change what authorization reads).
ACCESS_CHANGES = {
    "grant": (lambda s: s.grant_pool(PoolGrant(team="t9", pool="web"), actor="a"), True),
    "grant changed": (
        lambda s: s.grant_pool(PoolGrant(team="t1", pool="web", destructive=True), actor="a"),
        True,
    ),
    "revoke": (lambda s: s.revoke_pool("t1", "web", actor="a"), True),
    "host moved": (
        lambda s: s.upsert_hosts(
            [HostSpec(name="web01", pool="db", bmc_address="10.0.0.1")], [], actor="a"
        ),
        True,
    ),
    "host added": (
        lambda s: s.upsert_hosts(
            [HostSpec(name="web02", pool="web", bmc_address="10.0.0.3")], [], actor="a"
        ),
        True,
    ),
    "inventory owner": (
        lambda s: s.upsert_hosts([], [PoolSpec(name="db", owners=["t2"])], actor="a"),
        True,
    ),
    "same import": (
        lambda s: s.upsert_hosts(
            [HostSpec(name="web01", pool="web", bmc_address="10.0.0.9")],
            [PoolSpec(name="web", owners=["t1"])],
            actor="a",
        ),
        False,
    ),
    "host status": (lambda s: s.set_host_status("web01", "quarantined", "x", actor="a"), False),
}


@pytest.mark.parametrize("change", ACCESS_CHANGES)
def test_a_change_committed_after_authorization_makes_it_decide_again(store_url, store, change):
    """`authorize` decides on the pools and grants read before the transaction; a write
    of another connection that may change them, committed before the intake lock, makes
    the store read them and call `authorize` again (what it answers then is what
    counts); any other write does not."""
    store.grant_pool(PoolGrant(team="t1", pool="web"), actor="a")
    write, changes_access = ACCESS_CHANGES[change]
    seen: list[tuple[dict[str, str], list[tuple[str, str, bool]]]] = []

    def authorize(hosts, grants):
        seen.append((hosts, [(g.team, g.pool, g.destructive) for g in grants]))
        if len(seen) == 1:
            other = open_store(store_url)  # another connection, as another process
            write(other)
            other.close()

    rid, created = store.create_request_once(request(), authorize=authorize)
    assert created and [r.id for r in store.list_requests()] == [rid]
    assert len(seen) == (2 if changes_access else 1)
    assert seen[0] == ({"web01": "web"}, [("t1", "web", False)])
    if change == "host moved":
        assert seen[1] == ({"web01": "db"}, [])
    if change == "revoke":
        assert seen[1] == ({"web01": "web"}, [])
    if change == "grant changed":
        assert seen[1] == ({"web01": "web"}, [("t1", "web", True)])


def test_a_refusal_after_a_change_writes_nothing(store_url, store):
    """Decided again after a revoke, the submission is refused: no request, no key, no
    audit record of a submission (the caller audits the refusal)."""
    store.grant_pool(PoolGrant(team="t1", pool="web"), actor="a")
    calls = []

    def authorize(hosts, grants):
        calls.append(grants)
        if not grants:
            raise PermissionError("no owner")
        other = open_store(store_url)
        other.revoke_pool("t1", "web", actor="a")
        other.close()

    with pytest.raises(PermissionError):
        store.create_request_once(
            request(), IdempotencyKey("token:ci", "k", "h"), authorize=authorize
        )
    assert len(calls) == 2
    assert store.list_requests() == [] and store.idempotent_request("token:ci", "k") is None
    assert [r.verb for r in store.audit()] == ["pools.revoke", "pools.grant"]


@pytest.mark.parametrize("body", ["h", "other"])
def test_a_retry_committed_after_the_keys_read_is_answered_not_repeated(store_url, store, body):
    """The key is read before the intake lock; a retry of another connection that commits
    the same key after that read makes the write break the key's primary key: rolled
    back, and answered as a retry (the same body: the other's request; another body:
    `IdempotencyConflict`). One request either way, and the connection goes on."""
    key = IdempotencyKey("token:ci", "k", "h")
    others: list[int] = []

    def authorize(hosts, grants):
        if not others:
            other = open_store(store_url)
            others.append(other.create_request_once(request(), key)[0])
            other.close()

    mine = IdempotencyKey("token:ci", "k", body)
    if body == "h":
        assert store.create_request_once(request(), mine, authorize=authorize) == (
            others[0],
            False,
        )
    else:
        with pytest.raises(IdempotencyConflict) as conflict:
            store.create_request_once(request(), mine, authorize=authorize)
        assert f"request {others[0]}" in str(conflict.value)
    assert [r.id for r in store.list_requests()] == others
    assert [r.target for r in store.audit() if r.verb == "submit"] == [f"request:{others[0]}"]
    rid, created = store.create_request_once(request(), IdempotencyKey("token:ci", "k2", "h"))
    assert created and rid > others[0]


def test_grants_and_revokes_wait_for_the_intake_lock(store_url, store):
    """A grant or revoke is serialized with submissions (they take the intake lock, as
    imports do), so none commits between a submission's check of the access version and
    its COMMIT."""
    store.grant_pool(PoolGrant(team="t1", pool="web"), actor="a")
    holder = open_store(store_url)
    done: list[str] = []
    writes = {
        "grant": lambda s: s.grant_pool(PoolGrant(team="t2", pool="web"), actor="a"),
        "revoke": lambda s: s.revoke_pool("t1", "web", actor="a"),
    }
    for name, write in writes.items():

        def run(write=write, name=name):
            other = open_store(store_url)
            write(other)
            other.close()
            done.append(name)

        with holder._write():  # a submission's transaction, stopped at the lock
            holder._lock_intake()
            thread = threading.Thread(target=run)
            thread.start()
            thread.join(0.5)
            assert name not in done
        thread.join(10)
        assert name in done
    holder.close()
    assert [(g.team, g.pool) for g in store.pool_grants()] == [("t2", "web")]
