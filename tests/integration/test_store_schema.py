"""The store's schema as the databases themselves report it: SQLite's `sqlite_master` and
pragmas, PostgreSQL's `information_schema` and `pg_catalog` — never the DDL generator's own
description. Both dialects must have the same tables, columns and indexes, and stores
written by earlier maas-lib releases (tests/fixtures/store/*.sql) must open and upgrade to
exactly what a fresh store has.

The PostgreSQL tests skip when no server answers at `MAAS_TEST_PG`
(default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from maas_lib.access.models import PoolGrant
from maas_lib.models import Action, BatchPolicy, HostSpec
from maas_lib.store import NewRequest, open_store
from maas_lib.store.base import IdempotencyKey
from maas_lib.store.pg_url import parse_pg_url
from maas_lib.store.schema import LATEST_VERSION

FIXTURES = Path(__file__).parent.parent / "fixtures" / "store"

#: PostgreSQL's stand-in for SQLite's rowid (a request's hosts in submission order).
PG_ONLY_COLUMNS = {("request_hosts", "seq")}
PG_ONLY_INDEXES = {"idx_request_hosts_request_id_seq"}
PG_ONLY_FUNCTIONS = {"maas_access_gate"}
#: Booleans: BOOLEAN on PostgreSQL, INTEGER 1/0 on SQLite.
BOOLEANS = {("hosts", "bmc_tls_verify"), ("pool_owners", "destructive")}
#: PostgreSQL type → the SQLite type that holds the same values.
PG_TYPES = {"text": "TEXT", "integer": "INTEGER", "bigint": "INTEGER", "double precision": "REAL"}

Catalog = dict[str, Any]


def sqlite_catalog(path: Path) -> Catalog:
    """Tables (columns in order: name, type, not null, default; primary key; foreign keys)
    and indexes (table, columns, unique), as SQLite reports them (read with sqlite-utils'
    introspection)."""
    import sqlite_utils

    db = sqlite_utils.Database(path)
    tables = {}
    indexes = {}
    for table in db.tables:
        columns = []
        for column in table.columns:
            type_ = column.type
            if (table.name, column.name) in BOOLEANS:
                assert type_ == "INTEGER", (table.name, column.name, type_)
                type_ = "BOOLEAN"
            # PostgreSQL makes every primary key column NOT NULL; SQLite (a legacy quirk)
            # only an INTEGER PRIMARY KEY, whatever the DDL says: count the key as NOT NULL.
            not_null = bool(column.notnull) or column.is_pk > 0
            columns.append((column.name, type_, not_null, column.default_value))
        tables[table.name] = {
            "columns": columns,
            "primary_key": [
                c.name for c in sorted(table.columns, key=lambda c: c.is_pk) if c.is_pk
            ],
            "foreign_keys": {
                (fk.column, f"{fk.other_table}.{fk.other_column}") for fk in table.foreign_keys
            },
        }
        for index in table.indexes:
            if not index.name.startswith("sqlite_autoindex"):
                indexes[index.name] = (table.name, list(index.columns), bool(index.unique))
    db.close()
    return {"tables": tables, "indexes": indexes}


def pg_catalog(conn: Any) -> Catalog:
    """The current schema of a PostgreSQL store as PostgreSQL reports it: the same shape as
    `sqlite_catalog`, a column being (name, type, not null, default, collation, identity),
    and its functions' definitions."""
    tables: dict[str, Any] = {}
    for table, *column in conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable = 'NO', column_default, "
        "collation_name, identity_generation FROM information_schema.columns "
        "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    ):
        entry = tables.setdefault(table, {"columns": [], "primary_key": [], "foreign_keys": set()})
        entry["columns"].append(tuple(column))
    indexes = {}
    for index, table, columns, unique, primary in conn.execute(
        "SELECT i.relname, t.relname, array_agg(a.attname ORDER BY k.n), x.indisunique, "
        "x.indisprimary FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n) "
        "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
        "WHERE t.relnamespace = current_schema()::regnamespace "
        "GROUP BY i.relname, t.relname, x.indisunique, x.indisprimary"
    ):
        if primary:
            tables[table]["primary_key"] = columns
        else:
            indexes[index] = (table, columns, unique)
    for table, column, target, target_column in conn.execute(
        "SELECT t.relname, a.attname, r.relname, ra.attname FROM pg_constraint c "
        "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class r ON r.oid = c.confrelid "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
        "JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1] "
        "WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace"
    ):
        tables[table]["foreign_keys"].add((column, f"{target}.{target_column}"))
    functions = dict(
        conn.execute(
            # Without the schema's name (a fresh store is compared with another schema).
            "SELECT proname, replace(pg_get_functiondef(oid), "
            "quote_ident(current_schema()) || '.', '') FROM pg_proc "
            "WHERE pronamespace = current_schema()::regnamespace"
        ).fetchall()
    )
    return {"tables": tables, "indexes": indexes, "functions": functions}


