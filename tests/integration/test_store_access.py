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