def as_sqlite(pg: Catalog) -> Catalog:
    """A PostgreSQL catalog in SQLite's terms, after checking where the two must differ."""
    tables = {}
    for table, entry in pg["tables"].items():
        columns = []
        for name, type_, notnull, default, collation, identity in entry["columns"]:
            if type_ == "text":  # code-point order, as SQLite compares
                assert collation == "C", (table, name, collation)
            if (table, name) in PG_ONLY_COLUMNS:
                assert identity == "ALWAYS", (table, name)
                continue
            if (table, name) in BOOLEANS:
                assert type_ == "boolean", (table, name, type_)
                type_, default = "BOOLEAN", {"true": "1", "false": "0", None: None}[default]
            else:
                type_ = PG_TYPES[type_]
            if default is not None:
                default = re.sub(r"::[a-z ]+$", "", default)  # 'active'::text → 'active'
            columns.append((name, type_, notnull, default))
        tables[table] = {**entry, "columns": columns}
    # PostgreSQL's server-side check of an API submission's authorization (SQLite's is
    # a read in the store).
    assert set(pg["functions"]) == PG_ONLY_FUNCTIONS
    indexes = {k: v for k, v in pg["indexes"].items() if k not in PG_ONLY_INDEXES}
    assert set(pg["indexes"]) - set(indexes) == PG_ONLY_INDEXES
    return {"tables": tables, "indexes": indexes}


def fresh_sqlite(tmp_path: Path) -> Catalog:
    path = tmp_path / "fresh.db"
    open_store(path).close()
    return sqlite_catalog(path)


def test_both_dialects_have_the_same_tables_columns_and_indexes(pg_url, tmp_path):
    lite = fresh_sqlite(tmp_path)
    store = open_store(pg_url)
    assert store.schema_version() == LATEST_VERSION
    pg = as_sqlite(pg_catalog(store.conn))
    store.close()
    assert len(lite["tables"]) == 18 and len(lite["indexes"]) == 14
    # A token's hash finds one token only: the database refuses a second row with it.
    assert lite["indexes"]["idx_api_tokens_token_hash"] == ("api_tokens", ["token_hash"], True)
    assert sorted(pg["tables"]) == sorted(lite["tables"])
    for table, expected in lite["tables"].items():
        assert pg["tables"][table] == expected, table
    assert pg["indexes"] == lite["indexes"]


def _load_sqlite_fixture(version: int, path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript((FIXTURES / f"sqlite_v{version}.sql").read_text())
    conn.close()


#: The oldest release (every step), one before a backfill, the backfill's, the latest.
@pytest.mark.parametrize("version", [1, 4, 5, 6])
def test_a_sqlite_store_of_an_earlier_release_opens_and_upgrades(version, tmp_path):
    path = tmp_path / f"v{version}.db"
    _load_sqlite_fixture(version, path)
    ddl_before = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master").fetchall()

    store = open_store(path)
    assert store.schema_version() == LATEST_VERSION
    applied = [v for (v,) in store.conn.execute("SELECT version FROM schema_migrations")]
    assert applied == [1, 2, 3, 4, 5, 6, 7]
    # What it ran, and what it holds, reads as a fresh store's would.
    status = store.get_request(1)
    assert (status.state, status.reason) == ("partial", "1 host failed")
    assert {h.host: (h.state, h.error_class) for h in status.hosts} == {
        "web01": ("succeeded", None),
        "web02": ("failed", "timeout"),
    }
    assert [(s["host"], s["outcome"]) for s in store.steps(1)] == [
        ("web01", "succeeded"),
        ("web02", "failed"),
    ]
    # Version 5 gave tasks and steps their host's pool (and the task its hardware model).
    assert store.conn.execute(
        "SELECT host, pool, hw_model FROM host_tasks ORDER BY id"
    ).fetchall() == [("web01", "web", "r640"), ("web02", "web", None)]
    assert store.conn.execute("SELECT DISTINCT pool FROM step_results").fetchall() == [("web",)]
    assert len(store.install_reports()) == (1 if version >= 2 else 0)
    (stats,) = store.stats(None, None, None).actions
    assert (stats.action, stats.requests_by_state, stats.failures_by_class) == (
        "power-cycle",
        {"partial": 1},
        {"timeout": 1},
    )
    assert [(b.value, b.hosts) for b in stats.by_pool] == [("web", 2)]
    # And it takes new work.
    rid = submit(store)
    assert store.claim_request("w2", ttl=60) == rid
    # Version 6: access control's tables, empty, in use at once; version 7: submissions
    # are authorized against the access version (none yet: 0), which a grant bumps.
    assert store.list_tokens() == [] and store.pool_grants() == []
    assert store.conn.execute("SELECT * FROM access_version").fetchall() == []
    grant_and_submit_once(store)
    assert store.conn.execute("SELECT id, version FROM access_version").fetchall() == [(1, 1)]
    store.close()

    upgraded = sqlite_catalog(path)
    fresh = fresh_sqlite(tmp_path)
    # Earlier releases made schema_migrations.applied nullable; nothing else may differ.
    for catalog in (upgraded, fresh):
        del catalog["tables"]["schema_migrations"]
    assert upgraded == fresh
    if version == LATEST_VERSION:  # nothing to migrate: not a byte of DDL rewritten
        assert (
            sqlite3.connect(path).execute("SELECT sql FROM sqlite_master").fetchall() == ddl_before
        )


def submit(store) -> int:
    return store.create_request(
        NewRequest(Action.REBOOT, BatchPolicy(), ["web01"], ["web01"], "t", "t")
    )


def grant_and_submit_once(store) -> None:
    """Version 6's tables take writes: a grant (audited) and an idempotent submission,
    authorized (version 7: checked against the access version, on PostgreSQL by its
    function)."""
    store.grant_pool(PoolGrant(team="web-team", pool="web"), actor="admin")
    assert [(g.team, g.pool) for g in store.pool_grants()] == [("web-team", "web")]
    new = NewRequest(Action.REBOOT, BatchPolicy(), ["web01"], ["web01"], "token:a", "t")
    key = IdempotencyKey("token:a", "k1", "h")
    seen: list[tuple[dict[str, str], list[str]]] = []
    first = store.create_request_once(
        new, key, authorize=lambda hosts, grants: seen.append((hosts, [g.team for g in grants]))
    )
    assert seen == [({"web01": "web"}, ["web-team"])]
    assert first[1] and store.create_request_once(new, key) == (first[0], False)
    assert [r.verb for r in store.audit()] == ["submit", "pools.grant"]


def test_a_pg_store_of_an_earlier_release_opens_and_upgrades(pg_url):
    target = parse_pg_url(pg_url)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        schema = sql.Identifier(target.schema)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        conn.execute(sql.SQL("SET search_path TO {}").format(schema))
        conn.execute((FIXTURES / "postgresql_v5.sql").read_text())  # type: ignore[arg-type]
        before = pg_catalog(conn)

    store = open_store(pg_url)
    assert store.schema_version() == LATEST_VERSION
    assert [v for (v,) in store.conn.execute("SELECT version FROM schema_migrations")] == [
        5,
        6,
        7,
    ]
    upgraded = pg_catalog(store.conn)
    # Version 6 only added tables: every table and index of version 5 is as it was.
    assert {t: upgraded["tables"][t] for t in before["tables"]} == before["tables"]
    assert {i: upgraded["indexes"][i] for i in before["indexes"]} == before["indexes"]
    store.upsert_hosts([HostSpec(name="web01", pool="web", bmc_address="10.0.0.1")], [], actor="t")
    rid = submit(store)
    assert store.claim_request("w", ttl=60) == rid
    grant_and_submit_once(store)
    store.close()

    fresh_url = pg_url.replace(f"schema={target.schema}", f"schema={target.schema}_new")
    try:
        fresh = open_store(fresh_url)
        assert pg_catalog(fresh.conn) == upgraded  # what this release creates, to the letter
        fresh.close()
    finally:
        with psycopg.connect(target.conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(f"{target.schema}_new")
                )
            )
